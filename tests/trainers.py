"""Trainers for the tests, built the way `rmsd distill` builds them (rmsd.train.trl_args).

Settings are small enough for a test; every knob a test passes is a recipe key of the stage.
"""

from __future__ import annotations

INPUTS = {"num_frames": 8, "max_side": None, "system": None, "shared_prefix": True}
SFT_TEST = {"max_steps": 3, "batch_size": 2, "lr": 1e-3, "logging_steps": 1, "save_steps": 2, "max_length": 256,
            "seed": 0, "warmup_steps": 0, "weight_decay": 0.0}
ADVERSARIAL_TEST = {"max_steps": 2, "batch_size": 2, "num_generations": 2, "max_completion_length": 12, "lr": 1e-3,
                    "disc_lr": 1e-3, "logging_steps": 1, "save_steps": 1, "seed": 0, "warmup_steps": 0,
                    "weight_decay": 0.0, "disc_warmup_steps": 0, "temperature": 1.0,
                    "reward_weights": {"discriminator": 1.0, "format": 0.5}}


def load(env, lora=None):
    """(model, processor) of env's student as a stage loads it (`rmsd.train.distill.load_for_training`);
    `lora`: the keys of student.lora (a dict), or None for full fine-tuning."""
    from rmsd.config import StudentConfig
    from rmsd.train.distill import load_for_training

    return load_for_training(env["student"], StudentConfig(path=str(env["student"]), lora=lora))


def student_inputs(**overrides):
    from rmsd.train.stage_inputs import StudentInputs

    return StudentInputs(**{**INPUTS, **overrides})


def sft_trainer(env, out, inputs=None, trl=None, lora=None, **stage):
    """A MultiSampleSFTTrainer over env's matched rows; `stage` are distill.sft keys, `trl` TRL-only settings,
    `lora` the student.lora keys."""
    from datasets import Dataset

    from rmsd.config import SFTStageConfig
    from rmsd.train.sft_trainer import MultiSampleSFTTrainer, sft_rows
    from rmsd.train.trl_args import RunSettings, sft_config

    cfg = SFTStageConfig(**{**SFT_TEST, **stage})
    model, processor = load(env, lora)
    args = sft_config(cfg, RunSettings(output_dir=out, device="cpu", dtype="float32", report_to=[], gradient_checkpointing=False), **(trl or {}))
    rows = sft_rows(env["matched"], cfg.samples_per_item, cfg.weighting)
    return MultiSampleSFTTrainer(model, args, Dataset.from_list(rows), processor, env["items"],
                                 inputs=inputs or student_inputs())


def adversarial_trainer(env, out, inputs=None, trl=None, cls=None, ids=None, lora=None, **kw):
    """An AdversarialTrainer over env's items; keyword arguments are distill.adversarial keys, plus
    the trainer's own `callbacks`, `benchmark`, `visd`, `curriculum`, `teacher_samples`; `lora` the student.lora keys."""
    from datasets import Dataset

    from rmsd.config import AdversarialStageConfig
    from rmsd.train.adversarial_trainer import AdversarialTrainer
    from rmsd.train.discriminator import TeacherSamples
    from rmsd.train.trl_args import RunSettings, grpo_config

    extra = {k: kw.pop(k) for k in ("callbacks", "benchmark", "visd", "curriculum", "model") if k in kw}
    cfg = AdversarialStageConfig(enabled=True, **{**ADVERSARIAL_TEST, **kw})
    model, processor = load(env, lora)
    if callable(extra.get("visd")):  # built from the loaded student, before the trainer patches it
        extra["visd"] = extra["visd"](model, cfg)
    teacher = TeacherSamples.from_matched(env["matched"])
    ids = ids or list(teacher.texts)
    dataset = Dataset.from_list([{"prompt": env["items"][i].prompt, "item_id": i} for i in ids])
    args = grpo_config(cfg, RunSettings(output_dir=out, device="cpu", dtype="float32", report_to=[], gradient_checkpointing=False), **(trl or {}))
    trainer = (cls or AdversarialTrainer)(model, args, dataset, processor, env["items"], stage=cfg,
                                          inputs=inputs or student_inputs(), teacher_samples=teacher, **extra)
    trainer.current_gradient_accumulation_steps = 1  # set by train(); the loss reads it when called directly
    return trainer
