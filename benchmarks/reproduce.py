"""Reproduce the seeds' claims on synthvid: does multi-sample reliable distillation beat
single-sample distillation, and does the structured signal speed convergence?

Same student config, same data, same optimisation steps for every method, several seeds
each, on a simulated pool with realistic variance (`teachers/experiment_pool.yaml`: a
strong teacher with format slips, a weaker one, a biased one; per-tier difficulty).
Methods (each a recipe in `recipes/synthvid/experiment_*.yaml`, budget S + R steps with
S = 250, R = 50 there):

1. single   single-sample SFT (one teacher response per item), S + R SFT steps
2. uniform  multi-sample SFT, uniform weights over format-valid samples, S + R SFT steps
3. matched  multi-sample SFT, quality-matched weights (R-MSD data side), S + R SFT steps
   anchored 3 with Dawid–Skene anchored by 10% labelled items (semi-supervised consensus)
   gt       3 with the ground truth's correctness as the weight (DESIGN: labelled training data)
4. rmsd     3 for S steps + R adversarial steps (full R-MSD)
5. sft_rl   3 for S steps + R GRPO steps with verifiable rewards only (correctness, format)
6. visd     4 + the VISD structured signal
7. visd_rl  5 + the VISD structured signal (VISD vs GRPO, issue 6: `benchmarks/steps_to_target.py`
            compares the training reward curves of sft_rl and visd_rl)
   sft_rl_2e4, visd_rl_2e4: 5 and 7 with the RL stage at lr 2e-4 (run on their own, with
            --results elsewhere; they reuse the main run's SFT stages)

How it runs: the data, the teacher samples and the matched targets are made once and
shared; a seed sets the student's init (one student per seed, shared by every method) and
the training order and rollouts. Methods 4-7 start from the same S-step SFT stage, trained
once per seed and linked into each run (identical config, so identical in expectation;
its seconds are counted in each method's train time). Accuracy on the test split is
measured during training by a `TrainerCallback` (distill keeps only its last two
checkpoints, so checkpoints cannot give a curve), at the same global steps for every
method; step 0 is the untrained student. A method that fails is recorded with its error
and the others go on; finished runs are cached under --work (`result.json`), so a rerun
only redoes what is missing. It refuses to run methods whose step totals differ.

Writes to --results (default benchmarks/results; with --quick, WORK/results):
reproduce.md (command, machine, mean ± std over seeds overall and per task type, the
untrained student, train seconds), reproduce.json (every run, curve and error) and
reproduce_curves.png, reproduce_teachers.png, reproduce_weights.png.

    python benchmarks/reproduce.py --seeds 0 1 2                 # all 9 methods: hours on 2 CPU cores (7 took 6,245 s)
    python benchmarks/reproduce.py --quick --seeds 0 --methods single matched rmsd sft_rl --work /tmp/repro_smoke
    python benchmarks/reproduce.py --sft-steps 150 --adv-steps 30 --set student.device=cuda
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_cache  # noqa: E402  (sibling scripts of this benchmark)
import steps_to_target  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = ROOT / "recipes" / "synthvid"
METHODS = ("single", "uniform", "matched", "anchored", "gt", "rmsd", "sft_rl", "visd", "visd_rl",
           "sft_rl_2e4", "visd_rl_2e4")
DEFAULT_METHODS = METHODS[:9]  # the lr-2e-4 pair is a follow-up, run on its own
TASK_TYPES = ("mcq", "numeric", "grounding", "open")
DATA_SEED = 1234
# --quick: a smoke test of every code path in about a minute, not a measurement.
QUICK = {"n": 200, "sft_steps": 20, "adv_steps": 6, "points": 4, "overrides": [
    "distill.sft.batch_size=4", "distill.sft.warmup_steps=2", "distill.sft.logging_steps=5", "distill.sft.save_steps=10",
    "distill.adversarial.batch_size=2", "distill.adversarial.num_generations=2",
    "distill.adversarial.max_completion_length=32", "distill.adversarial.disc_warmup_steps=1",
    "distill.adversarial.warmup_steps=1", "distill.adversarial.logging_steps=2", "eval.max_new_tokens=64",
]}


# ----------------------------------------------------------------------------- recipes and budget
def load_method(method: str, work: Path, seed: int, overrides: list[str]) -> Any:
    """The method's recipe with every path under `work` and the seed applied."""
    from rmsd.config import load_recipe

    path = RECIPES / f"experiment_{method}.yaml"
    matched_name = Path(load_recipe(path, overrides).matching.out).name  # methods with another filter differ here
    run = work / method / f"seed{seed}"
    paths = [
        f"dataset.path={work / 'data'}", f"sampling.out={work / 'samples'}", f"matching.out={work / matched_name}",
        f"student.build_out={work / f'student_seed{seed}'}", f"distill.out={run}", f"eval.out={run / 'eval'}",
        f"distill.sft.seed={seed}", f"distill.adversarial.seed={seed}",
    ]
    return load_recipe(path, overrides + paths)


def budget_overrides(method: str, sft_steps: int | None, adv_steps: int | None) -> list[str]:
    """--sft-steps S --adv-steps R for one method: S + R SFT steps without an adversarial stage."""
    if sft_steps is None and adv_steps is None:
        return []
    from rmsd.config import load_recipe

    base = load_recipe(RECIPES / f"experiment_{method}.yaml").distill
    s = base.sft.max_steps if sft_steps is None else sft_steps
    r = base.adversarial.max_steps if adv_steps is None else adv_steps
    if base.adversarial.enabled:
        return [f"distill.sft.max_steps={s}", f"distill.adversarial.max_steps={r}"]
    return [f"distill.sft.max_steps={s + r}"]


def steps(recipe: Any) -> tuple[int, int]:
    """(SFT steps, adversarial steps) of a recipe."""
    d = recipe.distill
    return d.sft.max_steps * d.sft.enabled, d.adversarial.max_steps * d.adversarial.enabled


def check_budget(recipes: dict[str, Any]) -> int:
    """The common step total; stops when methods would get different budgets."""
    totals = {m: sum(steps(r)) for m, r in recipes.items()}
    if len(set(totals.values())) > 1:
        sys.exit(f"methods have different step budgets {totals}: change steps with --sft-steps/--adv-steps, "
                 "not --set distill.*.max_steps")
    return next(iter(totals.values()))


def curve_points(total: int, boundary: int, n_points: int) -> list[int]:
    """Global steps evaluated during training: n_points evenly spaced ones plus the stage boundary."""
    points = {round(total * k / n_points) for k in range(1, n_points)} | {boundary}
    return sorted(p for p in points if 0 < p < total)


# ----------------------------------------------------------------------------- shared inputs
def prepare(work: Path, n: int, recipes: dict[str, Any]) -> dict[str, Path]:
    """Data, one sample store and one matched set per distinct matching config; {method: matched dir}."""
    from rmsd.data.synthvid import generate
    from rmsd.pipeline import match_recipe, sample_recipe

    info = work / "data" / "info.json"
    if info.is_file() and json.loads(info.read_text()).get("n") != n:
        sys.exit(f"{work / 'data'} was generated with another --n: choose another --work")
    if not info.is_file():
        generate(work / "data", n=n, seed=DATA_SEED)
    first = next(iter(recipes.values()))
    sample_recipe(first, progress=False)  # resumable: a second call only fills what is missing
    configs: dict[Path, Any] = {}
    for method, recipe in recipes.items():
        out = Path(recipe.matching.out)
        cfg = recipe.matching.model_dump(exclude={"out"})
        if configs.setdefault(out, cfg) != cfg:
            sys.exit(f"{out}: two methods match differently into one folder; give {method} its own matching.out")
    for out in configs:
        recipe = next(r for r in recipes.values() if Path(r.matching.out) == out)
        match_recipe(recipe, recipe.sampling.out, out)
    return {m: Path(r.matching.out) for m, r in recipes.items()}


# ----------------------------------------------------------------------------- accuracy along the way
class CurveCallback(TrainerCallback):
    """Evaluates the training model on the test split at chosen global steps (greedy, the eval settings).

    A stage's own step counter restarts at 0; `offsets` maps a stage (its output folder's
    name) to the global step it starts at. Single-process only, as this script runs.
    """

    def __init__(self, recipe: Any, points: list[int], offsets: dict[str, int]):
        from rmsd.pipeline import benchmark_of, load_recipe_items

        self.recipe, self.points, self.offsets = recipe, set(points), offsets
        self.benchmark = benchmark_of(recipe)
        self.items = load_recipe_items(recipe, split=recipe.dataset.eval_split, limit=recipe.eval.limit)
        self.curve: list[dict[str, Any]] = []
        self.train_log: list[dict[str, Any]] = []  # the adversarial stage's logged rewards, per step
        self.seconds = 0.0  # spent evaluating, to take out of the train time

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
        if Path(args.output_dir).name == "adversarial" and logs and "reward" in logs:
            keep = {k: v for k, v in logs.items() if k.startswith(("reward", "visd/", "discriminator/"))}
            self.train_log.append({"step": state.global_step, **keep})

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, processing_class: Any = None,
                    **_: Any) -> None:
        stage = Path(args.output_dir).name
        step = self.offsets.get(stage, 0) + state.global_step
        if step in self.points and model is not None:
            t0 = time.perf_counter()
            self.curve.append({"stage": stage, "step": step, **self.evaluate(model, processing_class)})
            self.seconds += time.perf_counter() - t0

    def evaluate(self, model: Any, processor: Any) -> dict[str, Any]:
        from rmsd.eval.evaluate import predict, score_predictions

        ev, ds = self.recipe.eval, self.recipe.dataset
        training = model.training
        model.eval()
        try:
            texts = predict(model, processor, self.items, batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens,
                            num_frames=ds.num_frames, max_side=ds.max_side)
        finally:
            model.train(training)
        agg = self.benchmark.aggregate(score_predictions(self.items, texts, self.benchmark, ev.extraction))
        return {"overall": agg["overall"], "task_type": agg.get("breakdowns", {}).get("task_type", {})}


# ----------------------------------------------------------------------------- one run
def run_method(method: str, recipe: Any, matched: Path, seed: int, work: Path, points: list[int]) -> dict[str, Any]:
    """Distil one method with one seed; the curve at `points` (global steps), the final eval, the train time."""
    from rmsd.pipeline import distill_recipe, eval_recipe

    run = Path(recipe.distill.out)
    cached = run_cache.cached(run, recipe, points)
    if cached is not None:
        return cached
    shutil.rmtree(run, ignore_errors=True)  # a half-finished earlier attempt: start clean, the curve needs it
    run.mkdir(parents=True)
    s, r = steps(recipe)
    prefix_curve, prefix_seconds = [], 0.0
    if s and r:  # methods 4-7: link the shared SFT stage, then train the adversarial stage alone
        prefix, prefix_curve, prefix_seconds = sft_prefix(method, recipe, matched, seed, work, points)
        (run / "sft").symlink_to(prefix.resolve(), target_is_directory=True)
    callback = CurveCallback(recipe, points, {"sft": 0, "adversarial": s})
    t0 = time.perf_counter()
    stages = distill_recipe(recipe, matched, resume=True, callbacks=[callback])
    seconds = prefix_seconds + time.perf_counter() - t0 - callback.seconds
    final = eval_recipe(recipe, stages[list(stages)[-1]], out=run / "eval" / "final", show=False)
    curve = prefix_curve + callback.curve + [{"stage": list(stages)[-1], "step": s + r, "overall": final["overall"],
                                              "task_type": final.get("breakdowns", {}).get("task_type", {})}]
    result = {"method": method, "seed": seed, "final": final, "curve": curve, "train_seconds": round(seconds, 1),
              "train_log": callback.train_log,
              "steps": {"sft": s, "adversarial": r}, "points": points, "recipe": recipe.model_dump(mode="json")}
    (run / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def sft_prefix(method: str, recipe: Any, matched: Path, seed: int, work: Path,
               points: list[int]) -> tuple[Path, list[dict], float]:
    """The S-step SFT stage that methods with an adversarial stage share, trained once per seed and config."""
    from rmsd.pipeline import distill_recipe

    key = json.dumps([recipe.distill.sft.model_dump(mode="json"), str(matched), recipe.student.model_dump(mode="json"),
                      recipe.dataset.model_dump(mode="json"), recipe.eval.model_dump(mode="json", exclude={"out"}),
                      points], sort_keys=True)
    out = work / "sft-prefix" / f"seed{seed}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    done = out / "prefix.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        return out / "sft", saved["curve"], saved["seconds"]
    shutil.rmtree(out, ignore_errors=True)
    alone = recipe.model_copy(deep=True)
    alone.distill.adversarial.enabled = False
    alone.distill.out = str(out)
    callback = CurveCallback(alone, points, {"sft": 0})
    t0 = time.perf_counter()
    distill_recipe(alone, matched, callbacks=[callback])
    seconds = round(time.perf_counter() - t0 - callback.seconds, 1)
    done.write_text(json.dumps({"first_method": method, "curve": callback.curve, "seconds": seconds}, indent=2))
    return out / "sft", callback.curve, seconds


def untrained(recipe: Any, seed: int) -> dict[str, Any]:
    """The student before training (step 0 of every curve of this seed)."""
    from rmsd.pipeline import eval_recipe, student_path

    final = eval_recipe(recipe, student_path(recipe), out=Path(recipe.student.build_out).with_name(
        f"untrained_eval_seed{seed}"), show=False)
    return {"method": "untrained", "seed": seed, "final": final, "curve": [], "train_seconds": 0.0}


def guarded(method: str, seed: int, fn: Any, *args: Any) -> dict[str, Any]:
    """fn(*args), or a record of its error: one failing method must not stop the others."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - recorded in the results, the run goes on
        print(f"{method} seed {seed}: FAILED: {type(e).__name__}: {e}", flush=True)
        return {"method": method, "seed": seed, "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=8)}


# ----------------------------------------------------------------------------- summary
def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method (the untrained student first): mean and std over seeds, failures."""
    rows = []
    for method in ("untrained", *METHODS):
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        ok = [r for r in mine if "error" not in r]
        row = {"method": method, "seeds": [r["seed"] for r in ok], "errors": {r["seed"]: r["error"] for r in mine
                                                                                if "error" in r}}
        if ok:
            row["overall"] = _stats([r["final"]["overall"] for r in ok])
            row["task_type"] = {t: _stats([r["final"].get("breakdowns", {}).get("task_type", {}).get(t, 0.0)
                                           for r in ok]) for t in TASK_TYPES}
            row["train_seconds"] = _stats([r["train_seconds"] for r in ok])
        rows.append(row)
    return rows


def _stats(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def _cell(s: dict[str, float] | None, digits: int = 3) -> str:
    if s is None:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def results_table(summary: list[dict[str, Any]]) -> str:
    lines = ["| method | seeds | overall | " + " | ".join(TASK_TYPES) + " | train s |",
             "|---|---|" + "---:|" * (len(TASK_TYPES) + 2)]
    for row in summary:
        if "overall" not in row:
            lines.append(f"| {row['method']} | 0 | failed | " + " | ".join("-" for _ in TASK_TYPES) + " | - |")
            continue
        cells = [_cell(row["overall"])] + [_cell(row["task_type"][t]) for t in TASK_TYPES]
        secs = _cell(row["train_seconds"], 0) if row["method"] != "untrained" else "-"
        failed = f" (+{len(row['errors'])} failed)" if row["errors"] else ""
        lines.append(f"| {row['method']} | {len(row['seeds'])}{failed} | " + " | ".join(cells) + f" | {secs} |")
    return "\n".join(lines)


def teacher_table(report: dict[str, Any]) -> str:
    lines = ["| teacher | samples | format-error rate | kept | reliability estimate (label-free) | true accuracy |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, t in report.get("teachers", {}).items():
        rel = t.get("reliability_overall", {})
        lines.append(f"| {name} | {t.get('samples', 0)} | {_num(t.get('format_error_rate'))} | "
                     f"{t.get('kept', 0) / max(t.get('samples', 1), 1):.2f} | {_num(rel.get('estimate'))} | "
                     f"{_num(rel.get('true'))} |")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": [round(x, 1) for x in os.getloadavg()], "python": platform.python_version()}


def write_results(out: Path, meta: dict[str, Any], runs: list[dict[str, Any]], report: dict[str, Any],
                  matched_rows: list[dict[str, Any]]) -> None:
    """reproduce.json, reproduce.md and the three PNGs (a plot that fails is noted, the rest is kept)."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    plots = {"reproduce_curves.png": lambda p: plot_curves(runs, meta["budget"], p),
             "reproduce_teachers.png": lambda p: plot_teachers(report, p),
             "reproduce_weights.png": lambda p: plot_weights(matched_rows, meta["min_weight"], p),
             "reproduce_visd.png": lambda p: steps_to_target.plot(runs, p)}
    plot_errors = {}
    for name, draw in plots.items():
        try:
            draw(out / name)
        except Exception as e:  # noqa: BLE001 - a broken plot must not lose the numbers
            plot_errors[name] = f"{type(e).__name__}: {e}"
    (out / "reproduce.json").write_text(json.dumps(
        {**meta, "summary": summary, "plot_errors": plot_errors, "match_report": report, "runs": runs},
        indent=2, default=str))
    (out / "reproduce.md").write_text(markdown(meta, summary, report, runs, plot_errors))


def markdown(meta: dict[str, Any], summary: list[dict[str, Any]], report: dict[str, Any], runs: list[dict[str, Any]],
             plot_errors: dict[str, str]) -> str:
    b, m = meta["budget"], meta["machine"]
    failures = [f"- {r['method']} seed {r['seed']}: `{r['error']}`" for r in runs if "error" in r]
    parts = [
        "# synthvid reproduction: multi-sample reliable distillation against its baselines", "",
        "**QUICK SMOKE RUN: tiny data and steps, not a measurement.**\n" if meta["quick"] else "",
        f"Command: `{meta['command']}`", "",
        f"Machine: {m['machine']}, {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
        f"GPU: {m['gpu'] or 'none'}; load average at the end {m['load_average']}. Wall time {meta['wall_seconds']:.0f} s.",
        "",
        f"Data: synthvid, {meta['data']['train']} train / {meta['data']['test']} test items (data seed {DATA_SEED}); "
        f"pool `teachers/experiment_pool.yaml` (simulated: t1-strong with format slips, t2-weak, t3-biased); "
        f"matching label-free (Dawid–Skene) except anchored (10% of the items labelled) and gt (ground truth). "
        f"Seeds: {meta['seeds']} (student init, data order, rollouts).",
        "",
        f"Budget: {b['total']} optimisation steps for every method: single, uniform, matched, anchored, gt train {b['total']} SFT "
        f"steps; rmsd, sft_rl, visd, visd_rl train {b['sft']} SFT steps then {b['adversarial']} adversarial (GRPO) steps. "
        "Steps are equal, compute is not: see train s (training only, the curve's evaluations left out; methods "
        "4-7 share one SFT stage per seed, whose seconds each of them counts).", "",
        f"Curve: test accuracy at global steps {meta['points']} and at the end; step 0 is the untrained student.", "",
        "## Test accuracy, mean ± std over seeds", "",
        results_table(summary), "",
        "Accuracy is the benchmark's harness score (greedy decoding, the eval split); per task type beside it.", "",
        "## Accuracy vs steps", "", "![accuracy vs steps](reproduce_curves.png)", "",
        "## Teachers (match report of the quality-matched set)", "", teacher_table(report), "",
        "![teacher reliability](reproduce_teachers.png)", "",
        "## Weights of the matched samples", "", "![weight distribution](reproduce_weights.png)", "",
    ]
    pairs = [c for b, v in steps_to_target.PAIRS if (c := steps_to_target.compare(runs, b, v)) is not None]
    if pairs:
        parts += ["## VISD vs GRPO: steps to a target training reward", "", steps_to_target.__doc__.split("\n\n")[2],
                  "", *[steps_to_target.markdown(c) + "\n" for c in pairs], "![reward curves](reproduce_visd.png)", ""]
    if failures or plot_errors:
        parts += ["## Failures", "", *failures, *[f"- plot {k}: `{v}`" for k, v in plot_errors.items()], ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: list[dict[str, Any]], budget: dict[str, int], path: Path) -> None:
    """Accuracy vs global step per method: mean over seeds, a ±1 std band; step 0 = untrained student."""
    import numpy as np

    plt = _pyplot()
    start = {r["seed"]: r["final"]["overall"] for r in runs if r["method"] == "untrained" and "error" not in r}
    fig, ax = plt.subplots(figsize=(8, 5))
    try:
        for method in METHODS:
            curves = [[{"step": 0, "overall": start[r["seed"]]}] * (r["seed"] in start) + r["curve"]
                      for r in runs if r["method"] == method and "error" not in r]
            if not curves:
                continue
            steps_ = sorted({p["step"] for c in curves for p in c})
            values = [[p["overall"] for c in curves for p in c if p["step"] == s] for s in steps_]
            mean = np.array([statistics.mean(v) for v in values])
            std = np.array([statistics.stdev(v) if len(v) > 1 else 0.0 for v in values])
            color = f"C{METHODS.index(method)}"  # one colour per method in every run's plot
            ax.plot(steps_, mean, marker="o", ms=3, color=color, label=f"{method} (n={len(curves)})")
            ax.fill_between(steps_, mean - std, mean + std, color=color, alpha=0.15)
        ax.axvline(budget["sft"], color="grey", ls=":", lw=1)
        ax.text(budget["sft"], ax.get_ylim()[1], "adversarial stages start (rmsd, sft_rl, visd, visd_rl) ", va="top",
                ha="right", fontsize=8, color="grey")
        ax.set_xlabel("optimisation step")
        ax.set_ylabel("synthvid test accuracy")
        ax.set_title("accuracy vs steps (mean over seeds, band ±1 std)")
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def plot_teachers(report: dict[str, Any], path: Path) -> None:
    """Per teacher: label-free reliability against the truth per task type, format errors, kept share."""
    import numpy as np

    plt = _pyplot()
    teachers = report.get("teachers", {})
    names = list(teachers)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [2, 1, 1]})
    try:
        closed = ("mcq", "numeric", "grounding")
        width = 0.8 / len(closed)
        for i, task in enumerate(closed):
            rel = [teachers[t].get("reliability", {}).get(task, {}) for t in names]
            est = [np.nan if r.get("estimate") is None else r["estimate"] for r in rel]
            true = [np.nan if r.get("true") is None else r["true"] for r in rel]
            pos = x - 0.4 + width * (i + 0.5)
            axes[0].bar(pos, est, width * 0.9, label=f"{task} (estimate)")
            axes[0].scatter(pos, true, marker="_", s=200, color="black", zorder=3,
                            label="true accuracy" if i == 0 else None)
        axes[0].set_title("reliability per teacher: Dawid–Skene estimate (bars) vs truth (ticks)")
        axes[0].set_ylim(0, 1.15)
        axes[0].legend(fontsize=7, ncol=4, loc="upper right")
        rates = [teachers[t].get("format_error_rate") or 0.0 for t in names]
        axes[1].bar(x, rates, 0.6, color="tab:red")
        axes[1].set_title("format-error rate")
        kept = [teachers[t].get("kept", 0) / max(teachers[t].get("samples", 1), 1) for t in names]
        axes[2].bar(x, kept, 0.6, color="tab:green")
        axes[2].set_title("share of samples kept by matching")
        for ax in axes:
            ax.set_xticks(x, names)
            ax.grid(axis="y", alpha=0.3)
        axes[1].set_ylim(0, max(0.3, max(rates, default=0) * 1.2))
        axes[2].set_ylim(0, 1)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def plot_weights(rows: list[dict[str, Any]], min_weight: float, path: Path) -> None:
    """Histogram of match weights of the format-valid samples, per task type, stacked by teacher."""
    import numpy as np

    plt = _pyplot()
    teachers = sorted({r["teacher"] for r in rows})
    edges = np.linspace(0, 1, 11)
    fig, axes = plt.subplots(1, len(TASK_TYPES), figsize=(15, 3.8))
    try:
        for ax, task in zip(axes, TASK_TYPES, strict=True):
            valid = [r for r in rows if r["task_type"] == task and r.get("format_ok") and r.get("answer") is not None]
            bottom = np.zeros(len(edges) - 1)
            for t in teachers:
                counts, _ = np.histogram([float(r["weight"]) for r in valid if r["teacher"] == t], bins=edges)
                ax.bar(edges[:-1], counts, width=np.diff(edges), bottom=bottom, align="edge", label=t,
                       edgecolor="white")
                bottom += counts
            if task != "open":
                ax.axvline(min_weight, color="black", ls="--", lw=1)
            kept = sum(bool(r["kept"]) for r in valid)
            ax.set_title(f"{task}: {kept} of {len(valid)} valid samples kept", fontsize=10)
            ax.set_xlabel("match weight")
        axes[0].set_ylabel("samples")
        axes[0].legend(fontsize=8)
        fig.suptitle("weights of the quality-matched samples (dashed: min_weight; open-ended: uniform)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=None, help="synthvid items, 80%% train / 20%% test (default 1200)")
    ap.add_argument("--work", type=Path, default=None, help="runs folder (default runs/reproduce[-quick])")
    ap.add_argument("--results", type=Path, default=None, help="default benchmarks/results; with --quick WORK/results")
    ap.add_argument("--sft-steps", type=int, default=None, help="S for every method (default: the recipes' 250)")
    ap.add_argument("--adv-steps", type=int, default=None, help="R for every method (default: the recipes' 50)")
    ap.add_argument("--points", type=int, default=None, help="curve points per run (default 6)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override for every method, e.g. --set student.device=cuda")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny data and steps, a few minutes")
    args = ap.parse_args()
    if any(o.split("=", 1)[0].strip().endswith(".max_steps") for o in args.overrides):
        ap.error("set the step budget with --sft-steps/--adv-steps (one S and R for every method), not --set")
    if args.quick:
        for key in ("n", "sft_steps", "adv_steps", "points"):
            setattr(args, key, QUICK[key] if getattr(args, key) is None else getattr(args, key))
        args.overrides = QUICK["overrides"] + args.overrides
    args.n = args.n or 1200
    args.points = args.points or 6
    args.work = args.work or ROOT / ("runs/reproduce-quick" if args.quick else "runs/reproduce")
    args.results = args.results or (args.work / "results" if args.quick else RESULTS)
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    recipes = {seed: {m: load_method(m, args.work, seed, args.overrides + budget_overrides(m, args.sft_steps,
                                                                                          args.adv_steps))
                      for m in args.methods} for seed in args.seeds}
    first = recipes[args.seeds[0]]
    total = check_budget(first)
    # S, where the adversarial stages start, whichever methods run: the curve points stay the same.
    s = steps(load_method("rmsd", args.work, 0, args.overrides + budget_overrides("rmsd", args.sft_steps,
                                                                                  args.adv_steps)))[0]
    points = curve_points(total, s, args.points)  # the same global steps for every method
    matched = prepare(args.work, args.n, first)
    info = json.loads((args.work / "data" / "info.json").read_text())
    main_matched = next((d for d in matched.values() if d.name == "matched"), next(iter(matched.values())))
    report = json.loads((main_matched / "match_report.json").read_text())
    matched_rows = [json.loads(line) for line in (main_matched / "matched.jsonl").open()]
    meta = {"command": "python benchmarks/reproduce.py " + shlex.join(sys.argv[1:]), "quick": args.quick,
            "methods": args.methods, "seeds": args.seeds, "n": args.n, "overrides": args.overrides,
            "budget": {"total": total, "sft": s, "adversarial": total - s}, "points": points,
            "data": info["counts"], "min_weight": report.get("config", {}).get("min_weight", 0.5),
            "machine": machine(), "wall_seconds": 0.0}
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:  # seed-major: after the first seed every method has a number
        runs.append(guarded("untrained", seed, untrained, next(iter(recipes[seed].values())), seed))
        for method in args.methods:
            run = guarded(method, seed, run_method, method, recipes[seed][method], matched[method], seed, args.work,
                          points)
            runs.append(run)
            if "error" not in run:
                print(f"{method} seed {seed}: overall {run['final']['overall']:.3f} "
                      f"({run['train_seconds']:.0f} s)", flush=True)
        meta.update(machine=machine(), wall_seconds=time.perf_counter() - started)
        write_results(args.results, meta, runs, report, matched_rows)
    print(results_table(summarise(runs)))
    print(f"results in {args.results}")


if __name__ == "__main__":
    main()
