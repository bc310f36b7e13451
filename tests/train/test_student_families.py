"""Every training stage on a tiny student of each family: the vision tower and the language model both learn.

A few real steps of each TRL trainer (multi-sample SFT with two samples per item, the
adversarial stage with its discriminator, VISD with the EMA teacher and the privileged
prompt) on synthvid clips; gradients are read just before each optimizer step. Qwen3-VL
stages that do not run yet are strict xfails whose reason names the function in rmsd/train
that needs a change and the helper of rmsd.models.family that provides it.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from rmsd.config import VISDConfig
from rmsd.data.benchmarks import get_benchmark
from rmsd.judge.rules import RuleJudge
from rmsd.models.processing import load_student

FAMILIES = ("qwen2_5_vl", "qwen3_vl")
DEEPSTACK = ("rmsd.train.collate.vision_kwargs shares one encoding per clip but re-indexes only pooler_output; "
             "Qwen3-VL's deepstack_features keep one entry per distinct clip, so the DeepStack layers get fewer "
             "rows than visual positions (use rmsd.models.family.select_encoder_outputs)")
VISD_SPAN = ("rmsd.train.visd._expand_placeholders copies placeholder runs only; Qwen3-VL's clip is a block of "
             "<t seconds><|vision_start|>pads<|vision_end|> per frame pair, so the privileged prompt has one "
             "36-token run where get_rope_index expects four 9-token frames (use "
             "rmsd.models.family.copy_vision_span)")


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
    from rmsd.data.benchmarks.synthvid import load_items
    from rmsd.data.synthvid import generate
    from rmsd.models.tiny import build_student

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("families")
    generate(root / "data", n=4, seed=0)
    items = {it.item_id: it for it in load_items(root / "data", split="train")}
    matched = _matched(items.values())
    return {f: {"student": build_student(root / f, family=f, seed=0), "items": items, "matched": matched}
            for f in FAMILIES}


class GradientProbe(TrainerCallback):
    """Sums |grad| of the vision tower, the language model and DeepStack mergers before each optimizer step."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        sums = {"vision": 0.0, "language": 0.0, "deepstack": 0.0}
        for name, p in getattr(model, "module", model).named_parameters():
            if p.grad is None:
                continue
            part = ("deepstack" if "deepstack" in name else "vision" if ".visual." in name
                    else "language" if "language_model" in name else None)
            if part:
                sums[part] += float(p.grad.abs().sum())
        self.steps.append(sums)


def _assert_both_learn(probe: GradientProbe, family: str) -> None:
    assert probe.steps, "no optimizer step ran"
    for sums in probe.steps:
        assert sums["vision"] > 0 and sums["language"] > 0, sums
        if family == "qwen3_vl":
            assert sums["deepstack"] > 0, sums


def _xfail_qwen3(reason: str):
    return [pytest.param("qwen2_5_vl"), pytest.param("qwen3_vl", marks=pytest.mark.xfail(strict=True, reason=reason))]


def _common(out) -> dict:
    return dict(output_dir=str(out), max_steps=2, learning_rate=1e-3, logging_steps=1, save_steps=10,
                use_cpu=True, bf16=False, report_to="none", disable_tqdm=True, seed=0)


@pytest.mark.parametrize("family", _xfail_qwen3(DEEPSTACK))
def test_multi_sample_sft(envs, tmp_path, family):
    from rmsd.train.sft_trainer import MultiSampleSFTConfig, MultiSampleSFTTrainer, sft_rows

    env = envs[family]
    model, processor = load_student(env["student"])
    probe = GradientProbe()
    args = MultiSampleSFTConfig(**_common(tmp_path), per_device_train_batch_size=2, max_length=256)
    trainer = MultiSampleSFTTrainer(model, args, Dataset.from_list(sft_rows(env["matched"])), processor,
                                    env["items"], callbacks=[probe])
    trainer.train()
    _assert_both_learn(probe, family)


def _adversarial(env, out, probe, visd: dict | None = None):
    from rmsd.train.adversarial_trainer import AdversarialConfig, AdversarialTrainer
    from rmsd.train.discriminator import TeacherSamples

    model, processor = load_student(env["student"])
    teacher = TeacherSamples.from_matched(env["matched"])
    args = AdversarialConfig(**_common(out), per_device_train_batch_size=4, num_generations=2,
                             max_completion_length=10, disc_lr=1e-3,
                             rewards={"discriminator": 1.0, "correctness": 1.0, "format": 0.5})
    signal = None
    if visd is not None:
        from rmsd.train.visd import StructuredSignal

        signal = StructuredSignal.from_config(VISDConfig(enabled=True, **visd), RuleJudge(), model, total_steps=2)
    dataset = Dataset.from_list([{"prompt": env["items"][i].prompt, "item_id": i} for i in teacher.texts])
    return AdversarialTrainer(model, args, dataset, processor, env["items"], teacher_samples=teacher,
                              benchmark=get_benchmark("synthvid"), callbacks=[probe], visd=signal)


@pytest.mark.parametrize("family", _xfail_qwen3(DEEPSTACK))
def test_adversarial_stage_with_a_discriminator_from_the_text_backbone(envs, tmp_path, family):
    probe = GradientProbe()
    trainer = _adversarial(envs[family], tmp_path, probe)
    disc_before = [p.detach().clone() for p in trainer.adversary.disc.parameters()]
    trainer.train()
    _assert_both_learn(probe, family)
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, trainer.adversary.disc.parameters(), strict=True))


@pytest.mark.parametrize("family", _xfail_qwen3(f"{DEEPSTACK}; and {VISD_SPAN}"))
def test_visd_with_ema_teacher_and_privileged_prompt(envs, tmp_path, family):
    probe = GradientProbe()
    trainer = _adversarial(envs[family], tmp_path, probe, visd={"lam": 0.5, "ema_decay": 0.5})
    trainer.train()
    _assert_both_learn(probe, family)
    assert trainer.visd.teacher.num_updates == 2
    assert any(p is not None and "A reviewer checked" in p for p in trainer.visd.last_prompts)
