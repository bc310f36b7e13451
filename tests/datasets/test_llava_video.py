"""LLaVA-Video-178K read from its real layout: subset folders (`0_30_s_academic_v0_1/`, `0_30_s_youtube_v0_1/`) of
`*_mc_v0_1_qa_processed.json`, `*_oe_v0_1_qa_processed.json` and `*_v0_1_cap_processed.json` files (the names the
hub's lmms-lab/LLaVA-Video-178K holds, with a parquet copy of the captions beside them), the videos extracted
under each subset folder, one video asked about in every file. Ids never repeat and never change between reads;
options are read wherever the corpus writes them; the README's recipe form works."""

from __future__ import annotations

import pytest
from corpora import ACADEMIC, CHARADES, YOUTUBE, YTB, llava_dataset, write_mp4

from rmsd.datasets import get_benchmark
from rmsd.datasets.llava_video import answer_letter, parse_question
from rmsd.errors import RmsdError


def test_every_row_and_turn_has_its_own_stable_id(tmp_path):
    root = llava_dataset(tmp_path / "LLaVA-Video-178K")
    bench = get_benchmark("llava_video")
    items = bench.load_items(root)  # split train: every kind of every subset
    ids = [it.item_id for it in items]
    assert len(ids) == len(set(ids)) == 7
    assert "0_30_s_academic_oe_v0_1_qa_processed/0/1" in ids  # file, row, turn
    assert sum(it.meta["id"] == "AB12C" for it in items) == 5  # one video, five questions
    assert [it.item_id for it in get_benchmark("llava_video").load_items(root)] == ids  # the same on every read
    # reading one subset or one kind gives the same ids to the same questions (a store resumes)
    subset = {it.item_id for it in get_benchmark("llava_video").load_items(root / ACADEMIC)}
    mc = {it.item_id for it in get_benchmark("llava_video").load_items(root, split="multi_choice")}
    assert subset <= set(ids) and mc <= set(ids) and len(mc) == 3
    assert bench.skipped == {}


def test_options_are_read_wherever_the_corpus_writes_them(tmp_path):
    root = llava_dataset(tmp_path / "LLaVA-Video-178K")
    items = {it.question: it for it in get_benchmark("llava_video").load_items(root, split="multi_choice")}
    own_lines = items["What does the person hold?"]
    assert own_lines.options == ["a cup", "a book", "a phone", "a bag"] and own_lines.answer == "A"
    inline = items["What does the person do next?"]
    assert inline.task_type == "mcq" and inline.options == ["run", "walk", "sit", "jump"] and inline.answer == "B"
    header = items["Which object appears first?"]
    assert header.options == ["a dog", "a cat", "a car"] and header.answer == "C"


def test_an_open_file_keeps_prose_that_reads_like_options_open(tmp_path):
    # the same lettered prose in an open-ended, a caption and a multiple-choice file: only the last is a choice
    import json

    from corpora import llava_row

    root = tmp_path / "LLaVA-Video-178K"
    write_mp4(root / ACADEMIC / CHARADES, seed=11)
    asked = "<image>\nThe narrator lists two steps, A. cut the bread B. toast it. Which comes first?"
    for name, answer in (("0_30_s_academic_oe_v0_1_qa_processed.json", "Cutting the bread comes first."),
                         ("0_30_s_academic_v0_1_cap_processed.json", "A person cuts bread, then toasts it."),
                         ("0_30_s_academic_mc_v0_1_qa_processed.json", "A")):
        (root / ACADEMIC / name).write_text(json.dumps([llava_row("AB12C", CHARADES, [(asked, answer)], ACADEMIC)]))
    bench = get_benchmark("llava_video")
    by_kind = {it.item_id.split("/")[0]: it for it in bench.load_items(root)}
    for stem in ("0_30_s_academic_oe_v0_1_qa_processed", "0_30_s_academic_v0_1_cap_processed"):
        item = by_kind[stem]
        assert item.task_type == "open" and item.options == [] and item.answer != "A"
        assert item.question == "The narrator lists two steps, A. cut the bread B. toast it. Which comes first?"
    mc = by_kind["0_30_s_academic_mc_v0_1_qa_processed"]
    assert mc.task_type == "mcq" and mc.options == ["cut the bread", "toast it. Which comes first?"]
    assert bench.skipped == {}


@pytest.mark.parametrize("text, question, options", [
    ("Q?\nA. run\nB. walk", "Q?", ["run", "walk"]),
    ("Q? A. run B. walk C. sit", "Q?", ["run", "walk", "sit"]),
    ("Q?\n(A) run\n(B) walk\nAnswer with the letter.", "Q?", ["run", "walk"]),
    ("Q?\nOptions:\nA) run\nB) walk", "Q?", ["run", "walk"]),
    ("Q? Options: A. run B. walk", "Q?", ["run", "walk"]),
    ("Q?\nChoices:\n(A) the red one\n(B) the blue one", "Q?", ["the red one", "the blue one"]),
    ("Is plan A. the best?", "Is plan A. the best?", []),  # one marker is no option list
])
def test_parse_question_forms(text, question, options):
    assert parse_question(text) == (question, options, False)


@pytest.mark.parametrize("answer, options, letter", [
    ("A cup", ["the cup", "a cup"], "B"),  # option text first: not the letter A
    ("a cup.", ["the cup", "a cup"], "B"),
    ("B", ["x", "y"], "B"),
    ("B.", ["x", "y"], "B"),
    ("(B) y", ["x", "y"], "B"),
    ("B. the y one", ["x", "y"], "B"),
    ("A dog", ["cat", "cow"], None),  # neither an option's text nor a letter
    ("C", ["x", "y"], None),
])
def test_the_answer_is_the_option_it_names(answer, options, letter):
    assert answer_letter(answer, options) == letter


def test_path_the_whole_dataset_and_video_root_as_the_readme_writes_it(tmp_path):
    root = llava_dataset(tmp_path / "LLaVA-Video-178K")
    # README: path the whole dataset, video_root its root: each file's videos under its own subset folder
    assert len(get_benchmark("llava_video").load_items(root, split="multi_choice", video_root=root)) == 3
    # videos extracted elsewhere, one folder per subset
    elsewhere = tmp_path / "videos"
    write_mp4(elsewhere / ACADEMIC / CHARADES, seed=11)
    write_mp4(elsewhere / YOUTUBE / YTB, seed=12)
    items = get_benchmark("llava_video").load_items(root, video_root=elsewhere)
    assert all(it.video.startswith(str(elsewhere.resolve())) for it in items)
    # a video_root holding one subset's videos: the other subsets' are still found beside their files
    assert len(get_benchmark("llava_video").load_items(root, video_root=root / ACADEMIC)) == 7


def test_a_repeated_id_is_one_line_with_both_rows_or_is_skipped(tmp_path):
    root = llava_dataset(tmp_path / "LLaVA-Video-178K")
    twin = root / "copy" / ACADEMIC / "0_30_s_academic_oe_v0_1_qa_processed.json"  # a second file of that name
    twin.parent.mkdir(parents=True)
    twin.write_text((root / ACADEMIC / twin.name).read_text())
    write_mp4(twin.parent / CHARADES, seed=11)
    with pytest.raises(RmsdError) as err:
        get_benchmark("llava_video").load_items(root, split="open_ended")
    first = root / ACADEMIC / twin.name  # files are read in sorted order: the subset folder before copy/
    assert str(err.value).startswith(
        f"{twin}:2: field id: duplicate id: 0_30_s_academic_oe_v0_1_qa_processed/0/0 appears twice (first at "
        f"{first}:2)")
    bench = get_benchmark("llava_video")
    items = bench.load_items(root, split="open_ended", on_bad_row="skip")
    assert len(items) == 3 and bench.skipped == {"duplicate id": 2}
