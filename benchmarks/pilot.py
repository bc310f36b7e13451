"""A regime's pilot: fix the step budget S before any claim is looked at (benchmarks/results/regime_v4.md).

Runs the pilot's methods (v4: `ceiling` and `single`) and seeds (0 and 1) at each rung of S (600, then 900,
then 1,200 SFT steps, + R = 50 as SFT steps: single-stage methods get S + R), one rung after the other, and
stops at the first S where all of the declared rule holds:

  (a) ceiling - single (overall) >= 5 points on the mean over the two seeds, and >= 2 points on each seed;
  (b) the ceiling's mcq accuracy >= 0.40 on both seeds (the student reads the clip);
  (c) no question kind (difficulty tier / kind, e.g. "easy/colour") holding >= 10% of the test items differs by
      more than 15 points between the two seeds of the same method (no bistable skill left to decide a result).

If no rung passes, the pilot says so and the regime is not run (`reproduce.py --regime v4` refuses). The
runs at the chosen S are the regime's seeds 0 and 1 of `ceiling` and `single` (`reproduce.py` reuses them).
Writes benchmarks/results/pilot_<regime>.md and .json after every run (the table per task type and per
question kind of every rung, each criterion's figures), and `chosen_sft_steps` once a rung decides; with
--commit each finished run is committed, so an interrupted pilot goes on where its last commit left it.

    python benchmarks/pilot.py --regime v4 --commit
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import paired
import reproduce
import run_cache
from method_recipes import ROOT, budget_overrides, load_method
from regimes import REGIMES, RESULTS, regime_hash
from reproduce_report import TASK_TYPES, machine

RULE = {"mean_gap": 0.05, "seed_gap": 0.02, "ceiling_mcq": 0.40, "kind_share": 0.10, "kind_spread": 0.15}


# ----------------------------------------------------------------------------- the rule
def kind_of(item: Any) -> str:
    """The question kind the rule groups by: difficulty tier / kind ("easy/colour")."""
    return f"{item.meta['difficulty']}/{item.meta['question_kind']}"


def kind_scores(run: dict[str, Any], kinds: dict[str, str]) -> dict[str, float]:
    """Mean score per question kind of a run, from its per-item scores."""
    groups: dict[str, list[float]] = {}
    for item_id, score in run["final"]["per_item"].items():
        groups.setdefault(kinds[item_id], []).append(score)
    return {k: statistics.mean(v) for k, v in sorted(groups.items())}


def verdict(runs: dict[tuple[str, int], dict[str, Any]], kinds: dict[str, str], seeds: list[int]) -> dict[str, Any]:
    """The declared rule on one rung: `runs[(method, seed)]` for ceiling and single; `kinds`: item id -> kind."""
    gaps = {s: runs["ceiling", s]["final"]["overall"] - runs["single", s]["final"]["overall"] for s in seeds}
    mcq = {s: runs["ceiling", s]["final"]["breakdowns"]["task_type"]["mcq"] for s in seeds}
    counts: dict[str, int] = {}
    for kind in kinds.values():
        counts[kind] = counts.get(kind, 0) + 1
    big = sorted(k for k, c in counts.items() if c >= RULE["kind_share"] * len(kinds))
    spreads = {}
    for method in ("ceiling", "single"):
        per_seed = [kind_scores(runs[method, s], kinds) for s in seeds]
        for kind in big:
            values = [scores[kind] for scores in per_seed]
            spreads[f"{method} {kind}"] = max(values) - min(values)
    a = statistics.mean(gaps.values()) >= RULE["mean_gap"] and min(gaps.values()) >= RULE["seed_gap"]
    b = min(mcq.values()) >= RULE["ceiling_mcq"]
    c = max(spreads.values(), default=0.0) <= RULE["kind_spread"]
    return {"gap": gaps, "mean_gap": statistics.mean(gaps.values()), "ceiling_mcq": mcq, "big_kinds": big,
            "kind_spread": spreads, "a": a, "b": b, "c": c, "passes": a and b and c}


# ----------------------------------------------------------------------------- the report
def report(regime: str, record: dict[str, Any], kinds: dict[str, str], tasks: dict[str, str] | None = None) -> str:
    """pilot_<regime>.md: the rule, every rung's table per task type and per question kind, the verdicts, and
    (with `tasks`: item id -> task type) each rung's headroom on paired per-item differences."""
    counts: dict[str, int] = {}
    for kind in kinds.values():
        counts[kind] = counts.get(kind, 0) + 1
    order = sorted(counts, key=lambda k: (-counts[k], k))
    lines = [f"# Pilot of regime {regime}", "", f"Command: `{record['command']}`. Rule and regime: "
             f"[regime_{regime}.md](regime_{regime}.md). Decision: **{record.get('chosen_sft_steps') or 'pending'}**"
             " (the S every method of the regime runs at; `none`: no rung met the rule, the regime is not run).",
             "", f"Test items: {len(kinds)}; question kinds holding >= 10% of them: "
             f"{', '.join(k for k in order if counts[k] >= RULE['kind_share'] * len(kinds))}.", ""]
    for s, rung in sorted(record["rungs"].items(), key=lambda x: int(x[0])):
        lines += [f"## S = {s} (+ R = {record['adv_steps']} SFT steps), regime hash `{rung['regime_hash']}`", "",
                  "| method | seed | overall | " + " | ".join(TASK_TYPES) + " | train s |",
                  "|---|---|" + "---:|" * (len(TASK_TYPES) + 2)]
        done = [r for r in rung["runs"] if "error" not in r]
        for r in done:
            tt = r["final"].get("breakdowns", {}).get("task_type", {})
            lines.append(f"| {r['method']} | {r['seed']} | {r['final']['overall']:.3f} | "
                         + " | ".join(f"{tt[t]:.3f}" if t in tt else "-" for t in TASK_TYPES)
                         + f" | {r['train_seconds']:.0f} |")
        lines += ["", "| method | seed | " + " | ".join(f"{k} ({counts[k]})" for k in order) + " |",
                  "|---|---|" + "---:|" * len(order)]
        for r in done:
            ks = kind_scores(r, kinds)
            lines.append(f"| {r['method']} | {r['seed']} | " + " | ".join(f"{ks.get(k, 0):.2f}" for k in order) + " |")
        for r in rung["runs"]:
            if "error" in r:
                lines.append(f"\n{r['method']} seed {r['seed']} failed: {r['error']}")
        if rung.get("verdict"):
            lines += ["", *verdict_lines(s, rung["verdict"])]
            if tasks:
                lines += ["", headroom_line(done, tasks)]
        lines.append("")
    lines.append(f"Machine at the last write: {json.dumps(record['machine'])}")
    return "\n".join(lines) + "\n"


def verdict_lines(sft_steps: str, v: dict[str, Any]) -> list[str]:
    said = {True: "**holds**", False: "**fails**"}
    return [
        "(a) ceiling - single: " + ", ".join(f"seed {k} {g * 100:+.1f}" for k, g in v["gap"].items())
        + f", mean {v['mean_gap'] * 100:+.1f} points (needs mean >= +5, each >= +2): {said[v['a']]}",
        "(b) ceiling mcq: " + ", ".join(f"seed {k} {m:.3f}" for k, m in v["ceiling_mcq"].items())
        + f" (needs >= 0.40 on both): {said[v['b']]}",
        "(c) spread between the seeds of one method on each kind holding >= 10% of the test: "
        + ", ".join(f"{k} {d * 100:.1f}" for k, d in v["kind_spread"].items()) + f" points (needs <= 15): {said[v['c']]}",
        f"Rung verdict: **{'passes: S = ' + sft_steps if v['passes'] else 'does not pass'}**."]


def headroom_line(runs: list[dict[str, Any]], tasks: dict[str, str]) -> str:
    """ceiling - single on paired per-item differences, seeds pooled: regime v4's declared headroom comparison
    (benchmarks/paired.py), overall and per task type: where the headroom the rule asks for lies. Analysis only."""
    (row,) = [r for r in paired.claims(runs, tasks) if (r["a"], r["b"]) == ("ceiling", "single")]

    def cell(b: dict[str, float]) -> str:
        return f"{b['mean'] * 100:+.1f} [{b['lo'] * 100:+.1f}, {b['hi'] * 100:+.1f}]"

    by_type = [f"{t} ({row['task_type'][t]['n']} items) {cell(row['task_type'][t])}"
               for t in TASK_TYPES if t in row["task_type"]]
    return (f"Headroom, paired per item (seeds pooled, 95% bootstrap interval, points): ceiling - single overall "
            f"{cell(row)}; " + "; ".join(by_type) + ".")


# ----------------------------------------------------------------------------- the runs
def run_rung(regime: str, sft_steps: int, work: Path, record: dict[str, Any], save: Any) -> dict[str, Any]:
    """Train (or reuse) the pilot's methods and seeds at one S; the rung's record with its verdict."""
    spec = REGIMES[regime]
    pilot, recipes_dir = spec["pilot"], ROOT / spec["recipes"]
    runs_dir = work / f"S{sft_steps}"
    recipes = {seed: {m: load_method(
        m, work, seed, budget_overrides(m, sft_steps, spec["adv_steps"], recipes_dir), recipes_dir,
        runs_dir) for m in pilot["methods"]} for seed in pilot["seeds"]}
    total = reproduce.check_budget(recipes[pilot["seeds"][0]])
    points = reproduce.curve_points(total, sft_steps, spec["points"])
    rung = record["rungs"].setdefault(str(sft_steps), {"runs": []})
    saved = dict(rung, runs=list(rung["runs"]))  # what an earlier session committed, with its own hash
    rung["regime_hash"] = regime_hash(recipes, spec["n"], points, work)
    matched = reproduce.prepare(work, spec["n"], recipes[pilot["seeds"][0]])
    rung["runs"] = []
    for seed in pilot["seeds"]:
        for method in pilot["methods"]:
            run = reproduce.guarded(method, seed, reproduce.run_method, method, recipes[seed][method],
                                    matched[method], seed, work, points,
                                    lambda m, s, r, at: run_cache.committed_in(saved, rung["regime_hash"], m, s, r, at))
            rung["runs"].append(run)
            save(f"{method} seed {seed} at S = {sft_steps}", not run.get("cached"))
    if all("error" not in r for r in rung["runs"]):
        by = {(r["method"], r["seed"]): r for r in rung["runs"]}
        rung["verdict"] = verdict(by, test_labels(work)[0], pilot["seeds"])
    return rung


def rejudge(record: dict[str, Any], work: Path, pilot: dict[str, Any]) -> None:
    """The verdict of every rung whose runs are all there and all finished (the rule as `run_rung` applies it)."""
    for rung in record["rungs"].values():
        by = {(r["method"], r["seed"]): r for r in rung["runs"] if "error" not in r}
        if set(by) == {(m, s) for m in pilot["methods"] for s in pilot["seeds"]}:
            rung["verdict"] = verdict(by, test_labels(work)[0], pilot["seeds"])


def test_labels(work: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Each test item's question kind and task type, from one read of the test split."""
    from rmsd.datasets.synthvid import load_items

    items = load_items(work / "data", split="test")
    return {it.item_id: kind_of(it) for it in items}, {it.item_id: it.task_type for it in items}


def write_report(regime: str, record: dict[str, Any], work: Path) -> None:
    (RESULTS / f"pilot_{regime}.md").write_text(report(regime, record, *test_labels(work)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regime", choices=sorted(r for r in REGIMES if "pilot" in REGIMES[r]), required=True)
    ap.add_argument("--work", type=Path, default=None, help="runs folder (default runs/reproduce-REGIME)")
    ap.add_argument("--commit", action="store_true", help="git-commit the pilot's files after every finished run")
    ap.add_argument("--report", action="store_true",
                    help="only rewrite pilot_REGIME.md/.json from the record, judging every complete rung; trains nothing")
    args = ap.parse_args()
    spec, work = REGIMES[args.regime], args.work or ROOT / f"runs/reproduce-{args.regime}"
    path = RESULTS / f"pilot_{args.regime}.json"
    record = json.loads(path.read_text()) if path.is_file() else {"rungs": {}}
    if args.report:
        rejudge(record, work, spec["pilot"])
        path.write_text(json.dumps(record, indent=1) + "\n")
        write_report(args.regime, record, work)
        return
    if record.get("chosen_sft_steps") is not None:
        sys.exit(f"the pilot has decided (S = {record['chosen_sft_steps']}, {path}): it is not run again")
    record.update(command="python benchmarks/pilot.py " + " ".join(sys.argv[1:]), regime=args.regime, rule=RULE,
                  adv_steps=spec["adv_steps"], rungs_declared=spec["pilot"]["sft_steps"])
    started = time.perf_counter()

    def save(what: str, fresh: bool) -> None:
        record.update(machine=machine(), wall_seconds=round(time.perf_counter() - started, 1))
        path.write_text(json.dumps(record, indent=1) + "\n")
        if (work / "data" / "test.jsonl").is_file():
            write_report(args.regime, record, work)
        if args.commit and fresh:
            reproduce.commit_results(RESULTS, f"pilot {args.regime}: {what}", pattern=f"pilot_{args.regime}.*")

    for sft_steps in spec["pilot"]["sft_steps"]:
        rung = run_rung(args.regime, sft_steps, work, record, save)
        v = rung.get("verdict")
        if v is None:
            save(f"S = {sft_steps} has failed runs: no decision", False)
            sys.exit(f"a run at S = {sft_steps} failed ({path}): the pilot cannot judge this rung")
        print(f"S = {sft_steps}: a {v['a']}, b {v['b']}, c {v['c']}", flush=True)
        save(f"S = {sft_steps} judged: {'passes' if v['passes'] else 'does not pass'}", True)  # before the next rung
        if v["passes"]:
            record["chosen_sft_steps"] = sft_steps
            break
    else:
        record["chosen_sft_steps"] = "none"
    save(f"decided: S = {record['chosen_sft_steps']}", True)
    print(f"pilot decision: S = {record['chosen_sft_steps']} ({path})")


if __name__ == "__main__":
    main()
