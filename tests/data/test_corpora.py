"""Training corpora: Video-R1, LLaVA-Video-178K and rmsd's items JSONL, read from files in their public
schemas with real media; every problem type and its score, image rows, multi-turn rows, every kind of broken
row as one error line (file:line, field) or skipped and counted."""

from __future__ import annotations

import json
import re

import pytest
from corpora import CHOICES, llava_row, mc_question, videor1_corpus, videor1_row, write_mp4, write_png

from rmsd.data.benchmarks import get_benchmark
from rmsd.data.benchmarks.videor1 import build_prompt, relative_score, word_similarity
from rmsd.data.items import Item, write_items
from rmsd.errors import RmsdError
from rmsd.eval.evaluate import score_predictions


# ----------------------------------------------------------------------------- Video-R1
def test_every_video_r1_problem_type_becomes_an_item_with_its_answer(tmp_path):
    file, rows = videor1_corpus(tmp_path)
    bench = get_benchmark("videor1")
    items = bench.load_items(file)
    assert [it.task_type for it in items] == ["mcq", "numeric", "numeric", "open", "open", "mcq", "numeric"]
    assert [it.answer for it in items] == ["B", "3", "12.5", "open the door", "a person walks to the left", "C",
                                           "1,200"]
    assert items[0].options == ["red", "blue", "green", "yellow"] and items[0].letters == list("ABCD")
    assert items[0].item_id == "LLaVA-Video-178K/1" and items[5].item_id == "ChartQA/6"
    assert items[0].video == str((file.parent / "videos" / "clip0.mp4").resolve()) and items[0].image is None
    assert items[5].image == str((file.parent / "images" / "chart.png").resolve()) and items[5].video is None
    # the prompt Video-R1 trains with: options after "Options:", then the type's answer instruction
    assert items[0].prompt.startswith("Question 1 about the clip?Options:\nA. red\nB. blue\nC. green\nD. yellow\n")
    assert items[0].prompt.endswith("Please provide only the single option letter (e.g., A, B, C, D, etc.) within "
                                    "the <answer> </answer> tags.")
    assert "numerical value" in items[1].prompt and "transcribe text" in items[3].prompt
    assert items[1].prompt == build_prompt(rows[1]["problem"], "numerical", [])
    assert bench.skipped == {}


def test_each_problem_type_is_scored_as_video_r1_scores_it(tmp_path):
    file, _ = videor1_corpus(tmp_path)
    bench = get_benchmark("videor1")
    items = bench.load_items(file)
    replies = ["<think>x</think><answer>B</answer>", "<answer>3.0</answer>", "<answer>10</answer>",
               "<answer>open the window</answer>", "<answer>a person walks to the left</answer>",
               "<answer>A</answer>", "<answer>1200</answer>"]
    rows = score_predictions(items, replies, bench, "harness")
    scores = [r["score"] for r in rows]
    assert scores[0] == 1.0 and scores[1] == 1.0  # letter; 3.0 == 3 after normalisation
    assert scores[2] == pytest.approx(1 - 2.5 / 12.5)  # regression: 1 - relative error
    assert scores[3] == pytest.approx(2 / 3)  # OCR: one word of three substituted
    assert scores[4] == pytest.approx(1.0) and scores[5] == 0.0 and scores[6] == 1.0  # "1,200" == 1200
    result = bench.aggregate(rows)
    assert set(result["breakdowns"]) == {"problem_type", "data_type", "data_source"}
    assert result["counts"]["data_type"] == {"image": 2, "video": 5}


def test_the_scores_bounds():
    assert relative_score("100", "10") == 0.0 and relative_score("x", "1") == 0.0
    assert relative_score("10", "10") == pytest.approx(1.0)
    assert word_similarity("", "two words") == 0.0 and word_similarity("Two  WORDS", "two words") == 1.0
    assert word_similarity("a b c d e f", "a") == 0.0  # many insertions clip at 0


@pytest.mark.parametrize("change, field, reason", [
    ({"path": "./videos/nowhere.mp4"}, "path", "missing media"),
    ({"options": ["A: red", "C: blue"]}, "options", "unparseable options"),
    ({"problem_type": "counting"}, "problem_type", "unknown problem_type"),
    ({"data_type": "audio"}, "data_type", "unknown data_type"),
    ({"solution": "B"}, "solution", "no answer"),
    ({"solution": "<answer>F</answer>"}, "solution", "answer not an option"),
    ({"problem": None}, "problem", "missing field"),
])
def test_a_broken_video_r1_row_is_one_error_line_or_is_skipped_and_counted(tmp_path, change, field, reason):
    file, rows = videor1_corpus(tmp_path)
    rows[2] = rows[0] | change | {"problem_id": 99}  # the third row, a multiple-choice row, broken
    file.write_text(json.dumps(rows, indent=2))
    with pytest.raises(RmsdError) as err:
        get_benchmark("videor1").load_items(file)
    message = str(err.value)
    starts = [n for n, text in enumerate(file.read_text().splitlines(), 1) if text == "  {"]  # where each row begins
    assert message.startswith(f"{file}:{starts[2]}: field {field}: {reason}")
    assert "\n" not in message and "on_bad_row: skip" in message
    bench = get_benchmark("videor1")
    items = bench.load_items(file, on_bad_row="skip")
    assert len(items) == len(rows) - 1 and 99 not in [it.meta["problem_id"] for it in items]
    assert bench.skipped == {reason: 1}


def test_a_video_r1_folder_and_a_limit(tmp_path):
    file, rows = videor1_corpus(tmp_path)
    (file.parent / "Video-R1-COT-165k.json").write_text(json.dumps([rows[1] | {"problem_id": 50}]))
    items = get_benchmark("videor1").load_items(file.parent)
    assert len(items) == len(rows) + 1
    assert len(get_benchmark("videor1").load_items(file.parent, limit=3)) == 3


# ----------------------------------------------------------------------------- LLaVA-Video-178K
def _llava(tmp_path, rows, name="0_30_s_academic_mc_v0_1_qa_processed.json"):
    subset = tmp_path / "llava" / "0_30_s_academic_v0_1"
    write_mp4(subset / "academic_source" / "Charades" / "v1.mp4", seed=1)
    write_mp4(subset / "academic_source" / "Charades" / "v2.mp4", seed=2)
    (subset / name).write_text(json.dumps(rows, indent=2))
    return tmp_path / "llava"


def test_llava_video_multiple_choice_open_and_multi_turn_rows(tmp_path):
    rows = [llava_row("v1", "academic_source/Charades/v1.mp4", [(mc_question("What colour is the cup?"), "B.")]),
            llava_row("v2", "academic_source/Charades/v2.mp4",
                      [("<image>\nWhat does the person do?", "The person opens a door."),
                       ("How many doors are there?", "There are two doors."),
                       (mc_question("Where is the cup?", ["(A) table", "(B) floor"]), "(A) table")])]
    root = _llava(tmp_path, rows)
    bench = get_benchmark("llava_video")
    items = bench.load_items(root, video_root=root / "0_30_s_academic_v0_1")
    assert [it.item_id for it in items] == ["v1/0", "v2/0", "v2/1", "v2/2"]
    assert [it.task_type for it in items] == ["mcq", "open", "open", "mcq"]
    assert items[0].options == ["red", "blue", "green", "yellow"] and items[0].answer == "B"
    assert items[0].question == "What colour is the cup?" and "<image>" not in items[0].prompt
    assert items[0].prompt.endswith("Answer with the option's letter from the given choices directly.")
    assert items[1].answer == "The person opens a door." and items[2].question == "How many doors are there?"
    assert items[3].options == ["table", "floor"] and items[3].answer == "A"
    assert items[1].video == items[2].video != items[0].video
    rows = score_predictions(items, ["<answer>B</answer>", "The person opens the door.", "two", "A"], bench,
                             "harness")
    assert rows[0]["score"] == 1.0 and 0.5 < rows[1]["score"] < 1.0 and rows[3]["score"] == 1.0


def test_llava_video_splits_pick_files_by_kind(tmp_path):
    mc = [llava_row("v1", "academic_source/Charades/v1.mp4", [(mc_question("Q?"), "A")])]
    root = _llava(tmp_path, mc)
    oe = [llava_row("v2", "academic_source/Charades/v2.mp4", [("<image>\nWhy?", "Because.")])]
    (root / "0_30_s_academic_v0_1" / "0_30_s_academic_oe_v0_1_qa_processed.json").write_text(json.dumps(oe))
    video_root = root / "0_30_s_academic_v0_1"
    bench = get_benchmark("llava_video")
    assert [it.item_id for it in bench.load_items(root, split="multi_choice", video_root=video_root)] == ["v1/0"]
    assert [it.item_id for it in bench.load_items(root, split="open_ended", video_root=video_root)] == ["v2/0"]
    assert len(bench.load_items(root, video_root=video_root)) == 2  # train: every kind
    # without video_root the videos are found under the data folder's data_source subfolder
    assert len(bench.load_items(root)) == 2


@pytest.mark.parametrize("row, field, reason", [
    (llava_row("v9", "academic_source/Charades/missing.mp4", [("<image>\nQ?", "A.")]), "video", "missing media"),
    (llava_row("v9", "academic_source/Charades/v1.mp4", [(mc_question("Q?", ["A. x", "C. y"]), "A")]),
     "conversations[0]", "unparseable options"),
    (llava_row("v9", "academic_source/Charades/v1.mp4", [(mc_question("Q?"), "none of them")]),
     "conversations[1]", "answer not an option"),
    ({"id": "v9", "video": "academic_source/Charades/v1.mp4", "conversations": [{"from": "gpt", "value": "x"}]},
     "conversations", "no question"),
])
def test_a_broken_llava_row_is_one_error_line_or_is_skipped_and_counted(tmp_path, row, field, reason):
    good = llava_row("v1", "academic_source/Charades/v1.mp4", [(mc_question("Q?"), "A.")])
    root = _llava(tmp_path, [good, row])
    file = next(root.rglob("*.json"))
    starts = [n for n, text in enumerate(file.read_text().splitlines(), 1) if text == "  {"]
    with pytest.raises(RmsdError, match="^" + re.escape(f"{file}:{starts[1]}: field {field}: {reason}")):
        get_benchmark("llava_video").load_items(root)
    bench = get_benchmark("llava_video")
    assert [it.item_id for it in bench.load_items(root, on_bad_row="skip")] == ["v1/0"]
    assert bench.skipped == {reason: 1}


# ----------------------------------------------------------------------------- rmsd's items
def test_items_jsonl_reads_any_converted_corpus_with_relative_media(tmp_path):
    write_mp4(tmp_path / "media" / "a.mp4", seed=3)
    write_png(tmp_path / "media" / "b.png", seed=4)
    items = [Item("a", "mine", "mcq", "Q?", "Q? (A) x (B) y", ["x", "y"], "A", video="media/a.mp4"),
             Item("b", "mine", "open", "Describe.", "Describe.", answer="a square", image="media/b.png")]
    write_items(items, tmp_path / "train.jsonl")
    bench = get_benchmark("items")
    loaded = bench.load_items(tmp_path)  # the folder's train.jsonl
    assert [it.item_id for it in loaded] == ["a", "b"]
    assert loaded[0].video == str((tmp_path / "media" / "a.mp4").resolve())
    assert loaded[1].image == str((tmp_path / "media" / "b.png").resolve())
    assert score_predictions(loaded, ["<answer>(A)</answer>", "<answer>a square</answer>"], bench,
                             "strict")[0]["score"] == 1.0
    with (tmp_path / "train.jsonl").open("a") as f:
        f.write("{not json\n")
        f.write(json.dumps(items[0].to_dict() | {"item_id": "c", "video": "media/gone.mp4"}) + "\n")
    with pytest.raises(RmsdError, match=rf"^{tmp_path / 'train.jsonl'}:3: field \(line\): not valid JSON"):
        get_benchmark("items").load_items(tmp_path)
    bench = get_benchmark("items")
    assert [it.item_id for it in bench.load_items(tmp_path, on_bad_row="skip")] == ["a", "b"]
    assert bench.skipped == {"not valid JSON": 1, "missing media": 1}


def test_the_prompt_of_a_video_r1_row_keeps_the_options_as_written():
    row = videor1_row(1, "multiple choice", "./x.mp4", "A", options=CHOICES, problem="Which colour?")
    assert build_prompt(row["problem"], "multiple choice", CHOICES).startswith(
        "Which colour?Options:\nA. red\nB. blue\nC. green\nD. yellow\n\nPlease think")
