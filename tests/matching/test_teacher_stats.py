"""Teacher statistics against ground truth (rmsd.matching.teacher_stats, `rmsd match stats`): hand-made stores
whose numbers are known, and the command on a real sample store of a simulated pool."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rmsd.cli import app
from rmsd.datasets import get_benchmark
from rmsd.items import Item
from rmsd.matching.teacher_stats import teacher_statistics
from rmsd.synthvid.generator import build_items, generate
from rmsd.teachers.simulated import SimulatedTeacher

SYNTHVID = get_benchmark("synthvid")


@pytest.fixture(scope="module")
def mcq() -> list[Item]:
    splits = build_items(120, seed=3)
    return [it for it in splits["train"] + splits["test"] if it.task_type == "mcq"][:40]


def reply(letter: str) -> str:
    return f"<think>So the answer is ({letter}).</think><answer>({letter})</answer>"


def wrong(item: Item) -> str:
    return next(x for x in item.letters if x != item.answer)


def records(teacher: str, items: list[Item], k: int, right_on) -> list[dict]:
    return [{"teacher": teacher, "item_id": it.item_id, "sample_index": s,
             "text": reply(it.answer if right_on(i) else wrong(it))} for i, it in enumerate(items) for s in range(k)]


def test_known_accuracy_spreads_and_correlation(mcq):
    recs = (records("half", mcq, 3, lambda i: i % 2 == 0) + records("twin", mcq, 3, lambda i: i % 2 == 0)
            + records("other", mcq, 3, lambda i: i % 4 < 2))
    recs[0]["text"] = "So the answer is (A)."  # one format violation of 120 responses of `half`
    stats = teacher_statistics(mcq, recs, SYNTHVID)
    half = stats["teachers"]["half"]["mcq"]
    assert half["format_violation_rate"] == pytest.approx(1 / 120)
    assert half["accuracy"] == pytest.approx(59 / 119)
    assert half["sigma_within_correct"] == 0.0  # right or wrong on a question in every sample
    assert half["sigma_cross_correct"] == pytest.approx(0.5, abs=0.01)  # half the questions right, half wrong
    # quality: the same 0/1 split, scaled by what a wrong answer still earns (its reasoning concludes it)
    assert 0.0 < half["sigma_cross"] < half["sigma_cross_correct"] and half["sigma_within"] == 0.0
    pair = stats["pairs"]["half|twin"]["mcq"]
    assert pair["error_correlation"] == pytest.approx(1.0) and pair["same_wrong_answer"] == 1.0
    assert pair["both_wrong"] == 20
    assert abs(stats["pairs"]["half|other"]["mcq"]["error_correlation"]) < 0.1  # independent halves


def test_within_question_spread_of_coin_flips(mcq):
    flips = [{"teacher": "coin", "item_id": it.item_id, "sample_index": s,
              "text": reply(it.answer if s % 2 == 0 else wrong(it))} for it in mcq for s in range(4)]
    row = teacher_statistics(mcq, flips, SYNTHVID)["teachers"]["coin"]["mcq"]
    assert row["accuracy"] == 0.5 and row["sigma_cross_correct"] == 0.0
    assert row["sigma_within_correct"] == pytest.approx((4 * 0.25 / 3) ** 0.5)  # unbiased variance of 1,0,1,0


def test_items_without_a_scene_average_correctness_and_consistency(mcq):
    bare = [dataclasses.replace(it, meta={}) for it in mcq]  # a real benchmark: no scene to check citations
    recs = records("t", bare, 2, lambda i: True)
    row = teacher_statistics(bare, recs, None)["teachers"]["t"]["mcq"]
    assert row["quality"] == pytest.approx(1.0) and row["accuracy"] == 1.0


def test_simulated_competence_shows_in_the_spreads():
    splits = build_items(400, seed=8)
    items = [it for it in splits["train"] if it.closed]
    flips = SimulatedTeacher("flips", 0.7, verbosity="long")
    steady = SimulatedTeacher("steady", 0.7, verbosity="long", question_difficulty=3.0, competence_spread=2.0)
    recs = [{"teacher": t.name, "item_id": it.item_id, "sample_index": k, "text": t.sample_text(it, k)}
            for t in (flips, steady) for it in items for k in range(4)]
    per = teacher_statistics(items, recs, SYNTHVID)["teachers"]
    a, b = per["flips"]["all"], per["steady"]["all"]
    assert b["sigma_within"] < 0.7 * a["sigma_within"] and b["sigma_cross"] > 1.3 * a["sigma_cross"]
    assert abs(a["accuracy"] - b["accuracy"]) < 0.08


def test_weakness_signatures_show_the_configured_weakness():
    splits = build_items(500, seed=6)
    items = splits["train"] + splits["test"]
    clean = SimulatedTeacher("clean", 0.9)
    flipped = SimulatedTeacher("flipped", 0.9, weaknesses=[
        {"kind": "confuse_directions", "directions": ["up", "down"], "rate": 0.8},
        {"kind": "confuse_directions", "directions": ["down", "up"], "rate": 0.8},
        {"kind": "prefer_letter", "letter": "A", "rate": 0.3}])
    recs = [{"teacher": t.name, "item_id": it.item_id, "sample_index": 0, "text": t.sample_text(it, 0)}
            for t in (clean, flipped) for it in items]
    rates = teacher_statistics(items, recs, SYNTHVID)["signatures"]["teachers"]
    assert rates["flipped"]["vertical_flip"]["rate"] > 0.45 > 0.15 > rates["clean"]["vertical_flip"]["rate"]
    flipped_rates = rates["flipped"]
    assert flipped_rates["horizontal_flip"]["rate"] < flipped_rates["vertical_flip"]["rate"] - 0.3  # only vertical
    assert rates["flipped"]["letter_A"]["rate"] > rates["clean"]["letter_A"]["rate"] + 0.2
    assert rates["clean"]["vertical_flip"]["n"] >= 20


def every(p: float) -> dict[str, float]:
    return {t: p for t in ("mcq", "numeric", "grounding", "open")}


def test_match_stats_command_and_the_match_report(tmp_path):
    generate(tmp_path / "data", n=40, seed=2)
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump({"name": "p", "teachers": [
        {"name": "perfect", "backend": "simulated", "samples": 2, "simulated": {"accuracy": every(1.0), "seed": 1}},
        {"name": "weak", "backend": "simulated", "samples": 2, "simulated": {
            "accuracy": every(0.5), "seed": 2, "format_error_rate": 0.2, "competence_spread": 2.0}}]}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "r", "dataset": {"benchmark": "synthvid", "path": str(tmp_path / "data")}, "pool": str(pool),
        "sampling": {"out": str(tmp_path / "samples")}, "matching": {"out": str(tmp_path / "matched")},
        "student": {"build": "tiny"}}))
    runner = CliRunner()
    assert runner.invoke(app, ["sample", "--recipe", str(recipe)]).exit_code == 0
    result = runner.invoke(app, ["match", "stats", "--recipe", str(recipe), "--samples", str(tmp_path / "samples"),
                                 "--out", str(tmp_path / "stats")])
    assert result.exit_code == 0, result.output
    assert "perfect" in result.output and "sigma within" in result.output
    stats = json.loads((tmp_path / "stats" / "teacher_stats.json").read_text())
    assert stats["teachers"]["perfect"]["all"]["accuracy"] == 1.0
    assert stats["teachers"]["perfect"]["all"]["format_violation_rate"] == 0.0
    assert stats["teachers"]["weak"]["all"]["format_violation_rate"] > 0.0
    assert (tmp_path / "stats" / "teacher_stats.png").stat().st_size > 10_000
    result = runner.invoke(app, ["match", "--recipe", str(recipe), "--samples", str(tmp_path / "samples")])
    assert result.exit_code == 0, result.output
    report = json.loads(Path(tmp_path / "matched" / "match_report.json").read_text())
    assert report["teacher_quality"]["teachers"]["weak"]["all"]["accuracy"] < 1.0
    assert (tmp_path / "matched" / "teacher_stats.png").is_file()
    missing = runner.invoke(app, ["match", "stats", "--recipe", str(recipe), "--samples", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "no sample store" in missing.output
