"""Extraction primitives on hand-written responses: the harness extractors (misfires included),
the strict reader, numbers, spans, ROUGE-L (checked against the rouge-score package), MMMU's
parsers, the answer format, and the task-type scorer. docs/extraction.md quotes these cases."""

from __future__ import annotations

import pytest

from rmsd.datasets.benchmark import extract_answer, score
from rmsd.items import Item
from rmsd.scoring import (
    answer_region,
    choice_mmmu,
    find_numbers,
    find_spans,
    format_ok,
    letter_harness,
    letter_legacy,
    letter_strict,
    number_harness,
    number_strict,
    open_key_responses,
    open_mmmu_correct,
    parse_span,
    rouge_l,
    span_harness,
    span_strict,
    strip_reasoning,
    temporal_iou,
)

# (response, harness = lmms-eval ranked extractor, strict): the cases where the two differ
HARNESS_VS_STRICT = [
    ("A dog runs across the field.", "A", None),                     # sentence-initial article read as "A"
    ("The answer is B because of the Apple logo.", "A", "B"),        # letter inside "Apple", later than B
    ("B is wrong, the answer is C.", "B", "C"),                      # a rejected option at the start wins
    ("The answer is not B.", "B", None),                             # negation ignored
    ("Either A or C could be right.", "C", None),                    # two candidates: the later one
    ("(A) and (C) are both possible.", "C", None),
    ("Answer: A dog", "A", None),
    ("Answer: E", "A", None),                                        # E not offered: "A" of "Answer"
    ("<think>The answer is A", "A", None),                           # reasoning never closed, no answer
]
# cases where they agree
BOTH = [
    ("B", "B"), ("**B**", "B"), ("(B)", "B"), ("Answer: B", "B"), ("The answer is (C).", "C"),
    ("答案是 B", "B"), ("选B", "B"), ("故选：C", "C"), ("According to the video, B", "B"),
    ("I think the answer is C", "C"), ("Not A. The answer is D", "D"), ("Final answer: **D**", "D"),
    ("Option B is wrong; option C fits.", "C"), ("The answer is B. Wait, actually it's C.", "C"),
    ("<think>Option A looks plausible.</think><answer>(B)</answer>", "B"), ("B. The red ball", "B"),
    ("I think it is blue.", None),
]


@pytest.mark.parametrize(("text", "harness", "strict"), HARNESS_VS_STRICT)
def test_harness_and_strict_differ_where_the_harness_misreads(text, harness, strict):
    assert letter_harness(strip_reasoning(text)) == harness
    assert letter_strict(text) == strict


@pytest.mark.parametrize(("text", "letter"), BOTH)
def test_harness_and_strict_agree_on_clear_answers(text, letter):
    assert letter_harness(strip_reasoning(text)) == letter
    assert letter_strict(text) == letter


def test_harness_follows_lmms_eval_ranking():
    assert letter_harness("I pick C and stop") == "C"  # phrase (7) beats "X " (2)
    assert letter_harness("The best option is B)") == "B"
    assert letter_harness("A. because it handles text better", "AB") == "A"  # start (10)
    assert letter_harness("Option A is correct") == "A"
    assert letter_harness("(A) first, then (B)") == "B"  # same format: the later one
    assert letter_harness("no letters here") is None and letter_harness("  ") is None


def test_legacy_first_capital_flaws():
    assert letter_legacy("According to the video, B") == "A"
    assert letter_legacy("Based on the frames, the answer is C") == "B"
    assert letter_legacy("Answer: B") == "A"
    assert letter_legacy("The answer is (C).") == "C"  # the prefix is removed first
    assert letter_legacy("nothing") is None


def test_strict_reads_the_answer_tag_and_only_offered_letters():
    assert letter_strict("<think>maybe (A)</think><answer>(C)</answer>") == "C"
    assert letter_strict("<think>clearly B</think><answer>red</answer>") is None  # option text is not a letter
    assert letter_strict("<think>x</think><answer>(B)") == "B"  # unclosed answer tag: generation stopped
    assert letter_strict("<answer>(E)</answer>", "ABCD") is None
    assert letter_strict("<answer>(E)</answer>", "ABCDE") == "E"
    assert letter_strict("I'd go with B.") == "B" and letter_strict("My choice is (D)") == "D"
    assert letter_strict("The answer is \\boxed{C}") == "C"
    assert letter_strict("Options (A) or (B) fit; I cannot decide.") is None


def test_answer_region():
    assert answer_region("<think>a</think><answer> x </answer>") == "x"
    assert answer_region("<think>a</think> tail") == "tail"
    assert answer_region("<think>never closed") is None
    assert answer_region("plain") == "plain" and answer_region("") is None


@pytest.mark.parametrize(("text", "value"), [
    ("1,234 m", 1234), ("about 3.5 seconds", 3.5), ("-2 degrees", -2), ("1/2", 0.5), ("-.5", -0.5),
    ("2.5e3", 2500), ("1,2,3", 1),
])
def test_find_numbers(text, value):
    assert find_numbers(text)[0][0] == pytest.approx(value)


def test_numbers_strict_vs_harness():
    assert number_strict("<answer>three</answer>") == "3" and number_harness("<answer>three</answer>") is None
    assert number_strict("There are 3 red and 2 blue, so 5 in total") == "5"
    assert number_strict("3 red and 2 blue") is None and number_harness("3 red and 2 blue") == "2"
    assert number_strict("1.2-3.4") is None and number_harness("1.2-3.4") == "3.4"  # a range; no minus sign
    assert number_strict("The answer is 7.") == "7" and number_strict("答案是12") == "12"
    assert number_strict("<answer>1,234 m</answer>") == "1234" and number_strict("no idea") is None


def test_spans_and_temporal_iou():
    for text in ("[1.2, 3.4]", "from 1.2s to 3.4s", "1.2-3.4 seconds", "(1.2, 3.4)", "1.2 s to 3.4 s"):
        assert parse_span(text) == (1.2, 3.4), text
    assert find_spans("between 0:05 and 0:12") == [(5.0, 12.0)]
    assert parse_span("(2, 1)") is None and parse_span("around the middle") is None
    assert span_strict("<answer>[2.0, 4.0]</answer>") == "[2.0, 4.0]"
    assert span_strict("first [1, 2], later [3, 4]") is None and span_harness("first [1, 2], later [3, 4]") == "[3.0, 4.0]"
    assert temporal_iou((2.0, 4.0), (2.0, 3.0)) == pytest.approx(0.5)
    assert temporal_iou((0.0, 1.0), (2.0, 3.0)) == 0.0 and temporal_iou(None, (0.0, 1.0)) == 0.0
    assert temporal_iou((1.0, 1.0), (1.0, 1.0)) == 1.0


def test_rouge_l_matches_the_rouge_score_package():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = [("the red square moves left", "a red square moves to the left"),
             ("The blue circle appears at 1.0 s.", "the blue circle appears at 1.0 s and moves up"),
             ("nothing happens", "the red square moves left"), ("A, B; C!", "c b a")]
    for pred, ref in pairs:
        assert rouge_l(pred, ref) == pytest.approx(scorer.score(ref, pred)["rougeL"].fmeasure)
    assert rouge_l("same words", "Same words.") == 1.0 and rouge_l("", "x") == 0.0


def test_mmmu_choice_parser():
    options = ["the nucleus", "the mitochondria", "the ribosome", "the cell wall"]
    assert choice_mmmu("(B)", options) == "B"
    assert choice_mmmu("I pick (A) over (C)", options) == "C"  # brackets: the last one
    assert choice_mmmu("B is my answer", options) == "B"
    assert choice_mmmu("I am fairly sure it is the mitochondria here", options) == "B"  # option text, > 5 words
    first = choice_mmmu("no idea", options, seed="Perception/test_Art_1")
    assert first in "ABCD" and all(choice_mmmu("no idea", options, seed="Perception/test_Art_1") == first
                                   for _ in range(5))  # the random fallback is fixed per item


def test_mmmu_open_parser():
    keys = open_key_responses("The speed is 3.5 m/s.")
    assert keys == ["3.5 m/s"]
    assert open_mmmu_correct("3.50", keys) and not open_mmmu_correct("3.6", keys)
    assert open_mmmu_correct("mitochondria", open_key_responses("So the organelle is the mitochondria"))
    assert open_key_responses("first line is 1\nso 2\nx = 3") == ["1", "2", "3"]
    assert open_mmmu_correct("1,000", open_key_responses("The total is 1000"))


def test_format_ok():
    assert format_ok("<think>x</think><answer>(B)</answer>")
    assert format_ok(" <think>x</think>\n<answer>3</answer>\n")
    for bad in ("<think>x</think><answer>(B)", "<think>x<answer>(B)</answer>", "(B)", "<answer>(B)</answer>",
                "<think>x</think><answer> </answer>", "<think>a</think><think>b</think><answer>B</answer>"):
        assert not format_ok(bad), bad


def test_task_type_extraction_and_scores():
    mcq = Item("m", "synthvid", "mcq", "q", "q", options=["red", "blue", "green"], answer="B")
    num = Item("n", "synthvid", "numeric", "q", "q", answer="3")
    span = Item("g", "synthvid", "grounding", "q", "q", answer="[2.0, 4.0]")
    text = Item("o", "synthvid", "open", "q", "q", answer="the red square moves left")
    assert extract_answer("<think>x</think><answer>(B)</answer>", mcq) == "B"
    assert extract_answer("<think>x</think><answer>(D)</answer>", mcq) is None  # D not offered
    assert extract_answer("<answer>3.0</answer>", num) == "3" and score("3.0", num) == 1.0 and score("4", num) == 0
    assert score(extract_answer("<answer>[2.5, 4.0]</answer>", span), span) == pytest.approx(0.75)
    assert score(extract_answer("<answer>the red square moves left</answer>", text), text) == 1.0
    assert score(None, mcq) == 0.0 and score("b", mcq) == 1.0
    with pytest.raises(ValueError, match="mode"):
        extract_answer("x", mcq, mode="fuzzy")
