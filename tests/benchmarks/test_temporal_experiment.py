"""benchmarks/temporal_experiment.py, the temporal-contrast experiment: it runs what benchmarks/results/temporal_v1.md declares,
its two arms differ only in the contrast, and its split of the test accuracy is the item-weighted one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import temporal_experiment as temporal  # benchmarks/ is on pytest's pythonpath (pyproject.toml)

ROOT = Path(__file__).resolve().parents[2]
DECLARATION = (ROOT / "benchmarks" / "results" / "temporal_v1.md").read_text()


def test_the_script_runs_what_the_declaration_fixes():
    d = temporal.DECLARED
    assert re.search(r"n = 2,000 items", DECLARATION) and d["n"] == 2000
    assert re.search(r"then 250 steps of the", DECLARATION) and d["sft_steps"] == 250
    assert re.search(r"R = 200 RL steps each", DECLARATION) and d["rl_steps"] == 200
    assert "seed 0 and 1" in DECLARATION and d["seeds"] == [0, 1] and d["sft_seed"] == 0
    assert all(kind in DECLARATION for kind in temporal.TEMPORAL_KINDS)


def test_the_two_arms_differ_only_in_the_temporal_contrast(tmp_path):
    student = tmp_path / "sft"
    plain, contrast = (temporal.recipe(v, tmp_path, 1, student, []) for v in temporal.VARIANTS)
    a, b = plain.distill.adversarial, contrast.distill.adversarial
    assert not a.temporal.enabled and b.temporal.enabled
    assert (b.temporal.bonus, b.temporal.ratio, b.shuffled_generations) == (0.3, 1.0, 2)
    assert a.model_dump(exclude={"temporal"}) == b.model_dump(exclude={"temporal"})
    assert a.reward_weights["correctness"] > 0 and a.seed == b.seed == 1
    assert plain.student.path == contrast.student.path == str(student) and plain.student.build is None
    assert plain.dataset == contrast.dataset and plain.matching == contrast.matching


def test_accuracy_is_split_item_weighted_into_temporal_kinds_and_the_rest():
    results = {"overall": 0.6, "breakdowns": {"question_kind": {"order": 0.5, "when": 0.25, "colour": 1.0,
                                                                  "count": 0.0}},
               "counts": {"question_kind": {"order": 2, "when": 6, "colour": 3, "count": 1}}}
    split = temporal.split_scores(results)
    assert split["temporal"] == {"accuracy": (0.5 * 2 + 0.25 * 6) / 8, "n": 8}
    assert split["rest"] == {"accuracy": 0.75, "n": 4}


@pytest.mark.slow
def test_the_smoke_run_goes_end_to_end(tmp_path):
    """`--quick`: data, matching, one SFT checkpoint, both arms x 2 seeds, the report (~40 s on one thread)."""
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "temporal.py"), "--quick", "--work", str(tmp_path)],
                   check=True, cwd=ROOT, capture_output=True)
    data = json.loads((tmp_path / "results" / "temporal_v1.json").read_text())
    assert [(r["variant"], r["seed"]) for r in data["runs"]] == [("plain", 0), ("temporal", 0), ("plain", 1),
                                                                 ("temporal", 1)]
    assert all("temporal/bonus_fired" in r["train"] for r in data["runs"] if r["variant"] == "temporal")
    assert not any("temporal/bonus_fired" in r["train"] for r in data["runs"] if r["variant"] == "plain")
    card = (tmp_path / "sft_rl_temporal" / "seed0" / "adversarial" / "README.md").read_text()
    assert "Temporal reward: Video-R1's T-GRPO contrast" in card


def test_the_declared_reading_rule():
    """temporal_v1.md: helped when both seeds' differences are positive and their mean clears 1/sqrt(n)."""
    import temporal_experiment as temporal

    def runs(t0, t1, p0=0.5, p1=0.5):
        out = []
        for seed, (t, p) in enumerate(((t0, p0), (t1, p1))):
            out += [{"variant": "temporal", "seed": seed, "scores": {"temporal": {"accuracy": t}}},
                    {"variant": "plain", "seed": seed, "scores": {"temporal": {"accuracy": p}}}]
        return out

    assert temporal.reading(runs(0.62, 0.60), "temporal", 100)["verdict"] == "helped"  # +11 > 10 points
    assert temporal.reading(runs(0.58, 0.60), "temporal", 100)["verdict"].startswith("no measurable")  # +9 < 10
    assert temporal.reading(runs(0.70, 0.45), "temporal", 100)["verdict"].startswith("no measurable")  # mixed signs
    assert temporal.reading(runs(0.35, 0.38), "temporal", 100)["verdict"] == "hurt"
    assert temporal.reading(runs(0.70, 0.70)[:2], "temporal", 100)["verdict"].startswith("pending")
