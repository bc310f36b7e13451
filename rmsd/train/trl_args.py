"""TRL's configs built from the recipe's stage models, field by field: the recipe is the one declaration.

Every training knob is declared, documented, defaulted and range-checked once, in the
recipe's stage model (`rmsd.config.SFTStageConfig`, `AdversarialStageConfig`). A TRL
config (`trl.SFTConfig`, `trl.GRPOConfig`) is then *built* from it: each recipe field is
either copied to the TRL field this module names (`SFT_TO_TRL`, `ADVERSARIAL_TO_TRL`), or
read by rmsd itself where `SFT_OWN` / `ADVERSARIAL_OWN` say; a test fails when a recipe
field is in neither or a named TRL field does not exist. What is the same for every stage
of a run (output folder, device and precision, loggers) comes in as `RunSettings`, and
what fixes how rmsd drives TRL (its own collator, checkpoints kept, no tqdm) is set here.

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmsd.config import AdversarialStageConfig, SFTStageConfig, TrainCommon

COMMON_TO_TRL = {
    "lr": "learning_rate", "max_steps": "max_steps", "grad_accum": "gradient_accumulation_steps",
    "warmup_steps": "warmup_steps", "weight_decay": "weight_decay", "max_grad_norm": "max_grad_norm",
    "seed": "seed", "logging_steps": "logging_steps", "save_steps": "save_steps",
}
SFT_TO_TRL = {**COMMON_TO_TRL, "batch_size": "per_device_train_batch_size", "max_length": "max_length"}
ADVERSARIAL_TO_TRL = {**COMMON_TO_TRL, "num_generations": "num_generations", "temperature": "temperature",
                      "max_completion_length": "max_completion_length", "beta": "beta", "epsilon": "epsilon"}
# Recipe fields rmsd reads itself, and where.
SFT_OWN = {
    "enabled": "rmsd.train.distill.run_stages",
    "samples_per_item": "rmsd.train.sft_trainer.sft_rows", "weighting": "rmsd.train.sft_trainer.sft_rows",
    "single_from": "rmsd.train.sft_trainer.sft_rows",
}
ADVERSARIAL_OWN = {
    "enabled": "rmsd.train.distill.run_stages",
    "batch_size": "items per step: TRL's per_device_train_batch_size counts rollouts (batch_size x num_generations)",
    "reward_weights": "AdversarialTrainer's reward functions, and TRL's reward_weights list in the same order",
    "disc_lr": "rmsd.train.discriminator.Adversary", "disc_weight_decay": "rmsd.train.discriminator.Adversary",
    "disc_rollouts_per_item": "rmsd.train.discriminator.Adversary",
    "discriminator": "AdversarialTrainer._build_adversary (a backbone copy, or an adapter on the student's base)",
    "disc_warmup_steps": "AdversarialTrainer.training_step",
    "visd": "rmsd.train.distill (rmsd.train.visd.StructuredSignal, rmsd.train.curriculum)",
    "temporal": "AdversarialTrainer (rmsd.train.temporal: shuffled rollouts; rmsd.losses.temporal_bonus: the bonus)",
}


@dataclass(frozen=True)
class RunSettings:
    """What every stage of one run shares (from the recipe's student and distill sections)."""

    output_dir: Path
    device: str
    dtype: str
    report_to: list[str]
    gradient_checkpointing: bool


def _common(stage: TrainCommon, mapping: dict[str, str], run: RunSettings) -> dict[str, Any]:
    on_cpu = run.device == "cpu"
    return {
        **{trl: getattr(stage, ours) for ours, trl in mapping.items()},
        "output_dir": str(run.output_dir), "report_to": list(run.report_to) or "none",
        "use_cpu": on_cpu, "bf16": not on_cpu and run.dtype == "bfloat16", "fp16": not on_cpu and run.dtype == "float16",
        # transformers' name for gradient checkpointing (TRL would default it on); non-reentrant, so the shared
        # prefix's recorded keys/values keep their gradient path (rmsd.models.shared_prefix)
        "activation_checkpointing": run.gradient_checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False},
        "save_strategy": "steps",
        "save_total_limit": 2,  # the resume point and the one before it (a kill can cut the newest short)
        "dataloader_num_workers": 0, "disable_tqdm": True,  # rmsd.train.progress reports
    }


def sft_config(stage: SFTStageConfig, run: RunSettings, **overrides: Any) -> Any:
    """`trl.SFTConfig` of stage sft. Rows are items collated by `MultiSampleCollator`, so TRL neither
    tokenises the dataset nor drops the columns its model signature does not name."""
    from trl import SFTConfig

    return SFTConfig(**{**_common(stage, SFT_TO_TRL, run), "dataset_kwargs": {"skip_prepare_dataset": True},
                        "remove_unused_columns": False, **overrides})


def grpo_config(stage: AdversarialStageConfig, run: RunSettings, **overrides: Any) -> Any:
    """`trl.GRPOConfig` of stage adversarial: a batch of `batch_size` items is that many times
    `num_generations` rollouts; the reward weights follow `stage.active_rewards()`'s order."""
    from trl import GRPOConfig

    return GRPOConfig(**{**_common(stage, ADVERSARIAL_TO_TRL, run),
                         "per_device_train_batch_size": stage.batch_size * stage.num_generations,
                         "reward_weights": list(stage.active_rewards().values()), **overrides})
