"""benchmarks/reproduce_report.py: the summary over seeds and its table, pinned on hand-made runs;
the reproduce scripts start as plain scripts (their own folder on sys.path, nothing inserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import reproduce_report  # benchmarks/ is on pytest's pythonpath (pyproject.toml)

ROOT = Path(__file__).resolve().parents[2]



def _run(method: str, seed: int, overall: float, seconds: float) -> dict:
    task_type = {"mcq": overall, "numeric": overall / 2, "grounding": 0.1, "open": 0.3}
    return {"method": method, "seed": seed, "final": {"overall": overall, "breakdowns": {"task_type": task_type}},
            "curve": [], "train_seconds": seconds}


RUNS = [_run("untrained", 0, 0.1, 0.0), _run("untrained", 1, 0.2, 0.0),
        _run("single", 0, 0.4, 12.0), _run("single", 1, 0.5, 14.0),
        {"method": "matched", "seed": 0, "error": "RuntimeError: boom"},
        _run("rmsd", 0, 0.6, 20.0)]


def test_summary_rows_are_means_and_stds_over_seeds_with_failures_kept():
    rows = {r["method"]: r for r in reproduce_report.summarise(RUNS)}
    assert list(rows) == ["untrained", "single", "matched", "rmsd"]  # untrained first, then METHODS' order
    assert rows["single"]["seeds"] == [0, 1] and rows["single"]["overall"]["mean"] == 0.45
    assert rows["matched"]["errors"] == {0: "RuntimeError: boom"} and "overall" not in rows["matched"]
    assert rows["rmsd"]["overall"] == {"mean": 0.6, "std": 0.0, "n": 1}


def test_results_table_reads_as_before():
    assert reproduce_report.results_table(reproduce_report.summarise(RUNS)).splitlines() == [
        "| method | seeds | overall | mcq | numeric | grounding | open | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        "| untrained | 2 | 0.150 ± 0.071 | 0.150 ± 0.071 | 0.075 ± 0.035 | 0.100 ± 0.000 | 0.300 ± 0.000 | - |",
        "| single | 2 | 0.450 ± 0.071 | 0.450 ± 0.071 | 0.225 ± 0.035 | 0.100 ± 0.000 | 0.300 ± 0.000 | 13 ± 1 |",
        "| matched | 0 | failed | - | - | - | - | - |",
        "| rmsd | 1 | 0.600 | 0.600 | 0.300 | 0.100 | 0.300 | 20 |",
    ]


def test_the_scripts_find_their_siblings_without_a_path_insert(tmp_path):
    # targets.py imports reproduce.py, which imports run_cache and reproduce_report: all as a plain script
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "targets.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "--work" in done.stdout
