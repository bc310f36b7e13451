"""Regime v4 (benchmarks/results/regime_v4.md): its recipes, its pilot's rule, its paired claims, and the hashes
the declaration commits to before any run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import paired
import pilot
import pytest
import regimes
import reproduce

ROOT = Path(__file__).resolve().parents[2]
V4 = regimes.REGIMES["v4"]
RECIPES = ROOT / V4["recipes"]


def _recipes(work: Path, sft_steps: int, methods=None, seeds=None) -> dict:
    return {seed: {m: reproduce.load_method(m, work, seed, reproduce.budget_overrides(m, sft_steps, V4["adv_steps"],
                                                                                     RECIPES), RECIPES,
                                            work / f"S{sft_steps}")
                   for m in (methods or V4["methods"])} for seed in (seeds or V4["seeds"])}


def test_v4_runs_the_issues_methods_from_the_shipped_base_on_one_budget(tmp_path):
    assert V4["methods"] == ["ceiling", "single", "uniform", "gt", "single_gt", "matched", "rmsd", "sft_rl",
                             "visd_rl"]
    assert V4["seeds"] == [0, 1, 2] and V4["pilot"] == {"methods": ["ceiling", "single"], "seeds": [0, 1],
                                                         "sft_steps": [600, 900, 1200]}
    for s in V4["pilot"]["sft_steps"]:
        seed0 = _recipes(tmp_path, s)[0]
        assert reproduce.check_budget(seed0) == s + 50 and reproduce.steps(seed0["rmsd"]) == (s, 50)
        assert {r.student.build for r in seed0.values()} == {"tiny-pretrained"}
        # rmsd, sft_rl and visd_rl start from gt's SFT targets (rejection sampling), not label-free consensus
        assert {m for m, r in seed0.items() if r.matching.use_ground_truth} == {"gt", "single_gt", "rmsd", "sft_rl",
                                                                              "visd_rl"}
        assert len({seed0[m].matching.out for m in ("gt", "single_gt", "rmsd", "sft_rl", "visd_rl")}) == 1
        assert (seed0["single_gt"].distill.sft.samples_per_item, seed0["single_gt"].distill.sft.single_from) == \
            (1, "kept")
        assert (seed0["single"].distill.sft.samples_per_item, seed0["single"].distill.sft.single_from) == (1, "valid")
        assert Path(seed0["ceiling"].pool).name == "experiment_pool_noise_free.yaml"
        assert seed0["sft_rl"].distill.adversarial.reward_weights.get("discriminator") == 0.0
        assert seed0["visd_rl"].distill.adversarial.visd.enabled


def test_v4_has_enough_test_items_and_at_most_three_epochs():
    from rmsd.synthvid.generator import build_items

    splits = build_items(V4["n"], reproduce.DATA_SEED)
    assert len(splits["test"]) >= 1500
    batch = reproduce.load_method("single", Path("/tmp/w"), 0, [], RECIPES).distill.sft.batch_size
    assert (max(V4["pilot"]["sft_steps"]) + V4["adv_steps"]) * batch / len(splits["train"]) <= 3.0


def test_the_declaration_commits_to_every_rungs_hash(tmp_path):
    declared = (ROOT / "benchmarks" / "results" / "regime_v4.md").read_text()
    for s in V4["pilot"]["sft_steps"]:
        full = _recipes(tmp_path, s)
        points = reproduce.curve_points(s + 50, s, V4["points"])
        assert re.search(rf"S = {s}\b.*`{regimes.regime_hash(full, V4['n'], points, tmp_path)}`", declared), s
        sub = {seed: {m: full[seed][m] for m in V4["pilot"]["methods"]} for seed in V4["pilot"]["seeds"]}
        assert f"`{regimes.regime_hash(sub, V4['n'], points, tmp_path)}`" in declared


def test_the_regime_waits_for_its_pilot(tmp_path, monkeypatch):
    monkeypatch.setattr(regimes, "RESULTS", tmp_path)
    with pytest.raises(SystemExit, match="has not decided"):
        regimes.pilot_decision("v4")
    (tmp_path / "pilot_v4.json").write_text(json.dumps({"rungs": {}, "chosen_sft_steps": "none"}))
    with pytest.raises(SystemExit, match="not run"):
        regimes.pilot_decision("v4")
    (tmp_path / "pilot_v4.json").write_text(json.dumps({"rungs": {}, "chosen_sft_steps": 900}))
    assert regimes.pilot_decision("v4") == 900


# ----------------------------------------------------------------------------- the pilot's rule
KINDS = {f"c{i}": "easy/colour" for i in range(4)} | {f"d{i}": "easy/direction" for i in range(4)} | \
    {f"r{i}": f"hard/rare{i}" for i in range(2)}  # 10 items: colour and direction hold 40% each, rare ones 10%


def _run(method: str, seed: int, colour: float, direction: float, mcq: float, rare: float = 0.5) -> dict:
    per_item = {i: colour if k == "easy/colour" else direction if k == "easy/direction" else rare
                for i, k in KINDS.items()}
    return {"method": method, "seed": seed, "final": {"overall": sum(per_item.values()) / len(per_item),
                                                      "breakdowns": {"task_type": {"mcq": mcq}},
                                                      "per_item": per_item}}


def test_the_rule_passes_when_the_gap_is_steady_the_clip_is_read_and_no_kind_flips():
    runs = {("ceiling", 0): _run("ceiling", 0, 1.0, 0.6, 0.5), ("ceiling", 1): _run("ceiling", 1, 0.9, 0.6, 0.45),
            ("single", 0): _run("single", 0, 0.9, 0.5, 0.4), ("single", 1): _run("single", 1, 0.85, 0.45, 0.4)}
    v = pilot.verdict(runs, KINDS, [0, 1])
    assert v["gap"] == pytest.approx({0: 0.08, 1: 0.08})
    assert v["big_kinds"] == ["easy/colour", "easy/direction", "hard/rare0", "hard/rare1"]  # >= 10% of 10 items
    assert v["kind_spread"]["ceiling easy/colour"] == pytest.approx(0.1)
    assert v["a"] and v["b"] and v["c"] and v["passes"]


def test_the_rule_fails_on_each_of_its_three_conditions():
    def verdict(c0, c1, s0, s1):
        return pilot.verdict({("ceiling", 0): _run("ceiling", 0, *c0), ("ceiling", 1): _run("ceiling", 1, *c1),
                              ("single", 0): _run("single", 0, *s0), ("single", 1): _run("single", 1, *s1)},
                             KINDS, [0, 1])

    # (a) by one seed: a mean gap of 6 points, but seed 1's is half a point
    one_seed = verdict((1.0, 0.9, 0.5), (0.95, 0.8, 0.5), (0.95, 0.65, 0.4), (0.95, 0.7875, 0.4))
    assert one_seed["mean_gap"] >= 0.05 and one_seed["gap"][1] == pytest.approx(0.005)
    assert (one_seed["a"], one_seed["b"], one_seed["c"], one_seed["passes"]) == (False, True, True, False)
    # (a) by the mean: 2 and 4 points
    small = verdict((0.9, 0.55, 0.5), (0.9, 0.5, 0.5), (0.9, 0.5, 0.4), (0.85, 0.45, 0.4))
    assert (small["a"], small["b"], small["c"]) == (False, True, True)
    # (b): a ceiling seed under 0.40 on mcq does not read the clip
    blind = verdict((1.0, 0.6, 0.39), (0.95, 0.6, 0.5), (0.9, 0.5, 0.4), (0.85, 0.45, 0.4))
    assert (blind["a"], blind["b"], blind["c"], blind["passes"]) == (True, False, True, False)
    # (c): direction 0.9 on one ceiling seed, 0.6 on the other: a bistable skill
    bistable = verdict((1.0, 0.9, 0.5), (1.0, 0.6, 0.5), (0.9, 0.5, 0.4), (0.9, 0.45, 0.4))
    assert (bistable["a"], bistable["b"], bistable["c"]) == (True, True, False)
    assert bistable["kind_spread"]["ceiling easy/direction"] == pytest.approx(0.3)
    # a kind holding exactly 10% of the test counts for (c); one under 10% does not
    flip = verdict((1.0, 0.6, 0.5, 1.0), (0.9, 0.6, 0.45, 0.0), (0.9, 0.5, 0.4), (0.85, 0.45, 0.4))
    assert "hard/rare0" in flip["big_kinds"] and not flip["c"]
    few = {k: v for k, v in KINDS.items() if not k.startswith("r")} | {f"r{i}": f"hard/rare{i}" for i in range(9)}
    runs = {(m, s): _run(m, s, 1.0, 0.6, 0.5, rare=float(s)) for m in ("ceiling", "single") for s in (0, 1)}
    assert pilot.verdict(runs, few, [0, 1])["big_kinds"] == ["easy/colour", "easy/direction"]


def test_the_pilots_headroom_is_the_paired_difference_per_task_type():
    # 2 seeds x 4 items: the ceiling is right on every item, single on the mcq items only on seed 0
    tasks = {"a": "mcq", "b": "mcq", "c": "numeric", "d": "grounding"}
    runs = [{"method": "ceiling", "seed": s, "final": {"per_item": dict.fromkeys(tasks, 1.0)}} for s in (0, 1)]
    runs += [{"method": "single", "seed": 0, "final": {"per_item": {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.5}}},
             {"method": "single", "seed": 1, "final": {"per_item": {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.5}}}]
    line = pilot.headroom_line(runs, tasks)
    # per item, seeds pooled: a 0.5, b 0.5, c 1.0, d 0.5 -> overall +62.5; mcq +50 (both items alike: [+50, +50])
    assert "ceiling - single overall +62.5 [" in line
    assert "mcq (2 items) +50.0 [+50.0, +50.0]" in line and "numeric (1 items) +100.0" in line
    assert "grounding (1 items) +50.0" in line and "open" not in line


# ----------------------------------------------------------------------------- paired claims
def test_paired_differences_average_seeds_per_item_and_the_interval_brackets_the_mean():
    a = {0: {"x": 1.0, "y": 1.0, "z": 0.0}, 1: {"x": 1.0, "y": 0.0, "z": 0.0}}
    b = {0: {"x": 0.0, "y": 1.0, "z": 0.0}, 1: {"x": 1.0, "y": 0.0, "z": 1.0}, 2: {"x": 0.0, "y": 0.0, "z": 0.0}}
    d = paired.per_item_differences(a, b)
    assert d == {"x": 0.5, "y": 0.0, "z": -0.5}  # seed 2 is b's alone: not paired
    s = paired.bootstrap(list(d.values()), resamples=2000)
    assert s["mean"] == pytest.approx(0.0) and s["lo"] < 0 < s["hi"] and s["n"] == 3
    assert paired.bootstrap(list(d.values()), resamples=2000) == s  # seeded: the same interval every time


def test_a_claim_holds_only_when_its_mean_meets_the_threshold_and_the_interval_excludes_zero():
    assert paired.judge({"mean": 0.04, "lo": 0.01, "hi": 0.07, "n": 900}, 0.03) is True
    assert paired.judge({"mean": 0.04, "lo": -0.01, "hi": 0.09, "n": 900}, 0.03) is False  # could be 0
    assert paired.judge({"mean": 0.02, "lo": 0.01, "hi": 0.03, "n": 900}, 0.03) is False  # real, but under 3 points
    assert paired.judge({"mean": 0.02, "lo": 0.01, "hi": 0.03, "n": 900}, None) is None


def test_claims_read_the_runs_per_item_scores_overall_and_per_task_type():
    items = [f"i{k}" for k in range(200)]
    task = {i: "mcq" if k < 100 else "numeric" for k, i in enumerate(items)}
    runs = []
    for seed in (0, 1):
        runs.append({"method": "single", "seed": seed, "final": {"per_item": {i: 0.0 for i in items}}})
        # gt is right on every mcq item and on half the numeric ones: +75 points overall, +100 mcq, +50 numeric
        runs.append({"method": "gt", "seed": seed, "final": {"per_item": {
            i: 1.0 if task[i] == "mcq" or k % 2 else 0.0 for k, i in enumerate(items)}}})
    runs.append({"method": "rmsd", "seed": 0, "error": "boom"})
    rows = paired.claims(runs, task)
    assert [r["claim"] for r in rows] == ["1: gt >= single + 3 points"]
    (row,) = rows
    assert row["mean"] == pytest.approx(0.75) and row["holds"] is True and row["seeds"] == [0, 1]
    assert row["task_type"]["mcq"]["mean"] == pytest.approx(1.0)
    assert row["task_type"]["numeric"]["mean"] == pytest.approx(0.5)
    assert "+75.0" in paired.claims_table(rows)


def test_the_report_judges_the_claims_per_item_when_the_runs_keep_item_scores(tmp_path):
    import reproduce_report

    items = {f"i{k}": {"task_type": "mcq" if k % 2 else "numeric", "kind": "easy/colour"} for k in range(40)}
    meta = {"command": "python benchmarks/reproduce.py --regime v4", "quick": False, "regime": "v4",
            "regime_hash": "0123456789abcdef", "pool": "experiment_pool_v2.yaml", "seeds": [0],
            "budget": {"total": 650, "sft": 600, "adversarial": 50}, "points": [600], "test_items": items,
            "data": {"train": 160, "test": 40}, "min_weight": 0.5, "wall_seconds": 1.0,
            "machine": {"machine": "x86_64", "cpus": 2, "torch": "2", "torch_threads": 2, "gpu": None,
                        "load_average": [0.1, 0.1, 0.1]}}

    def run(method, right):
        per_item = {i: float(k < right) for k, i in enumerate(items)}
        return {"method": method, "seed": 0, "curve": [], "train_seconds": 1.0,
                "final": {"overall": right / 40, "per_item": per_item, "breakdowns": {"task_type": {}}}}

    reproduce_report.write_results(tmp_path, meta, [run("single", 10), run("gt", 30), run("ceiling", 36)],
                                   {"teachers": {}}, [])
    text = (tmp_path / "reproduce.md").read_text()
    assert "## Claims on paired per-item differences" in text and "## Claims and headroom" not in text
    assert "| 1: gt >= single + 3 points | 0 | +50.0 |" in text and "**yes**" in text
