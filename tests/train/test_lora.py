"""LoRA students (student.lora): only adapters train, D and the EMA teacher are adapters on the student's base
and never touch each other, the reference is the base, resume is exact, stages continue the adapters, and
the merged export equals the adapter model (tiny Qwen2.5-VL student, 1-2 real steps each; both stages and the
export on a tiny Qwen3.5 student too)."""

from __future__ import annotations

import pytest
import torch
from trainers import ADVERSARIAL_TEST, SFT_TEST, adversarial_trainer, load, sft_trainer
from transformers import TrainerCallback

from rmsd.config import VISDConfig
from rmsd.datasets import get_benchmark
from rmsd.judge.rules import RuleJudge
from rmsd.models import lora
from rmsd.train.discriminator import DISC_ADAPTER, AdapterDiscriminator
from rmsd.train.ema import TEACHER_ADAPTER, AdapterEMATeacher
from rmsd.train.visd import StructuredSignal

LORA = {"r": 4, "alpha": 8.0, "dropout": 0.05}
REWARDS = {"discriminator": 1.0, "correctness": 1.0, "format": 0.5}


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
def env(make_env):
    return make_env(n=4, seed=0, matched=_matched)


def _visd(model, cfg):
    return StructuredSignal.from_config(VISDConfig(enabled=True, lam=0.5, ema_decay=0.5), RuleJudge(), model,
                                        total_steps=cfg.max_steps)


def _adversarial(env, out, **kw):
    kw = {"lora": LORA, "discriminator": "lora", "benchmark": get_benchmark("synthvid"), "reward_weights": REWARDS,
          "max_completion_length": 10, **kw}
    return adversarial_trainer(env, out, **kw)


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in getattr(model, "module", model).named_parameters()}


def _changed(before: dict, after: dict) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}


@pytest.mark.parametrize("vision", ["frozen", "adapted"])
def test_a_lora_sft_step_trains_only_the_adapters(env, tmp_path, vision):
    trainer = sft_trainer(env, tmp_path, lora={**LORA, "vision": vision}, max_steps=2, save_steps=10)
    model = trainer.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lora.adapter_parameters(model, lora.STUDENT))
    before = _params(model)
    trainer.train()
    changed = _changed(before, _params(model))
    assert changed and changed <= trainable, "a frozen base weight moved"
    vision_adapters = {n for n in changed if ".visual." in n}
    if vision == "frozen":
        assert not vision_adapters and not any(".visual." in n for n in trainable)
    else:  # the tower's blocks and its merger learn through their adapters
        assert any(".blocks." in n for n in vision_adapters) and any(".merger." in n for n in vision_adapters)


def _groups(trainer) -> dict[str, dict[str, torch.Tensor]]:
    model = trainer.accelerator.unwrap_model(trainer.model)
    disc = trainer.adversary.disc
    return {"base": {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" not in n},
            "student": {n: p.detach().clone() for n, p in lora.adapter_parameters(model, lora.STUDENT).items()},
            "discriminator": {n: p.detach().clone() for n, p in disc.weights().items()}}


class _AroundStudentSteps(TrainerCallback):
    """Every party's tensors just before and just after each optimizer step of the student."""

    def __init__(self, trainer_ref: list):
        self.trainer_ref, self.pairs, self._before = trainer_ref, [], None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._before = _groups(self.trainer_ref[0])

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.pairs.append((self._before, _groups(self.trainer_ref[0])))


def test_discriminator_and_student_steps_never_touch_each_others_adapters_or_the_base(env, tmp_path):
    """With gradient checkpointing on, so D's backward recomputes its layers on the shared base too."""
    ref: list = []
    around = _AroundStudentSteps(ref)
    checkpointing = {"activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False}}
    trainer = _adversarial(env, tmp_path, callbacks=[around], save_steps=100, trl=checkpointing)
    ref.append(trainer)
    disc = trainer.adversary.disc
    assert isinstance(disc, AdapterDiscriminator) and DISC_ADAPTER in trainer.model.peft_config
    assert not any(isinstance(m, torch.nn.Module) and m is trainer.model for m in disc.modules())  # no second backbone
    d_steps = []
    update = trainer.adversary.update

    def spy():
        before = _groups(trainer)
        metrics = update()
        d_steps.append((before, _groups(trainer)))
        return metrics

    trainer.adversary.update = spy
    trainer.train()
    student_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not student_optimizer & {id(p) for p in disc.trainable_parameters()}

    assert len(d_steps) == 2 and len(around.pairs) == 2
    for before, after in d_steps:  # D's step: its adapter and head move, nothing of the student does
        assert before["base"].keys() == after["base"].keys() and not _changed(before["base"], after["base"])
        assert not _changed(before["student"], after["student"])
        assert _changed(before["discriminator"], after["discriminator"])
    for before, after in around.pairs:  # the student's step: its adapter moves, D and the base do not
        assert not _changed(before["base"], after["base"])
        assert not _changed(before["discriminator"], after["discriminator"])
    assert any(_changed(b["student"], a["student"]) for b, a in around.pairs)
    assert trainer.model.active_adapter == lora.STUDENT


def test_lora_discriminator_reads_each_prompt_once_like_whole_sequences(env):
    """The shared-prompt forward with D's adapter active: same scores, same adapter gradients as whole sequences."""
    from rmsd.models.processing import encode
    from rmsd.train.discriminator import Adversary, TeacherSamples

    model, processor = load(env, LORA)
    disc = AdapterDiscriminator(model)
    with torch.no_grad():  # a non-zero adapter, so its gradients are not trivially equal
        for p in disc.adapter().values():
            p.normal_(0.0, 0.05)
    adversary = Adversary(disc, processor, TeacherSamples({}, {}), lr=1e-4, weight_decay=0.0, max_grad_norm=1.0,
                          max_response_tokens=None, rollouts_per_item=None, system=None, seed=0)
    first, second = list(env["items"].values())[:2]
    prompts = [first.prompt] * 3 + [second.prompt] * 2
    replies = ["<think>a</think><answer>(A)</answer>", "short", "<think>it moves left</think>", "2", "<answer>2</answer>"]
    shared = adversary.inputs(prompts, replies)
    assert shared["prefix_ids"].size(0) == 2
    whole = encode(processor, prompts, None, responses=replies)
    plain = {"input_ids": whole["input_ids"], "attention_mask": whole["attention_mask"],
             "score_index": whole["attention_mask"].sum(1) - 1}
    results = []
    for inputs in (shared, plain):
        for p in disc.trainable_parameters():
            p.grad = None
        scores = disc(**inputs)
        with disc.active():
            scores.square().sum().backward()
        results.append((scores.detach(), [p.grad.clone() for p in disc.trainable_parameters()]))
        assert all(p.grad is None for p in lora.adapter_parameters(model, lora.STUDENT).values())
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_a_fresh_adapters_reference_is_the_base_with_adapters_disabled(env, tmp_path):
    trainer = _adversarial(env, tmp_path, beta=0.1, save_steps=100)
    assert trainer.ref_model is None and "ref" not in trainer.model.peft_config  # no copy of model or adapter
    trainer.train()
    kl = [h["kl"] for h in trainer.state.log_history if "kl" in h]
    assert len(kl) == 2 and kl[0] < 1e-3 and kl[1] > kl[0]  # starts at the base (only LoRA dropout differs)


def _snapshot(trainer) -> dict:
    model = trainer.accelerator.unwrap_model(trainer.model)
    adversary, teacher = trainer.adversary, trainer.visd.teacher
    return {"student": {n: p.detach().clone() for n, p in lora.adapter_parameters(model, lora.STUDENT).items()},
            "discriminator": {n: p.detach().clone() for n, p in adversary.disc.weights().items()},
            "teacher": {n: p.detach().clone() for n, p in teacher.state_dict()["model"].items()},
            "teacher_updates": teacher.num_updates, "rng": adversary.rng.getstate(),
            "disc_optimizer": [t.clone() for s in adversary.optimizer.state.values() for t in s.values()]}


class _OnSave(TrainerCallback):
    def __init__(self, ref):
        self.ref, self.saved = ref, {}

    def on_save(self, args, state, control, **kwargs):
        self.saved[state.global_step] = _snapshot(self.ref[0])


def _same(a: dict, b: dict) -> bool:
    return (a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a))


def test_resume_restores_the_adapters_the_lora_discriminator_and_the_ema_teacher_exactly(env, tmp_path):
    ref: list = []
    on_save = _OnSave(ref)
    run = tmp_path / "run"
    trainer = _adversarial(env, run, visd=_visd, callbacks=[on_save])
    ref.append(trainer)
    assert isinstance(trainer.visd.teacher, AdapterEMATeacher) and trainer.visd.teacher.model is trainer.model
    trainer.train()
    saved = on_save.saved[1]
    ckpt = run / "checkpoint-1"
    for folder in (DISC_ADAPTER, TEACHER_ADAPTER):  # peft's own adapter folders, beside rmsd's state
        assert (ckpt / folder / "adapter_model.safetensors").is_file()
    assert saved["teacher_updates"] == 1

    resumed = _adversarial(env, run, visd=_visd)
    fresh = _snapshot(resumed)
    assert not _same(fresh["student"], saved["student"]) and not _same(fresh["discriminator"], saved["discriminator"])
    assert not _same(fresh["teacher"], saved["teacher"])
    # what train(resume_from_checkpoint=...) runs before its first step: transformers restores the peft adapters
    # (the student's, and from their subfolders D's and the teacher's), rmsd's hook D's head, optimizer and rng and
    # the teacher's update count
    resumed._load_from_checkpoint(str(ckpt))
    resumed.create_optimizer_and_scheduler(num_training_steps=2)
    resumed._load_optimizer_and_scheduler(str(ckpt))
    back = _snapshot(resumed)
    for part in ("student", "discriminator", "teacher"):
        assert _same(back[part], saved[part]), part
    assert back["teacher_updates"] == 1 and back["rng"] == saved["rng"]
    assert len(back["disc_optimizer"]) == len(saved["disc_optimizer"]) > 0
    assert all(torch.equal(a, b) for a, b in zip(back["disc_optimizer"], saved["disc_optimizer"], strict=True))


def _run_two_lora_stages(env, out, settings=None):
    from rmsd.config import AdversarialStageConfig, DatasetConfig, SFTStageConfig, StudentConfig
    from rmsd.train.distill import DistillContext, run_stages

    ctx = DistillContext(items=env["items"], matched=env["matched"], out=out,
                         dataset=DatasetConfig(benchmark="synthvid", path=str(env["root"] / "data")),
                         student=StudentConfig(path=str(env["student"]), lora=settings or LORA), report_to=[],
                         shared_prefix=True, benchmark=get_benchmark("synthvid"), progress=False)
    sft = SFTStageConfig(**{**SFT_TEST, "max_steps": 1})
    adversarial = AdversarialStageConfig(enabled=True, **{**ADVERSARIAL_TEST, "max_steps": 1, "beta": 0.1,
                                                          "discriminator": "lora", "max_completion_length": 10})
    return run_stages(sft, adversarial, ctx, env["student"]), (sft, adversarial, ctx)


def test_stages_continue_the_adapters_and_the_merged_export_equals_them(env, tmp_path):
    from safetensors.torch import load_file

    from rmsd.train.distill import run_stages

    done, (sft, adversarial, ctx) = _run_two_lora_stages(env, tmp_path / "out")
    for stage in ("sft", "adversarial"):
        assert lora.is_adapter_folder(done[stage]) and lora.base_of(done[stage]) == env["student"].resolve()
    # the adversarial stage went on from the SFT stage's adapters: TRL's frozen copy of its start is exactly them
    start = load_file(str(done["sft"] / "adapter_model.safetensors"))
    ref = load_file(str(done["adversarial"] / "ref" / "adapter_model.safetensors"))
    assert start.keys() == ref.keys() and all(torch.equal(start[k], ref[k]) for k in start)
    assert any(not k.endswith("lora_A.weight") and start[k].abs().sum() > 0 for k in start)  # trained, not fresh
    ctx.resume = True  # finished LoRA stages are recognised and skipped
    assert run_stages(sft, adversarial, ctx, env["student"]) == done
    _merged_export_equals_adapters(env, done, tmp_path)


def test_a_qwen3_5_student_runs_both_lora_stages_and_its_merged_export_equals_them(make_env, tmp_path):
    """The hybrid family end to end: LoRA SFT, then the adversarial stage with a LoRA discriminator and a
    reference, the linear-attention projections adapted too, and `rmsd export --merge`."""
    from safetensors.torch import load_file

    from rmsd.config import LORA_TARGETS

    env = make_env(n=4, seed=0, matched=_matched, family="qwen3_5")
    settings = {**LORA, "target_modules": [*LORA_TARGETS, "in_proj_qkv", "in_proj_z", "out_proj"]}
    done, _ = _run_two_lora_stages(env, tmp_path / "out", settings)
    adapters = load_file(str(done["adversarial"] / "adapter_model.safetensors"))
    assert any(".linear_attn.in_proj_qkv." in k for k in adapters)
    # float32 rounding of W + BA, amplified by the linear layers' chunked triangular solves: 1.7e-5 seen
    _merged_export_equals_adapters(env, done, tmp_path, atol=5e-5)


def _merged_export_equals_adapters(env, done, tmp_path, atol=1e-5):
    """`rmsd export --merge` of the adversarial stage's adapters gives the adapter model's logits."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from typer.testing import CliRunner

    from rmsd.cli import app
    from rmsd.models.processing import encode, load_student, to_model

    merged = tmp_path / "merged"
    result = CliRunner().invoke(app, ["export", "--model", str(done["adversarial"]), "--merge", "--out", str(merged)])
    assert result.exit_code == 0, result.output
    plain = AutoModelForImageTextToText.from_pretrained(merged).eval()
    processor = AutoProcessor.from_pretrained(merged)
    adapted = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(env["student"]),
                                        done["adversarial"]).eval()
    from rmsd.media.video import load_media

    item = next(iter(env["items"].values()))
    frames, _ = load_media(item, 8, None)
    batch = to_model(encode(processor, [item.prompt], [frames], responses=["<answer>(A)</answer>"]), plain)
    with torch.no_grad():
        a, b, base = adapted(**batch).logits, plain(**batch).logits, load_student(env["student"])[0](**batch).logits
    torch.testing.assert_close(b, a, rtol=1e-5, atol=atol)
    assert (a - base).abs().max() > 1e-4  # the adapters changed the model, so the match means something
    bad = CliRunner().invoke(app, ["export", "--model", str(merged), "--merge", "--out", str(tmp_path / "again")])
    assert bad.exit_code == 2 and "no LoRA adapters there" in bad.output


def test_rmsd_eval_reads_an_adapter_folder_and_its_merged_export_alike(env, tmp_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from rmsd.cli import app

    trainer = sft_trainer(env, tmp_path / "sft", lora=LORA, max_steps=1, save_steps=10)
    trainer.train()
    trainer.save_model(str(tmp_path / "sft"))
    runner = CliRunner()
    assert runner.invoke(app, ["export", "--model", str(tmp_path / "sft"), "--merge", "--out",
                               str(tmp_path / "merged")]).exit_code == 0
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "lora-eval", "student": {"path": str(env["student"])},
                                      "dataset": {"benchmark": "synthvid", "path": str(env["root"] / "data"),
                                                  "eval_split": "train"},
                                      "eval": {"limit": 2, "max_new_tokens": 6, "batch_size": 2}}))
    predictions = []
    for model in ("sft", "merged"):
        out = tmp_path / f"eval-{model}"
        result = runner.invoke(app, ["eval", "--recipe", str(recipe), "--model", str(tmp_path / model), "--out",
                                     str(out)])
        assert result.exit_code == 0, result.output
        files = sorted(out.glob("*.jsonl"))
        assert files, list(out.iterdir())
        predictions.append([json.loads(line)["response"] for line in files[0].read_text().splitlines()])
    assert predictions[0] == predictions[1] and len(predictions[0]) == 2


def test_under_gradient_checkpointing_the_discriminators_backward_recomputes_with_its_own_adapter(env):
    """A checkpointed layer recomputes in the backward pass with the adapter active then: D's backward must run
    with D's adapter (`disc.active()`, as `Adversary.update` does), or its gradients are the student's layers'."""
    from rmsd.models.processing import encode

    model, processor = load(env, LORA)
    disc = AdapterDiscriminator(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the student's adapter and D's differ
        for p in [*lora.adapter_parameters(model, lora.STUDENT).values(), *disc.adapter().values()]:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model.train()
    item = next(iter(env["items"].values()))
    batch = encode(processor, [item.prompt] * 2, None, responses=["<answer>(A)</answer>", "no"])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "score_index": batch["attention_mask"].sum(1) - 1}

    def grads(checkpointing: bool, backward_as_d: bool) -> list[torch.Tensor]:
        if checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
        for p in disc.trainable_parameters():
            p.grad = None
        scores = disc(**inputs)
        with disc.active() if backward_as_d else lora.use_adapter(model, lora.STUDENT):
            scores.square().sum().backward()
        return [p.grad.clone() for p in disc.trainable_parameters()]

    plain = grads(checkpointing=False, backward_as_d=True)
    right = grads(checkpointing=True, backward_as_d=True)
    for a, b in zip(plain, right, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    try:  # the student's adapter in the recomputation: torch notices the layers changed, or the gradients are off
        wrong = grads(checkpointing=True, backward_as_d=False)
    except torch.utils.checkpoint.CheckpointError:
        return
    assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(plain, wrong, strict=True))
