"""Reproduce the seeds' claims on synthvid: does multi-sample reliable distillation beat
single-sample distillation, and does the structured signal speed convergence?

Same student config, same data, same optimisation steps for every method, several seeds
each, on a simulated pool that errs like real teachers (`teachers/experiment_pool_v2.yaml`:
per-question competence around a shared difficulty, systematic weaknesses, two teachers
sharing their mistakes; K = 2 each). Methods (each a recipe in
`recipes/synthvid/experiment_*.yaml`, budget S + R steps with S = 250, R = 50 there):

   ceiling        single-sample SFT on the noise-free twin pool (`teachers/experiment_pool_noise_free.yaml`):
                  perfect targets, S + R SFT steps; ceiling - single is the regime's headroom
   ceiling_multi  every noise-free sample, uniform weights, S + R SFT steps (the sanity regime's uniform;
                  ceiling is its single)
   sanity_matched 3 on the noise-free pool: must tie with ceiling_multi (weights cannot matter there)
1. single   single-sample SFT (one teacher response per item), S + R SFT steps
2. uniform  multi-sample SFT, uniform weights over format-valid samples, S + R SFT steps
3. matched  multi-sample SFT, quality-matched weights (R-MSD data side), S + R SFT steps
   matched_conf 3 with items weighted by the pool's confidence (`weighting: matched_conf`)
   anchored 3 with Dawid–Skene anchored by 10% labelled items (semi-supervised consensus)
   gt       3 with the ground truth's correctness as the weight (as if the training data were labelled)
4. rmsd     3 for S steps + R adversarial steps (full R-MSD)
5. sft_rl   3 for S steps + R GRPO steps with verifiable rewards only (correctness, format)
6. visd     4 + the VISD structured signal
7. visd_rl  5 + the VISD structured signal (VISD vs GRPO, issue 6: `benchmarks/steps_to_target.py`
            compares the training reward curves of sft_rl and visd_rl)
   sft_rl_2e4, visd_rl_2e4: 5 and 7 with the RL stage at lr 2e-4 (run on their own, with
            --results elsewhere; they reuse the main run's SFT stages)

A regime (`REGIMES`, declared with its hash in `benchmarks/results/regime_<name>.md` before
its first run) fixes the methods, seeds, item count and curve points; `--regime v3` runs
exactly it and every result records the hash of what ran (`regime_hash`).

How it runs: the data, the teacher samples (one store per pool) and the matched targets are
made once and shared; a seed sets the student's init (one student per seed, shared by every
method) and the training order and rollouts. Methods 4-7 start from the same S-step SFT
stage, trained once per seed and linked into each run (identical config, so identical in
expectation; its seconds are counted in each method's train time). Accuracy on the test
split is measured during training by a `TrainerCallback` (distill keeps only its last two
checkpoints, so checkpoints cannot give a curve), at the same global steps for every
method; step 0 is the untrained student. A method that fails is recorded with its error
and the others go on; finished runs are cached per (method, seed) under --work
(`result.json`, `run_cache.py`: the same recipe and curve points), so a rerun only redoes what is missing
(a stage folder trained with other inputs is trained again: `rmsd.train.resume`), and the results
are rewritten after every finished run (`--commit` also commits them). It refuses to run
methods whose step totals differ.

Writes to --results (with --regime, benchmarks/results; otherwise WORK/results):
reproduce.md (`reproduce_report.py`: command, regime and hash, machine, mean ± std over seeds
overall and per task type, the untrained student, train seconds, the claims with their
headroom, what the students answered beside their targets), reproduce.json (every run,
curve and error) and reproduce_curves.png, reproduce_teachers.png, reproduce_weights.png,
reproduce_visd.png.

    python benchmarks/reproduce.py --regime v3 --commit          # the declared experiment: ~2.5 h measured (regime_v3.md)
    python benchmarks/reproduce.py --quick --seeds 0 --methods single matched rmsd sft_rl --work /tmp/repro_smoke
    python benchmarks/reproduce.py --sft-steps 150 --adv-steps 30 --set student.device=cuda
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import run_cache  # sibling scripts of this benchmark (a script's own folder is sys.path[0])
import student_errors
from method_recipes import RECIPES, ROOT, budget_overrides, load_method
from regimes import DEFAULT_METHODS, REGIMES, pilot_decision, pilot_rung, regime_hash
from reproduce_report import DATA_SEED, METHODS, machine, results_table, summarise, write_results
from transformers import TrainerCallback

# --quick: a smoke test of every code path in about a minute, not a measurement.
QUICK = {"n": 200, "sft_steps": 20, "adv_steps": 6, "points": 4, "overrides": [
    "distill.sft.batch_size=4", "distill.sft.warmup_steps=2", "distill.sft.logging_steps=5", "distill.sft.save_steps=10",
    "distill.adversarial.batch_size=2", "distill.adversarial.num_generations=2",
    "distill.adversarial.max_completion_length=32", "distill.adversarial.disc_warmup_steps=1",
    "distill.adversarial.warmup_steps=1", "distill.adversarial.logging_steps=2", "eval.max_new_tokens=64",
]}


def commit_results(results: Path, message: str, repo: Path = ROOT, pattern: str = "reproduce*") -> None:
    """Commit the results folder's files named `pattern` (only them: other changes in the checkout stay as they
    are), so an interrupted experiment keeps what finished."""
    import subprocess

    files = [str(p.resolve()) for p in sorted(results.glob(pattern)) if p.is_file()]
    try:
        subprocess.run(["git", "add", "--", *files], cwd=repo, check=True, capture_output=True)
        subprocess.run(["git", "commit", "-m", message, "--", *files], cwd=repo, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:  # a commit that fails must not stop the experiment
        print(f"could not commit the results: {getattr(e, 'stderr', b'').decode().strip() or e}", flush=True)


# ----------------------------------------------------------------------------- budget
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
    from rmsd.pipeline import match_recipe, sample_recipe
    from rmsd.synthvid.generator import generate

    info = work / "data" / "info.json"
    if info.is_file() and json.loads(info.read_text()).get("n") != n:
        sys.exit(f"{work / 'data'} was generated with another --n: choose another --work")
    if not info.is_file():
        generate(work / "data", n=n, seed=DATA_SEED)
    stores: dict[Path, Any] = {}
    for method, recipe in recipes.items():  # one store per pool: the noise-free methods have their own
        pool = recipe.load_pool().model_dump(mode="json")
        if stores.setdefault(Path(recipe.sampling.out), (pool, recipe))[0] != pool:
            sys.exit(f"{recipe.sampling.out}: two pools sample into one store; give {method} its own sampling.out")
    for _, recipe in stores.values():
        sample_recipe(recipe, progress=False)  # resumable: a second call only fills what is missing
    configs: dict[Path, Any] = {}
    for method, recipe in recipes.items():
        out = Path(recipe.matching.out)
        cfg = {**recipe.matching.model_dump(exclude={"out"}), "samples": recipe.sampling.out}
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
def run_method(method: str, recipe: Any, matched: Path, seed: int, work: Path, points: list[int],
               earlier: Any = None) -> dict[str, Any]:
    """Distil one method with one seed; the curve at `points` (global steps), the final eval, the train time.
    `earlier(method, seed, recipe, points)`: the same run from the committed results, if any."""
    from rmsd.pipeline import distill_recipe, eval_recipe, matched_identity

    run = Path(recipe.distill.out)
    identity = matched_identity(matched)
    cached = run_cache.cached(run, recipe, points, identity) or (earlier(method, seed, recipe, points) if earlier
                                                                 else None)
    if cached is not None:
        return {**cached, "cached": True}  # finished in an earlier session (its folder, or its committed result)
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
    final = eval_recipe(recipe, stages[list(stages)[-1]], out=run / "eval" / "final", show=False)["synthvid"]
    final["per_item"] = per_item_scores(run / "eval" / "final")
    curve = prefix_curve + callback.curve + [{"stage": list(stages)[-1], "step": s + r, "overall": final["overall"],
                                              "task_type": final.get("breakdowns", {}).get("task_type", {})}]
    result = {"method": method, "seed": seed, "final": final, "curve": curve, "train_seconds": round(seconds, 1),
              "train_log": callback.train_log,
              "steps": {"sft": s, "adversarial": r}, "points": points, "recipe": recipe.model_dump(mode="json"),
              "matched": identity}
    (run / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def per_item_scores(folder: Path) -> dict[str, float]:
    """{item_id: score} of an evaluation's predictions: the paired per-item comparisons and the per-question-kind
    tables read them from the committed results, where the runs' folders are gone."""
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").open()]
    return {r["item_id"]: round(float(r["score"]), 4) for r in rows}


def sft_prefix(method: str, recipe: Any, matched: Path, seed: int, work: Path,
               points: list[int]) -> tuple[Path, list[dict], float]:
    """The S-step SFT stage that methods with an adversarial stage share, trained once per seed and config: its
    key holds the matched set's identity (the inputs `rmsd match` recorded), not only its path, so a set matched
    again from other samples or settings into the same folder trains a new prefix."""
    from rmsd.pipeline import distill_recipe, matched_identity

    key = json.dumps([recipe.distill.sft.model_dump(mode="json"), str(matched), matched_identity(matched),
                      recipe.student.model_dump(mode="json"),
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
        f"untrained_eval_seed{seed}"), show=False)["synthvid"]
    return {"method": "untrained", "seed": seed, "final": final, "curve": [], "train_seconds": 0.0}


def analysis(work: Path, runs: Path | None = None) -> str:
    """student_errors' sections for the report (`runs`: the method folders, when not in `work`); an analysis that
    fails is said so and loses no number."""
    try:
        return student_errors.sections(work, level="###", runs=runs)
    except Exception as e:  # noqa: BLE001 - the runs' numbers are written whatever happens here
        return f"(the analysis failed: {type(e).__name__}: {e})"


def guarded(method: str, seed: int, fn: Any, *args: Any) -> dict[str, Any]:
    """fn(*args), or a record of its error: one failing method must not stop the others."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - recorded in the results, the run goes on
        print(f"{method} seed {seed}: FAILED: {type(e).__name__}: {e}", flush=True)
        return {"method": method, "seed": seed, "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=8)}


# ----------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=None, help="synthvid items, 80%% train / 20%% test (default 1200)")
    ap.add_argument("--work", type=Path, default=None, help="runs folder (default runs/reproduce[-quick])")
    ap.add_argument("--results", type=Path, default=None, help=(
        "default: benchmarks/results with --regime, WORK/results otherwise"))
    ap.add_argument("--sft-steps", type=int, default=None, help="S for every method (default: the recipes' 250)")
    ap.add_argument("--adv-steps", type=int, default=None, help="R for every method (default: the recipes' 50)")
    ap.add_argument("--points", type=int, default=None, help="curve points per run (default 6)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override for every method, e.g. --set student.device=cuda")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny data and steps, a few minutes")
    ap.add_argument("--regime", choices=sorted(REGIMES), default=None,
                    help="run a declared regime exactly (benchmarks/results/regime_NAME.md): its methods, seeds, "
                         "items and curve points")
    ap.add_argument("--commit", action="store_true",
                    help="git-commit the results files after every finished run (an interruption keeps them)")
    ap.add_argument("--recipes", type=Path, default=RECIPES,
                    help="folder of the experiment_<method>.yaml recipes (default recipes/synthvid: v3's)")
    args = ap.parse_args()
    args.runs = None
    if args.regime:
        fixed = [f for f in ("n", "sft_steps", "adv_steps", "points") if getattr(args, f) is not None]
        if fixed or args.quick or args.overrides or args.methods != list(DEFAULT_METHODS) or args.seeds != [0, 1, 2] \
                or args.recipes != RECIPES:
            ap.error("--regime fixes the methods, seeds, items, steps, points and recipes: leave the other run "
                     "options out")
        regime = REGIMES[args.regime]
        args.methods, args.seeds, args.n, args.points = list(regime["methods"]), list(regime["seeds"]), \
            regime["n"], regime["points"]
        args.recipes = ROOT / regime["recipes"]
        if "pilot" in regime:  # S is the pilot's; each S's runs in their own folder, where the pilot left them
            args.sft_steps, args.adv_steps = pilot_decision(args.regime), regime["adv_steps"]
    if any(o.split("=", 1)[0].strip().endswith(".max_steps") for o in args.overrides):
        ap.error("set the step budget with --sft-steps/--adv-steps (one S and R for every method), not --set")
    if args.quick:
        for key in ("n", "sft_steps", "adv_steps", "points"):
            setattr(args, key, QUICK[key] if getattr(args, key) is None else getattr(args, key))
        args.overrides = QUICK["overrides"] + args.overrides
    args.n = args.n or 1200
    args.points = args.points or 6
    args.work = args.work or ROOT / ("runs/reproduce-quick" if args.quick else
                                     f"runs/reproduce-{args.regime}" if args.regime else "runs/reproduce")
    # a declared regime's results are the repository's (the newest regime's in benchmarks/results, earlier ones in
    # benchmarks/results/synthvid-v<N>); an ad-hoc or quick run never overwrites them
    args.results = args.results or (ROOT / REGIMES[args.regime]["results"] if args.regime else
                                    args.work / "results")
    if args.regime and "pilot" in REGIMES[args.regime]:
        args.runs = args.work / f"S{args.sft_steps}"
    return args


def main() -> None:
    from rmsd.config import load_recipe

    args = parse_args()
    started = time.perf_counter()
    def method_recipe(method: str, seed: int) -> Any:
        budget = budget_overrides(method, args.sft_steps, args.adv_steps, args.recipes)
        return load_method(method, args.work, seed, args.overrides + budget, args.recipes, args.runs)

    recipes = {seed: {m: method_recipe(m, seed) for m in args.methods} for seed in args.seeds}
    first = recipes[args.seeds[0]]
    total = check_budget(first)
    # S, where the adversarial stages start, whichever methods run: the curve points stay the same.
    s = steps(method_recipe("rmsd", 0))[0]
    points = curve_points(total, s, args.points)  # the same global steps for every method
    matched = prepare(args.work, args.n, first)
    info = json.loads((args.work / "data" / "info.json").read_text())
    from rmsd.datasets.synthvid import load_items

    test_items = {it.item_id: {"task_type": it.task_type, "kind": f"{it.meta['difficulty']}/{it.meta['question_kind']}"}
                  for it in load_items(args.work / "data", split="test")}  # per-item claims read them from the json
    main_matched = next((d for d in matched.values() if d.name == "matched"), next(iter(matched.values())))
    report = json.loads((main_matched / "match_report.json").read_text())
    matched_rows = [json.loads(line) for line in (main_matched / "matched.jsonl").open()]
    meta = {"command": "python benchmarks/reproduce.py " + shlex.join(sys.argv[1:]), "quick": args.quick,
            "regime": args.regime, "regime_hash": regime_hash(recipes, args.n, points, args.work),
            "pool": Path(load_recipe(RECIPES / "experiment_base.yaml").pool).name,  # the experiment's (noisy) pool
            "methods": args.methods, "seeds": args.seeds, "n": args.n, "overrides": args.overrides,
            "budget": {"total": total, "sft": s, "adversarial": total - s}, "points": points,
            "data": info["counts"], "test_items": test_items, "min_weight": report.get("config", {}).get("min_weight", 0.5),
            "machine": machine(), "wall_seconds": 0.0}
    committed = args.results / "reproduce.json"  # read before this run rewrites it

    pilot = REGIMES.get(args.regime or "", {}).get("pilot")
    rung = pilot_rung(args.regime, args.sft_steps) if pilot else None
    if rung is not None:  # the pilot's runs at this S, when they ran what this regime runs for them
        subset = {seed: {m: recipes[seed][m] for m in pilot["methods"]} for seed in pilot["seeds"]}
        rung = rung if regime_hash(subset, args.n, points, args.work) == rung["regime_hash"] else None

    def earlier(method: str, seed: int, recipe: Any, at: list[int]) -> dict[str, Any] | None:
        return run_cache.committed(committed_copy, meta["regime_hash"], method, seed, recipe, at) or (
            run_cache.committed_in(rung, rung["regime_hash"], method, seed, recipe, at) if rung else None)

    committed_copy = args.work / "committed_reproduce.json"
    if committed.is_file():
        committed_copy.parent.mkdir(parents=True, exist_ok=True)
        committed_copy.write_text(committed.read_text())
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:  # seed-major: after the first seed every method has a number
        runs.append(guarded("untrained", seed, untrained, next(iter(recipes[seed].values())), seed))
        for method in args.methods:
            run = guarded(method, seed, run_method, method, recipes[seed][method], matched[method], seed, args.work,
                          points, earlier)
            runs.append(run)
            if "error" not in run:
                print(f"{method} seed {seed}: overall {run['final']['overall']:.3f} "
                      f"({run['train_seconds']:.0f} s)", flush=True)
            # every finished run is in the results at once (a cached one too): an interruption loses one run at most
            meta.update(machine=machine(), wall_seconds=time.perf_counter() - started)
            write_results(args.results, meta, runs, report, matched_rows, analysis(args.work, args.runs))
            if args.commit and not run.get("cached"):
                done = "failed" if "error" in run else f"overall {run['final']['overall']:.3f}"
                commit_results(args.results, f"reproduce {args.regime or 'run'} ({meta['regime_hash']}): "
                                             f"{method} seed {seed}, {done}")
    print(results_table(summarise(runs)))
    print(f"results in {args.results}")


if __name__ == "__main__":
    main()
