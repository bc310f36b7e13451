"""benchmarks/reproduce.py's declared regime: every method's recipe validates, the regime's hash is the
one benchmarks/results/regime_v3.md declares, and the results record it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import reproduce  # benchmarks/ is on pytest's pythonpath (pyproject.toml)
import reproduce_report
from typer.testing import CliRunner

from rmsd.cli import app

ROOT = Path(__file__).resolve().parents[2]
V3 = reproduce.REGIMES["v3"]


def _regime(work: Path, overrides: list[str] | None = None) -> tuple[dict, list[int]]:
    recipes = {seed: {m: reproduce.load_method(m, work, seed, overrides or []) for m in V3["methods"]}
               for seed in V3["seeds"]}
    total = reproduce.check_budget(recipes[V3["seeds"][0]])
    points = reproduce.curve_points(total, reproduce.steps(recipes[V3["seeds"][0]]["rmsd"])[0], V3["points"])
    return recipes, points


FOLDERS = sorted({ROOT / r["recipes"] for r in reproduce.REGIMES.values()})


@pytest.mark.parametrize("method", reproduce_report.METHODS)
def test_every_methods_recipe_validates(method):
    """Every method the report knows has a recipe in a regime's folder (v3's, v4's), and each validates."""
    paths = [f / f"experiment_{method}.yaml" for f in FOLDERS if (f / f"experiment_{method}.yaml").is_file()]
    assert paths, f"no recipe for {method} in {FOLDERS}"
    done = CliRunner().invoke(app, ["validate", *map(str, paths)])
    assert done.exit_code == 0 and "0 problems" in done.stdout, done.stdout + done.stderr


def test_the_regime_runs_every_method_the_issue_names_on_one_budget(tmp_path):
    assert set(V3["methods"]) == {"ceiling", "ceiling_multi", "sanity_matched", "single", "uniform", "matched",
                                  "matched_conf", "anchored", "gt", "rmsd", "sft_rl", "visd_rl"}
    assert V3["seeds"] == [0, 1, 2] and V3["n"] >= 400
    recipes, _ = _regime(tmp_path)
    seed0 = recipes[0]
    assert reproduce.check_budget(seed0) == 300 and reproduce.steps(seed0["rmsd"]) == (250, 50)
    noise_free = {m for m, r in seed0.items() if Path(r.pool).name == "experiment_pool_noise_free.yaml"}
    assert noise_free == {"ceiling", "ceiling_multi", "sanity_matched"}
    assert {Path(r.pool).name for m, r in seed0.items() if m not in noise_free} == {"experiment_pool_v2.yaml"}
    assert seed0["ceiling"].distill.sft.samples_per_item == 1
    assert seed0["ceiling_multi"].distill.sft.weighting == "uniform"
    assert seed0["ceiling_multi"].matching.min_weight == 0.0
    assert seed0["matched_conf"].distill.sft.weighting == "matched_conf"
    # the noise-free methods sample their own store; the others share one
    assert len({r.sampling.out for m, r in seed0.items() if m in noise_free}) == 1
    assert {r.sampling.out for m, r in seed0.items() if m in noise_free}.isdisjoint(
        {r.sampling.out for m, r in seed0.items() if m not in noise_free})


def test_the_declared_hash_is_the_regimes(tmp_path):
    declared = (ROOT / "benchmarks" / "results" / "regime_v3.md").read_text()
    recipes, points = _regime(tmp_path / "a")
    digest = reproduce.regime_hash(recipes, V3["n"], points, tmp_path / "a")
    assert re.search(rf"regime hash: `{digest}`", declared), f"regime_v3.md must declare `{digest}`"
    # where the runs go does not change the regime; a knob does, and so does the item count
    other, _ = _regime(tmp_path / "b")
    assert reproduce.regime_hash(other, V3["n"], points, tmp_path / "b") == digest
    tuned, _ = _regime(tmp_path / "a", ["distill.sft.lr=5e-4"])
    assert reproduce.regime_hash(tuned, V3["n"], points, tmp_path / "a") != digest
    assert reproduce.regime_hash(recipes, V3["n"] + 100, points, tmp_path / "a") != digest


_RUN = {"method": "single", "seed": 0, "final": {"overall": 0.4, "breakdowns": {"task_type": {"mcq": 0.4}}},
        "curve": [], "train_seconds": 10.0}
_META = {"command": "python benchmarks/reproduce.py --regime v3", "quick": False, "regime": "v3",
         "regime_hash": "0123456789abcdef", "pool": "experiment_pool_v2.yaml", "seeds": [0],
         "budget": {"total": 300, "sft": 250, "adversarial": 50}, "points": [75, 150, 225, 250],
         "data": {"train": 400, "test": 100}, "min_weight": 0.5, "wall_seconds": 1.0,
         "machine": {"machine": "x86_64", "cpus": 2, "torch": "2", "torch_threads": 2, "gpu": None,
                     "load_average": [0.1, 0.1, 0.1]}}


def test_the_results_record_the_regime_hash(tmp_path):
    reproduce_report.write_results(tmp_path, _META, [_RUN], {"teachers": {}}, [])
    assert json.loads((tmp_path / "reproduce.json").read_text())["regime_hash"] == "0123456789abcdef"
    text = (tmp_path / "reproduce.md").read_text()
    assert "regime hash `0123456789abcdef`" in text and "regime_v3.md" in text
    assert "teachers/experiment_pool_v2.yaml" in text
    assert "Wall time of this invocation 1 s." in text and "What the students answered" not in text


def test_a_resumed_report_says_its_runs_came_from_earlier_invocations_and_carries_the_analysis(tmp_path):
    runs = [dict(_RUN, cached=True), dict(_RUN, seed=1)]
    reproduce_report.write_results(tmp_path, _META, runs, {"teachers": {}}, [], "### The students\n\n| single |")
    text = (tmp_path / "reproduce.md").read_text()
    assert "Wall time of this invocation 1 s (1 of 2 runs read from the results committed by earlier" in text
    assert "## What the students answered, beside their targets" in text and "### The students" in text


def test_claims_carry_their_headroom():
    def run(method, seed, overall):
        return {"method": method, "seed": seed, "final": {"overall": overall, "breakdowns": {"task_type": {}}},
                "curve": [], "train_seconds": 1.0}

    runs = [run(m, s, v + 0.01 * s) for m, v in [("ceiling", 0.60), ("single", 0.40), ("ceiling_multi", 0.62),
                                                  ("uniform", 0.59), ("matched", 0.50), ("rmsd", 0.49)]
            for s in (0, 1, 2)]
    lines = reproduce_report.claims_table(reproduce_report.summarise(runs)).splitlines()
    matched = next(line for line in lines if line.startswith("| matched ≥ single"))
    assert "+10.0 points | yes | +20.0 points |" in matched
    assert "| rmsd ≥ matched | -1.0 points | **no** |" in next(line for line in lines if line.startswith("| rmsd"))
    weights = next(line for line in lines if line.startswith("| matched vs uniform"))
    assert weights.endswith("+3.0 points (under 5 points: the regime can barely test this) |")


def test_commit_results_commits_the_results_files_only(tmp_path):
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "start")
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "reproduce.md").write_text("# one run\n")
    (results / "reproduce.json").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 2\n")  # someone's work in progress: not the experiment's to commit
    reproduce.commit_results(results, "reproduce v3: single seed 0", repo=tmp_path)
    assert git("log", "-1", "--format=%s").strip() == "reproduce v3: single seed 0"
    assert sorted(git("show", "--name-only", "--format=", "HEAD").split()) == [
        "benchmarks/results/reproduce.json", "benchmarks/results/reproduce.md"]
    assert "code.py" in git("status", "--porcelain")
