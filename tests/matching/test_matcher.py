"""Matching: weights, kept flags, agreement and difficulty per task type, with and without
ground truth; statistics; the written dataset and report. Uses the real synthvid scorer."""

from __future__ import annotations

import dataclasses
import json
from itertools import combinations

import numpy as np
import pytest

from rmsd.config import MatchingConfig
from rmsd.datasets import get_benchmark
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.matching.dataset import write_matched
from rmsd.matching.matcher import MATCH_FIELDS, match_samples
from rmsd.scoring import rouge_l
from rmsd.synthvid.generator import build_items
from rmsd.teachers.simulated import SimulatedTeacher

OPTIONS = ["red", "blue", "green", "cyan"]


@pytest.fixture(scope="module")
def bench():
    return get_benchmark("synthvid")


def item(item_id: str, task_type: str, answer: str | None, options: list[str] | None = None) -> Item:
    opts = OPTIONS if task_type == "mcq" and options is None else (options or [])
    return Item(item_id=item_id, benchmark="synthvid", task_type=task_type, question="q?", prompt="q?",
                options=opts, answer=answer, meta={"difficulty": "easy", "question_kind": "colour"})


def rec(item_id: str, teacher: str, k: int, answer: str | None = None, text: str | None = None,
        error: str | None = None) -> dict:
    if text is None:
        text = f"<think>I look at the video.</think><answer>{answer}</answer>"
    return {"key": f"{teacher}/{item_id}/{k}", "item_id": item_id, "teacher": teacher, "sample_index": k,
            "text": text, "error": error}


def by_key(rows: list[dict]) -> dict[str, dict]:
    return {r["key"]: r for r in rows}


# ----------------------------------------------------------------------------- closed, ground truth
def test_ground_truth_weights_by_correctness_and_drops_invalid_samples(bench):
    items = [item("m0", "mcq", "B"), item("m1", "mcq", "A")]
    records = [
        rec("m0", "t1", 0, "(B)"), rec("m0", "t1", 1, "(C)"), rec("m0", "t3", 0, "(B)"),
        rec("m0", "t2", 0, text="I think it is blue. Final answer: (B)"),  # no tags
        rec("m0", "t2", 1, text="", error="timeout after 3 retries"),
    ]
    rows, stats = match_samples(items, records, bench, MatchingConfig())
    r = by_key(rows)
    assert [r[f"t1/m0/{k}"]["weight"] for k in (0, 1)] == [1.0, 0.0]
    assert [r[f"t1/m0/{k}"]["kept"] for k in (0, 1)] == [True, False]
    assert r["t2/m0/0"]["format_ok"] is False and r["t2/m0/0"]["answer"] is None and not r["t2/m0/0"]["kept"]
    assert r["t2/m0/1"]["weight"] == 0.0 and not r["t2/m0/1"]["kept"]
    assert r["t1/m0/0"]["answer"] == "B" and r["t1/m0/0"]["format_ok"] is True
    for row in rows:  # per-item values: plurality B holds 2 of 3 valid samples; 2 of 3 are right
        assert row["agreement"] == pytest.approx(2 / 3) and row["difficulty"] == pytest.approx(1 / 3)
        assert set(MATCH_FIELDS) <= set(row) and row["task_type"] == "mcq"
    assert stats["n_samples"] == 5 and stats["n_items"] == 2 and stats["n_kept"] == 2
    assert stats["items_without_usable_sample"] == 1 and stats["n_items_without_samples"] == 1
    t2 = stats["teachers"]["t2"]
    assert t2["errors"] == 1 and t2["format_error_rate"] == 1.0 and t2["kept"] == 0
    assert stats["teachers"]["t1"]["reliability"]["mcq"]["true"] == 0.5


def test_require_format_off_reads_untagged_answers_leniently(bench):
    items = [item("m0", "mcq", "B")]
    records = [rec("m0", "t", 0, text="It is blue. Final answer: (B)")]
    rows, _ = match_samples(items, records, bench, MatchingConfig(require_format=False))
    assert rows[0]["format_ok"] is False and rows[0]["answer"] == "B" and rows[0]["weight"] == 1.0 and rows[0]["kept"]


def test_a_letter_the_item_does_not_offer_is_invalid(bench):
    items = [item("m0", "mcq", "A", options=["red", "blue"])]
    records = [rec("m0", "t", 0, "(C)"), rec("m0", "t", 1, "(A)")]
    rows, _ = match_samples(items, records, bench, MatchingConfig(use_ground_truth=False))
    assert rows[0]["answer"] is None and rows[0]["weight"] == 0.0 and not rows[0]["kept"]
    # a lone vote: the Beta(2, 1) prior (teachers beat chance) gives it 2/3 over the other option
    assert rows[1]["weight"] == pytest.approx(2 / 3, abs=1e-4) and rows[1]["kept"] and rows[1]["agreement"] == 1.0


def test_grounding_with_ground_truth_weights_by_temporal_iou(bench):
    items = [item("g0", "grounding", "[2.0, 4.0]")]
    spans = ["[2.0, 4.0]", "[2.0, 3.0]", "[5.0, 6.0]", "[2.5, 4.0]"]
    records = [rec("g0", f"t{i}", 0, s) for i, s in enumerate(spans)]
    rows, stats = match_samples(items, records, bench, MatchingConfig(min_weight=0.6))
    assert [row["weight"] for row in rows] == pytest.approx([1.0, 0.5, 0.0, 0.75])
    assert [row["kept"] for row in rows] == [True, False, False, True]
    # clusters at tIoU ≥ 0.5: {[2,4], [2,3], [2.5,4]} and {[5,6]} → plurality share 3/4
    assert rows[0]["agreement"] == pytest.approx(0.75)
    assert rows[0]["difficulty"] == pytest.approx(1 - np.mean([1.0, 0.5, 0.0, 0.75]))
    assert stats["teachers"]["t1"]["reliability"]["grounding"]["true"] == 1.0  # tIoU 0.5 counts as right


def test_grounding_label_free_votes_by_span_cluster(bench):
    items = [item("g0", "grounding", None)]
    spans = ["[0.0, 2.0]", "[0.1, 2.0]", "[3.0, 5.0]", "[3.0, 5.1]", "[3.1, 5.0]", "around the middle"]
    records = [rec("g0", f"t{i}", 0, s) for i, s in enumerate(spans)]
    rows, _ = match_samples(items, records, bench, MatchingConfig(consensus="majority"))
    assert [row["weight"] for row in rows] == pytest.approx([0.4, 0.4, 0.6, 0.6, 0.6, 0.0])
    assert [row["kept"] for row in rows] == [False, False, True, True, True, False]
    assert rows[0]["agreement"] == pytest.approx(0.6) and rows[0]["difficulty"] == pytest.approx(0.4)


def test_numeric_answers_vote_by_value(bench):
    items = [item("n0", "numeric", None)]
    records = [rec("n0", "a", 0, "3"), rec("n0", "b", 0, "3.0"), rec("n0", "c", 0, "4")]
    rows, stats = match_samples(items, records, bench, MatchingConfig(consensus="majority"))
    assert [row["weight"] for row in rows] == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert [row["kept"] for row in rows] == [True, True, False]
    assert stats["consensus"]["numeric"]["method"] == "majority"
    assert stats["teachers"]["c"]["reliability"]["numeric"] == {"estimate": 0.0, "true": None, "votes": 1,
                                                                "labelled": 0}


# ----------------------------------------------------------------------------- closed, label-free
@pytest.fixture(scope="module")
def simulated_pool():
    items = build_items(300, seed=5, test_fraction=0.0)["train"]
    teachers = [SimulatedTeacher("strong", 0.9, seed=1), SimulatedTeacher("mid", 0.65, seed=2),
                SimulatedTeacher("weak", 0.5, seed=3, format_error_rate=0.2)]
    records = [rec(it.item_id, t.name, k, text=t.respond(it, k).text) for t in teachers for it in items
               for k in range(2)]
    return items, records


def kept_precision(rows, items, bench) -> tuple[float, float]:
    item_of = {it.item_id: it for it in items}
    closed = [r for r in rows if item_of[r["item_id"]].closed and r["answer"] is not None]
    right = np.array([bench.score(r["answer"], item_of[r["item_id"]]) >= 0.5 for r in closed])
    kept = np.array([r["kept"] for r in closed])
    return right[kept].mean(), right.mean()


def test_label_free_dawid_skene_estimates_reliability_and_keeps_mostly_right_answers(bench, simulated_pool):
    items, records = simulated_pool
    rows, stats = match_samples(items, records, bench, MatchingConfig(use_ground_truth=False))
    for teacher in ("strong", "mid", "weak"):
        r = stats["teachers"][teacher]["reliability"]["mcq"]
        assert abs(r["estimate"] - r["true"]) < 0.08, (teacher, r)
    assert stats["consensus"]["mcq"]["converged"] and stats["consensus"]["mcq"]["model"] == "one_coin"
    precision, base_rate = kept_precision(rows, items, bench)
    assert precision > base_rate + 0.15 and precision > 0.9
    _, majority = match_samples(items, records, bench, MatchingConfig(use_ground_truth=False, consensus="majority"))
    assert all(0.0 <= r["weight"] <= 1.0 for r in rows)
    # 2 of the simulator's 3 format errors break the tags (the third keeps them, with an unreadable answer)
    assert stats["teachers"]["weak"]["format_error_rate"] == pytest.approx(0.2 * 2 / 3, abs=0.05)
    assert stats["teachers"]["strong"]["format_error_rate"] == 0.0
    assert stats["teachers"]["weak"]["reliability_overall"]["estimate"] < 0.6 < stats["teachers"]["strong"][
        "reliability_overall"]["estimate"]
    assert majority["consensus"]["mcq"]["method"] == "majority"


def test_full_confusion_model_runs_on_letters_and_reports_a_prior(bench, simulated_pool):
    items, records = simulated_pool
    rows, stats = match_samples(items, records, bench, MatchingConfig(use_ground_truth=False, ds_model="full"))
    info = stats["consensus"]
    assert info["mcq"]["model"] == "full" and set(info["mcq"]["prior"]) >= {"A", "B", "C", "D"}
    assert info["numeric"]["model"] == "one_coin"  # item-specific labels: no shared classes
    precision, base_rate = kept_precision(rows, items, bench)
    assert precision > base_rate + 0.15


# ----------------------------------------------------------------------------- open-ended
def test_open_uniform_centrality_and_outliers(bench):
    texts = ["the red square moves left and the blue circle moves up",
             "the red square moves left while the blue circle moves up",
             "a red square moves left and a blue circle goes up",
             "nothing happens in this clip at all"]
    items = [item("o0", "open", None)]
    records = [rec("o0", f"t{i}", 0, t) for i, t in enumerate(texts)]
    uniform, _ = match_samples(items, records, bench, MatchingConfig())
    assert [r["weight"] for r in uniform] == [1.0] * 4 and all(r["kept"] for r in uniform)
    sim = {(a, b): rouge_l(texts[a], texts[b]) for a, b in combinations(range(4), 2)}
    assert uniform[0]["agreement"] == pytest.approx(np.mean(list(sim.values())))
    assert uniform[0]["difficulty"] == pytest.approx(1 - uniform[0]["agreement"])
    central, _ = match_samples(items, records, bench, MatchingConfig(open_weighting="centrality"))
    weights = [r["weight"] for r in central]
    assert max(weights) == pytest.approx(1.0) and int(np.argmin(weights)) == 3 and all(r["kept"] for r in central)
    dropped, _ = match_samples(items, records, bench, MatchingConfig(open_weighting="centrality", open_outlier_z=1.0))
    assert [r["kept"] for r in dropped] == [True, True, True, False] and dropped[3]["weight"] == 0.0


# ----------------------------------------------------------------------------- output and errors
def test_written_dataset_loads_with_datasets_and_report_is_written(bench, tmp_path):
    from datasets import load_dataset

    items = [item("m0", "mcq", "B"), item("g0", "grounding", "[1.0, 2.0]"), item("o0", "open", None)]
    records = [rec("m0", "a", 0, "(B)"), {**rec("m0", "b", 0, "(A)"), "latency_s": 1.5},
               rec("g0", "a", 0, "[1.0, 2.5]"), rec("o0", "a", 0, "a red square"), rec("o0", "b", 0, text="",
                                                                                         error="HTTP 500")]
    rows, stats = match_samples(items, records, bench, MatchingConfig())
    path = write_matched(rows, tmp_path / "matched", stats=stats)
    ds = load_dataset("json", data_files=str(path), split="train")
    assert ds.num_rows == 5 and set(ds.column_names) == set(rows[0])
    assert ds["weight"] == pytest.approx([1.0, 0.0, 2 / 3, 1.0, 0.0])
    assert all(set(row) == set(rows[0]) for row in rows)  # latency_s present (None) in every row
    report = json.loads((tmp_path / "matched" / "match_report.json").read_text())
    assert report["n_samples"] == 5 and report["task_types"]["open"]["kept"] == 1
    png = (tmp_path / "matched" / "match_report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_config_is_the_recipe_model_and_user_errors(bench):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="consensus"):
        MatchingConfig(consensus="vote")
    with pytest.raises(ValidationError, match="min_weight"):
        MatchingConfig(min_weight=1.5)
    items = [item("m0", "mcq", "A")]
    with pytest.raises(RmsdError, match="none of the 1 sample records"):
        match_samples(items, [rec("other", "t", 0, "(A)")], bench, MatchingConfig())
    with pytest.raises(RmsdError, match="teacher"):
        match_samples(items, [{"key": "k", "item_id": "m0", "sample_index": 0, "text": "x"}], bench, MatchingConfig())
    with pytest.raises(RmsdError, match="twice"):
        match_samples(items * 2, [rec("m0", "t", 0, "(A)")], bench, MatchingConfig())
    rows, stats = match_samples(items, [rec("m0", "t", 0, "(A)"), rec("gone", "t", 0, "(A)")], bench, MatchingConfig())
    assert len(rows) == 1 and stats["n_records_without_item"] == 1


def test_anchor_items_fix_the_reliabilities_of_a_pool_with_shared_mistakes(bench):
    """Two weak teachers sharing their mistakes (one error_seed) outvote a strong one label-free;
    10% anchored items (known answers) rank the teachers right and keep the right answers."""
    from rmsd.matching.matcher import anchored

    items = build_items(500, seed=7, test_fraction=0.0, task_mix={"mcq": 0.4, "numeric": 0.6})["train"]
    teachers = [SimulatedTeacher("strong", 0.8, seed=1), SimulatedTeacher("weak", 0.4, seed=2, error_seed=9),
                SimulatedTeacher("weaker", 0.5, seed=3, error_seed=9)]
    records = [rec(it.item_id, t.name, k, text=t.respond(it, k).text) for t in teachers for it in items
               for k in range(2)]
    numeric = [it for it in items if it.task_type == "numeric"]
    label_free = dict(use_ground_truth=False)
    rows, stats = match_samples(numeric, [r for r in records if r["item_id"] in {it.item_id for it in numeric}],
                                bench, MatchingConfig(**label_free))
    est = {t: stats["teachers"][t]["reliability"]["numeric"]["estimate"] for t in ("strong", "weak", "weaker")}
    assert est["strong"] < est["weaker"], est  # the failure anchors are for
    free_precision, base_rate = kept_precision(rows, numeric, bench)
    rows, stats = match_samples(items, records, bench, MatchingConfig(**label_free, anchor_fraction=0.1))
    numeric_rows = [r for r in rows if r["task_type"] == "numeric"]
    est = {t: stats["teachers"][t]["reliability"]["numeric"]["estimate"] for t in ("strong", "weak", "weaker")}
    assert est["strong"] > max(est["weak"], est["weaker"]) + 0.1, est
    precision, _ = kept_precision(numeric_rows, numeric, bench)
    assert precision > free_precision + 0.2 and precision > base_rate, (precision, free_precision, base_rate)
    n_anchors = sum(anchored(it.item_id, 0.1) for it in numeric)
    assert stats["consensus"]["numeric"]["anchors"] == n_anchors and 0 < n_anchors < 0.25 * len(numeric)
    assert [anchored(it.item_id, 0.1) for it in items] == [anchored(it.item_id, 0.1) for it in items]  # stable
    # an item without a known answer is never a gold item, and does not stop the others
    unlabelled = [dataclasses.replace(it, answer=None) if it.item_id == numeric[0].item_id else it for it in items]
    _, stats = match_samples(unlabelled, records, bench, MatchingConfig(**label_free, anchor_fraction=1.0))
    assert stats["consensus"]["numeric"]["anchors"] == len(numeric) - 1
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="anchor_fraction"):
        MatchingConfig(anchor_fraction=1.5)
