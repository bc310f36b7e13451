"""benchmarks/student_errors.py: what a student answered, read from hand-made predictions whose figures are
counted by hand; the work folder is laid out as benchmarks/reproduce.py writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import student_errors  # benchmarks/ is on pytest's pythonpath (pyproject.toml)


def _item(item_id: str, task: str, answer: str, kind: str, options: list[str] | None = None) -> dict:
    return {"item_id": item_id, "task_type": task, "answer": answer, "options": options,
            "meta": {"question_kind": kind}}


COLOURS = ["cyan", "yellow", "magenta", "red"]
TEST = [_item("m1", "mcq", "C", "colour", COLOURS), _item("m2", "mcq", "B", "colour", COLOURS),
        _item("m3", "mcq", "A", "colour", COLOURS), _item("n1", "numeric", "3", "count"),
        _item("n2", "numeric", "2", "count")]
TRAIN = [_item("t1", "mcq", "A", "colour", COLOURS), _item("t2", "mcq", "A", "colour", COLOURS),
         _item("t3", "mcq", "B", "colour", COLOURS), _item("t4", "numeric", "3", "count"),
         _item("t5", "numeric", "3", "count"), _item("t6", "numeric", "2", "count")]


def _pred(item_id: str, task: str, response: str, prediction: str, score: float) -> dict:
    return {"item_id": item_id, "task_type": task, "response": response, "prediction": prediction, "score": score}


RUN = [
    # names magenta (option C, right) and answers C: reads the clip and maps it
    _pred("m1", "mcq", "<think>The object is magenta (C).</think><answer>(C)</answer>", "C", 1.0),
    # names red (D, wrong: B is yellow) but answers A: neither reads nor maps
    _pred("m2", "mcq", "<think>The object is red (A).</think><answer>(A)</answer>", "A", 0.0),
    # names nothing after </think> counts: the option in the answer tag is not reasoning
    _pred("m3", "mcq", "<think>I look closely.</think><answer>cyan (A)</answer>", "A", 1.0),
    _pred("n1", "numeric", "<think>3</think><answer>3</answer>", "3", 1.0),
    _pred("n2", "numeric", "<think>3</think><answer>3</answer>", "3", 0.0),
]


def test_collapse_counts_distinct_answers_and_the_top_share():
    assert student_errors.collapse(RUN, "mcq") == (2, 2 / 3)  # C once, A twice
    assert student_errors.collapse(RUN, "numeric") == (1, 1.0)  # always 3: a prior, not the clip


def test_named_option_is_the_first_whole_word_option_in_the_reasoning():
    assert student_errors.named_option("<think>not red but cyan</think>", COLOURS) == "red"
    assert student_errors.named_option("<think>reddish</think><answer>red</answer>", COLOURS) is None


def test_mcq_reading_separates_reading_the_clip_from_mapping_to_a_letter():
    items = {it["item_id"]: it for it in TEST}
    reading = student_errors.mcq_reading(RUN, items)
    assert reading["names"] == 2 / 3  # m1 and m2 name an option, m3 does not
    assert reading["content_right"] == 1 / 3  # only m1 names the right one
    assert reading["letter_matches"] == 1 / 2  # of the two that name one, m1 answers its letter


def test_the_prior_answers_each_question_kind_with_the_training_splits_commonest_answer():
    prior = student_errors.prior_accuracy(TRAIN, TEST)
    assert prior == {"mcq": 1 / 3, "numeric": 1 / 2}  # "A" for colour (m3 right), "3" for count (n1 right)


def test_report_reads_every_seed_of_every_method_in_a_reproduce_work_folder(tmp_path: Path):
    def write(path: Path, rows: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    write(tmp_path / "data" / "train.jsonl", TRAIN)
    write(tmp_path / "data" / "test.jsonl", TEST)
    for seed in (0, 1):
        write(tmp_path / "single" / f"seed{seed}" / "eval" / "final" / "predictions.jsonl", RUN)
    write(tmp_path / "matched" / "seed0" / "eval" / "final" / "predictions.jsonl",
          [dict(r, score=0.0) for r in RUN])

    found = student_errors.predictions(tmp_path)
    assert list(found) == ["single", "matched"] and sorted(found["single"]) == [0, 1]
    text = student_errors.report(tmp_path, with_targets=False)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["single"].startswith("| single | 2 | 0.667 | 0.500 | - | - | 2.0, 0.67 | 1.0, 1.00 |")  # no grounding
    assert rows["matched"].startswith("| matched | 1 | 0.000 | 0.000 |")
    assert "mcq 0.333, numeric 0.500" in text

    # a piloted regime (v4) keeps each S's method folders under S<S>/: the same students, read from there
    (tmp_path / "S900").mkdir()
    for method in ("single", "matched"):
        (tmp_path / method).rename(tmp_path / "S900" / method)
    assert "| single |" not in student_errors.report(tmp_path, with_targets=False)
    assert student_errors.report(tmp_path, with_targets=False, runs=tmp_path / "S900") == text


def test_kind_targets_separate_spread_mistakes_from_systematic_ones():
    values = (("easy/colour", "red", "red", 1.0), ("easy/colour", "red", "blue", 1.0), ("easy/colour", "red", "red", 1.0),
              ("easy/colour", "blue", "blue", 0.5), ("easy/colour", "blue", "green", 0.5),
              ("easy/direction", "up", "down", 1.0), ("easy/direction", "up", "down", 1.0),
              ("easy/direction", "up", "up", 1.0), ("easy/direction", "left", "left", 1.0), ("hard/order", "a", "a", 1.0))
    k = student_errors.kind_targets(values)
    assert list(k) == ["easy/colour", "easy/direction", "hard/order"]  # by target weight (items)
    assert k["easy/colour"]["weight"] == 4.0 and k["easy/colour"]["right"] == pytest.approx(2.5 / 4)
    # blue -> green takes half of blue's one item, red -> blue a third of red's three
    assert k["easy/colour"]["top_wrong"] == pytest.approx(0.5) and k["easy/colour"]["top_wrong_pair"] == "blue → green"
    assert k["easy/direction"]["top_wrong"] == pytest.approx(2 / 3) and k["easy/direction"]["right"] == 0.5
    assert k["hard/order"] == {"weight": 1.0, "right": 1.0, "top_wrong": 0.0, "top_wrong_pair": "- → -"}


def test_kept_errors_say_what_consensus_kept_wrong_and_whose_samples_those_were():
    def row(item_id, teacher, answer, kept, task="numeric"):
        return {"item_id": item_id, "teacher": teacher, "answer": answer, "kept": kept, "task_type": task}

    train = [_item("a", "numeric", "3", "count"), _item("b", "numeric", "2", "count"),
             _item("c", "mcq", "A", "colour", COLOURS)]
    matched = [row("a", "t1", "3", False), row("a", "t2", "2", True), row("a", "t3", "2", True),  # t1 outvoted
               row("b", "t1", "2", True), row("b", "t2", "2", True), row("b", "t3", None, False),  # format error
               row("c", "t1", "A", True, "mcq"), row("c", "t2", "A", True, "mcq")]
    errors = student_errors.kept_errors(matched, train)
    assert errors["numeric"] == {"items": 2, "wrong": 1, "wrong_by_teacher": {"t2": 1, "t3": 1},
                                 "teacher_accuracy": {"t1": 1.0, "t2": 0.5, "t3": 0.0}}
    assert errors["mcq"]["items"] == 1 and errors["mcq"]["wrong"] == 0 and errors["mcq"]["wrong_by_teacher"] == {}
    table = student_errors.kept_table(errors)
    assert "| numeric | 2 | 1 | t2 1, t3 1 | t1 1.000, t2 0.500, t3 0.000 |" in table
