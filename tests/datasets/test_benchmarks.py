"""Benchmark loaders on small files in the public schemas (Video-MME parquet, Video-MMMU per
track, MathVerse JSON/parquet with images written by PIL): items, exact prompts, breakdowns,
extraction modes and the aggregates on hand-computed examples; the MathVerse judge with a
scripted async `ask` and its cache; the registry."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from schemas import mathverse_row, videomme_row, write_parquet

from rmsd.datasets import BENCHMARKS, get_benchmark
from rmsd.datasets.mathverse import MathVerse, MathVerseJudge
from rmsd.errors import RmsdError
from rmsd.eval.evaluate import score_predictions


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42")  # loaders check the file exists; nothing decodes it


# ----------------------------------------------------------------------------- Video-MME
@pytest.fixture
def videomme_dir(tmp_path: Path) -> Path:
    rows = [videomme_row(1, "short", "Temporal Reasoning", "A"), videomme_row(2, "short", "Counting Problem", "B"),
            videomme_row(3, "medium", "Temporal Reasoning", "C"), videomme_row(4, "long", "OCR Problems", "D")]
    write_parquet(tmp_path / "videomme" / "test-00000-of-00001.parquet", rows)
    for n in (1, 2, 3):
        touch(tmp_path / "data" / f"vid{n}.mp4")
    touch(tmp_path / "data" / "vid4.mkv")  # the harness also accepts .MP4 and .mkv
    return tmp_path


def test_videomme_items_prompt_and_breakdowns(videomme_dir):
    bench = get_benchmark("videomme")
    items = bench.load_items(videomme_dir)
    assert [it.item_id for it in items] == ["001-1", "002-1", "003-1", "004-1"]
    first = items[0]
    assert first.prompt == (
        "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\n"
        "What happens in clip 1?\n"
        "A. A rocket launches.\nB. A star explodes.\nC. A comet passes.\nD. Nothing.\n"
        "\nAnswer with the option's letter from the given choices directly.")
    assert first.options == ["A rocket launches.", "A star explodes.", "A comet passes.", "Nothing."]
    assert first.task_type == "mcq" and first.answer == "A" and first.letters == list("ABCD")
    assert first.video == str((videomme_dir / "data" / "vid1.mp4").resolve()) and items[3].video.endswith("vid4.mkv")
    assert first.meta["task_type"] == "Temporal Reasoning" and first.meta["url"].endswith("vid1")
    assert bench.breakdowns(first) == {"duration": "short", "domain": "Knowledge", "sub_category": "Astronomy",
                                       "task_type": "Temporal Reasoning"}
    assert len(bench.load_items(videomme_dir / "videomme" / "test-00000-of-00001.parquet", limit=2)) == 2


def test_videomme_modes_and_aggregate(videomme_dir):
    bench = get_benchmark("videomme")
    items = bench.load_items(videomme_dir)
    texts = ["According to the video, A", "Based on the frames, the answer is B",
             "<think>It could be A.</think>The answer is (C).", "A dog runs across the field."]
    assert [bench.extract(t, it, "harness") for t, it in zip(texts, items, strict=True)] == ["A", "B", "C", "A"]
    assert [bench.extract(t, it, "legacy") for t, it in zip(texts, items, strict=True)] == ["A", "B", "A", "A"]
    assert [bench.extract(t, it, "strict") for t, it in zip(texts, items, strict=True)] == ["A", "B", "C", None]
    rows = score_predictions(items, texts, bench, "harness")
    assert [r["score"] for r in rows] == [1.0, 1.0, 1.0, 0.0]
    assert rows[0]["task_type"] == "Temporal Reasoning"  # Video-MME's own field, as the harness reports it
    result = bench.aggregate(rows)
    assert result["overall"] == 0.75 and result["n"] == 4
    assert result["breakdowns"]["duration"] == {"short": 1.0, "medium": 1.0, "long": 0.0}
    assert result["breakdowns"]["task_type"] == {"Counting Problem": 1.0, "OCR Problems": 0.0,
                                                 "Temporal Reasoning": 1.0}
    legacy = bench.aggregate(score_predictions(items, texts, bench, "legacy"))
    assert legacy["overall"] == 0.5 and legacy["counts"]["duration"] == {"short": 2, "medium": 1, "long": 1}
    with pytest.raises(RmsdError, match="legacy"):
        get_benchmark("videommmu").check_mode("legacy")


def test_videomme_user_errors(videomme_dir, tmp_path):
    bench = get_benchmark("videomme")
    with pytest.raises(RmsdError, match="split 'val'.*test-00000-of-00001.parquet"):
        bench.load_items(videomme_dir, split="val")
    with pytest.raises(RmsdError, match="1 media file.*vid9.mp4.*video_root"):
        write_parquet(tmp_path / "other" / "test.parquet", [videomme_row(9, "short", "OCR Problems", "A")])
        bench.load_items(tmp_path / "other")
    write_parquet(tmp_path / "bad" / "test.parquet", [{"question": "q", "answer": "A"}])
    with pytest.raises(RmsdError, match="row 1 of .* lacks the field.*videoID"):
        bench.load_items(tmp_path / "bad")
    later = tmp_path / "later" / "test.jsonl"  # a later row without a field: named by its row, not a KeyError
    later.parent.mkdir()
    rows = [videomme_row(1, "short", "OCR Problems", "A"), {**videomme_row(2, "short", "OCR Problems", "B")}]
    del rows[1]["question_id"]
    later.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(RmsdError, match="row 2 of .* lacks the field.s. question_id"):
        bench.load_items(later.parent)
    with pytest.raises(RmsdError, match="not found"):
        bench.load_items(tmp_path / "nowhere")


def test_hub_ids_go_through_datasets(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return [videomme_row(1, "short", "OCR Problems", "A")]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    touch(tmp_path / "vid1.mp4")
    items = get_benchmark("videomme").load_items("lmms-lab/Video-MME", video_root=tmp_path)
    assert calls == [("lmms-lab/Video-MME", None, "test")] and items[0].video.endswith("vid1.mp4")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RmsdError, match="could not load hub dataset 'lmms-lab/Video-MME'.*ConnectionError"):
        get_benchmark("videomme").load_items("lmms-lab/Video-MME", video_root=tmp_path)


# ----------------------------------------------------------------------------- Video-MMMU
@pytest.fixture
def videommmu_dir(tmp_path: Path) -> Path:
    options = ["red", "green", "blue", "black"]
    perception = [
        {"id": "test_Art_Theory_1", "question": "Which colour is used first?", "options": options, "answer": "A",
         "question_type": "multiple-choice"},
        {"id": "test_Art_Theory_2", "question": "Which colour dominates?", "options": options, "answer": "C",
         "question_type": "multiple-choice"},
        {"id": "test_Math_3", "question": "Which colour is the axis?", "options": options, "answer": "D",
         "question_type": "multiple-choice"},
    ]
    write_parquet(tmp_path / "Perception" / "test-00000-of-00001.parquet", perception)
    adaptation = [
        {"id": "test_Art_Theory_1", "question": "Which mix gives purple?",
         "options": ["A. red and blue", "B. red and green"], "answer": "A", "question_type": "multiple-choice"},
        {"id": "test_Math_3", "question": "What is the slope of the line?", "options": [], "answer": "4.5",
         "question_type": "open"},
    ]
    (tmp_path / "Adaptation").mkdir()
    (tmp_path / "Adaptation" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in adaptation))
    touch(tmp_path / "Art" / "test_Art_Theory_1.mp4")  # the harness's discipline folders
    touch(tmp_path / "Art" / "test_Art_Theory_2.mp4")
    touch(tmp_path / "Science" / "test_Math_3.mp4")
    return tmp_path


def test_videommmu_items_and_prompts_per_track(videommmu_dir):
    bench = get_benchmark("videommmu")
    items = {it.item_id: it for it in bench.load_items(videommmu_dir)}  # no config: every track present
    assert sorted(items) == ["Adaptation/test_Art_Theory_1", "Adaptation/test_Math_3", "Perception/test_Art_Theory_1",
                             "Perception/test_Art_Theory_2", "Perception/test_Math_3"]
    assert items["Perception/test_Art_Theory_1"].prompt == (
        "Which colour is used first?\nA. red\nB. green\nC. blue\nD. black"
        "\nPlease ignore the Quiz question in last frame of the video.")
    assert items["Adaptation/test_Art_Theory_1"].prompt == (
        "You should watch and learn the video content. Then apply what you learned to answer the following "
        "multi-choice question. The image for this question is at the end of the video.\n"
        "Which mix gives purple?\nA. red and blue\nB. red and green")  # options already lettered: kept as they are
    assert items["Adaptation/test_Math_3"].prompt == (
        "You should watch and learn the video content. Then apply what you learned to answer the following "
        "open-ended question. The image for this question is at the end of the video.\nWhat is the slope of the line?")
    assert items["Adaptation/test_Art_Theory_1"].options == ["red and blue", "red and green"]
    assert items["Adaptation/test_Math_3"].task_type == "numeric" and items["Adaptation/test_Math_3"].options == []
    assert items["Perception/test_Math_3"].video == str((videommmu_dir / "Science" / "test_Math_3.mp4").resolve())
    assert bench.breakdowns(items["Perception/test_Math_3"]) == {
        "config": "Perception", "discipline": "Science", "subject": "Math", "question_type": "multiple-choice"}
    only = bench.load_items(videommmu_dir, config="adaptation")
    assert {it.meta["config"] for it in only} == {"Adaptation"}
    assert len(bench.load_items(videommmu_dir / "Perception" / "test-00000-of-00001.parquet")) == 3  # track from folder
    with pytest.raises(RmsdError, match="unknown config 'Quiz'"):
        bench.load_items(videommmu_dir, config="Quiz")
    with pytest.raises(RmsdError, match="split 'test'.*config 'Comprehension'"):
        bench.load_items(videommmu_dir, config="Comprehension")
    with pytest.raises(RmsdError, match="no track.*split 'val'.*first error"):
        bench.load_items(videommmu_dir, split="val")


def test_videommmu_scoring_and_instance_weighted_aggregate(videommmu_dir):
    bench = get_benchmark("videommmu")
    items = bench.load_items(videommmu_dir)
    by_id = {it.item_id: it for it in items}
    texts = {
        "Perception/test_Art_Theory_1": "The answer is (A).",
        "Perception/test_Art_Theory_2": "I believe the painting is dominated by blue tones overall",  # option text
        "Perception/test_Math_3": "(B)",
        "Adaptation/test_Art_Theory_1": "A",
        "Adaptation/test_Math_3": "Rise over run gives 9/2.\nSo the slope is 4.50",
    }
    ordered = [texts[it.item_id] for it in items]
    assert bench.extract(texts["Adaptation/test_Math_3"], by_id["Adaptation/test_Math_3"]) == "4.50"
    rows = score_predictions(items, ordered, bench, "harness")
    assert {r["item_id"]: r["score"] for r in rows} == {
        "Perception/test_Art_Theory_1": 1.0, "Perception/test_Art_Theory_2": 1.0, "Perception/test_Math_3": 0.0,
        "Adaptation/test_Art_Theory_1": 1.0, "Adaptation/test_Math_3": 1.0}
    result = bench.aggregate(rows)
    # instance-weighted: 4 of 5 right, not the mean of subject means ((3/3 + 1/2) / 2 = 0.75)
    assert result["overall"] == pytest.approx(0.8)
    assert result["breakdowns"]["subject"] == {"Art_Theory": 1.0, "Math": 0.5}
    assert result["breakdowns"]["config"] == {"Perception": pytest.approx(2 / 3), "Adaptation": 1.0}
    assert result["breakdowns"]["discipline"] == {"Art and Design": 1.0, "Science": 0.5}


def test_videommmu_random_fallback_is_per_item_and_strict_refuses(videommmu_dir):
    bench = get_benchmark("videommmu")
    items = bench.load_items(videommmu_dir, config="Perception")
    guesses = [bench.extract("I cannot tell.", it, "harness") for it in items]
    assert all(g in "ABCD" for g in guesses)
    assert guesses == [bench.extract("I cannot tell.", it, "harness") for it in items]  # same on a rerun
    assert all(bench.extract("I cannot tell.", it, "strict") is None for it in items)
    assert bench.extract("<think>hmm</think><answer>(C)</answer>", items[1], "strict") == "C"
    slope = next(it for it in bench.load_items(videommmu_dir, config="Adaptation") if it.task_type == "numeric")
    assert bench.extract("<think>9/2</think><answer>4.50 units</answer>", slope, "strict") == "4.5"
    assert bench.score("4.5", slope) == 1.0 and bench.extract("<answer>4 or 5</answer>", slope, "strict") is None


# ----------------------------------------------------------------------------- MathVerse
MCQ_Q = "As shown in the figure, find BC.\nChoices:\nA:2\nB:2√{3}\nC:√{3}\nD:2√{2}"


@pytest.fixture
def mathverse_dir(tmp_path: Path) -> Path:
    from PIL import Image

    (tmp_path / "images_version_1-4").mkdir()
    Image.new("RGB", (16, 12), (255, 0, 0)).save(tmp_path / "images_version_1-4" / "image_1.png")
    rows = [mathverse_row(1, "Vision Only", "multi-choice", "C", "images_version_1-4/image_1.png", MCQ_Q),
            mathverse_row(2, "Text Dominant", "free-form", "22.3", "images_version_1-4/image_1.png",
                          "Find the distance d to one decimal place."),
            mathverse_row(3, "Text Only", "free-form", "(-2,1]", "", "Write the set in interval notation.")]
    (tmp_path / "testmini.json").write_text(json.dumps(rows))
    return tmp_path


def test_mathverse_items_prompt_and_images(mathverse_dir, tmp_path):
    bench = get_benchmark("mathverse")
    items = bench.load_items(mathverse_dir)
    assert [it.task_type for it in items] == ["mcq", "numeric", "open"]
    assert items[0].prompt == f"Please directly answer the question. Question: {MCQ_Q}"  # query_wo, stripped
    assert items[0].options == ["2", "2√{3}", "√{3}", "2√{2}"] and items[0].answer == "C"
    assert items[0].image == str((mathverse_dir / "images_version_1-4" / "image_1.png").resolve())
    assert items[2].image is None and items[0].video is None
    assert bench.breakdowns(items[1]) == {"problem_version": "Text Dominant", "question_type": "free-form",
                                          "subfield": "Length"}
    json.dumps([it.to_dict() for it in items])  # meta stays JSON-serialisable
    # the hub's parquet carries the image bytes: written once beside the data
    png = (mathverse_dir / "images_version_1-4" / "image_1.png").read_bytes()
    row = mathverse_row(7, "Vision Only", "multi-choice", "A", {"bytes": png, "path": "image_7.png"}, MCQ_Q)
    write_parquet(tmp_path / "hub" / "testmini" / "testmini-00000-of-00001.parquet", [row])
    (parquet_item,) = bench.load_items(tmp_path / "hub")
    assert Path(parquet_item.image).read_bytes() == png and ".rmsd_images" in parquet_item.image
    (mathverse_dir / "images_version_1-4" / "image_1.png").unlink()
    with pytest.raises(RmsdError, match="2 media file.*image_1.png"):
        bench.load_items(mathverse_dir)


def test_mathverse_rule_fallback(mathverse_dir):
    bench = get_benchmark("mathverse")
    items = bench.load_items(mathverse_dir)
    texts = ["BC = √3, so the answer is C.", "<think>d = 17.6/cos(38°)</think><answer>22.30 meters</answer>",
             "The set is \\boxed{(-2, 1]}"]
    assert [bench.extract(t, it, "strict") for t, it in zip(texts, items, strict=True)] == ["C", "22.3", "(-2, 1]"]
    assert bench.extract("so d is roughly\n22.3", items[1], "harness") == "22.3"  # harness: the last line
    assert bench.extract("so d is roughly\n22.3", items[1], "strict") is None  # strict: no marker, no tag
    rows = score_predictions(items, texts, bench, "harness")
    assert [r["score"] for r in rows] == [1.0, 1.0, 1.0]
    assert bench.score("22.4", items[1]) == 0.0 and bench.score("22.31", items[1]) == 1.0
    assert bench.score("\\frac{223}{10}", items[1]) == 1.0 and bench.score("x = 22.3 m", items[1]) == 1.0
    result = bench.aggregate(rows + [{**rows[0], "score": 0.0}])
    assert result["judge"] == "rule-fallback" and result["overall"] == 0.75
    assert result["breakdowns"]["problem_version"] == {"Text Dominant": 1.0, "Vision Only": 0.5, "Text Only": 1.0}


class ScriptedJudge:
    """An async `ask` that plays the judge: extraction = the response's last word; match = equality."""

    def __init__(self, bad_replies: int = 0):
        self.prompts: list[str] = []
        self.bad_replies = bad_replies

    async def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        await asyncio.sleep(0)
        if prompt.endswith("Extracted Answer: "):
            response = prompt.rsplit("Model response: '", 1)[1].rsplit("'\nExtracted Answer: ", 1)[0]
            return " " + response.split()[-1].strip(".") + "\n"
        if self.bad_replies:
            self.bad_replies -= 1
            return "The answers are consistent."
        gt = prompt.rsplit("[Standard Answer]: ", 1)[1].split("\n")[0]
        extraction = prompt.rsplit("[Model_answer] : ", 1)[1].split("\n")[0]
        return f"Judgement: {int(gt == extraction)}"


def test_mathverse_judge_two_steps_cache_and_prefetch(mathverse_dir, tmp_path):
    items = get_benchmark("mathverse").load_items(mathverse_dir)
    texts = ["Looking at the choices, the answer is C.", "So d is about 22.4", "The set is (-2,1]"]
    ask = ScriptedJudge()
    bench = MathVerse(judge=MathVerseJudge(ask, cache_path=tmp_path / "judge.jsonl", name="scripted"))
    bench.prefetch(items, texts)
    assert len(ask.prompts) == 6  # one extraction + one match per response, run concurrently
    assert ask.prompts[0].startswith("I am providing you a response from a model to a math problem")
    match_prompt = next(p for p in ask.prompts if p.startswith("Below are two answers"))
    assert f"[Question]: {MCQ_Q}\n[Standard Answer]: C\n[Model_answer] : C\nJudgement:" in match_prompt
    rows = score_predictions(items, texts, bench, "harness")
    assert len(ask.prompts) == 6  # extract + score read the cache
    assert [(r["prediction"], r["score"]) for r in rows] == [("C", 1.0), ("22.4", 0.0), ("(-2,1]", 1.0)]
    assert bench.aggregate(rows)["judge"] == "scripted"
    records = [json.loads(line) for line in (tmp_path / "judge.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(len(r["key"]) == 64 for r in records)
    fresh = ScriptedJudge()  # a new run with the same cache asks nothing
    again = MathVerse(judge=MathVerseJudge(fresh, cache_path=tmp_path / "judge.jsonl", name="scripted"))
    assert [r["score"] for r in score_predictions(items, texts, again, "harness")] == [1.0, 0.0, 1.0]
    assert fresh.prompts == []
    other = ScriptedJudge()  # another judge model ignores those verdicts
    MathVerse(judge=MathVerseJudge(other, cache_path=tmp_path / "judge.jsonl", name="other")).prefetch(items, texts)
    assert len(other.prompts) == 6


def test_mathverse_judge_retries_unparsed_replies_and_quick_match(mathverse_dir):
    item = get_benchmark("mathverse").load_items(mathverse_dir)[1]
    ask = ScriptedJudge(bad_replies=5)
    judge = MathVerseJudge(ask, max_retries=3)
    verdict = judge.run(judge.judge(item.meta["question_for_eval"], "d is 22.3", "22.3"))
    assert verdict.extraction == "22.3" and verdict.correct is False and judge.unparsed == 1
    assert len(ask.prompts) == 4  # one extraction, three match attempts
    quick = MathVerseJudge(ScriptedJudge(), quick_match=True)
    assert quick.run(quick.judge("q", "d is 22.3", "22.3")).correct is True

    async def inside_a_loop():
        quick.run(quick.judge("q", "x", "y"))

    with pytest.raises(RmsdError, match="running event loop"):
        asyncio.run(inside_a_loop())


# ----------------------------------------------------------------------------- registry
def test_registry():
    assert BENCHMARKS == ("synthvid", "videomme", "videommmu", "mathverse", "videor1", "llava_video", "items")
    assert [get_benchmark(n).name for n in BENCHMARKS] == list(BENCHMARKS)
    assert get_benchmark("mathverse") is not get_benchmark("mathverse")  # a judge set on one does not leak
    with pytest.raises(RmsdError, match="unknown benchmark 'mme'.*known: synthvid, videomme, videommmu, mathverse"):
        get_benchmark("mme")
    with pytest.raises(RmsdError, match="unknown benchmark 'video_r1': did you mean 'videor1'"):
        get_benchmark("video_r1")


def test_no_name_of_a_benchmark_is_checked_outside_its_module_and_the_table():
    """What the stages need to know about a benchmark is an attribute of its class: no `== "mathverse"` (or any
    other registered name) compared in rmsd/ outside rmsd/datasets/."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "rmsd"
    names = "|".join(BENCHMARKS)
    pattern = re.compile(rf"""(==|!=|\bin)\s*\(?\{{?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    found = [f"{f.relative_to(root)}:{n}" for f in root.rglob("*.py") if "datasets" not in f.parts
             for n, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found


def test_synthvid_scoring_through_the_registry():
    from rmsd.synthvid.generator import build_items

    bench = get_benchmark("synthvid")
    items = build_items(40, seed=3, test_fraction=0.0)["train"]
    texts = [f"<think>x</think><answer>{'(' + it.answer + ')' if it.task_type == 'mcq' else it.answer}</answer>"
             for it in items]
    rows = score_predictions(items, texts, bench, "strict")
    assert all(r["score"] == pytest.approx(1.0) for r in rows)
    result = bench.aggregate(rows)
    assert result["overall"] == pytest.approx(1.0) and set(result["breakdowns"]) == {"task_type", "difficulty",
                                                                                     "question_kind"}
    assert list(result["breakdowns"]["task_type"]) == ["mcq", "numeric", "grounding", "open"]
