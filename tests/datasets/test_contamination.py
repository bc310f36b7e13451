"""The contamination check and its guard: a training item that shows an evaluation item's media (the same
bytes under another name) or asks its question about same-named media is found; the guard refuses it with one
line unless the recipe allows it, and refuses training on an evaluated split whatever the recipe says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from corpora import CHOICES, VIDEO_DIR, videor1_corpus, videor1_row, write_mp4
from schemas import videomme_row, write_parquet

from rmsd.config import load_recipe
from rmsd.datasets.contamination import EvalIndex, find_overlaps, normalise_question
from rmsd.errors import RmsdError
from rmsd.eval.sets import check_training_items, overlap_note
from rmsd.items import Item
from rmsd.validation import validate_file


def _item(item_id: str, question: str, video: Path) -> Item:
    return Item(item_id, "t", "mcq", question, question, ["a", "b"], "A", video=str(video))


def test_same_bytes_under_another_name_and_same_question_on_a_same_named_video_overlap(tmp_path):
    held = write_mp4(tmp_path / "eval" / "vid1.mp4", seed=1)
    other = write_mp4(tmp_path / "eval" / "vid2.mp4", seed=2)
    copy = tmp_path / "train" / "renamed.mp4"
    copy.parent.mkdir()
    shutil.copy(held, copy)
    reencoded = write_mp4(tmp_path / "train" / "vid2.mp4", seed=99)  # same name, other bytes
    fresh = write_mp4(tmp_path / "train" / "fresh.mp4", seed=3)
    index = EvalIndex({"videomme": [_item("e1", "What happens?", held), _item("e2", "Who wins the race?", other)]})
    train = [_item("t1", "Another question", copy), _item("t2", "who wins the RACE", reencoded),
             _item("t3", "Who wins the race?", fresh), _item("t4", "Unrelated?", reencoded)]
    found = find_overlaps(train, index)
    assert [(o.train_id, o.eval_id, o.reason) for o in found] == [
        ("t1", "e1", "same media content"), ("t2", "e2", "same question on media of the same name")]
    assert "training item t1 and videomme item e1: same media content" == found[0].describe()


def test_a_same_sized_file_with_other_bytes_is_not_an_overlap(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 300_000)
    # same size, one byte apart where the sampled fingerprint does not look: only the full hash tells them apart
    b.write_bytes(b"x" * 90_000 + b"y" + b"x" * 209_999)
    index = EvalIndex({"e": [_item("e1", "q1", a)]})
    assert find_overlaps([_item("t1", "q2", b)], index) == []
    assert len(find_overlaps([_item("t1", "q2", a)], index)) == 1  # the very file


def test_questions_normalise_case_spacing_and_punctuation():
    assert normalise_question("What  colour is the CUP?") == normalise_question("what colour is the cup")


# ----------------------------------------------------------------------------- the guard on recipes
def _videomme(root: Path, videos: list[Path]) -> Path:
    """A Video-MME folder whose n-th question is about videos[n] (copied in as vid{n}.mp4)."""
    for n, video in enumerate(videos):
        (root / "data").mkdir(parents=True, exist_ok=True)
        shutil.copy(video, root / "data" / f"vid{n}.mp4")
    write_parquet(root / "test.parquet", [videomme_row(n, "short", "Counting Problem", "A") for n in range(len(videos))])
    return root


def _recipe(tmp_path: Path, corpus: Path, eval_sets: list[dict], **dataset) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "name": "guarded", "dataset": {"benchmark": "videor1", "path": str(corpus), **dataset},
        "student": {"build": "tiny"}, "eval": {"benchmarks": eval_sets}}))
    return path


def _items(recipe):
    from rmsd.pipeline import training_items

    return training_items(recipe)


def test_the_guard_refuses_a_copied_evaluation_video_in_one_line_unless_allowed(tmp_path):
    corpus, rows = videor1_corpus(tmp_path)
    clean = _videomme(tmp_path / "videomme", [write_mp4(tmp_path / "other.mp4", seed=42)])
    recipe = load_recipe(_recipe(tmp_path, corpus, [{"benchmark": "videomme", "path": str(clean)}]))
    items, report = _items(recipe)
    assert len(items) == len(rows) and report["contamination"]["overlapping_items"] == 0
    assert overlap_note(report["contamination"]) == "no training item overlaps the evaluation sets (videomme)"

    leaked = _videomme(tmp_path / "leaked", [corpus.parent / VIDEO_DIR / "ytb_clip0.mp4"])  # clip0 is vid0.mp4 there
    recipe = load_recipe(_recipe(tmp_path, corpus, [{"benchmark": "videomme", "path": str(leaked)}]))
    with pytest.raises(RmsdError) as err:
        _items(recipe)
    message = str(err.value)
    assert "\n" not in message and message.startswith("2 of 7 training items overlap the evaluation sets (videomme)")
    assert "training item LLaVA-Video-178K/1 and videomme item 000-1: same media content" in message
    assert "dataset.allow_eval_overlap: true" in message

    allowed = load_recipe(_recipe(tmp_path, corpus, [{"benchmark": "videomme", "path": str(leaked)}],
                                  allow_eval_overlap=True))
    items, report = _items(allowed)
    assert len(items) == 7 and report["contamination"]["overlapping_items"] == 2
    assert overlap_note(report["contamination"]).startswith("WARNING: 2 training items overlap")


def test_an_evaluation_limit_does_not_hide_an_overlap_past_it(tmp_path):
    corpus, _ = videor1_corpus(tmp_path)
    leaked = _videomme(tmp_path / "leaked", [write_mp4(tmp_path / "other.mp4", seed=42),
                                             corpus.parent / VIDEO_DIR / "ytb_clip0.mp4"])  # the 2nd question's video
    recipe = load_recipe(_recipe(tmp_path, corpus, [{"benchmark": "videomme", "path": str(leaked), "limit": 1}]))
    with pytest.raises(RmsdError, match="same media content"):
        _items(recipe)


def test_the_guard_finds_an_evaluation_question_asked_about_a_same_named_video(tmp_path):
    corpus, rows = videor1_corpus(tmp_path)
    evaluated = _videomme(tmp_path / "videomme", [write_mp4(tmp_path / "other.mp4", seed=42)])
    write_mp4(corpus.parent / "videos" / "vid0.mp4", seed=5)  # a re-encode: same name, other bytes
    rows.append(videor1_row(8, "multiple choice", "./videos/vid0.mp4", "A", options=CHOICES,
                            problem="What happens in clip 0?"))  # Video-MME row 0's question
    corpus.write_text(json.dumps(rows))
    recipe = load_recipe(_recipe(tmp_path, corpus, [{"benchmark": "videomme", "path": str(evaluated)}]))
    with pytest.raises(RmsdError, match="same question on media of the same name"):
        _items(recipe)


def test_training_on_the_split_a_recipe_evaluates_is_refused_outright(tmp_path):
    corpus, _ = videor1_corpus(tmp_path)
    evaluated = _videomme(tmp_path / "videomme", [write_mp4(tmp_path / "other.mp4", seed=42)])
    path = tmp_path / "same.yaml"
    path.write_text(yaml.safe_dump({"name": "same", "dataset": {"benchmark": "videomme", "path": str(evaluated),
                                                                "split": "test", "allow_eval_overlap": True},
                                    "student": {"build": "tiny"},
                                    "eval": {"benchmarks": [{"benchmark": "videomme", "path": str(evaluated)}]}}))
    with pytest.raises(RmsdError, match=r"trains on videomme split 'test' of .* which eval.benchmarks\[0\] also "
                                        r"scores.*allow_eval_overlap does not cover this"):
        _items(load_recipe(path))
    assert any("eval.benchmarks[0] also scores" in p for p in validate_file(path))
    # without eval.benchmarks the dataset's own eval_split is the evaluated one
    path.write_text(yaml.safe_dump({"name": "same", "dataset": {"benchmark": "videomme", "path": str(evaluated),
                                                                "split": "test", "eval_split": "test"},
                                    "student": {"build": "tiny"}}))
    assert any("dataset.eval_split also scores" in p for p in validate_file(path))


def test_an_unknown_benchmark_name_fails_validation_with_the_closest_name(tmp_path):
    corpus, _ = videor1_corpus(tmp_path)
    path = _recipe(tmp_path, corpus, [{"benchmark": "video_mme", "path": "x"}])
    problems = validate_file(path)
    assert any("eval.benchmarks.0.benchmark" in p and "did you mean 'videomme'" in p for p in problems), problems
    path.write_text(path.read_text().replace("benchmark: videor1", "benchmark: videor"))
    assert any("dataset.benchmark" in p and "did you mean 'videor1'" in p for p in validate_file(path))


def test_check_training_items_names_an_evaluation_set_it_cannot_load(tmp_path):
    corpus, _ = videor1_corpus(tmp_path)
    recipe = load_recipe(_recipe(tmp_path, corpus, [{"benchmark": "videomme", "path": str(tmp_path / "absent")}]))
    with pytest.raises(RmsdError, match="contamination check: cannot load evaluation set videomme"):
        check_training_items([], recipe.dataset, recipe.eval)
