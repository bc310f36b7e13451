"""Each training knob is declared once, in the recipe: TRL configs are built from it, field by field.

One test per stage fails when a recipe field is neither copied to TRL nor read by rmsd, or
when a TRL field named in the mapping does not exist; a build with non-default values shows
each copied value arrives under its TRL name. And the seam with TRL's private methods:
a TRL release that changes the signature of a method the adversarial trainer overrides
fails here, naming the method.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from trl import GRPOConfig, GRPOTrainer, SFTConfig

from rmsd.config import REWARDS, AdversarialStageConfig, SFTStageConfig
from rmsd.train import trl_args
from rmsd.train.adversarial_trainer import TRL_OVERRIDES
from rmsd.train.trl_args import RunSettings


def _run(tmp_path) -> RunSettings:
    return RunSettings(output_dir=tmp_path, device="cpu", dtype="float32", report_to=[], gradient_checkpointing=False)


@pytest.mark.parametrize("stage, mapping, own, trl", [
    (SFTStageConfig, trl_args.SFT_TO_TRL, trl_args.SFT_OWN, SFTConfig),
    (AdversarialStageConfig, trl_args.ADVERSARIAL_TO_TRL, trl_args.ADVERSARIAL_OWN, GRPOConfig),
], ids=["sft", "adversarial"])
def test_every_recipe_field_has_one_destination(stage, mapping, own, trl):
    fields = set(stage.model_fields)
    assert not set(mapping) & set(own), "a field is both copied to TRL and read by rmsd"
    assert fields - set(mapping) - set(own) == set(), "recipe fields nobody reads"
    assert (set(mapping) | set(own)) - fields == set(), "mapped names that are not recipe fields"
    trl_fields = {f.name for f in dataclasses.fields(trl)}
    assert set(mapping.values()) - trl_fields == set(), "mapped TRL fields that do not exist"


def test_sft_values_arrive_under_their_trl_names(tmp_path):
    stage = SFTStageConfig(lr=3e-4, max_steps=7, batch_size=5, grad_accum=2, warmup_steps=1, weight_decay=0.2,
                           max_grad_norm=0.5, seed=9, logging_steps=3, save_steps=4, max_length=99)
    args = trl_args.sft_config(stage, _run(tmp_path))
    for ours, theirs in trl_args.SFT_TO_TRL.items():
        assert getattr(args, theirs) == getattr(stage, ours), ours


def test_adversarial_values_arrive_under_their_trl_names(tmp_path):
    stage = AdversarialStageConfig(lr=3e-5, max_steps=7, batch_size=3, num_generations=4, temperature=0.7,
                                   max_completion_length=33, beta=0.1, epsilon=0.3, seed=5, warmup_steps=2,
                                   reward_weights={"format": 0.5, "discriminator": 0.0, "correctness": 2.0})
    args = trl_args.grpo_config(stage, _run(tmp_path))
    for ours, theirs in trl_args.ADVERSARIAL_TO_TRL.items():
        assert getattr(args, theirs) == getattr(stage, ours), ours
    assert args.per_device_train_batch_size == 12  # items x rollouts
    assert stage.active_rewards() == {"format": 0.5, "correctness": 2.0} and args.reward_weights == [0.5, 2.0]


def test_the_recipe_names_exactly_the_rewards_the_trainer_implements():
    import typing

    literal = typing.get_args(AdversarialStageConfig.model_fields["reward_weights"].annotation)[0]
    assert set(typing.get_args(literal)) == set(REWARDS)
    src = inspect.getsource(__import__("rmsd.train.adversarial_trainer", fromlist=["x"]).AdversarialTrainer.__init__)
    assert all(f'"{name}"' in src for name in REWARDS)


@pytest.mark.parametrize("method", sorted(TRL_OVERRIDES))
def test_trl_still_has_the_signatures_we_override(method):
    original = getattr(GRPOTrainer, method, None)
    assert original is not None, f"trl.GRPOTrainer.{method} is gone: rmsd.train.adversarial_trainer overrides it"
    names = tuple(inspect.signature(original).parameters)
    expected = TRL_OVERRIDES[method]
    assert names[: len(expected)] == expected, (
        f"trl.GRPOTrainer.{method} now takes {names}, rmsd.train.adversarial_trainer overrides it as {expected}: "
        "update the override for this TRL release")
