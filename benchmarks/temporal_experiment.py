"""Does Video-R1's temporal contrast help the tiny student on synthvid's temporal questions? (issue 34, item 4)

The experiment declared in benchmarks/results/temporal_v1.md: from ONE SFT checkpoint (the
pre-trained base student, then the synthvid experiment's quality-matched SFT stage), the RL
stage of recipes/synthvid/experiment_sft_rl.yaml (GRPO on correctness + format) with and
without the temporal contrast (recipes/synthvid/experiment_sft_rl_temporal.yaml), two seeds
each (the RL stage's seed: rollouts, data order, each item's frame permutation). Every run is
scored greedily on the test split, split into the temporal question kinds (order, direction,
when, last: answerable only from the order of frames) and the rest; the RL stage's own log
adds the four temporal figures (ordered / shuffled training accuracy, bonus firing share,
mean bonus). Data, teacher samples and matching are those of benchmarks/reproduce.py
(`prepare`: simulated pool, label-free matching); the RL stage reads the train split's labels
(a verifiable reward). One job at a time, single-process; finished runs are kept under --work
and not trained again.

The declared run writes temporal_v1.json and temporal_v1_results.md beside the declaration;
--quick (the smoke test) writes them to WORK/results instead. The settings are fixed here
(`DECLARED`) as the declaration states them; a different design is a new declaration.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/temporal_experiment.py --commit           # the declared experiment
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/temporal_experiment.py --quick --work /tmp/temporal_smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import reproduce  # sibling script: data, samples and matching of the synthvid experiment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TEMPORAL_KINDS = ("order", "direction", "when", "last")
VARIANTS = {"plain": "sft_rl", "temporal": "sft_rl_temporal"}  # experiment_<method>.yaml
# Fixed in benchmarks/results/temporal_v1.md before the first run (the budget's arithmetic is there).
DECLARED = {"n": 2000, "seeds": [0, 1], "sft_steps": 250, "rl_steps": 200, "sft_seed": 0}
QUICK = {"n": 60, "seeds": [0, 1], "sft_steps": 4, "rl_steps": 3, "sft_seed": 0,
         "overrides": ["distill.sft.batch_size=4", "distill.sft.warmup_steps=1", "distill.sft.save_steps=10",
                       "distill.adversarial.batch_size=2", "distill.adversarial.max_completion_length=24",
                       "distill.adversarial.warmup_steps=1", "distill.adversarial.save_steps=10",
                       "eval.max_new_tokens=32"]}


# ----------------------------------------------------------------------------- the runs
def base_student(work: Path, given: Path | None, quick: bool) -> Path:
    """The pre-trained base: --base, else `rmsd build-student --pretrain`'s (the shipped one when it matches, else
    trained here, ~25 min, outside the training budget); --quick: a random-weight tiny student (a smoke test)."""
    if given is not None:
        return given.resolve()
    if quick:
        from rmsd.models.offline.tiny import build_student

        out = work / "base-untrained"
        return out if (out / "config.json").is_file() else build_student(out, size="tiny", seed=0)
    from rmsd.models.offline.pretrain import pretrained_base

    out = work / "base"
    return out if (out / "pretrain.json").is_file() else pretrained_base(out, size="tiny", seed=0)


def recipe(variant: str, work: Path, seed: int, student: Path, overrides: list[str]) -> Any:
    """experiment_<variant>.yaml with its paths under WORK, the seed, and `student` as the starting checkpoint."""
    return reproduce.load_method(VARIANTS[variant], work, seed,
                                 [*overrides, f"student.path={student}", "student.build=null"])


def sft_checkpoint(work: Path, base: Path, matched: Path, steps: int, seed: int, overrides: list[str]) -> Path:
    """The one SFT checkpoint every RL run starts from (trained once)."""
    from rmsd.pipeline import distill_recipe

    r = recipe("plain", work, seed, base, [*overrides, f"distill.sft.max_steps={steps}",
                                           "distill.adversarial.enabled=false"])
    r.distill.out = str(work / "sft")
    done = work / "sft" / "sft" / "config.json"
    if not done.is_file():
        distill_recipe(r, matched, resume=True, progress=False)
    return done.parent


def split_scores(results: dict[str, Any]) -> dict[str, Any]:
    """Item-weighted accuracy over the temporal question kinds and over the rest, from a results JSON."""
    scores = results["breakdowns"]["question_kind"]
    counts = results["counts"]["question_kind"]

    def pooled(kinds: list[str]) -> dict[str, Any]:
        n = sum(counts[k] for k in kinds)
        return {"accuracy": sum(scores[k] * counts[k] for k in kinds) / n if n else None, "n": n}

    temporal = [k for k in scores if k in TEMPORAL_KINDS]
    return {"temporal": pooled(temporal), "rest": pooled([k for k in scores if k not in TEMPORAL_KINDS]),
            "overall": results["overall"], "by_kind": scores, "counts": counts}


def train_figures(stage: Path) -> dict[str, Any]:
    """Mean over the logged steps of the RL stage's rewards and temporal figures (trainer_state.json)."""
    states = sorted(stage.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not states:
        return {}
    logs = [h for h in json.loads(states[-1].read_text())["log_history"] if "reward" in h]
    keys = sorted({k for h in logs for k in h if k.startswith(("temporal/", "rewards/correctness")) or k == "reward"})
    return {k: sum(h[k] for h in logs if k in h) / sum(k in h for h in logs) for k in keys} | {"logged_steps": len(logs)}


def rl_run(variant: str, seed: int, work: Path, sft: Path, matched: Path, steps: int,
           overrides: list[str]) -> dict[str, Any]:
    from rmsd.pipeline import distill_recipe, eval_recipe

    r = recipe(variant, work, seed, sft, [*overrides, "distill.sft.enabled=false",
                                          f"distill.adversarial.max_steps={steps}"])
    run = Path(r.distill.out)  # WORK/<method>/seed<seed>, as benchmarks/reproduce.py lays runs out
    if (run / "result.json").is_file():
        return json.loads((run / "result.json").read_text())
    load = os.getloadavg()
    t0 = time.perf_counter()
    stages = distill_recipe(r, matched, resume=True, progress=False)
    seconds = time.perf_counter() - t0
    final = eval_recipe(r, stages["adversarial"], out=run / "eval", show=False)["synthvid"]
    result = {"variant": variant, "seed": seed, "train_seconds": round(seconds, 1), "load_at_start": load,
              "scores": split_scores(final), "train": train_figures(stages["adversarial"]),
              "temporal": r.distill.adversarial.temporal.model_dump()}
    (run / "result.json").write_text(json.dumps(result, indent=2))
    return result


# ----------------------------------------------------------------------------- the report
def table(sft: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    rows = ["| run | seed | temporal kinds | rest | overall | train ordered acc. | train shuffled acc. | bonus fired | "
            "mean bonus | train s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| SFT checkpoint (start) | - | {sft['temporal']['accuracy']:.3f} | {sft['rest']['accuracy']:.3f} | "
            f"{sft['overall']:.3f} | | | | | |"]
    for r in runs:
        s = r["scores"]
        train = dict(r["train"])
        # without the contrast, the correctness reward is the ordered training accuracy (with it, it holds the bonus)
        train.setdefault("temporal/ordered_accuracy", train.get("rewards/correctness/mean"))
        figs = " | ".join(f"{train[k]:.3f}" if train.get(k) is not None else "-" for k in (
            "temporal/ordered_accuracy", "temporal/shuffled_accuracy", "temporal/bonus_fired", "temporal/bonus_mean"))
        rows.append(f"| {r['variant']} | {r['seed']} | {s['temporal']['accuracy']:.3f} | {s['rest']['accuracy']:.3f} "
                    f"| {s['overall']:.3f} | {figs} | {r['train_seconds']:.0f} |")
    for variant in VARIANTS:
        mine = [r["scores"] for r in runs if r["variant"] == variant]
        if mine:
            rows.append(f"| **{variant}, mean** | {len(mine)} | "
                        f"{sum(m['temporal']['accuracy'] for m in mine) / len(mine):.3f} | "
                        f"{sum(m['rest']['accuracy'] for m in mine) / len(mine):.3f} | "
                        f"{sum(m['overall'] for m in mine) / len(mine):.3f} | | | | | |")
    return "\n".join(rows)


def reading(runs: list[dict[str, Any]], part: str, n: int) -> dict[str, Any]:
    """temporal_v1.md's reading rule on one part of the test split ("temporal" kinds or "rest"): d_s = temporal -
    plain accuracy per seed; helped when every d_s > 0 and their mean exceeds 1 / sqrt(n), hurt in the mirror case,
    else no measurable effect (also while a seed is missing)."""
    acc = {(r["variant"], r["seed"]): r["scores"][part]["accuracy"] for r in runs}
    seeds = sorted({s for v, s in acc if (("plain", s) in acc and ("temporal", s) in acc)})
    d = {s: acc["temporal", s] - acc["plain", s] for s in seeds}
    bar, mean = 1 / math.sqrt(n), (sum(d.values()) / len(d) if d else 0.0)
    complete = len(seeds) == len(DECLARED["seeds"])
    verdict = ("helped" if complete and all(x > 0 for x in d.values()) and mean > bar else
               "hurt" if complete and all(x < 0 for x in d.values()) and mean < -bar else
               "no measurable effect at this size" if complete else "pending (not every seed has both arms)")
    return {"d": d, "mean": mean, "bar": bar, "verdict": verdict}


def reading_lines(runs: list[dict[str, Any]], n_t: int, n_r: int) -> list[str]:
    lines = ["## Reading (the declared rule)", ""]
    for part, n, name in (("temporal", n_t, "temporal kinds"), ("rest", n_r, "the rest")):
        r = reading(runs, part, n)
        ds = ", ".join(f"d_{s} = {x * 100:+.1f}" for s, x in r["d"].items())
        lines.append(f"- {name} ({n} items): {ds or 'no pair yet'}; mean {r['mean'] * 100:+.1f} points against the "
                     f"bar 1/sqrt({n}) = {r['bar'] * 100:.1f}: **{r['verdict']}**")
    return lines + [""]


def shown_command(command: str) -> str:
    """The command as run, in backticks, with the script under its name today (the runs of 2026-12-07 ran it as
    temporal.py)."""
    script, parts = Path(__file__).name, command.split(" ")
    if len(parts) > 1 and parts[1].startswith("benchmarks/") and parts[1] != f"benchmarks/{script}":
        renamed = " ".join([parts[0], f"benchmarks/{script}", *parts[2:]])
        return f"`{renamed}` (run as {Path(parts[1]).name}, the script's earlier name)"
    return f"`{command}`"


def report(out: Path, settings: dict[str, Any], sft: dict[str, Any], runs: list[dict[str, Any]],
           command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {"command": command, "settings": settings, "sft": sft, "runs": runs}
    (out / "temporal_v1.json").write_text(json.dumps(data, indent=2) + "\n")
    n_t, n_r = sft["temporal"]["n"], sft["rest"]["n"]
    text = ["# Temporal contrast experiment v1: results (declared in temporal_v1.md)", "",
            f"Command: {shown_command(command)}", "",
            f"Test items: {n_t} of the temporal kinds ({', '.join(TEMPORAL_KINDS)}), {n_r} of the rest. Accuracy: "
            "the benchmark's score per item (mcq/numeric exact, grounding tIoU, open ROUGE-L), item-weighted. "
            "Training figures: means over the RL stage's logged steps.", "", table(sft, runs), "",
            *reading_lines(runs, n_t, n_r)]
    (out / "temporal_v1_results.md").write_text("\n".join(text))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/temporal_v1"))
    ap.add_argument("--base", type=Path, default=None, help="pre-trained base folder (default: built or shipped)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny data and steps, an untrained base")
    ap.add_argument("--report", action="store_true", help="only rewrite temporal_v1_results.md from temporal_v1.json")
    ap.add_argument("--commit", action="store_true",
                    help="git-commit the results after every finished run (an interrupted experiment keeps them)")
    args = ap.parse_args()
    if args.report:  # the report's form changed after the runs: re-read them, train nothing
        saved = json.loads((RESULTS / "temporal_v1.json").read_text())
        report(RESULTS, saved["settings"], saved["sft"], saved["runs"], saved["command"])
        print((RESULTS / "temporal_v1_results.md").read_text())
        return
    settings = dict(QUICK if args.quick else DECLARED)
    overrides = list(settings.pop("overrides", []))
    work = args.work.resolve()
    results = work / "results" if args.quick else RESULTS
    command = "python " + " ".join(sys.argv)

    base = base_student(work, args.base, args.quick)
    recipes = {v: recipe(v, work, settings["sft_seed"], base, overrides) for v in VARIANTS}
    matched = reproduce.prepare(work, settings["n"], recipes)
    if len(set(matched.values())) != 1:
        sys.exit("the two variants must distil from one matched set")
    matched_dir = matched["plain"]
    sft = sft_checkpoint(work, base, matched_dir, settings["sft_steps"], settings["sft_seed"], overrides)
    from rmsd.pipeline import eval_recipe

    start = recipes["plain"]
    sft_scores = split_scores(eval_recipe(start, sft, out=work / "sft" / "eval", show=False)["synthvid"])
    runs: list[dict[str, Any]] = []
    for seed in settings["seeds"]:
        for variant in VARIANTS:  # the results are rewritten (and with --commit committed) after every run
            runs.append(rl_run(variant, seed, work, sft, matched_dir, settings["rl_steps"], overrides))
            report(results, {**settings, "base": str(base), "overrides": overrides}, sft_scores, runs, command)
            if args.commit:
                reproduce.commit_results(results, f"temporal v1: {variant} seed {seed}", pattern="temporal_v1[._]*")
    print((results / "temporal_v1_results.md").read_text())


if __name__ == "__main__":
    main()
