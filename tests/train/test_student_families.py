"""Every training stage on a tiny student of each family: the vision tower and the language model both learn.

A few real steps of each TRL trainer (multi-sample SFT with two samples per item, the
adversarial stage with its discriminator, VISD with the EMA teacher and the privileged
prompt) on synthvid clips, built as `rmsd distill` builds them, with the shared-prefix
forward on; gradients are read just before each optimizer step. For Qwen3-VL the DeepStack
mergers must learn too, for Qwen3.5 every linear-attention (Gated DeltaNet) layer, and for
both the shared prefix must equal the naive forward.
"""

from __future__ import annotations

import pytest
import torch
from trainers import adversarial_trainer, sft_trainer
from transformers import TrainerCallback

from rmsd.config import VISDConfig
from rmsd.datasets import get_benchmark
from rmsd.judge.rules import RuleJudge

FAMILIES = ("qwen2_5_vl", "qwen3_vl", "qwen3_5")


def _matched(items) -> list[dict]:
    rows = []
    for it in items:
        answer = f"({it.answer})" if it.task_type == "mcq" else str(it.answer)
        for idx, (text, weight) in enumerate([(f"<think>I watch the clip.</think><answer>{answer}</answer>", 1.0),
                                              (f"<think>Seen.</think><answer>{answer}</answer>", 0.5)]):
            rows.append({"item_id": it.item_id, "teacher": "sim", "sample_index": idx, "text": text,
                         "format_ok": True, "weight": weight, "kept": True, "task_type": it.task_type,
                         "agreement": 1.0})
    return rows


@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    from rmsd.datasets.synthvid import load_items
    from rmsd.models.offline.tiny import build_student
    from rmsd.synthvid.generator import generate

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("families")
    generate(root / "data", n=4, seed=0)
    items = {it.item_id: it for it in load_items(root / "data", split="train")}
    matched = _matched(items.values())
    return {f: {"student": build_student(root / f, family=f, seed=0), "items": items, "matched": matched}
            for f in FAMILIES}


class GradientProbe(TrainerCallback):
    """Sums |grad| of the vision tower, the language model, DeepStack mergers and linear-attention layers
    before each optimizer step."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        sums = {"vision": 0.0, "language": 0.0, "deepstack": 0.0, "linear": 0.0}
        for name, p in getattr(model, "module", model).named_parameters():
            if p.grad is None:
                continue
            part = ("deepstack" if "deepstack" in name else "vision" if ".visual." in name
                    else "language" if "language_model" in name else None)
            if part:
                sums[part] += float(p.grad.abs().sum())
            if ".linear_attn." in name:
                sums["linear"] += float(p.grad.abs().sum())
        self.steps.append(sums)


def _assert_both_learn(probe: GradientProbe, family: str) -> None:
    assert probe.steps, "no optimizer step ran"
    for sums in probe.steps:
        assert sums["vision"] > 0 and sums["language"] > 0, sums
        if family == "qwen3_vl":
            assert sums["deepstack"] > 0, sums
        if family == "qwen3_5":
            assert sums["linear"] > 0, sums


@pytest.mark.parametrize("family", FAMILIES)
def test_multi_sample_sft(envs, tmp_path, family):
    probe = GradientProbe()
    trainer = sft_trainer(envs[family], tmp_path, max_steps=2, save_steps=10)
    trainer.add_callback(probe)
    trainer.train()
    _assert_both_learn(probe, family)


def _adversarial(env, out, probe, visd: dict | None = None):
    signal = None
    if visd is not None:
        from rmsd.train.visd import StructuredSignal

        def signal(model, cfg):
            return StructuredSignal.from_config(VISDConfig(enabled=True, **visd), RuleJudge(), model, total_steps=2)
    return adversarial_trainer(env, out, benchmark=get_benchmark("synthvid"), callbacks=[probe], visd=signal,
                               max_completion_length=10, save_steps=10,
                               reward_weights={"discriminator": 1.0, "correctness": 1.0, "format": 0.5})


@pytest.mark.parametrize("family", FAMILIES)
def test_adversarial_stage_with_a_discriminator_from_the_text_backbone(envs, tmp_path, family):
    probe = GradientProbe()
    trainer = _adversarial(envs[family], tmp_path, probe)
    disc_before = [p.detach().clone() for p in trainer.adversary.disc.parameters()]
    trainer.train()
    _assert_both_learn(probe, family)
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, trainer.adversary.disc.parameters(), strict=True))


@pytest.mark.parametrize("family", FAMILIES)
def test_visd_with_ema_teacher_and_privileged_prompt(envs, tmp_path, family):
    probe = GradientProbe()
    trainer = _adversarial(envs[family], tmp_path, probe, visd={"lam": 0.5, "ema_decay": 0.5})
    trainer.train()
    _assert_both_learn(probe, family)
    assert trainer.visd.teacher.num_updates == 2
    assert any(p is not None and "A reviewer checked" in p for p in trainer.visd.last_prompts)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_qwen3_shared_prefix_equals_the_naive_forward(envs, family):
    """Qwen3-VL: timestamps inside the vision block, DeepStack features, its own 3-D positions;
    Qwen3.5: the same prompt side, and linear-attention layers carrying their states across the cut."""
    from trl.trainer.utils import add_fused_lm_head

    from rmsd.models import shared_prefix
    from rmsd.models.processing import load_student
    from rmsd.train.collate import MultiSampleCollator, item_vision, vision_kwargs
    from rmsd.train.sft_trainer import sft_rows

    env = envs[family]
    model, processor = load_student(env["student"])
    add_fused_lm_head(model)
    shared_prefix.enable(model)
    model.train()
    batch = MultiSampleCollator(processor, env["items"], max_length=512)(sft_rows(env["matched"], None, "matched"))
    rows, keys = item_vision(batch), batch["item_index"].tolist()
    ids, mask, labels, types = batch["input_ids"], batch["attention_mask"], batch["labels"], batch["mm_token_type_ids"]
    outputs = []
    for shared in (False, True):
        model.zero_grad()
        if shared:
            split = shared_prefix.plan_split(ids, mask, (labels != -100).int().argmax(1) - 1, keys, types)
            out = shared_prefix.shared_forward(model, ids, mask, labels, split, rows, types)
            logps = out["log_probs"]
        else:
            logps = model(input_ids=ids, attention_mask=mask, mm_token_type_ids=types, labels=labels,
                          fused_lm_head=True, use_cache=False, **vision_kwargs(model, rows, keys)).log_probs
        logps.sum().backward()
        outputs.append((logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (naive, g_naive), (shared, g_shared) = outputs
    assert (naive - shared).abs().max() <= 1e-5 and naive.abs().sum() > 0
    assert g_naive.keys() == g_shared.keys()
    assert any(("deepstack" if family == "qwen3_vl" else "linear_attn") in n for n in g_naive)
    for name, grad in g_naive.items():
        assert float((g_shared[name] - grad).norm() / grad.norm().clamp(min=1e-12)) <= 1e-4, name


def _moved(before: dict, model) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_sft_then_adversarial_with_a_lora_discriminator(envs, tmp_path, family):
    """student.lora with the vision tower adapted: only adapters move, D is an adapter of the same base."""
    from rmsd.models import lora

    settings = {"r": 4, "alpha": 8.0, "vision": "adapted"}
    if family == "qwen3_5":  # the linear-attention layers' projections too (the default targets miss them)
        from rmsd.config import LORA_TARGETS

        settings["target_modules"] = [*LORA_TARGETS, "in_proj_qkv", "in_proj_z", "out_proj"]
    sft = sft_trainer(envs[family], tmp_path / "sft", lora=settings, max_steps=1, save_steps=10)
    before = {n: p.detach().clone() for n, p in sft.model.named_parameters()}
    sft.train()
    sft.save_model(str(tmp_path / "sft"))
    moved = _moved(before, sft.model)
    assert moved and moved <= set(lora.adapter_parameters(sft.model, lora.STUDENT))
    assert any(".visual." in n for n in moved) and any("language_model" in n for n in moved)
    if family == "qwen3_vl":
        assert any("deepstack" in n for n in moved)
    if family == "qwen3_5":
        assert any(".linear_attn.in_proj_qkv" in n for n in moved)

    env = {**envs[family], "student": tmp_path / "sft"}  # the adversarial stage continues the SFT adapters
    adv = adversarial_trainer(env, tmp_path / "adv", lora=settings, discriminator="lora", save_steps=10,
                              max_completion_length=10, benchmark=get_benchmark("synthvid"),
                              reward_weights={"discriminator": 1.0, "correctness": 1.0, "format": 0.5})
    student = lora.adapter_parameters(adv.model, lora.STUDENT)
    assert all(torch.equal(student[n], sft.model.get_parameter(n)) for n in student)
    before = {n: p.detach().clone() for n, p in adv.model.named_parameters()}
    adv.train()
    moved = _moved(before, adv.model)
    assert moved & set(student) and moved & set(adv.adversary.disc.adapter())
    assert not {n for n in moved if ".lora_" not in n}, "a base weight moved"


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_the_discriminator_reads_each_prompt_once_like_whole_sequences(envs, family):
    """D's shared-prompt forward on the text backbone of each newer family: the same scores and gradients as
    whole sequences (Qwen3.5: the prompt's linear-attention states carried into every reply)."""
    from rmsd.models.processing import encode, load_student
    from rmsd.train.discriminator import Adversary, Discriminator, TeacherSamples

    model, processor = load_student(envs[family]["student"])
    disc = Discriminator.from_student(model)
    adversary = Adversary(disc, processor, TeacherSamples({}, {}), lr=1e-4, weight_decay=0.0, max_grad_norm=1.0,
                          max_response_tokens=None, rollouts_per_item=None, system=None, seed=0)
    first, second = list(envs[family]["items"].values())[:2]
    prompts = [first.prompt] * 3 + [second.prompt] * 2
    replies = ["<think>a</think><answer>(A)</answer>", "short", "<think>it moves left, then stops</think>", "2",
               "<think>two objects</think><answer>2</answer>"]
    shared = adversary.inputs(prompts, replies)
    assert shared["prefix_ids"].size(0) == 2
    whole = encode(processor, prompts, None, responses=replies)
    plain = {"input_ids": whole["input_ids"], "attention_mask": whole["attention_mask"],
             "score_index": whole["attention_mask"].sum(1) - 1}
    results = []
    for inputs in (shared, plain):
        disc.zero_grad()
        scores = disc(**inputs)
        scores.square().sum().backward()
        results.append((scores.detach(), [p.grad.clone() for p in disc.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # float32 sums taken in another order


def test_one_token_continuations_of_a_hybrid_model_start_from_the_prompts_states(envs):
    """Qwen3.5 with one-token continuations: the linear layers take their one-step (recurrent) kernel from the
    handed-over state, never the in-place decode update; D's scores equal whole sequences."""
    from rmsd.models.processing import load_student
    from rmsd.train.discriminator import Discriminator

    model, processor = load_student(envs["qwen3_5"]["student"])
    disc = Discriminator.from_student(model)
    prompts = processor.tokenizer(["What colour is it?", "Which way does the red square move?"],
                                  add_special_tokens=False)["input_ids"]
    width = max(map(len, prompts))
    prefix_ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    prefix_mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    replies, row_prefix = torch.tensor([[5], [7], [9]]), torch.tensor([0, 0, 1])
    shared = disc(replies, torch.ones_like(replies), torch.zeros(3, dtype=torch.long), prefix_ids, prefix_mask,
                  row_prefix)
    whole = [prompts[g] + r for g, r in zip(row_prefix.tolist(), replies.tolist(), strict=True)]
    ids = torch.tensor([w + [0] * (width + 1 - len(w)) for w in whole])
    mask = torch.tensor([[1] * len(w) + [0] * (width + 1 - len(w)) for w in whole])
    torch.testing.assert_close(shared, disc(ids, mask, mask.sum(1) - 1), rtol=1e-5, atol=1e-5)
