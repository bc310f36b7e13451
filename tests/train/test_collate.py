"""The multi-sample collator and the SFT row selection, on real synthvid clips and the tiny student."""

from __future__ import annotations

import pytest
import torch

from rmsd.errors import RmsdError
from rmsd.train.collate import MultiSampleCollator, item_vision, merge_vision, truncate, vision_kwargs
from rmsd.train.sft_trainer import sft_rows


def _answer(item) -> str:
    return f"({item.answer})" if item.task_type == "mcq" else str(item.answer)


def matched_rows(items) -> list[dict]:
    """Per item: two kept samples (weights 1.0, 0.5), a wrong one (dropped), a malformed one."""
    rows = []
    for it in items:
        good = f"<think>I watch the clip.</think><answer>{_answer(it)}</answer>"
        for teacher, idx, text, weight, kept, fmt in [
            ("sim-a", 0, good, 1.0, True, True),
            ("sim-b", 0, good.replace("watch", "see"), 0.5, True, True),
            ("sim-a", 1, "<think>a guess</think><answer>(Z)</answer>", 0.0, False, True),
            ("sim-b", 1, "no format at all", 0.0, False, False),
        ]:
            rows.append({"key": f"{it.item_id}-{teacher}-{idx}", "item_id": it.item_id, "teacher": teacher,
                         "sample_index": idx, "text": text, "answer": None, "format_ok": fmt, "weight": weight,
                         "kept": kept, "agreement": 0.5, "difficulty": 0.5, "task_type": it.task_type})
    return rows


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from rmsd.datasets.synthvid import load_items
    from rmsd.models.offline.tiny import build_student
    from rmsd.models.processing import load_student
    from rmsd.synthvid.generator import generate

    root = tmp_path_factory.mktemp("collate")
    generate(root / "data", n=6, seed=0)
    items = load_items(root / "data", split="train")
    model, processor = load_student(build_student(root / "student", size="tiny", seed=0), device="cpu")
    return {"items": {it.item_id: it for it in items}, "order": items, "processor": processor, "model": model}


def test_sft_rows_selection():
    class It:  # sft_rows only reads item ids from the matched rows
        def __init__(self, i):
            self.item_id, self.task_type, self.answer = i, "mcq", "B"

    matched = matched_rows([It("a"), It("b")])
    rows = {r["item_id"]: r for r in sft_rows(list(reversed(matched)), None, "matched")}  # order of the store must not matter
    assert rows["a"]["weights"] == [1.0, 0.5]
    assert rows["a"]["texts"][0].startswith("<think>I watch")
    assert all("(Z)" not in t and "no format" not in t for t in rows["a"]["texts"])  # dropped samples never train

    single = {r["item_id"]: r for r in sft_rows(matched, 1, "matched")}
    assert single["a"]["texts"] == [rows["a"]["texts"][0]] and single["a"]["weights"] == [1.0]
    assert sft_rows(matched, None, "uniform")[0]["weights"] == [1.0, 1.0]
    assert len(sft_rows(matched, 2, "matched")[0]["texts"]) == 2

    # The single-sample baseline takes the first *format-valid* sample even when matching dropped it.
    only_wrong = [dict(r, kept=False, weight=0.0) for r in matched if r["item_id"] == "a"]
    assert sft_rows(only_wrong, 1, "matched")[0]["texts"] == [rows["a"]["texts"][0]]
    assert sft_rows(only_wrong, None, "matched") == []  # no kept sample: the item is left out of multi-sample SFT


def test_single_sample_from_kept_takes_the_first_sample_matching_kept():
    """single_from kept (v4's single_gt): one sample per item, the first that matching kept; an item whose every
    sample was dropped is left out, where the paper's baseline (single_from valid) would train on its first."""
    class It:
        def __init__(self, i):
            self.item_id, self.task_type, self.answer = i, "mcq", "B"

    matched = matched_rows([It("a"), It("b")])
    first_dropped = [dict(r, kept=False, weight=0.0) if (r["teacher"], r["sample_index"]) == ("sim-a", 0) else r
                     for r in matched]
    kept = {r["item_id"]: r for r in sft_rows(first_dropped, 1, "matched", "kept")}
    assert kept["a"]["texts"] == [next(r["text"] for r in matched if r["teacher"] == "sim-b" and r["sample_index"] == 0)]
    assert kept["a"]["weights"] == [1.0]
    valid = {r["item_id"]: r for r in sft_rows(first_dropped, 1, "matched", "valid")}
    assert valid["a"]["texts"][0].startswith("<think>I watch")  # the dropped first sample: the baseline's pick
    only_wrong = [dict(r, kept=False, weight=0.0) for r in matched if r["item_id"] == "a"]
    assert sft_rows(only_wrong, 1, "matched", "kept") == []


def test_collator_builds_one_sequence_per_sample(env):
    processor, items = env["processor"], env["items"]
    first = env["order"][0]
    second = next(it for it in env["order"] if it.video != first.video)  # synthvid asks 2 questions per clip
    rows = [{"item_id": first.item_id, "texts": ["<think>a</think><answer>(A)</answer>", "<think>bb</think><answer>3</answer>"],
             "weights": [1.0, 0.25]},
            {"item_id": second.item_id, "texts": ["<think>c</think><answer>(C)</answer>"], "weights": [0.5]}]
    batch = MultiSampleCollator(processor, items, num_frames=8)(rows)

    assert batch["item_index"].tolist() == [0, 0, 1]
    assert batch["weights"].tolist() == [1.0, 0.25, 0.5]
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape == batch["mm_token_type_ids"].shape and ids.size(0) == 3

    tok = processor.tokenizer
    for i, text in enumerate([t for r in rows for t in r["texts"]]):
        target = tok.decode(ids[i][labels[i] != -100], skip_special_tokens=True)
        assert target.strip() == text  # only the assistant's response is trained on
        assert (labels[i][mask[i] == 0] == -100).all()

    video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert torch.equal(batch["mm_token_type_ids"] == 2, ids == video_id)
    grid = batch["video_grid_thw"]
    # An item's clip is processed once, whatever its number of samples: one clip per item.
    assert grid.shape == (2, 3) and batch["pixel_values_videos"].size(0) == int(grid.prod(-1).sum())
    pv = batch["pixel_values_videos"].split(grid.prod(-1).tolist())
    assert not torch.equal(pv[0], pv[1])
    # Samples of one item share its clip: the same vision dict (patches, grid, time step) for both rows.
    per_row = item_vision(batch)
    assert per_row[0] is per_row[1] and per_row[0] is not per_row[2]
    assert torch.equal(per_row[0]["pixel_values_videos"], pv[0]) and torch.equal(per_row[2]["pixel_values_videos"], pv[1])
    # The real fps reached the processor: a temporal patch of 2 frames at the clip's sampled rate.
    from rmsd.media.video import load_frames

    frames = load_frames(first.video, num_frames=8)
    temporal = processor.video_processor.temporal_patch_size
    assert batch["second_per_grid_ts"][0].item() == pytest.approx(temporal / frames.fps, rel=1e-3)


def test_shared_clip_encoding_matches_separate_copies(env):
    """Encoding an item's clip once for its K sequences gives the same outputs and gradients."""
    processor, items, model = env["processor"], env["items"], env["model"]
    first = env["order"][0]
    second = next(it for it in env["order"] if it.video != first.video)
    rows = [{"item_id": first.item_id, "texts": ["<think>a</think><answer>(A)</answer>", "<think>b</think>"],
             "weights": [1.0, 1.0]},
            {"item_id": second.item_id, "texts": ["<think>c</think><answer>(C)</answer>"], "weights": [1.0]}]
    batch = MultiSampleCollator(processor, items)(rows)
    text = {k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    vision = merge_vision(item_vision(batch))  # separate copies: one clip per sequence

    shared = vision_kwargs(model, item_vision(batch), batch["item_index"].tolist())
    assert "mm_encoder_outputs" in shared and "pixel_values_videos" not in shared
    assert len(shared["mm_encoder_outputs"]["video"].pooler_output) == 3

    outputs = []
    for kwargs in (vision, shared):
        model.zero_grad()
        logits = model(**text, **kwargs).logits
        (logits.float().square().mean()).backward()
        outputs.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=1e-5, atol=1e-5)
    assert outputs[0][1].keys() == outputs[1][1].keys() and any(n.startswith("model.visual") for n in outputs[0][1])
    for name, grad in outputs[0][1].items():
        torch.testing.assert_close(grad, outputs[1][1][name], rtol=1e-4, atol=1e-6)
    model.zero_grad()


def test_image_items_collate_and_share_their_encoding(env, tmp_path):
    """Image benchmarks (MathVerse) take the same path: pixel_values + image_grid_thw, type 1 placeholders."""
    import numpy as np
    from PIL import Image

    from rmsd.items import Item

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 84, 3), dtype=np.uint8)).save(tmp_path / "d.png")
    item = Item(item_id="img", benchmark="mathverse", task_type="numeric", question="x?", prompt="What is x?",
                image=str(tmp_path / "d.png"), answer="3")
    rows = [{"item_id": "img", "texts": ["<think>a</think><answer>3</answer>", "<answer>4</answer>"],
             "weights": [1.0, 1.0]}]
    batch = MultiSampleCollator(env["processor"], {"img": item})(rows)
    assert "pixel_values" in batch and "pixel_values_videos" not in batch
    image_id = env["processor"].tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert torch.equal(batch["mm_token_type_ids"] == 1, batch["input_ids"] == image_id)
    shared = vision_kwargs(env["model"], item_vision(batch), batch["item_index"].tolist())
    plain = merge_vision(item_vision(batch))  # the image once per sequence
    text = {k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    with torch.no_grad():
        torch.testing.assert_close(env["model"](**text, **shared).logits, env["model"](**text, **plain).logits)


def test_truncation_cuts_responses_never_prompts(env):
    processor, items, first = env["processor"], env["items"], env["order"][0]
    long = "<think>" + "the square moves left " * 40 + "</think><answer>(A)</answer>"
    rows = [{"item_id": first.item_id, "texts": [long, "<think>x</think><answer>(A)</answer>"], "weights": [1, 1]}]
    full = MultiSampleCollator(processor, items)(rows)
    prompt_len = int((full["labels"][1] == -100).logical_and(full["attention_mask"][1] == 1).sum())
    cut = MultiSampleCollator(processor, items, max_length=prompt_len + 5)(rows)
    assert cut["input_ids"].size(1) == prompt_len + 5
    assert torch.equal(cut["pixel_values_videos"], full["pixel_values_videos"])
    assert (cut["labels"][0] != -100).sum() > 0

    with pytest.raises(RmsdError, match="max_length"):
        MultiSampleCollator(processor, items, max_length=prompt_len - 3)(rows)
    with pytest.raises(RmsdError, match="not in the dataset"):
        MultiSampleCollator(processor, items)([{"item_id": "nope", "texts": ["x"], "weights": [1.0]}])


def test_truncate_keeps_short_batches_untouched():
    batch = {"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 4, dtype=torch.long),
             "labels": torch.ones(2, 4, dtype=torch.long)}
    assert truncate(batch, 8, ["a", "b"]) is batch


def _same_batch(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_cached_prompts_give_the_processors_batch_exactly(env, tmp_path):
    """The stage's PromptCache (each prompt and clip encoded once) gives bit-identical batches to running
    the processor on every batch: on first use, from the cache, after eviction, and for image items."""
    import numpy as np
    from PIL import Image

    from rmsd.items import Item

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 84, 3), dtype=np.uint8)).save(tmp_path / "d.png")
    image = Item(item_id="img", benchmark="mathverse", task_type="numeric", question="x?", prompt="What is x?",
                 image=str(tmp_path / "d.png"), answer="3")
    items = {**env["items"], "img": image}
    order = env["order"]
    batches = [
        [{"item_id": order[0].item_id, "texts": ["<think>a</think><answer>(A)</answer>", "<think>bb</think>"],
          "weights": [1.0, 0.5]},
         {"item_id": order[1].item_id, "texts": ["<think>c</think><answer>(C)</answer>"], "weights": [1.0]}],
        [{"item_id": order[2].item_id, "texts": ["<think>d</think><answer>2</answer>"], "weights": [1.0]},
         {"item_id": order[0].item_id, "texts": ["<think>a</think><answer>(A)</answer>"], "weights": [0.3]}],
        [{"item_id": "img", "texts": ["<answer>3</answer>", "<answer>4</answer>"], "weights": [1.0, 1.0]}],
    ]
    plain = MultiSampleCollator(env["processor"], items, max_length=200, cache=False)
    cached = MultiSampleCollator(env["processor"], items, max_length=200)
    for rows in batches + batches:  # the second pass is served from the cache
        _same_batch(cached(rows), plain(rows))
    assert cached.prompts.misses == 4 and cached.prompts.hits == 6

    tiny = MultiSampleCollator(env["processor"], items, max_length=200)
    tiny.prompts.max_bytes = 1  # nothing fits: every batch is encoded again, still the same tensors
    for rows in batches:
        _same_batch(tiny(rows), plain(rows))
    assert tiny.prompts.hits == 0


def test_the_prompt_cache_bound_comes_from_its_environment_variable(env, monkeypatch):
    from rmsd.train.stage_inputs import PromptCache

    monkeypatch.setenv("RMSD_PROMPT_CACHE_MB", "3")
    assert PromptCache(env["processor"], env["items"]).max_bytes == 3 * 2**20
    assert PromptCache(env["processor"], env["items"], max_mb=1).max_bytes == 2**20  # the argument wins
    monkeypatch.setenv("RMSD_PROMPT_CACHE_MB", "lots")
    with pytest.raises(RmsdError, match="RMSD_PROMPT_CACHE_MB must be a number of megabytes >= 0, got 'lots'"):
        PromptCache(env["processor"], env["items"])
