"""`rmsd.eval.evaluate.evaluate` on the tiny offline student: synthvid items made in the test
and a Video-MME folder in the public schema (parquet + mp4 clips written with PyAV).

Predictions are checked against the benchmark's own extractor and scorer row by row, the
results against the mean of those rows, and batched greedy decoding against one item at a time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from schemas import mathverse_row, videomme_row, write_parquet

from rmsd.datasets import get_benchmark
from rmsd.errors import RmsdError
from rmsd.eval.evaluate import evaluate
from rmsd.models.offline.tiny import build_student
from rmsd.synthvid.generator import encode_mp4, generate

MAX_NEW_TOKENS = 10


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return build_student(tmp_path_factory.mktemp("student") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="module")
def synthvid(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthvid")
    generate(root, n=12, seed=0, test_fraction=0.0)
    bench = get_benchmark("synthvid")
    items = bench.load_items(root, split="train")
    picked = {it.task_type: it for it in reversed(items)}  # one item of every task type, then fill up to 6
    items = list(picked.values()) + [it for it in items if it not in picked.values()][: 6 - len(picked)]
    assert len(picked) == 4, f"synthvid made only {sorted(picked)}"
    return bench, items


@pytest.fixture(scope="module")
def batched(student, synthvid, tmp_path_factory):
    bench, items = synthvid
    out = tmp_path_factory.mktemp("eval") / "batched"
    results = evaluate(student, items, bench, out, batch_size=4, max_new_tokens=MAX_NEW_TOKENS, show=False)
    return results, out


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_predictions_one_per_item_with_extracted_answer_and_score(synthvid, batched):
    bench, items = synthvid
    _, out = batched
    rows = read_rows(out)
    assert [r["item_id"] for r in rows] == [it.item_id for it in items]
    for row, item in zip(rows, items, strict=True):
        assert row["task_type"] == item.task_type and row["answer"] == item.answer
        assert isinstance(row["response"], str)
        assert row["prediction"] == bench.extract(row["response"], item, mode="harness")
        assert row["score"] == bench.score(row["prediction"], item) and 0.0 <= row["score"] <= 1.0
        assert (row["difficulty"], row["question_kind"]) == (item.meta["difficulty"], item.meta["question_kind"])


def test_results_are_the_mean_of_the_rows_with_task_type_breakdowns(synthvid, batched):
    _, items = synthvid
    results, out = batched
    assert json.loads((out / "results.json").read_text()) == results
    rows = read_rows(out)
    assert results["n_items"] == results["n"] == len(items)
    assert results["benchmark"] == "synthvid" and results["extraction"] == "harness"
    assert results["overall"] == pytest.approx(np.mean([r["score"] for r in rows]))
    by_type = results["breakdowns"]["task_type"]
    assert list(by_type) == ["mcq", "numeric", "grounding", "open"]  # the benchmark's display order
    for task, acc in by_type.items():
        assert acc == pytest.approx(np.mean([r["score"] for r in rows if r["task_type"] == task]))
    assert sum(results["counts"]["task_type"].values()) == len(items)
    assert set(results["breakdowns"]) == {"task_type", "difficulty", "question_kind"}


def test_batched_greedy_decoding_matches_one_item_at_a_time(student, synthvid, batched, tmp_path):
    bench, items = synthvid
    _, out = batched
    evaluate(student, items, bench, tmp_path, batch_size=1, max_new_tokens=MAX_NEW_TOKENS, show=False)
    # left padding must not change what greedy decoding produces
    assert [r["response"] for r in read_rows(tmp_path)] == [r["response"] for r in read_rows(out)]


def test_extraction_mode_passes_through_to_the_benchmark(student, synthvid, batched, tmp_path):
    bench, items = synthvid
    _, out = batched
    results = evaluate(student, items, bench, tmp_path, extraction="strict", batch_size=4,
                       max_new_tokens=MAX_NEW_TOKENS, show=False)
    assert results["extraction"] == "strict"
    strict, harness = read_rows(tmp_path), read_rows(out)
    assert [r["response"] for r in strict] == [r["response"] for r in harness]  # same greedy text, re-read
    for row, item in zip(strict, items, strict=True):
        assert row["prediction"] == bench.extract(row["response"], item, mode="strict")
        assert row["score"] == bench.score(row["prediction"], item)
    assert results["overall"] == pytest.approx(np.mean([r["score"] for r in strict]))


def test_an_unknown_extraction_mode_fails_before_the_model_loads(synthvid, tmp_path):
    bench, items = synthvid
    with pytest.raises(RmsdError, match="extraction mode 'legacy' is not available"):
        evaluate(tmp_path / "no-such-checkpoint", items, bench, tmp_path / "out", extraction="legacy", show=False)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- Video-MME
@pytest.fixture
def videomme_dir(tmp_path: Path) -> Path:
    rows = [videomme_row(1, "short", "Temporal Reasoning", "A"),
            videomme_row(2, "short", "Counting Problem", "B", domain="Sports Competition"),
            videomme_row(3, "medium", "Temporal Reasoning", "C"),
            videomme_row(4, "long", "OCR Problems", "D", domain="Sports Competition")]
    write_parquet(tmp_path / "videomme" / "test-00000-of-00001.parquet", rows)
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    for n in range(1, 5):  # a real 2 s clip per video: 8 frames of 56 x 56 at 4 fps
        encode_mp4(rng.integers(0, 255, (8, 56, 56, 3), dtype=np.uint8), tmp_path / "data" / f"vid{n}.mp4", fps=4)
    return tmp_path


def test_videomme_evaluation_reports_duration_domain_and_task_type(student, videomme_dir, tmp_path):
    bench = get_benchmark("videomme")
    items = bench.load_items(videomme_dir)
    results = evaluate(student, items, bench, tmp_path / "eval", batch_size=4, max_new_tokens=MAX_NEW_TOKENS,
                       num_frames=4, show=False)
    rows = read_rows(tmp_path / "eval")
    assert [r["item_id"] for r in rows] == ["001-1", "002-1", "003-1", "004-1"]
    for row, item in zip(rows, items, strict=True):
        assert row["prediction"] == bench.extract(row["response"], item, mode="harness")
        assert row["prediction"] is None or row["prediction"] in "ABCD"
        assert row["score"] == float(row["prediction"] == item.answer)
        assert row["task_type"] == item.meta["task_type"]  # Video-MME's own task type, not "mcq"
    scores = [r["score"] for r in rows]
    assert results["benchmark"] == "videomme" and results["overall"] == pytest.approx(np.mean(scores))
    b, counts = results["breakdowns"], results["counts"]
    assert set(b) == {"duration", "domain", "sub_category", "task_type"}
    assert list(b["duration"]) == ["short", "medium", "long"]  # Video-MME's order, not alphabetical
    assert b["duration"]["short"] == pytest.approx(np.mean(scores[:2]))
    assert b["domain"]["Knowledge"] == pytest.approx(np.mean([scores[0], scores[2]]))
    assert b["task_type"]["Temporal Reasoning"] == pytest.approx(np.mean([scores[0], scores[2]]))
    assert counts["duration"] == {"short": 2, "medium": 1, "long": 1}
    assert counts["domain"] == {"Knowledge": 2, "Sports Competition": 2}
    assert counts["task_type"] == {"Counting Problem": 1, "OCR Problems": 1, "Temporal Reasoning": 2}


def test_mathverse_eval_asks_the_recipes_judge_teacher_and_caches_it(student, tmp_path):
    """`eval.judge_teacher` makes `rmsd eval` score MathVerse with that pool teacher (a real HTTP
    server here), not with the rule fallback; a second run reads every verdict from the cache."""
    import yaml
    from fake_openai import FakeOpenAIServer
    from PIL import Image

    from rmsd.config import load_recipe
    from rmsd.pipeline import eval_recipe

    data = tmp_path / "mathverse"
    (data / "images").mkdir(parents=True)
    Image.new("RGB", (28, 28), (255, 0, 0)).save(data / "images" / "a.png")
    rows = [mathverse_row(i, "Vision Only", "free-form", "3", "images/a.png", f"Find x{i}.") for i in range(3)]
    (data / "testmini.json").write_text(json.dumps(rows))
    with FakeOpenAIServer() as server:
        pool = tmp_path / "pool.yaml"
        pool.write_text(yaml.safe_dump({"name": "graders", "teachers": [
            {"name": "grader", "backend": "openai", "openai": {"model": "fake-judge", "base_url": server.url}}]}))
        recipe_file = tmp_path / "r.yaml"
        recipe_file.write_text(yaml.safe_dump({
            "name": "mv", "dataset": {"benchmark": "mathverse", "path": str(data), "split": "testmini",
                                      "eval_split": "testmini"},
            "pool": str(pool), "student": {"path": str(student)},
            "eval": {"judge_teacher": "grader", "max_new_tokens": 4, "batch_size": 3}}))
        recipe = load_recipe(recipe_file)
        server.reset(replies=["1"] * 6)  # each item: the extraction "1", then the match verdict "1"
        first = eval_recipe(recipe, student, out=tmp_path / "eval", show=False)["mathverse"]
        asked = server.stats.requests
        again = eval_recipe(recipe, student, out=tmp_path / "eval", show=False)["mathverse"]
        assert server.stats.requests == asked  # every verdict came from the cache
    rule = evaluate(student, get_benchmark("mathverse").load_items(data), get_benchmark("mathverse"),
                    tmp_path / "rule", max_new_tokens=4, show=False)
    assert asked == 6  # two judge calls (extract, match) per item
    assert first["overall"] == again["overall"] == 1.0 != rule["overall"]
    assert (tmp_path / "eval" / "judge_cache.jsonl").is_file()


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_a_qwen3_vl_student_is_evaluated_by_the_same_path(synthvid, tmp_path, family):
    bench, items = synthvid
    path = build_student(tmp_path / "q3", family=family, seed=0)
    results = evaluate(path, items, bench, tmp_path / "batched", batch_size=4, max_new_tokens=MAX_NEW_TOKENS,
                       show=False)
    rows = read_rows(tmp_path / "batched")
    assert results["n_items"] == len(items) == len(rows)
    assert results["overall"] == pytest.approx(sum(r["score"] for r in rows) / len(rows))
    evaluate(path, items, bench, tmp_path / "alone", batch_size=1, max_new_tokens=MAX_NEW_TOKENS, show=False)
    # left padding (and Qwen3-VL's per-row rope positions, Qwen3.5's recurrent states) must not change what
    # greedy decoding produces
    assert [r["response"] for r in read_rows(tmp_path / "alone")] == [r["response"] for r in rows]


def test_the_results_table_fits_80_columns_and_says_where_it_wrote(capsys, tmp_path):
    from rmsd.eval.evaluate import print_results

    results = {"model": "/a/very/long/path/to/runs/experiment-with-a-long-name/student_distilled/adversarial" * 2,
               "benchmark": "synthvid", "extraction": "harness", "n_items": 80, "overall": 0.5,
               "breakdowns": {"task_type": {"grounding": 0.4, "mcq": 0.6, "open": 0.5}},
               "counts": {"task_type": {"grounding": 12, "mcq": 44, "open": 24}}}
    print_results(results, tmp_path / "eval")
    printed = capsys.readouterr().out
    assert max(len(line) for line in printed.splitlines()) <= 80
    for task, metric, count in (("grounding", "tIoU", "12"), ("mcq", "accuracy", "44"), ("open", "ROUGE-L", "24")):
        assert re.search(rf"{task}\s+│\s+{metric}\s+│\s+{count}", printed), task
    assert "predictions.jsonl" in printed.replace("\n", "") and "results.json" in printed.replace("\n", "")
