"""How long does a declared regime of `benchmarks/reproduce.py` take on this machine, and with how many items?

A regime's training cost does not depend on its item count (every method takes the same
steps of the same batch size); its evaluations and data preparation do. This script measures,
in one process and interleaved over rounds (a shared machine slows every variant alike), the
seconds per optimisation step of each distinct workload of the regime — single-sample SFT,
multi-sample SFT on each matched set, the adversarial stages — and the seconds per test item
of an evaluation, each as a ratio to the single-sample SFT step. The totals are then computed
for the regime's step counts and evaluations at several item counts, as measured (on a quiet
machine, the idle estimate) and converted through a reference rate of the single-sample step
(`--idle-single`, from earlier measurements on this machine: 1.5-2.7 steps/s alone; 1.5 by default, the slow
end: on a busy machine, the idle estimate; on a quiet one, a pessimistic bound).

Conservative on purpose: the adversarial stages and the evaluation are timed with the untrained
student, whose rollouts and answers run to their full length (a trained one stops earlier),
and with the discriminator active from the first step.

    python benchmarks/time_regime.py --regime v3 --n 400 --steps 3 --rounds 2 --threads 1   # writes benchmarks/results/regime_v3_timing.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import reproduce  # sibling scripts (a script's own folder is sys.path[0])
import torch
from bench_distill import StepTimer
from method_recipes import load_method

RESULTS = Path(__file__).parent / "results"
# The workloads that differ in cost, and the regime methods (and shared SFT prefix) each one stands for.
SFT_WORKLOADS = {
    "single": ["single"], "ceiling": ["ceiling"], "uniform": ["uniform"],
    "matched": ["matched", "matched_conf", "anchored", "gt", "sft prefix"],
    "ceiling_multi": ["ceiling_multi", "sanity_matched"],
}
ADVERSARIAL = ("rmsd", "sft_rl", "visd_rl")


def build(method: str, recipe: Any, matched: Path, stage: str, steps: int, out: Path, timer: StepTimer) -> Any:
    """The stage's trainer as `rmsd distill` builds it, for `steps` steps, no checkpoints."""
    from rmsd.matching.dataset import read_matched
    from rmsd.pipeline import benchmark_of, load_recipe_items, student_path
    from rmsd.train.distill import DistillContext, build_trainer

    ctx = DistillContext(items={it.item_id: it for it in load_recipe_items(recipe)}, matched=read_matched(matched),
                         out=out, dataset=recipe.dataset, student=recipe.student, report_to=[],
                         shared_prefix=recipe.distill.shared_prefix, benchmark=benchmark_of(recipe),
                         callbacks=[timer], progress=False)
    cfg = getattr(recipe.distill, stage).model_copy(update={"max_steps": steps, "save_steps": 10**6,
                                                            "logging_steps": 10**6})
    if stage == "adversarial":
        cfg = cfg.model_copy(update={"disc_warmup_steps": 0})  # the full step from the first one
    return build_trainer(stage, cfg, ctx, student_path(recipe), out)


def eval_seconds_per_item(recipe: Any) -> float:
    """Greedy predictions of the untrained student on the test split (the regime's eval settings), per item."""
    from rmsd.eval.evaluate import predict
    from rmsd.models.processing import load_student
    from rmsd.pipeline import load_recipe_items, student_path

    items = load_recipe_items(recipe, split=recipe.dataset.eval_split)
    model, processor = load_student(student_path(recipe))
    t0 = time.perf_counter()
    predict(model, processor, items, batch_size=recipe.eval.batch_size, max_new_tokens=recipe.eval.max_new_tokens,
            num_frames=recipe.dataset.num_frames, max_side=recipe.dataset.max_side)
    return (time.perf_counter() - t0) / len(items)


def measure(args: argparse.Namespace, work: Path) -> tuple[dict[str, float], float, float, float]:
    """({workload: median s/step}, eval s/item, preparation seconds, single's s/step as measured)."""
    recipes = {m: load_method(m, work, 0, []) for m in reproduce.REGIMES[args.regime]["methods"]}
    t0 = time.perf_counter()
    matched = reproduce.prepare(work, args.n, recipes)
    prepared = time.perf_counter() - t0
    variants = {w: (w, "sft") for w in SFT_WORKLOADS} | {m: (m, "adversarial") for m in ADVERSARIAL}
    times: dict[str, list[float]] = {k: [] for k in variants}
    evals: list[float] = []
    for r in range(args.rounds):
        for name, (method, stage) in variants.items():
            timer = StepTimer()
            trainer = build(method, recipes[method], matched[method], stage, args.steps + 1, work / "t" / name, timer)
            trainer.train()
            times[name] += timer.times[1:]  # the first step warms caches and lazy imports
            print(f"round {r} {name}: {statistics.median(timer.times[1:]):.2f} s/step", flush=True)
            del trainer
        evals.append(eval_seconds_per_item(recipes["single"]))
    return {k: statistics.median(v) for k, v in times.items()}, statistics.median(evals), prepared, \
        statistics.median(times["single"])


def totals(args: argparse.Namespace, per_step: dict[str, float], per_item: float, prepared: float,
           scale: float) -> list[tuple[int, float, float, float]]:
    """(n, training s, evaluation s, total s) of the whole regime at each item count, seconds times `scale`."""
    regime = reproduce.REGIMES[args.regime]
    sft_total, adv_steps = 300, 50  # the recipes' budget: S + R = 250 + 50 (experiment_base.yaml)
    train = 0.0
    for workload, methods in SFT_WORKLOADS.items():
        for method in methods:
            if method == "sft prefix":
                train += (sft_total - adv_steps) * per_step[workload]
            elif method in regime["methods"]:
                train += sft_total * per_step[workload]
    train += sum(adv_steps * per_step[m] for m in ADVERSARIAL if m in regime["methods"])
    sft_only = sum(1 for ms in SFT_WORKLOADS.values() for m in ms if m in regime["methods"])
    points = len(reproduce.curve_points(sft_total, sft_total - adv_steps, regime["points"]))
    evals = sft_only * (points + 1) + points + len(ADVERSARIAL) + 1  # SFT curves + finals, the prefix's, untrained
    rows = []
    for n in args.sizes:
        test = round(0.2 * n)
        seconds_train = train * len(regime["seeds"]) * scale
        seconds_eval = evals * test * per_item * len(regime["seeds"]) * scale
        rows.append((n, seconds_train, seconds_eval, seconds_train + seconds_eval + prepared * n / args.n * scale))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regime", choices=sorted(reproduce.REGIMES), default="v3")
    ap.add_argument("--n", type=int, default=300, help="items generated for the measurement")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the experiment runs alone on 2 cores)")
    ap.add_argument("--idle-single", type=float, default=1.5, help="single-sample SFT steps/s on the idle machine")
    ap.add_argument("--sizes", type=int, nargs="+", default=[400, 500, 600, 800, 1000, 1200])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        per_step, per_item, prepared, single = measure(args, Path(tmp))
    scale = (1.0 / args.idle_single) / single
    lines = [
        f"# Timing of regime {args.regime} (benchmarks/reproduce.py --regime {args.regime})", "",
        f"Command: `python benchmarks/time_regime.py --regime {args.regime} --n {args.n} --steps {args.steps} "
        f"--rounds {args.rounds} --threads {args.threads} --idle-single {args.idle_single}`", "",
        f"Finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the start "
        f"{' / '.join(f'{x:.1f}' for x in load_start)}, at the end {' / '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"(1 / 5 / 15 min), {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads.", "",
        "| workload | stands for | s/step (as measured) | x single | s/step at the reference rate |",
        "|---|---|---:|---:|---:|",
    ]
    stands = {**{w: ", ".join(ms) for w, ms in SFT_WORKLOADS.items()}, **{m: f"{m} (adversarial stage)" for m in ADVERSARIAL}}
    for name, s in per_step.items():
        lines.append(f"| {name} | {stands[name]} | {s:.3f} | {s / single:.2f} | {s * scale:.3f} |")
    lines += ["", f"Evaluation (untrained student, full-length answers): {per_item:.4f} s per test item as measured, "
              f"{per_item * scale:.4f} at the reference rate; data, sampling and matching of {args.n} items: "
              f"{prepared:.0f} s as measured.",
              "", f"Reference rate: single-sample SFT at {args.idle_single} steps/s alone (earlier measurements on this machine) against "
              f"{1 / single:.2f} steps/s here: every figure x{scale:.3f}.", "",
              "| items | training (h, as measured) | evaluation (h, as measured) | whole regime (h, as measured) | "
              f"whole regime (h, at {args.idle_single} single steps/s) |", "|---:|---:|---:|---:|---:|"]
    for n, tr, ev, tot in totals(args, per_step, per_item, prepared, 1.0):
        lines.append(f"| {n} | {tr / 3600:.2f} | {ev / 3600:.2f} | {tot / 3600:.2f} | {tot * scale / 3600:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        out = RESULTS / f"regime_{args.regime}_timing.md"
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
