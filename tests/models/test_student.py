"""The offline student and the one input builder: build, load, encode video at its real fps, generate, train."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rmsd.errors import RmsdError
from rmsd.models.offline.tiny import PRESETS, build_config, build_student
from rmsd.models.offline.vocab import FORMAT_TOKENS, train_tokenizer
from rmsd.models.processing import encode, generate, load_student, to_model


def clip(seed: int, fps: float = 2.0, n: int = 8, side: int = 84) -> SimpleNamespace:
    """A Frames-like clip: a bright square sliding right over noise, uint8 [n, side, side, 3]."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 60, (n, side, side, 3), dtype=np.uint8)
    colour = rng.integers(100, 255, 3, dtype=np.uint8)
    for t in range(n):
        x = 4 + t * (side - 28) // max(n - 1, 1)
        array[t, 30:50, x : x + 20] = colour
    return SimpleNamespace(array=array, fps=fps)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.set_num_threads(1)
    path = build_student(tmp_path_factory.mktemp("student") / "tiny", seed=0)
    model, processor = load_student(path)
    return path, model, processor


def last_logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**to_model(batch, model)).logits[:, -1]


def test_folder_loads_with_the_auto_classes_and_generates_text_from_a_clip(student):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path, _, _ = student
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and config["tie_word_embeddings"] is True
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert 1.2e6 < sum(p.numel() for p in model.parameters()) < 1.6e6  # the tiny preset: 1.40M (docs/experiments.md)
    tok = processor.tokenizer
    for name in ("video", "image", "vision_start", "vision_end"):
        assert config[f"{name}_token_id"] == tok.convert_tokens_to_ids(f"<|{name}_pad|>" if "_" not in name
                                                                        else f"<|{name}|>")
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id

    out = generate(model, processor, ["What colour is the object?", "Which way?"], [clip(0), clip(1)],
                   max_new_tokens=5)
    assert len(out) == 2 and all(len(o) == 1 and isinstance(o[0], str) for o in out)


def test_84px_frames_stay_84px_and_fps_sets_the_time_per_temporal_patch(student):
    _, _, processor = student
    batch = encode(processor, ["a", "b"], [clip(0, fps=2.0), clip(1, fps=8.0)])
    assert batch["video_grid_thw"].tolist() == [[4, 6, 6], [4, 6, 6]]  # 8 frames / 2, 84 px / 14
    video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert (batch["input_ids"] == video_id).sum(dim=1).tolist() == [36, 36]  # 4 * 6 * 6 / merge 2x2
    assert torch.equal(batch["mm_token_type_ids"] == 2, batch["input_ids"] == video_id)
    # Two frames per temporal patch: 1.0 s at 2 fps, 0.25 s at 8 fps (not 2/24 s, the processor's guess).
    assert batch["second_per_grid_ts"].tolist() == pytest.approx([1.0, 0.25])
    with pytest.raises(RmsdError, match="fps"):
        encode(processor, ["a"], [SimpleNamespace(array=clip(0).array, fps=None)])


def test_labels_cover_only_the_response_and_its_end_token(student):
    _, _, processor = student
    tok = processor.tokenizer
    prompts = ["What colour is the object?", "How many objects appear in the video?"]
    clips = [clip(0), None]
    responses = ["<think>The object is red.</think><answer>(B)</answer>", "<answer>3</answer>"]
    batch = encode(processor, prompts, clips, responses=responses)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape == batch["mm_token_type_ids"].shape
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for i, response in enumerate(responses):
        target = ids[i][labels[i] != -100]
        assert tok.decode(target) == response + "<|im_end|>" and target[-1] == end
        assert (labels[i][mask[i] == 0] == -100).all()
        # Everything before the response is the generation prompt, token for token.
        prompt = encode(processor, [prompts[i]], [clips[i]])["input_ids"][0]
        assert torch.equal(ids[i][: len(prompt)], prompt) and (labels[i][: len(prompt)] == -100).all()
        assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
    left = encode(processor, ["a", "a much longer prompt here"], [None, None], padding_side="left")
    assert left["attention_mask"][0, 0] == 0 and left["attention_mask"][0, -1] == 1


def test_the_video_its_fps_and_mm_token_type_ids_all_change_the_logits(student):
    _, model, processor = student
    base = encode(processor, ["What colour is the object?"], [clip(0)])
    other_clip = encode(processor, ["What colour is the object?"], [clip(7)])
    other_fps = encode(processor, ["What colour is the object?"], [clip(0, fps=8.0)])
    reference = last_logits(model, base)
    assert not torch.allclose(reference, last_logits(model, other_clip), atol=1e-4)
    assert not torch.allclose(reference, last_logits(model, other_fps), atol=1e-4)  # temporal rope step
    without_types = {k: v for k, v in base.items() if k != "mm_token_type_ids"}
    assert not torch.allclose(reference, last_logits(model, without_types), atol=1e-4)  # 3-D positions need them
    assert torch.allclose(reference, last_logits(model, base))  # deterministic


def test_batched_left_padded_generation_matches_one_prompt_at_a_time(student):
    _, model, processor = student
    prompts, clips = ["What colour is the object?", "Which direction does the object move? (A) left (B) up"], \
        [clip(3), clip(4, fps=4.0)]
    together = generate(model, processor, prompts, clips, max_new_tokens=6)
    alone = [generate(model, processor, [p], [c], max_new_tokens=6)[0] for p, c in zip(prompts, clips, strict=True)]
    assert together == alone

    sampled = generate(model, processor, prompts, clips, max_new_tokens=6, do_sample=True, temperature=1.5,
                       num_return_sequences=3)
    assert [len(s) for s in sampled] == [3, 3] and len(set(sampled[0])) > 1  # random weights: samples differ
    greedy = generate(model, processor, prompts[:1], clips[:1], max_new_tokens=6, num_return_sequences=2,
                      temperature=None)
    assert greedy == [together[0] * 2]


def test_a_training_step_sends_gradients_into_the_vision_tower(student):
    path, _, _ = student
    model, processor = load_student(path)
    model.train()
    batch = encode(processor, ["What colour is the object?"] * 2, [clip(0), clip(1)],
                   responses=["<answer>(A)</answer>", "<answer>(C)</answer>"])
    loss = model(**to_model(batch, model)).loss
    loss.backward()
    assert torch.isfinite(loss)
    patch_grad = model.model.visual.patch_embed.proj.weight.grad
    assert patch_grad is not None and patch_grad.abs().sum() > 0
    assert model.model.language_model.embed_tokens.weight.grad.abs().sum() > 0


def test_tokenizer_round_trips_text_and_keeps_format_tags_compact(student):
    _, _, processor = student
    tok = processor.tokenizer
    for tag in FORMAT_TOKENS:
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1, tag
    text = "<think>The red square moves left until 3.5 s.</think><answer>(B)</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and len(ids) <= 18  # words (digits one by one), not 73 bytes
    odd = "Zürich — naïve café ✓ 12345 [0.5, 3.0]\n\ttabs"
    assert tok.decode(tok(odd, add_special_tokens=False)["input_ids"]) == odd  # byte fallback: nothing lost
    assert tok.decode(tok("<|im_start|>hi<|im_end|>")["input_ids"], skip_special_tokens=True) == "hi"
    assert 300 < len(tok) <= 2048
    with pytest.raises(RmsdError, match="corpus"):
        train_tokenizer([])


def test_presets_span_cpu_to_gpu_sizes():
    tok = train_tokenizer(["a tiny corpus of words", "more words here"], vocab_size=300)
    from transformers import Qwen2_5_VLForConditionalGeneration

    counts = {}
    for name, preset in PRESETS.items():
        with torch.device("meta"):  # shapes only: counts parameters without allocating them
            model = Qwen2_5_VLForConditionalGeneration(build_config(preset, tok))
        counts[name] = sum(p.numel() for p in model.parameters())
    assert counts["tiny"] < 1.6e6 and 5e6 <= counts["small"] <= 15e6 and counts["base"] >= 100e6


def test_user_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(RmsdError, match="not found"):
        load_student(tmp_path / "missing")
    with pytest.raises(RmsdError, match="no config.json"):
        load_student(tmp_path)
    with pytest.raises(RmsdError, match="unknown student size"):
        build_student(tmp_path / "s", size="huge")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(RmsdError, match="not empty"):
        build_student(tmp_path / "busy")


def test_max_pixels_shrinks_frames_for_large_checkpoints(student):
    path, _, _ = student
    _, processor = load_student(path, max_pixels=56 * 56)
    assert encode(processor, ["a"], [clip(0)])["video_grid_thw"].tolist() == [[4, 4, 4]]
    with pytest.raises(RmsdError, match="below"):
        load_student(path, max_pixels=100)
