"""Training corpora: Video-R1, LLaVA-Video-178K and rmsd's items JSONL, read from files in their public
schemas with real media; every problem type and its score, image rows, multi-turn rows, every kind of broken
row as one error line (file:line, field) or skipped and counted."""

from __future__ import annotations

import json
import re

import pytest
from corpora import CHOICES, VIDEO_DIR, llava_row, mc_question, videor1_corpus, videor1_row, write_mp4, write_png

from rmsd.datasets import get_benchmark
from rmsd.datasets.videor1 import build_prompt, relative_score, word_similarity
from rmsd.errors import RmsdError
from rmsd.eval.evaluate import score_predictions
from rmsd.items import Item, write_items


# ----------------------------------------------------------------------------- Video-R1
def test_every_video_r1_problem_type_becomes_an_item_with_its_answer(tmp_path):
    file, rows = videor1_corpus(tmp_path)
    bench = get_benchmark("videor1")
    items = bench.load_items(file)
    assert [it.task_type for it in items] == ["mcq", "numeric", "numeric", "open", "open", "mcq", "numeric"]
    assert [it.answer for it in items] == ["B", "3", "12.5", "open the door", "a person walks to the left", "C",
                                           "1200"]  # numbers canonical; the strict score reads `solution` as written
    assert items[6].meta["solution"] == "<answer>1,200</answer>"
    assert items[0].options == ["red", "blue", "green", "yellow"] and items[0].letters == list("ABCD")
    assert items[0].item_id == "LLaVA-Video-178K/1" and items[5].item_id == "ChartQA/6"
    assert items[0].video == str((file.parent / VIDEO_DIR / "ytb_clip0.mp4").resolve()) and items[0].image is None
    assert items[5].image == str((file.parent / "ChartQA" / "images" / "chart.png").resolve())
    assert items[5].video is None
    # the prompt Video-R1 trains with: options after "Options:", then the type's answer instruction
    assert items[0].prompt.startswith("Question 1 about the clip?Options:\nA. red\nB. blue\nC. green\nD. yellow\n")
    assert items[0].prompt.endswith("Please provide only the single option letter (e.g., A, B, C, D, etc.) within "
                                    "the <answer> </answer> tags.")
    assert "numerical value" in items[1].prompt and "transcribe text" in items[3].prompt
    assert items[1].prompt == build_prompt(rows[1]["problem"], "numerical", [])
    assert bench.skipped == {}


def test_each_problem_type_is_scored_as_video_r1_scores_it(tmp_path):
    # Video-R1's accuracy_reward (tulerfeng/Video-R1, src/r1-v/src/open_r1/grpo.py at commit
    # 59d65c347e44efa71be27abf9d89b4a2bb7d1c05; the full table is tests/datasets/test_videor1_reward.py): "3.0" for "3" and "1200" for "1,200" score 0 (one side
    # has a decimal mark), OCR is 1 - WER, regression 1 - relative error
    file, _ = videor1_corpus(tmp_path)
    bench = get_benchmark("videor1")
    items = bench.load_items(file)
    replies = ["<think>x</think><answer>B</answer>", "<answer>3.0</answer>", "<answer>10</answer>",
               "<answer>open the window</answer>", "<answer>a person walks to the left</answer>",
               "<answer>A</answer>", "<answer>1200</answer>"]
    strict = [r["score"] for r in score_predictions(items, replies, bench, "strict")]
    assert strict[0] == 1.0 and strict[1] == 0.0 and strict[6] == 0.0
    assert strict[2] == pytest.approx(1 - 2.5 / 12.5)  # regression: 1 - relative error
    assert strict[3] == pytest.approx(2 / 3)  # OCR: one word of three substituted
    assert strict[4] == pytest.approx(1.0) and strict[5] == 0.0
    # rmsd eval's default reading is eval_bench.py's: regression by mean relative accuracy
    rows = score_predictions(items, replies, bench, "harness")
    assert [r["score"] for r in rows] == [1.0, 0.0, pytest.approx(0.6), pytest.approx(2 / 3), 1.0, 0.0, 0.0]
    result = bench.aggregate(rows)
    assert set(result["breakdowns"]) == {"problem_type", "data_type", "data_source"}
    assert result["counts"]["data_type"] == {"image": 2, "video": 5}
    assert result["mean_mra"] == pytest.approx(0.6) and result["mean_acc"] == pytest.approx((2 + 2 / 3) / 6)


def test_the_lenient_scores_bounds():
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
    assert len(get_benchmark("videor1").load_items(file.parent)) == len(rows)  # one data file: no config needed
    assert len(get_benchmark("videor1").load_items(file.parent, limit=3)) == 3


def test_a_folder_with_both_video_r1_files_reads_the_one_config_names(tmp_path):
    # Video-R1-data holds both releases, which share problem_ids; media folders beside them are not data
    file, rows = videor1_corpus(tmp_path)
    cot = [row | {"process": "<think>reasoning</think>"} for row in rows[:3]]
    (file.parent / "Video-R1-COT-165k.json").write_text(json.dumps(cot))
    (file.parent / "ChartQA" / "notes.json").write_text("[]")
    with pytest.raises(RmsdError) as err:
        get_benchmark("videor1").load_items(file.parent)
    assert str(err.value) == (f"videor1: {file.parent} holds 2 data sets (Video-R1-260k, Video-R1-COT-165k): set "
                              "dataset.config to the one to read")
    assert len(get_benchmark("videor1").load_items(file.parent, config="Video-R1-260k")) == len(rows)
    items = get_benchmark("videor1").load_items(file.parent, config="video-r1-cot-165k")
    assert len(items) == 3 and items[0].meta["process"] == "<think>reasoning</think>"
    with pytest.raises(RmsdError, match="dataset.config 'cot' names no data file .*: use one of Video-R1-260k, "
                                        "Video-R1-COT-165k$"):
        get_benchmark("videor1").load_items(file.parent, config="cot")


def test_a_repeated_video_r1_id_names_both_rows(tmp_path):
    file, rows = videor1_corpus(tmp_path)
    file.write_text(json.dumps(rows + [rows[1]], indent=2))
    starts = [n for n, text in enumerate(file.read_text().splitlines(), 1) if text == "  {"]
    with pytest.raises(RmsdError) as err:
        get_benchmark("videor1").load_items(file)
    assert str(err.value).startswith(f"{file}:{starts[-1]}: field problem_id: duplicate problem_id: "
                                     f"LLaVA-Video-178K/2 appears twice (first at {file}:{starts[1]})")
    bench = get_benchmark("videor1")
    assert len(bench.load_items(file, on_bad_row="skip")) == len(rows) and bench.skipped == {"duplicate problem_id": 1}


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
    stem = "0_30_s_academic_mc_v0_1_qa_processed"  # ids: data file, row, turn (a video's id repeats)
    assert [it.item_id for it in items] == [f"{stem}/0/0", f"{stem}/1/0", f"{stem}/1/1", f"{stem}/1/2"]
    assert [it.meta["id"] for it in items] == ["v1", "v2", "v2", "v2"]
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
    assert [it.meta["id"] for it in bench.load_items(root, split="multi_choice", video_root=video_root)] == ["v1"]
    assert [it.meta["id"] for it in bench.load_items(root, split="open_ended", video_root=video_root)] == ["v2"]
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
    assert [it.meta["id"] for it in bench.load_items(root, on_bad_row="skip")] == ["v1"]
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


def test_a_repeated_item_id_in_an_items_file_names_both_lines_or_is_skipped(tmp_path):
    write_mp4(tmp_path / "media" / "a.mp4", seed=3)
    item = Item("a", "mine", "open", "Describe.", "Describe.", answer="x", video="media/a.mp4")
    write_items([item, item], tmp_path / "train.jsonl")
    with pytest.raises(RmsdError) as err:
        get_benchmark("items").load_items(tmp_path)
    file = tmp_path / "train.jsonl"
    assert str(err.value).startswith(f"{file}:2: field item_id: duplicate item_id: a appears twice (first at {file}:1)")
    bench = get_benchmark("items")
    assert len(bench.load_items(tmp_path, on_bad_row="skip")) == 1 and bench.skipped == {"duplicate item_id": 1}
