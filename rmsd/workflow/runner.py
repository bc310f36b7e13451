"""`rmsd run`: a recipe from its data to its report in one command that knows what is up to date.

validate → data (a procedural dataset the recipe generates) → sample → match → sft → adversarial
(each training stage the recipe enables) → eval
(every evaluation set) → one closing report. Each stage compares the inputs it would read with
the ones its output records (`rmsd.fingerprint`) and is skipped when they are equal, saying so;
a changed knob re-runs its stage and, since each stage records the one before it, every later
one, never an earlier one. Interrupted means resumed: sampling asks only for the keys its store
lacks (`rmsd.sampling.sample`), a training stage continues from its last checkpoint of the same
inputs (`rmsd.train.distill`), evaluation scores only the sets without current results and, in a
set killed while being scored, only the items it had not reached (`rmsd.eval.evaluate`).

How it differs from calling the five stage commands (which stay, and keep the same records):
the folders are threaded from the recipe, the matched set is built from the samples the
recipe's pool plans (not every record a shared store holds), and a folder another recipe's run
wrote is refused rather than overwritten (the sample store is shared by design: its records
are keyed by content). `dry_run` reads and writes nothing but prints what would run, the
requests, tokens and cost of the missing samples and the memory plan of `rmsd plan`.

    rmsd run --recipe recipes/synthvid/tiny_rmsd.yaml [--set K=V ...] [--from STAGE] [--until STAGE] [--dry-run]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rmsd.config import Recipe
from rmsd.errors import RmsdError
from rmsd.workflow import stages
from rmsd.workflow.state import Run, RunReport, select


def run_recipe(recipe: Recipe, *, start: str | None = None, stop: str | None = None, dry_run: bool = False,
               progress: bool = True, echo: Callable[[str], None] = print, gpu_memory: float = 80.0) -> RunReport:
    """Run (or, with `dry_run`, plan) the recipe's stages from `start` to `stop`; the closing report."""
    chosen = select(recipe, start, stop)
    run = Run(recipe, chosen, dry_run, progress, echo, gpu_memory)
    stages.validate(run)
    run.check_owners()
    for stage in (s for s in chosen if s != "validate"):
        started = time.perf_counter()
        status, why = getattr(stages, stage)(run)
        run.line(stage, status, why, time.perf_counter() - started)
    stages.collect(run)
    return run.report


def run(recipe: str | Path | Recipe, overrides: list[str] | None = None, **options: Any) -> RunReport:
    """`rmsd run` from Python: a recipe file (with `--set`-style overrides) or a loaded `Recipe`; the report.

    options: start, stop, dry_run, progress, echo, gpu_memory (as `run_recipe`)."""
    from rmsd.config import load_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, list(overrides or []))
    elif overrides:
        raise RmsdError("overrides apply to a recipe file; pass the path, or change the loaded Recipe itself")
    report = run_recipe(recipe, **options)
    return report


def format_report(report: RunReport) -> str:
    """The closing report as text: a line per stage, the evaluation table, tokens and cost, the paths."""
    lines = [f"rmsd run {report.recipe}" + (" (dry run: nothing was written or sent)" if report.dry_run else "")]
    for s in report.stages:
        took = f"{s.seconds:8.1f} s" if s.status in ("ran", "resumed", "up to date", "checked") else " " * 10
        lines.append(f"  {s.stage:<12} {s.status:<11} {took}  {s.why}".rstrip())
    if report.estimate:
        lines.append("missing samples (estimate: prompt tokens from the prompt and frames, completions at max_tokens):")
        lines.append(f"  {'teacher':<16} {'mode':<7} {'items':>6} {'samples':>8} {'requests':>9} {'in tok':>10} "
                     f"{'out tok':>10} {'cost $':>9}")
        for name, t in report.estimate.items():
            cost = "-" if t["cost_usd"] is None else f"{t['cost_usd']:.4f}"
            lines.append(f"  {name:<16} {t['mode']:<7} {t['items']:>6} {t['samples']:>8} {t['requests']:>9} "
                         f"{t['prompt_tokens']:>10,} {t['completion_tokens']:>10,} {cost:>9}")
    if report.plan:
        lines += ["memory plan (rmsd plan):", *("  " + line for line in report.plan.splitlines())]
    for name, r in report.results.items():
        lines.append(f"{name}: overall {r['overall']:.3f} on {r['n_items']} items ({r['extraction']} extraction)")
        counts = r.get("counts", {}).get("task_type", {})
        for task, score in r.get("breakdowns", {}).get("task_type", {}).items():
            lines.append(f"  {task:<12} {score:.3f}  ({counts.get(task, '?')} items)")
    if report.sampling:
        lines.append("the store's samples of this pool, tokens and cost per teacher and mode:")
        for name, modes in report.sampling.items():
            for mode, m in modes.items():
                if m["prompt_tokens"] or m["completion_tokens"]:
                    cost = "-" if m["cost_usd"] is None else f"${m['cost_usd']:.4f}"
                    lines.append(f"  {name:<16} {mode:<7} {m['prompt_tokens']:>10,} in {m['completion_tokens']:>10,} "
                                 f"out  {cost}")
    lines += [f"  {k:<12} {v}" for k, v in report.paths.items()]
    return "\n".join(lines)
