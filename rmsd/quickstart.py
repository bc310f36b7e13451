"""`rmsd quickstart`: the whole pipeline on the embedded default, offline, on a CPU.

Generates a small synthvid set (the generator's current version, v3), then runs two recipes
through `rmsd run`'s code path (`rmsd.workflow.runner.run_recipe`): R-MSD (sample the
experiment's simulated pool, `teachers/experiment_pool_v2.yaml`: three teachers that err like
real ones, K = 2 samples each; match; quality-matched multi-sample SFT, then the adversarial
stage; evaluate) and the single-sample SFT baseline (one teacher response per item, the same
samples, matched set and steps), and evaluates the student they start from (the pre-trained tiny
base shipped with rmsd: it reads the clip, as a real run's pretrained VLM does) and R-MSD's SFT
stage beside them. It prints accuracy by task type, that this is one seed (the experiment,
`benchmarks/reproduce.py --regime v4`, runs three), and where every artifact is. Like `rmsd
run`, the same command again finds every stage up to date, and one killed goes on where it
stopped. The recipe and pool are `rmsd/assets/quickstart*.yaml`; `--set` overrides any key (e.g.
`--set distill.sft.max_steps=50` for a smoke run, `--set student.build=small --set
student.device=cuda` on a GPU).

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


def single_sample(recipe: Recipe, out: Path) -> Recipe:
    """The baseline: the same recipe with one sample per item, uniform weights and no adversarial stage."""
    single = recipe.model_copy(deep=True)
    single.distill.out = str(out / "single_sample")
    single.distill.sft.samples_per_item = 1
    single.distill.sft.weighting = "uniform"
    single.distill.adversarial.enabled = False
    return single


def _data(recipe: Recipe, n: int, seed: int) -> dict[str, Any]:
    """The synthvid set, generated unless the folder holds this very one (same generator version, n and seed)."""
    from rmsd.synthvid.generator import GENERATOR_VERSION, generate

    info = Path(recipe.dataset.path) / "info.json"
    if info.is_file():
        held = json.loads(info.read_text())
        if (held.get("version"), held.get("n"), held.get("seed")) == (GENERATOR_VERSION, n, seed):
            return held
    return generate(recipe.dataset.path, n=n, seed=seed)


def run_quickstart(out: str | Path = "runs/quickstart", n: int = 400, overrides: list[str] | None = None,
                   seed: int = 0) -> dict[str, Any]:
    """Run every phase; returns {variant: eval results} and writes OUT/quickstart.json."""
    from rmsd.pipeline import student_path
    from rmsd.workflow.runner import run_recipe

    quiet_libraries()
    out = Path(out)
    recipe = quickstart_recipe(out, overrides)
    started = time.perf_counter()

    t0 = _phase("1/4 synthvid")
    info = _data(recipe, n, seed)
    _done(t0, f"{info['counts']['train']} train / {info['counts']['test']} test items in {recipe.dataset.path}")

    echo = lambda line: console.print(f"  {line}", highlight=False)  # noqa: E731 - the stages' one-line news
    t0 = _phase("2/4 R-MSD: sample the simulated pool, match, multi-sample SFT + adversarial, evaluate")
    rmsd_run = run_recipe(recipe, echo=echo)
    _done(t0, "R-MSD distilled and evaluated")
    matched = Path(recipe.matching.out)
    report = json.loads((matched / "match_report.json").read_text())
    if unusable_summary(report):
        console.print(f"  {unusable_summary(report)}")

    t0 = _phase("3/4 single-sample SFT baseline: one teacher response per item, the same samples and steps")
    single_recipe = single_sample(recipe, out)
    single = run_recipe(single_recipe, echo=echo)
    _done(t0, "baseline distilled and evaluated")

    t0 = _phase("4/4 evaluate the pre-trained base and R-MSD's SFT stage on synthvid test")
    student = student_path(recipe)
    variants, results = _variants(recipe, out, student, rmsd_run, single)
    _done(t0, "evaluated")

    _print_table(results)
    test_items = next(iter(results.values())).get("n_items", "?")
    console.print(textwrap.fill(
        f"One seed (student seed {recipe.distill.sft.seed}, data seed {seed}) on {test_items} test items: a "
        "demonstration that every stage runs, not a "
        "measurement. The experiment (the same pool and base, synthvid v3, 3 seeds, its ceiling) is "
        "benchmarks/reproduce.py --regime v4 (benchmarks/results/regime_v4.md).", width=78))
    artifacts = {"data": recipe.dataset.path, "student": str(student), "samples": recipe.sampling.out,
                 "matched": recipe.matching.out, **{k: str(v) for k, v in variants.items()}, "eval": str(out / "eval")}
    for k, v in artifacts.items():
        console.print(f"  {k:>24}: {v}")
    stages_run = {"R-MSD": {s.stage: s.status for s in rmsd_run.stages},
                  "single-sample SFT": {s.stage: s.status for s in single.stages}}
    console.print(f"total {time.perf_counter() - started:.0f} s")
    summary = {"results": results, "artifacts": artifacts, "stages": stages_run,
               "seconds": round(time.perf_counter() - started, 1)}
    (out / "quickstart.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _variants(recipe: Recipe, out: Path, student: Path, rmsd_run: Any, single: Any
              ) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """Each student's folder and results: the runs' final models, and the base they start from and R-MSD's SFT
    stage scored here (a set already scored with the same inputs is read back)."""
    from rmsd.pipeline import eval_recipe

    sft = Path(rmsd_run.paths["sft"])
    variants = {"base": student, "single-sample SFT": Path(single.paths["sft"]), "R-MSD SFT": sft}
    results = {"base": eval_recipe(recipe, student, out=out / "eval" / "base", show=False,
                                   skip_current=True)["synthvid"],
               "single-sample SFT": single.results["synthvid"]}
    if "adversarial" in rmsd_run.paths:
        results["R-MSD SFT"] = eval_recipe(recipe, sft, show=False, skip_current=True)["synthvid"]
        variants["R-MSD SFT + adversarial"] = Path(rmsd_run.paths["adversarial"])
        results["R-MSD SFT + adversarial"] = rmsd_run.results["synthvid"]
    else:
        results["R-MSD SFT"] = rmsd_run.results["synthvid"]
    return variants, results


def _print_table(results: dict[str, dict[str, Any]]) -> None:
    """Scores by task type, each with its metric and item count, one column per student; fits 80 columns."""
    from rmsd.items import METRIC_OF_TASK

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
