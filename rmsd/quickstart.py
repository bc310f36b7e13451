"""`rmsd quickstart`: the whole pipeline on the embedded default, offline, on a CPU.

Generates a small synthvid set (the generator's current version, v3), builds the tiny
student, samples the simulated pool (the experiment's: `teachers/experiment_pool_v2.yaml`,
three teachers that err like real ones, K = 2 samples each), matches, then distils two
students from the same data and steps — single-sample SFT (one teacher response per item,
the baseline) and R-MSD (quality-matched multi-sample SFT, then the adversarial stage) — and
evaluates the untrained student and each result. It prints accuracy by task type, that this
is one seed (the experiment, `benchmarks/reproduce.py --regime v3`, runs three), and where
every artifact is. The recipe and pool are `rmsd/assets/quickstart*.yaml`; `--set`
overrides any key (e.g. `--set distill.sft.max_steps=50` for a smoke run, `--set
student.build=small --set student.device=cuda` on a GPU).

    rmsd quickstart [--out runs/quickstart] [--n 400] [--set key=value ...]
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from rmsd.config import Recipe, load_recipe
from rmsd.errors import RmsdError
from rmsd.matching.dataset import unusable_summary
from rmsd.verbosity import quiet_libraries

ASSETS = Path(__file__).parent / "assets"
HEADER_WIDTH = 13  # a student column header wraps at spaces to this width (the longest word, "adversarial", fits)
console = Console()


def _phase(title: str):
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def _done(t0: float, what: str) -> None:
    console.print(f"[green]✓[/] {what} ({time.perf_counter() - t0:.0f} s)")


def quickstart_recipe(out: Path, overrides: list[str] | None = None) -> Recipe:
    """The embedded recipe with every path placed under `out`."""
    paths = [
        f"dataset.path={out / 'data'}",
        f"student.build_out={out / 'student'}",
        f"sampling.out={out / 'samples'}",
        f"matching.out={out / 'matched'}",
        f"distill.out={out / 'rmsd'}",
        f"eval.out={out / 'eval'}",
    ]
    return load_recipe(ASSETS / "quickstart.yaml", paths + list(overrides or []))


def run_quickstart(out: str | Path = "runs/quickstart", n: int = 400, overrides: list[str] | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """Run every phase; returns {variant: eval results} and writes OUT/quickstart.json."""
    from rmsd.pipeline import distill_recipe, eval_recipe, match_recipe, sample_recipe, student_path
    from rmsd.synthvid.generator import generate

    quiet_libraries()
    out = Path(out)
    recipe = quickstart_recipe(out, overrides)
    # distill refuses a folder holding a previous run and would say "pass --resume", which quickstart lacks
    previous = [p for p in (out / "single_sample", recipe.path_of(recipe.distill.out)) if p.exists()]
    if previous:
        raise RmsdError(f"{out} holds an earlier quickstart run ({previous[0]}): delete it or pass another --out")
    started = time.perf_counter()

    t0 = _phase("1/6 synthvid")
    info = generate(recipe.dataset.path, n=n, seed=seed)
    _done(t0, f"{info['counts']['train']} train / {info['counts']['test']} test items in {recipe.dataset.path}")

    t0 = _phase("2/6 tiny student")
    student = student_path(recipe)
    _done(t0, f"student at {student}")

    t0 = _phase("3/6 sample the simulated pool")
    summary = sample_recipe(recipe, progress=True)
    _done(t0, f"{summary.get('records', summary.get('done', '?'))} teacher responses in {recipe.sampling.out}")

    t0 = _phase("4/6 match")
    stats = match_recipe(recipe, recipe.sampling.out)
    _done(t0, f"matched dataset in {recipe.matching.out}")
    if unusable_summary(stats):
        console.print(f"  {unusable_summary(stats)}")

    t0 = _phase("5/6 distill: single-sample SFT baseline, then R-MSD (multi-sample SFT + adversarial)")
    single = recipe.model_copy(deep=True)
    single.distill.out = str(out / "single_sample")
    single.distill.sft.samples_per_item = 1
    single.distill.sft.weighting = "uniform"
    single.distill.adversarial.enabled = False
    single_ckpts = distill_recipe(single, recipe.matching.out)
    rmsd_ckpts = distill_recipe(recipe, recipe.matching.out)
    _done(t0, "students distilled")

    t0 = _phase("6/6 evaluate on synthvid test")
    variants = {"untrained": student, "single-sample SFT": single_ckpts["sft"], "R-MSD SFT": rmsd_ckpts["sft"]}
    if "adversarial" in rmsd_ckpts:
        variants["R-MSD SFT + adversarial"] = rmsd_ckpts["adversarial"]
    results = {name: eval_recipe(recipe, path, out=out / "eval" / name.replace(" ", "_"), show=False)["synthvid"]
               for name, path in variants.items()}
    _done(t0, "evaluated")

    _print_table(results)
    test_items = next(iter(results.values())).get("n_items", "?")
    console.print(textwrap.fill(
        f"One seed (student seed {recipe.distill.sft.seed}, data seed {seed}) on {test_items} test items: a "
        "demonstration that every stage runs, not a "
        "measurement. The experiment (same pool family, synthvid v3, 3 seeds, its ceiling) is "
        "benchmarks/reproduce.py --regime v3 (benchmarks/results/regime_v3.md).", width=78))
    artifacts = {"data": recipe.dataset.path, "student": str(student), "samples": recipe.sampling.out,
                 "matched": recipe.matching.out, **{k: str(v) for k, v in variants.items()}, "eval": str(out / "eval")}
    for k, v in artifacts.items():
        console.print(f"  {k:>24}: {v}")
    console.print(f"total {time.perf_counter() - started:.0f} s")
    report = {"results": results, "artifacts": artifacts, "seconds": round(time.perf_counter() - started, 1)}
    (out / "quickstart.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _print_table(results: dict[str, dict[str, Any]]) -> None:
    """Scores by task type, each with its metric and item count, one column per student; fits 80 columns."""
    from rmsd.datasets.items import METRIC_OF_TASK

    # no vertical rules and headers broken at spaces only: four students fit 80 columns without
    # rich folding a name mid-word ("single-sa / mple SFT")
    table = Table(title="synthvid test (simulated teachers, tiny student, one seed)", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0, 0, 1))
    for name, justify in (("task type", "left"), ("metric", "left"), ("items", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for name in results:
        table.add_column(textwrap.fill(name, width=HEADER_WIDTH, break_on_hyphens=False), justify="right",
                         no_wrap=True)
    first = next(iter(results.values()))
    counts = first.get("counts", {}).get("task_type", {})
    for t in sorted(first.get("breakdowns", {}).get("task_type", {})):
        table.add_row(t, METRIC_OF_TASK.get(t, "score"), str(counts.get(t, "")),
                      *(f"{r['breakdowns']['task_type'].get(t, float('nan')):.3f}" for r in results.values()))
    table.add_row("[bold]overall", "mean", str(first.get("n_items", "")),
                  *(f"[bold]{r['overall']:.3f}" for r in results.values()))
    console.print(table, width=min(console.width, 80))
