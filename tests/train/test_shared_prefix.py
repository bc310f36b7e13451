"""The shared-prefix forward equals the naive one: log-probs, every gradient, one SFT and one adversarial step.

On the tiny student in float32, with video items (Qwen2.5-VL's 3-D rotary positions with
`second_per_grid_ts` and `mm_token_type_ids`), an image item and a text-only item, items of
different K in one batch, right-padded rows (SFT) and left-padded prompts of different
lengths (GRPO and the VISD teacher's privileged prompts). Every test runs on Qwen2.5-VL and on
Qwen3.5, whose linear-attention layers hand the prefix's recurrent and convolution states to
the continuations instead of keys and values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from trainers import adversarial_trainer, sft_trainer, student_inputs

from rmsd.items import Item
from rmsd.models import shared_prefix
from rmsd.train.collate import MultiSampleCollator, item_vision, vision_kwargs
from rmsd.train.sft_trainer import sft_rows

LOGP_TOL, GRAD_TOL = 1e-5, 1e-4


def _matched(items) -> list[dict]:
    rows = []
    for k, it in enumerate(items):
        answer = f"({it.answer})" if it.task_type == "mcq" else str(it.answer)
        for idx in range(1 + k % 3):  # K = 1, 2, 3 samples
            rows.append({"item_id": it.item_id, "teacher": "sim", "sample_index": idx, "format_ok": True,
                         "text": f"<think>{'I look again. ' * idx}The clip shows it.</think><answer>{answer}</answer>",
                         "weight": 1.0 / (idx + 1), "kept": True, "task_type": it.task_type})
    return rows


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_5"])
def env(make_env, tmp_path_factory, request):
    from trl.trainer.utils import add_fused_lm_head

    from rmsd.models.processing import load_student

    env = make_env(n=6, seed=3, matched=_matched, family=request.param)
    root = tmp_path_factory.mktemp("media")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8)).save(root / "f.png")
    extra = [Item(item_id="img", benchmark="mathverse", task_type="numeric", question="x?", prompt="What is x?",
                  image=str(root / "f.png"), answer="3"),
             Item(item_id="txt", benchmark="mathverse", task_type="numeric", question="1+2?", prompt="What is 1+2?",
                  answer="3")]
    env["items"].update({it.item_id: it for it in extra})
    env["matched"] += _matched(extra)
    model, processor = load_student(env["student"], device="cpu")
    add_fused_lm_head(model)
    env.update(model=model.train(), processor=processor)
    return env


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def _both(model, ids, mask, labels, types, rows, keys):
    """(naive outputs and grads, shared outputs and grads) of sum(log_probs) over the same rows."""
    results = []
    for shared in (False, True):
        model.zero_grad()
        if shared:
            first_target = (labels != -100).int().argmax(dim=1) - 1
            split = shared_prefix.plan_split(ids, mask, first_target, keys, types)
            assert split is not None and len(split.first) < ids.size(0)
            out = shared_prefix.shared_forward(model, ids, mask, labels, split, rows, types)
        else:
            kwargs = vision_kwargs(model, rows, keys)
            fused = model(input_ids=ids, attention_mask=mask, mm_token_type_ids=types, labels=labels,
                          fused_lm_head=True, use_cache=False, **kwargs)
            out = {"log_probs": fused.log_probs, "label_mask": fused.label_mask}
        out["log_probs"].sum().backward()
        results.append((out, _grads(model)))
    model.zero_grad()
    return results


def _check(naive, shared):
    (n_out, n_grad), (s_out, s_grad) = naive, shared
    assert torch.equal(n_out["label_mask"], s_out["label_mask"])
    assert int(n_out["label_mask"].sum()) > 0
    assert (n_out["log_probs"] - s_out["log_probs"]).abs().max().item() <= LOGP_TOL
    assert n_grad.keys() == s_grad.keys()
    assert any(n.startswith("model.visual") for n in n_grad), "the vision tower got no gradient"
    worst = max(n_grad, key=lambda n: _rel(s_grad[n], n_grad[n]))
    assert _rel(s_grad[worst], n_grad[worst]) <= GRAD_TOL, worst


def test_sft_rows_of_different_k_video_image_and_text(env):
    """Right-padded SFT rows: items with K = 1..3, clips, an image and a text-only item in one batch."""

    shared_prefix.enable(env["model"])
    rows = sft_rows(env["matched"], None, "matched")
    batch = MultiSampleCollator(env["processor"], env["items"], max_length=512)(rows)
    assert sorted(set(np.bincount(batch["item_index"].numpy()))) == [1, 2, 3]
    naive, shared = _both(env["model"], batch["input_ids"], batch["attention_mask"], batch["labels"],
                          batch["mm_token_type_ids"], item_vision(batch), batch["item_index"].tolist())
    _check(naive, shared)


def test_left_padded_prompts_of_different_lengths_share_their_common_part(env):
    """GRPO's layout (left-padded prompt + completion); the second item's rows differ after a common
    part (as the VISD teacher's privileged prompts do), so the rows of one group are padded differently."""
    from rmsd.models.processing import encode

    shared_prefix.enable(env["model"])
    items = [it for it in env["items"].values() if it.video][:2]
    prompts = [items[0].prompt, items[0].prompt, items[1].prompt, items[1].prompt + " Feedback: the count is wrong."]
    from rmsd.media.video import load_media

    media = {it.item_id: load_media(it, 8, None)[0] for it in items}
    clips = [media[items[0].item_id]] * 2 + [media[items[1].item_id]] * 2
    enc = encode(env["processor"], prompts, clips, padding_side="left")
    tok = env["processor"].tokenizer
    completions = tok(["<think>a</think><answer>(A)</answer>", "<answer>3</answer>", "<answer>(B)</answer>",
                       "<think>two objects</think><answer>2</answer>"], add_special_tokens=False, padding=True,
                      padding_side="right", return_tensors="pt")
    ids = torch.cat([enc["input_ids"], completions["input_ids"]], dim=1)
    mask = torch.cat([enc["attention_mask"], completions["attention_mask"]], dim=1)
    types = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(completions["input_ids"])], dim=1)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, : enc["input_ids"].size(1)] = -100
    assert enc["attention_mask"][2].sum() != enc["attention_mask"][3].sum()  # padded differently
    per_clip = enc["video_grid_thw"].prod(-1).tolist()
    pixels = enc["pixel_values_videos"].split(per_clip)
    vision = [{"pixel_values_videos": pixels[i],
               **{k: enc[k][i: i + 1] for k in ("video_grid_thw", "second_per_grid_ts") if k in enc}}
              for i in range(4)]
    rows = [vision[0], vision[0], vision[2], vision[2]]  # one dict per item, as the trainer carries them
    naive, shared = _both(env["model"], ids, mask, labels, types, rows, [id(r) for r in rows])
    _check(naive, shared)


def _sft_trainer(env, out, shared: bool):
    return sft_trainer(env, out, inputs=student_inputs(shared_prefix=shared), trl={"save_strategy": "no", "optim": "sgd"},
                       max_steps=1, batch_size=8, max_length=512)


# The step tests use SGD: AdamW's first step is lr * sign(g), which turns float noise into full-size steps
# wherever the exact gradient is 0 (a key projection's bias: softmax ignores a shift of all scores), so
# two correct computations would differ by 2 lr there. With SGD the update is lr * g and differences stay
# at the gradients' own (tested) level.
def _same_weights(a, b, before):
    changed = 0
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        # element-wise; atol for tensors that start at 0 with an exactly-0 gradient (biases), now float noise
        torch.testing.assert_close(p.detach(), q.detach(), rtol=GRAD_TOL, atol=1e-6, msg=name)
        changed += not torch.equal(p.detach(), before[name])
    return changed


def test_one_sft_step_gives_the_same_weights(env, tmp_path):
    trainers = [_sft_trainer(env, tmp_path / str(s), shared=s) for s in (False, True)]
    before = {n: p.detach().clone() for n, p in trainers[0].model.named_parameters()}
    for t in trainers:
        t.train()
    assert _same_weights(trainers[1].model, trainers[0].model, before) > 50  # the step moved (almost) every tensor


def _adversarial_trainer(env, out, shared: bool):
    ids = [i for i, it in env["items"].items() if it.video][:3]
    return adversarial_trainer(env, out, ids=ids, inputs=student_inputs(shared_prefix=shared),
                               trl={"save_strategy": "no", "optim": "sgd"}, max_steps=1, batch_size=3, lr=1e-4)


def test_one_adversarial_step_gives_the_same_weights(env, tmp_path):
    trainers = []
    for shared in (False, True):  # same seed right before each run: the same rollouts, so the same rewards
        torch.manual_seed(0)
        trainers.append(_adversarial_trainer(env, tmp_path / str(shared), shared=shared))
        if not shared:
            before = {n: p.detach().clone() for n, p in trainers[0].model.named_parameters()}
        trainers[-1].train()
    rewards = [next(h for h in t.state.log_history if "rewards/discriminator/mean" in h)["rewards/discriminator/mean"]
               for t in trainers]
    assert rewards[0] == pytest.approx(rewards[1], abs=1e-6)
    assert _same_weights(trainers[1].model, trainers[0].model, before) > 50


def test_gradient_checkpointing_keeps_the_shared_prefix_exact(env):
    """Checkpointed layers recompute in the backward pass: the recorded prefix must still get every gradient."""
    shared_prefix.enable(env["model"])
    batch = MultiSampleCollator(env["processor"], env["items"], max_length=512)(
        sft_rows(env["matched"], None, "matched"))
    args = (batch["input_ids"], batch["attention_mask"], batch["labels"], batch["mm_token_type_ids"],
            item_vision(batch), batch["item_index"].tolist())
    plain = _both(env["model"], *args)
    env["model"].activation_checkpointing_enable({"use_reentrant": False})
    try:
        checkpointed = _both(env["model"], *args)
    finally:
        env["model"].activation_checkpointing_disable()
    _check(plain[0], checkpointed[1])  # naive without, shared with checkpointing


def test_the_discriminator_checkpoints_with_the_student(env, tmp_path):
    trainer = adversarial_trainer(env, tmp_path, ids=[i for i, it in env["items"].items() if it.video][:2],
                                  trl={"activation_checkpointing": True})
    assert trainer.adversary.disc.backbone.is_activation_checkpointing
    trainer.train()  # D's shared-prompt forward and the student's loss, both checkpointed
    assert any("discriminator/loss" in h for h in trainer.state.log_history)
