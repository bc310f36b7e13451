"""Each training knob is declared once, in the recipe: TRL configs are built from it, field by field.

One test per stage fails when a recipe field is neither copied to TRL nor read by rmsd, or
when a TRL field named in the mapping does not exist; a build with non-default values shows
each copied value arrives under its TRL name. And both seams with TRL's internals (the SFT
and the adversarial trainer): a TRL release that changes the signature of a method either
overrides, drops an attribute either reads or writes, calls the log-prob forward from a new
method, or renames a fused-head output fails here, naming what moved.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap

import pytest
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from rmsd.config import REWARDS, AdversarialStageConfig, SFTStageConfig
from rmsd.train import adversarial_trainer, sft_trainer, trl_args
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


SEAMS = [(GRPOTrainer, adversarial_trainer), (SFTTrainer, sft_trainer)]


def _relied_on(seam) -> dict[str, tuple[str, ...]]:
    """The private TRL methods a seam overrides or calls, with the parameters it relies on."""
    return {**seam.TRL_OVERRIDES, **getattr(seam, "TRL_CALLED", {})}


@pytest.mark.parametrize("trl_class, seam, method", [
    (trl_class, seam, method) for trl_class, seam in SEAMS for method in sorted(_relied_on(seam))])
def test_trl_still_has_the_signatures_we_override(trl_class, seam, method):
    where = f"trl.{trl_class.__name__}.{method}"
    original = getattr(trl_class, method, None)
    assert original is not None, f"{where} is gone: {seam.__name__} overrides or calls it"
    names = tuple(inspect.signature(original).parameters)
    expected = _relied_on(seam)[method]
    assert names[: len(expected)] == expected, (
        f"{where} now takes {names}, {seam.__name__} overrides or calls it as {expected}: update it for this TRL "
        "release")


def _assigned_attributes(cls: type) -> set[str]:
    """Names assigned as `self.NAME = ...` anywhere in the source of `cls` or a base class."""
    names = set()
    for klass in cls.__mro__[:-1]:
        try:
            names |= set(re.findall(r"\bself\.(\w+)\s*(?::[^=\n]+)?=(?!=)", inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
    return names


@pytest.mark.parametrize("trl_class, seam", SEAMS, ids=["adversarial", "sft"])
def test_trl_still_sets_the_attributes_we_use(trl_class, seam):
    gone = set(seam.TRL_ATTRIBUTES) - _assigned_attributes(trl_class)
    assert not gone, (f"trl.{trl_class.__name__} no longer sets {sorted(gone)}, which {seam.__name__} reads or "
                      "writes: update it for this TRL release")


def _callers(cls: type, method: str) -> set[str]:
    """The methods of `cls` whose body calls `self.<method>(...)`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return {fn.name for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for call in ast.walk(fn) if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == method and isinstance(call.func.value, ast.Name) and call.func.value.id == "self"}


def test_the_trl_methods_that_run_the_log_prob_forward_are_the_ones_that_hand_it_the_video():
    """The video side channel: TRL's callers of the log-prob forward pass image-only keywords, so
    the adversarial trainer wraps each of them to hand the rows over (`_vision_rows`); a caller TRL
    adds would run the forward without the clip, and one it removes makes a wrapper dead."""
    callers = _callers(GRPOTrainer, "_get_per_token_logps_and_entropies")
    assert callers == set(adversarial_trainer.TRL_LOGPS_CALLERS), (
        f"trl.GRPOTrainer calls _get_per_token_logps_and_entropies from {sorted(callers)}; "
        f"rmsd.train.adversarial_trainer hands the video to {adversarial_trainer.TRL_LOGPS_CALLERS}")
    for name in callers:  # and not one passes a keyword that could carry our per-row vision dicts
        source = textwrap.dedent(inspect.getsource(getattr(GRPOTrainer, name)))
        for call in ast.walk(ast.parse(source)):
            if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "_get_per_token_logps_and_entropies":
                assert "vision_rows" not in {k.arg for k in call.keywords}, f"{name} passes vision_rows itself now"
    for name in adversarial_trainer.TRL_LOGPS_CALLERS:
        assert name in vars(adversarial_trainer.AdversarialTrainer), f"AdversarialTrainer does not wrap {name}"


def test_trl_fused_head_still_returns_the_fields_we_read():
    from trl.trainer.utils import FusedCausalLMOutput

    fields = {f.name for f in dataclasses.fields(FusedCausalLMOutput)}
    gone = set(sft_trainer.TRL_FUSED_OUTPUTS) - fields
    assert not gone, f"trl's FusedCausalLMOutput no longer has {sorted(gone)}, which rmsd.train.sft_trainer reads"


def test_the_reference_adapter_is_still_named_as_trl_names_it():
    assert f'add_adapter("{adversarial_trainer.TRL_REFERENCE_ADAPTER}"' in inspect.getsource(GRPOTrainer)
