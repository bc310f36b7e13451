"""`rmsd distill`: run a recipe's training stages in order, each a TRL trainer, each a checkpoint.

setup (items, matched samples, student) → stage `sft` (multi-sample weighted SFT,
`rmsd.train.sft_trainer`) → stage `adversarial` (GRPO against a discriminator, starting
from the SFT checkpoint, `rmsd.train.adversarial_trainer`). Each enabled stage writes a
`from_pretrained` folder (model + processor) to `OUT/<stage>`, with its resume points in
`OUT/<stage>/checkpoint-N` and its logs in `OUT/<stage>/runs` (TensorBoard by default,
any `report_to` integration transformers knows). A finished stage leaves
`OUT/<stage>/stage.json`; with `resume=True` a finished stage is skipped and a killed one
continues from its last complete checkpoint (model, optimizers, rng, step, and for the
adversarial stage the discriminator) — both only when the inputs they recorded
(`OUT/<stage>/fingerprint.json`, written when the stage starts, and stage.json; see
`rmsd.fingerprint`) equal the ones asked for. A stage trained with other inputs (another
`max_steps`, `lr`, matched set, student) is trained again from the start, saying what differs:
never returned as finished, never resumed from another configuration's checkpoints.

With `student.lora` every stage trains LoRA adapters (`rmsd.models.lora`): `OUT/<stage>` is then
a peft adapter folder on the student's base checkpoint (and `checkpoint-N` too), and the
adversarial stage goes on training the adapters the SFT stage left (no merge in between);
`rmsd export --model OUT/<stage> --merge --out DIR` writes the merged `from_pretrained` folder.

Batch sizes are per process: under `accelerate launch --num_processes N` a step sees N
times `batch_size` items. Unlike a plain script, the student is built once (main process
first) and every stage reads the previous one from disk, so a stage can be re-run alone.

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
    accelerate launch --multi_gpu --num_processes 2 -m rmsd.cli distill --recipe R --matched DIR
    (on a CPU-only machine that starts two gloo processes; `accelerate launch --cpu` starts one)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmsd.config import AdversarialStageConfig, DatasetConfig, SFTStageConfig, StudentConfig, TrainCommon
from rmsd.datasets.benchmark import Benchmark
from rmsd.errors import RmsdError
from rmsd.fingerprint import recipe_section
from rmsd.items import Item
from rmsd.models import lora
from rmsd.train.model_card import write_card
from rmsd.train.progress import StageProgress, stage_label
from rmsd.train.resume import STAGE_FILE, clear_stage, resume_point


@dataclass
class DistillContext:
    """What every stage reads: the data, how to load the student, where to write, how to log."""

    items: Mapping[str, Item]
    matched: list[dict[str, Any]]
    out: Path
    dataset: DatasetConfig
    student: StudentConfig
    report_to: list[str]
    shared_prefix: bool
    resume: bool = False
    benchmark: Benchmark | None = None
    callbacks: list[Any] = field(default_factory=list)
    pool: Any = None  # the recipe's teacher pool (PoolConfig), required by an LLM judge
    progress: bool = True  # a bar (terminal) or plain lines (log) per stage instead of printed log dicts
    card: Any = None  # rmsd.train.model_card.CardInfo: every stage folder gets a model card
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per stage (rmsd.fingerprint.training_inputs)
    recipe: str | None = None  # the recipe's name, recorded as the stage folder's owner
    note: Callable[[str], None] = print  # "sft: resuming from ...", "sft: up to date", "sft: training again: ..."
    report: dict[str, dict[str, Any]] = field(default_factory=dict)  # filled per stage: status, why, seconds


def stage_inputs(stage: str, cfg: TrainCommon, ctx: DistillContext) -> dict[str, Any]:
    """The inputs a stage records: the pipeline's (data, student, recipe keys), else its own config alone."""
    return ctx.inputs.get(stage) or {"stage": stage, "recipe": {f"distill.{stage}": recipe_section(cfg)}}


def run_stages(sft: SFTStageConfig, adversarial: AdversarialStageConfig, ctx: DistillContext,
               student: Path) -> dict[str, Path]:
    """sft → adversarial, each starting from the previous stage's checkpoint."""
    if not (sft.enabled or adversarial.enabled):
        raise RmsdError("no stage is enabled: set distill.sft.enabled or distill.adversarial.enabled")
    done: dict[str, Path] = {}
    if sft.enabled:
        done["sft"] = student = run_stage("sft", sft, ctx, student)
    if adversarial.enabled:
        done["adversarial"] = run_stage("adversarial", adversarial, ctx, student)
    return done


def run_stage(stage: str, cfg: TrainCommon, ctx: DistillContext, student: Path) -> Path:
    """Train one stage from `student` into OUT/<stage>, resuming or skipping as `ctx.resume` and its inputs say."""
    from accelerate import PartialState

    out = ctx.out / stage
    inputs = stage_inputs(stage, cfg, ctx)
    checkpoint, stale = resume_point(out, ctx.resume, inputs)
    if checkpoint == "finished":
        ctx.report[stage] = {"status": "up to date", "seconds": 0.0}
        ctx.note(f"{stage}: up to date ({out}: trained with the same inputs)")
        return out
    if stale is not None:
        owner = _owner(out)
        if ctx.recipe and owner not in (None, "", ctx.recipe):  # another recipe's run: never overwritten
            raise RmsdError(f"{out} holds recipe {owner}'s {stage} stage, trained with other inputs: choose another "
                            "--out (distill.out)")
        ctx.note(f"{stage}: training again from the start: {stale}")
    elif checkpoint is not None:
        ctx.note(f"{stage}: resuming from {checkpoint} (its model, optimizer, scheduler and RNG states)")
    trainer = build_trainer(stage, cfg, ctx, student, out)
    state = PartialState()  # after the trainer: its arguments set the distributed backend up first
    if stale is not None:
        if state.is_main_process:
            clear_stage(out)
        state.wait_for_everyone()
    label = stage_label(stage, cfg)
    if ctx.progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(StageProgress(label))
    if state.is_main_process:  # before the first checkpoint: the checkpoints belong to these inputs
        from rmsd.fingerprint import write

        write(out, ctx.recipe or "", inputs)
        if ctx.card is not None:  # from the first step: a killed run has one too
            write_card(out, ctx.card, stage, label, cfg.model_dump(mode="json"))
    if checkpoint is not None and ctx.student.lora is None:
        restore_weights(trainer.model, Path(checkpoint))
    started = time.time()
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out))
    seconds = round(time.time() - started, 1)
    if state.is_main_process:
        if ctx.card is not None:  # again after save_model, in case anything rewrote it
            write_card(out, ctx.card, stage, label, cfg.model_dump(mode="json"))
        (out / STAGE_FILE).write_text(json.dumps({
            "stage": stage, "student": str(student), "global_step": trainer.state.global_step,
            "resumed_from": checkpoint, "seconds": seconds, "config": cfg.model_dump(), "recipe": ctx.recipe,
            "inputs": inputs,
        }, indent=2))
    ctx.report[stage] = {"status": "resumed" if checkpoint else "ran", "from": checkpoint, "why": stale,
                         "seconds": seconds}
    state.wait_for_everyone()  # the next stage loads this folder in every process
    del trainer
    return out


def _owner(out: Path) -> str | None:
    """The recipe whose run wrote a stage folder (its fingerprint.json), or None."""
    from rmsd.fingerprint import read

    record = read(out)
    return record.get("recipe") if record is not None else None


def restore_weights(model: Any, checkpoint: Path) -> None:
    """Load a checkpoint's weights into `model` as `from_pretrained` reads them (key names converted).

    transformers' Trainer resumes a full model by loading the checkpoint's safetensors into its state dict
    as they are, not strictly: the Qwen-VL families save under their checkpoint names
    (`model.embed_tokens.weight`) while the module holds `model.language_model.embed_tokens.weight`, so no
    key matches and the resumed stage would go on from the weights it started with (with the checkpoint's
    optimizer state and step). LoRA adapters load through peft and are not affected."""
    loaded = type(model).from_pretrained(str(checkpoint), dtype=next(model.parameters()).dtype)
    model.load_state_dict(loaded.state_dict())
    del loaded


# ----------------------------------------------------------------------------- stage builders
def build_trainer(stage: str, cfg: TrainCommon, ctx: DistillContext, student: Path, out: Path) -> Any:
    """The stage's trainer, ready to `train()`: the student loaded from `student`, writing to `out`."""
    if stage == "sft":
        return _sft_trainer(cfg, ctx, student, out)
    if stage == "adversarial":
        return _adversarial_trainer(cfg, ctx, student, out)
    raise ValueError(f"unknown stage {stage!r}")


def _inputs(ctx: DistillContext) -> Any:
    from rmsd.train.stage_inputs import StudentInputs

    return StudentInputs(num_frames=ctx.dataset.num_frames, max_side=ctx.dataset.max_side,
                         system=ctx.student.system_prompt, shared_prefix=ctx.shared_prefix)


def _run(ctx: DistillContext, out: Path) -> Any:
    from rmsd.train.trl_args import RunSettings

    return RunSettings(output_dir=out, device=ctx.student.device, dtype=ctx.student.dtype, report_to=ctx.report_to,
                       gradient_checkpointing=ctx.student.gradient_checkpointing)


def _load(ctx: DistillContext, student: Path) -> tuple[Any, Any]:
    return load_for_training(student, ctx.student)


def load_for_training(path: Path, student: StudentConfig) -> tuple[Any, Any]:
    """(model, processor) a stage trains: with student.lora a peft model whose adapters train (those of a
    previous LoRA stage, continued, or fresh ones); without it a plain model (a LoRA folder merged first)."""
    from rmsd.models.processing import load_student

    cfg = student.lora
    model, processor = load_student(path, device=student.device, dtype=student.dtype, max_pixels=student.max_pixels,
                                    merge_adapters=cfg is None)
    return (lora.adapt(model, cfg) if cfg is not None else model), processor


def _sft_trainer(cfg: SFTStageConfig, ctx: DistillContext, student: Path, out: Path) -> Any:
    from datasets import Dataset

    from rmsd.train.sft_trainer import MultiSampleSFTTrainer, sft_rows
    from rmsd.train.trl_args import sft_config

    rows = sft_rows(ctx.matched, cfg.samples_per_item, cfg.weighting, cfg.single_from)
    if not rows:
        raise RmsdError("the matched dataset has no usable sample for stage sft: check `rmsd match`'s report")
    model, processor = _load(ctx, student)
    return MultiSampleSFTTrainer(model, sft_config(cfg, _run(ctx, out)), Dataset.from_list(rows), processor,
                                 ctx.items, inputs=_inputs(ctx), callbacks=list(ctx.callbacks))


def _adversarial_trainer(cfg: AdversarialStageConfig, ctx: DistillContext, student: Path, out: Path) -> Any:
    from datasets import Dataset

    from rmsd.train.adversarial_trainer import AdversarialTrainer
    from rmsd.train.discriminator import TeacherSamples
    from rmsd.train.trl_args import grpo_config

    teacher = TeacherSamples.from_matched(ctx.matched)
    if "discriminator" in cfg.active_rewards():  # D needs a teacher sample of every item it sees
        ids = [i for i in teacher.texts if i in ctx.items]
    else:  # verifiable rewards only: every matched item with a ground truth to score against
        ids = [i for i in dict.fromkeys(r["item_id"] for r in ctx.matched)
               if i in ctx.items and ctx.items[i].answer is not None]
    if not ids:
        raise RmsdError("the matched dataset keeps no usable item for stage adversarial: check `rmsd match`'s report")
    args = grpo_config(cfg, _run(ctx, out))
    model, processor = _load(ctx, student)
    dataset = Dataset.from_list([{"prompt": ctx.items[i].prompt, "item_id": i} for i in ids])
    draws = max(1, cfg.max_steps * cfg.grad_accum // args.steps_per_generation)  # generation batches in the run
    visd = _structured_signal(cfg, ctx, model, out) if cfg.visd.enabled else None
    curriculum = None
    if cfg.visd.curriculum.enabled:
        from rmsd.train.curriculum import Curriculum, difficulty_from_matched

        curriculum = Curriculum.from_config(cfg.visd.curriculum, ids, difficulty_from_matched(ctx.matched),
                                            total_steps=draws, seed=cfg.seed)
    return AdversarialTrainer(model, args, dataset, processor, ctx.items, stage=cfg, inputs=_inputs(ctx),
                              teacher_samples=teacher, benchmark=ctx.benchmark, callbacks=list(ctx.callbacks),
                              visd=visd, curriculum=curriculum)


def _structured_signal(cfg: AdversarialStageConfig, ctx: DistillContext, model: Any, out: Path) -> Any:
    """The VISD signal: the recipe's judge and an EMA copy of the freshly loaded student."""
    from rmsd.train.visd import StructuredSignal

    v = cfg.visd
    if v.judge == "rules":
        from rmsd.judge.rules import RuleJudge

        judge = RuleJudge()
    else:
        from rmsd.judge.llm import LLMJudge

        # the recipe checked judge_teacher (VISDConfig); the pipeline loaded the pool it names (`pool:`)
        judge = LLMJudge.from_pool(ctx.pool, v.judge_teacher, cache_path=out / "judge_cache.jsonl")
    return StructuredSignal.from_config(v, judge, model, total_steps=cfg.max_steps)
