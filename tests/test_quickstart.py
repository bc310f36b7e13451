"""`rmsd quickstart` reduced to a smoke run: every phase on a small synthvid set, a few steps
per stage, and its report (quickstart.json, the printed table, every artifact on disk); the same
command again finds every stage up to date (it is two `rmsd run`s)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rmsd.cli import app
from rmsd.quickstart import console, run_quickstart

FEW_STEPS = [
    "distill.sft.max_steps=2", "distill.sft.batch_size=4", "distill.sft.warmup_steps=0",
    "distill.adversarial.max_steps=2", "distill.adversarial.batch_size=2", "distill.adversarial.num_generations=2",
    "distill.adversarial.max_completion_length=8", "distill.adversarial.disc_warmup_steps=1",
    "eval.max_new_tokens=8", "eval.batch_size=8",
]
VARIANTS = ["base", "single-sample SFT", "R-MSD SFT", "R-MSD SFT + adversarial"]


def test_quickstart_runs_every_phase_and_reports_every_variant(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "qs"
    started = time.perf_counter()
    with console.capture() as printed:
        report = run_quickstart(out, n=20, overrides=FEW_STEPS)
    seconds = time.perf_counter() - started
    text = printed.get()

    assert json.loads((out / "quickstart.json").read_text()) == json.loads(json.dumps(report, default=str))
    assert list(report["results"]) == VARIANTS
    folders = {"base": "base", "single-sample SFT": "single_sample-sft", "R-MSD SFT": "rmsd-sft",
               "R-MSD SFT + adversarial": "rmsd-adversarial"}
    for name, results in report["results"].items():
        assert 0.0 <= results["overall"] <= 1.0 and results["breakdowns"]["task_type"], name
        predictions = out / "eval" / folders[name] / "predictions.jsonl"
        assert len(predictions.read_text().splitlines()) == results["n_items"] > 0
    assert report["stages"]["R-MSD"] == {"validate": "checked", "sample": "ran", "match": "ran", "sft": "ran",
                                         "adversarial": "ran", "eval": "ran"}
    # the baseline is a run of its own recipe: the same store and matched set, its own training and results
    assert report["stages"]["single-sample SFT"] == {"validate": "checked", "sample": "up to date",
                                                     "match": "up to date", "sft": "ran", "eval": "ran"}

    artifacts = report["artifacts"]
    assert set(artifacts) == {"data", "student", "samples", "matched", "eval", *VARIANTS}
    missing = {k: v for k, v in artifacts.items() if not Path(v).exists()}
    assert not missing, f"artifacts not on disk: {missing}"
    for checkpoint in VARIANTS:
        assert (Path(artifacts[checkpoint]) / "config.json").is_file(), checkpoint
    assert (Path(artifacts["samples"]) / "summary.json").is_file()
    assert (Path(artifacts["matched"]) / "matched.jsonl").is_file()
    # the baseline is one sample per item and no adversarial stage; R-MSD runs both stages
    single = json.loads((out / "single_sample" / "sft" / "stage.json").read_text())
    assert single["config"]["samples_per_item"] == 1 and not (out / "single_sample" / "adversarial").exists()
    assert json.loads((out / "rmsd" / "adversarial" / "stage.json").read_text())["global_step"] == 2
    # every distilled checkpoint's card names its base, its stage, and, once evaluated, its scores by metric
    card = (out / "single_sample" / "sft" / "README.md").read_text()
    assert "built from config" in card and "sft · single-sample" in card and "## Evaluation" in card
    assert "| mcq | accuracy |" in card and "| **overall** |" in card

    for phase in ("1/4 synthvid", "2/4 R-MSD", "3/4 single-sample SFT baseline", "4/4 evaluate"):
        assert phase in text
    assert "synthvid test" in text and "overall" in text and "metric" in text and "accuracy" in text
    assert "One seed (student seed 0, data seed 0)" in text and "--regime v4" in text  # the same story as the experiment: one seed of it
    assert max(len(line) for line in text.splitlines()) <= 80  # every table fits a terminal
    header = text[text.index("synthvid test (simulated"):].split("───", 1)[0]
    assert all(word in header.split() for name in VARIANTS for word in name.split())  # broken at spaces only
    assert report["seconds"] == pytest.approx(seconds, abs=5.0)

    # the same command again: every stage of both runs up to date, nothing trained or scored again
    stage_files = {p: p.stat().st_mtime_ns for p in out.rglob("stage.json")} | {
        p: p.stat().st_mtime_ns for p in (out / "eval").rglob("results.json")}
    args = ["quickstart", "--out", str(out), "--n", "20", *(a for o in FEW_STEPS for a in ("--set", o))]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in stage_files} == stage_files
    assert "sft: up to date" in again.stdout and "eval: up to date" in again.stdout and "sample: up to date" in again.stdout


def test_quickstart_samples_the_experiments_pool():
    """The quickstart tells the experiment's story: its embedded pool is teachers/experiment_pool_v2.yaml's teachers."""
    from rmsd.config import load_pool
    from rmsd.quickstart import ASSETS

    root = Path(__file__).resolve().parents[1]
    embedded, experiment = load_pool(ASSETS / "quickstart_pool.yaml"), load_pool(root / "teachers" / "experiment_pool_v2.yaml")
    assert embedded.model_dump(exclude={"name"}) == experiment.model_dump(exclude={"name"})
