"""What one `rmsd run` is: its stages (in order, which a recipe enables, which the user chose), the state a run
carries from stage to stage, and the report it fills (`rmsd.workflow.runner` drives it, `rmsd.workflow.stages`
holds one function per stage).

    python -c "from rmsd.workflow.state import STAGES; print(STAGES)"
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmsd import fingerprint
from rmsd.config import Recipe
from rmsd.errors import RmsdError

STAGES = ("validate", "data", "sample", "match", "sft", "adversarial", "eval")
TRAINING = ("sft", "adversarial")
OPTIONAL = {"data": "dataset.generate is not set", "sft": "distill.sft.enabled: false",
            "adversarial": "distill.adversarial.enabled: false",
            "eval": "a training corpus with eval.benchmarks empty: nothing to score"}  # what leaves a stage out


@dataclass
class StageLine:
    """One line of the closing report: what happened to a stage, why, and its seconds."""

    stage: str
    status: str  # ran | resumed | up to date | would run | not run
    why: str = ""
    seconds: float = 0.0


@dataclass
class RunReport:
    """What `run_recipe` returns (and `rmsd.run`): the stage lines, the evaluation results, the store's tokens and
    cost per teacher and mode, the artifacts' paths; with `dry_run` the estimate of the missing samples and the
    memory plan instead of results."""

    recipe: str
    stages: list[StageLine] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    sampling: dict[str, dict[str, Any]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    estimate: dict[str, dict[str, Any]] = field(default_factory=dict)
    plan: str = ""
    dry_run: bool = False

    def status(self) -> dict[str, str]:
        return {line.stage: line.status for line in self.stages}


def enabled_stages(recipe: Recipe) -> list[str]:
    """The recipe's stages: the data stage when it generates its dataset, the training stages it enables, eval
    when it has an evaluation set."""
    on = {"data": recipe.dataset.generate is not None, **{s: getattr(recipe.distill, s).enabled for s in TRAINING},
          "eval": bool(recipe.eval.sets(recipe.dataset))}
    return [s for s in STAGES if on.get(s, True)]


def select(recipe: Recipe, start: str | None, stop: str | None) -> list[str]:
    """The stages from `start` to `stop` (names of STAGES, or "distill" for the training stages); one clear line
    for an unknown stage or one the recipe disables."""
    enabled = enabled_stages(recipe)
    if not any(s in enabled for s in TRAINING):
        raise RmsdError("no training stage is enabled: set distill.sft.enabled or distill.adversarial.enabled")

    def index(name: str | None, flag: str, default: int) -> int:
        if name is None:
            return default
        names = [s for s in enabled if s in TRAINING] if name == "distill" else [name]
        if name != "distill" and name not in STAGES:
            raise RmsdError(f"{flag} {name}: no such stage; stages: {', '.join(STAGES)} (distill = the training stages)")
        if name != "distill" and name not in enabled:
            raise RmsdError(f"{flag} {name}: the recipe disables that stage ({OPTIONAL[name]})")
        return enabled.index(names[0] if flag == "--from" else names[-1])

    first, last = index(start, "--from", 0), index(stop, "--until", len(enabled) - 1)
    if first > last:
        raise RmsdError(f"--from {start} comes after --until {stop}: nothing would run")
    return enabled[first:last + 1]


class Run:
    """One `rmsd run`: the recipe, what each stage found, the report being filled."""

    def __init__(self, recipe: Recipe, chosen: list[str], dry_run: bool, progress: bool, echo: Callable[[str], None],
                 gpu_memory: float):
        self.recipe, self.chosen, self.dry_run, self.progress, self.echo = recipe, chosen, dry_run, progress, echo
        self.gpu_memory = gpu_memory
        self.report = RunReport(recipe.name, dry_run=dry_run)
        self.store = recipe.path_of(recipe.sampling.out)
        self.matched = recipe.path_of(recipe.matching.out)
        self.distill_out = recipe.path_of(recipe.distill.out)
        self.changed = False  # a stage ran (or would): every later one sees other inputs
        self._items: Any = None
        self._planned: Any = None

    # ------------------------------------------------------------------------- shared reads
    def items(self) -> list[Any]:
        if self._items is None:
            from rmsd.pipeline import training_items

            self._items = training_items(self.recipe)[0]
        return self._items

    def forget_items(self) -> None:
        """The dataset was written again: items and planned keys are read afresh."""
        self._items = self._planned = None

    def planned(self) -> tuple[Any, list[str]]:
        """The pool's planned keys, per teacher and all together (from the config: no teacher is built)."""
        if self._planned is None:
            from rmsd.sampling.estimate import all_keys, planned_keys

            ds = self.recipe.dataset
            per_teacher = planned_keys(self.items(), self.recipe.load_pool(), ds.num_frames, ds.max_side)
            self._planned = (per_teacher, all_keys(per_teacher))
        return self._planned

    def present(self) -> list[str]:
        """The planned keys the store holds: the samples the matched set is made of."""
        from rmsd.sampling.store import stored_keys

        have = stored_keys(self.store) if (self.store / "data").is_dir() else set()
        return [k for k in self.planned()[1] if k in have]

    def final_model(self) -> Path:
        return self.distill_out / [s for s in enabled_stages(self.recipe) if s in TRAINING][-1]

    def line(self, stage: str, status: str, why: str = "", seconds: float = 0.0) -> None:
        self.report.stages.append(StageLine(stage, status, why, round(seconds, 1)))
        if status in ("ran", "resumed", "would run"):
            self.changed = True
        self.echo(f"{stage}: {status}" + (f" ({why})" if why else ""))

    # ------------------------------------------------------------------------- ownership
    def check_owners(self) -> None:
        """Refuse, before anything runs, an output folder another recipe's run wrote: a matched set made with other
        inputs (one made with the same inputs is shared harmlessly), any checkpoints or results."""
        name = self.recipe.name
        if "match" in self.chosen:
            record = fingerprint.read(self.matched)
            if record is not None and record.get("recipe") not in ("", name):
                from rmsd.fingerprint import match_inputs

                if record["inputs"] != match_inputs(self.recipe, self.present(), self.items()):
                    raise RmsdError(f"{self.matched} holds recipe {record['recipe']}'s matched set, made with other "
                                    f"inputs: set matching.out to another folder for recipe {name}")
        for stage in (s for s in self.chosen if s in TRAINING):
            record = fingerprint.read(self.distill_out / stage)
            if record is not None and record.get("recipe") not in ("", name):
                raise RmsdError(f"{self.distill_out / stage} holds recipe {record['recipe']}'s {stage} stage: set "
                                f"distill.out to another folder for recipe {name}")
        if "eval" in self.chosen:
            from rmsd.pipeline import eval_folder

            folder = eval_folder(self.recipe, self.final_model())
            for record in (fingerprint.read(p) for p in [folder, *(folder / s.name for s in
                                                                   self.recipe.eval.sets(self.recipe.dataset))]):
                if record is not None and record.get("recipe") not in ("", name):
                    raise RmsdError(f"{folder} holds recipe {record['recipe']}'s results: set eval.out to another "
                                    f"folder for recipe {name}")


def sampling_totals(store: Path, teachers: list[str]) -> dict[str, dict[str, Any]]:
    """Per teacher and mode, the tokens and cost of the store's records (its summary.json's totals)."""
    file = store / "summary.json"
    if not file.is_file():
        return {}
    summary = json.loads(file.read_text())
    return {name: t["store"]["modes"] for name, t in summary.get("teachers", {}).items()
            if name in teachers and "modes" in t.get("store", {})}
