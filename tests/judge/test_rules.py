"""RuleJudge on crafted rollouts against a hand-made synthvid scene."""

import pytest

from rmsd.items import Item
from rmsd.judge.rules import RuleJudge, extract_claims, parse_response
from rmsd.judge.verdict import DIMENSIONS, Verdict
from rmsd.synthvid.generator import build_items
from rmsd.teachers.simulated import SimulatedTeacher

SCENE = {
    "video_id": "v0", "duration": 4.0, "fps": 8, "width": 84, "height": 84, "num_frames": 32,
    "difficulty": "medium", "objects": [
        {"id": 0, "colour": "red", "shape": "square", "size": 20, "appear_s": 1.0, "disappear_s": 3.5,
         "start": [60, 40], "end": [20, 40], "direction": "left"},
        {"id": 1, "colour": "blue", "shape": "circle", "size": 20, "appear_s": 0.0, "disappear_s": 2.5,
         "start": [20, 70], "end": [20, 30], "direction": "up"},
    ],
}


def _item(task_type, question, answer, kind, target=None, options=()):
    meta = {**SCENE, "question_kind": kind, "target": target}
    return Item(item_id=f"v0-{kind}", benchmark="synthvid", task_type=task_type, question=question,
                prompt=question, options=list(options), answer=answer, video="v0.mp4", meta=meta)


ORDER = _item("mcq", "Which object appears first?", "B", "order", 1,
              ["red square", "blue circle", "green triangle", "yellow circle"])
WHEN = _item("grounding", "When is the red square visible?", "[1.0, 3.5]", "when", 0)
DESCRIBE = _item("open", "Describe the motion of the objects.", "The blue circle moves up. The red square moves left.",
                 "describe")
COUNT = _item("numeric", "How many objects appear in the video?", "2", "count")
judge = RuleJudge()


def test_a_fully_right_rollout_scores_one_everywhere():
    text = ("<think>The blue circle appears first, at 0.0 s. The red square appears at 1.0 s. "
            "So the answer is (B).</think><answer>(B)</answer>")
    v = judge.judge(ORDER, text)
    assert v.ok and v.scores == dict.fromkeys(DIMENSIONS, 1.0)
    assert "answer_correctness: right — (B) blue circle" in v.feedback


def test_right_answer_with_wrong_timestamps():
    text = ("<think>The blue circle appears first, at 2.0 s, before the red square enters at 3.0 s. "
            "So the answer is (B).</think><answer>(B)</answer>")
    v = judge.judge(ORDER, text)
    assert v.scores["answer_correctness"] == 1.0 and v.scores["logical_consistency"] == 1.0
    # checked: red, blue, order, two appear times -> 3 of 5 right
    assert v.scores["spatiotemporal_grounding"] == pytest.approx(3 / 5)
    assert "'appears first, at 2.0 s': the blue circle appears at 0.0 s" in v.feedback
    assert "'enters at 3.0 s': the red square appears at 1.0 s" in v.feedback


def test_reasoning_that_concludes_c_but_answers_b():
    text = "<think>The green triangle appears before anything else. So the answer is (C).</think><answer>(B)</answer>"
    v = judge.judge(ORDER, text)
    assert v.scores["logical_consistency"] == 0.0
    assert "the reasoning concludes (C) but the answer says (B)" in v.feedback
    assert v.scores["answer_correctness"] == 1.0
    assert "there is no green object" in v.feedback  # the reasoning cites an object the video lacks


def test_two_different_conclusions_are_inconsistent():
    text = "<think>So the answer is (A). On reflection, the answer is (B).</think><answer>(B)</answer>"
    v = judge.judge(ORDER, text)
    assert v.scores["logical_consistency"] == 0.0 and "concludes both (A) and (B)" in v.feedback


def test_missing_tags():
    v = judge.judge(ORDER, "The blue circle appears first. The answer is (B).")
    assert v.ok
    assert v.scores["answer_correctness"] == 0.0 and v.scores["logical_consistency"] == 0.0
    assert "format: missing <think>" in v.feedback and "format: missing <answer>" in v.feedback
    assert v.scores["spatiotemporal_grounding"] == 1.0  # its reasoning is still read: "blue circle appears first" holds
    parsed = parse_response("<think>x</think><answer>(B)")  # an unclosed answer tag is not an answer
    assert parsed.answer is None and parsed.reasoning == "x"


def test_open_description_with_a_wrong_colour():
    text = ("<think>The blue circle moves up and the green square moves left.</think>"
            "<answer>The blue circle moves up. The green square moves left.</answer>")
    v = judge.judge(DESCRIBE, text)
    # one of two objects described; of its 3 checkable facts (blue circle, up, green square) 2 hold
    assert v.scores["answer_correctness"] == pytest.approx(0.5 * 2 / 3)
    assert "'the green square': there is no green object" in v.feedback
    assert "the red square is not described" in v.feedback
    assert v.scores["logical_consistency"] == 1.0
    right = judge.judge(DESCRIBE, f"<think>I watch.</think><answer>{DESCRIBE.answer}</answer>")
    assert right.scores["answer_correctness"] == 1.0


def test_open_description_whose_reasoning_disagrees_with_the_answer():
    text = ("<think>The blue circle moves down. The red square moves left.</think>"
            "<answer>The blue circle moves up. The red square moves left.</answer>")
    v = judge.judge(DESCRIBE, text)
    assert v.scores["logical_consistency"] == 0.0
    assert "the reasoning says the blue object moves down but the answer says it moves up" in v.feedback
    assert v.scores["spatiotemporal_grounding"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("answer, iou, status", [("[1.0, 3.5]", 1.0, "right"), ("[1.5, 3.5]", 0.8, "right"),
                                                 ("[3.0, 4.0]", 0.5 / 3.0, "wrong")])
def test_grounding_answer_scored_by_temporal_iou(answer, iou, status):
    text = f"<think>The red square is visible from {answer[1:4]} s to {answer[6:9]} s.</think><answer>{answer}</answer>"
    v = judge.judge(WHEN, text)
    assert v.scores["answer_correctness"] == pytest.approx(iou)
    assert f"answer_correctness: {status}" in v.feedback
    assert v.scores["logical_consistency"] == 1.0  # "from a s to b s" is the reasoning's conclusion


def test_grounding_conclusion_that_differs_from_the_answer():
    text = "<think>It is visible from 1.0 s to 3.5 s. So the answer is [1.0, 3.5].</think><answer>[2.0, 3.0]</answer>"
    v = judge.judge(WHEN, text)
    assert v.scores["logical_consistency"] == 0.0
    assert v.scores["spatiotemporal_grounding"] == 1.0  # "It" is the question's target, whose span is cited right


def test_pronouns_carry_the_last_named_object():
    claims = extract_claims("The red square appears at 1.0 s. It moves right until 3.5 s.")
    assert [(c.kind, c.colour) for c in claims] == [("object", "red"), ("appear", "red"), ("direction", "red"),
                                                   ("disappear", "red")]
    v = judge.judge(WHEN, "<think>The red square appears at 1.0 s. It moves right until 3.5 s.</think>"
                          "<answer>[1.0, 3.5]</answer>")
    assert v.scores["spatiotemporal_grounding"] == pytest.approx(3 / 4)
    assert "'moves right': the red square moves left" in v.feedback


def test_nothing_cited_is_neutral_and_counts_are_checked():
    v = judge.judge(ORDER, "<think>Option (B) fits what I see.</think><answer>(B)</answer>")
    assert v.scores["spatiotemporal_grounding"] == 0.5 and "unchecked" in v.feedback
    assert v.scores["logical_consistency"] == 1.0  # the only option the reasoning names
    v = judge.judge(COUNT, "<think>There are three objects. So the answer is 3.</think><answer>3</answer>")
    assert v.scores["answer_correctness"] == 0.0 and v.scores["logical_consistency"] == 1.0
    assert "'There are three': the video shows 2 objects" in v.feedback


def test_item_without_ground_truth_cannot_be_judged():
    item = _item("mcq", "Which?", None, "order", 1, ["a", "b"])
    v = judge.judge(item, "<think>x</think><answer>(A)</answer>")
    assert not v.ok and v.total() is None


def test_verdict_total_and_validation():
    v = Verdict(scores={"answer_correctness": 1.0, "logical_consistency": 0.0, "spatiotemporal_grounding": 0.5})
    assert v.total() == pytest.approx(0.5)
    assert v.total({"answer_correctness": 3.0, "logical_consistency": 1.0}) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        Verdict(scores={"answer_correctness": 1.5, "logical_consistency": 0.0, "spatiotemporal_grounding": 0.0})
    with pytest.raises(ValueError):
        judge.judge_many([ORDER, WHEN], ["<answer>(B)</answer>"])


def test_an_item_without_a_scene_is_scored_by_its_benchmark():
    # a Video-MMMU open question, read as MMMU's harness reads it (the number the reply settles on)
    item = Item(item_id="x", benchmark="videommmu", task_type="open", question="q", prompt="q", answer="4.5")
    v = judge.judge(item, "<think>Add them.</think><answer>The total is 4.5</answer>")
    assert v.scores["answer_correctness"] == 1.0 and v.scores["spatiotemporal_grounding"] == 0.5
    assert "1.00 as videommmu scores it" in v.feedback
    assert judge.judge(item, "<think>Add them.</think><answer>4.6</answer>").scores["answer_correctness"] == 0.0


REPLIES = ["<think>t</think><answer>B</answer>", "<think>t</think><answer>(B)</answer>", "<answer>3</answer>",
           "<think>t</think><answer>3.0</answer>", "<answer>1,200</answer>", "<answer>1200</answer>",
           "<answer>12.5</answer>", "<answer>11</answer>", "<answer>open the door</answer>",
           "<answer>Open the door</answer>", "<answer>a person walks to the left</answer>",
           "<answer>someone walks left</answer>", "no tags at all: B", "<answer></answer>"]


def test_video_r1_items_are_judged_as_the_rl_correctness_reward_scores_them(tmp_path):
    # Video-R1's reward is the corpus's own (rmsd/datasets/videor1_reward.py): "3.0" for "3" scores 0 there, OCR
    # by word error rate, free-form by ROUGE; the judge's answer_correctness is that number on every reply
    from corpora import videor1_corpus

    from rmsd.datasets import get_benchmark
    from rmsd.train.rewards import CorrectnessReward

    file, _ = videor1_corpus(tmp_path)
    bench = get_benchmark("videor1")
    items = bench.load_items(file)
    reward = CorrectnessReward({it.item_id: it for it in items}, bench)
    judged, rewarded = [], []
    for item in items:
        judged += [judge.judge(item, text).scores["answer_correctness"] for text in REPLIES]
        rewarded += reward(REPLIES, [item.item_id] * len(REPLIES))
    assert judged == rewarded
    assert 0.0 in judged and 1.0 in judged and any(0.0 < x < 1.0 for x in judged)  # every kind of outcome
    numeric = next(it for it in items if it.answer == "3")
    assert judge.judge(numeric, "<think>t</think><answer>3.0</answer>").scores["answer_correctness"] == 0.0


def test_simulated_teachers_right_and_wrong_are_told_apart():
    items = [i for split in build_items(40, seed=3).values() for i in split]
    good = SimulatedTeacher("good", accuracy=1.0, verbosity="long")
    bad = SimulatedTeacher("bad", accuracy=0.0, verbosity="long", inconsistency_rate=1.0)
    good_v = judge.judge_many(items, [good.sample_text(i, 0) for i in items])
    bad_v = judge.judge_many(items, [bad.sample_text(i, 0) for i in items])
    assert all(v.scores == dict.fromkeys(DIMENSIONS, 1.0) for v in good_v)
    closed = [v for v, i in zip(bad_v, items, strict=True) if i.task_type != "open"]
    assert all(v.scores["answer_correctness"] < 0.5 for v in closed)
    mean = sum(v.scores["logical_consistency"] for v in bad_v) / len(bad_v)
    assert mean < 0.3  # the reasoning argues for something else almost everywhere


def test_a_decimal_conclusion_on_a_count_is_judged_not_a_crash():
    # a student rollout seen in training: the reasoning concludes 3.1 for a count question
    v = judge.judge(COUNT, "<think>So the answer is 3.1.</think><answer>2</answer>")
    assert v.ok and v.scores["answer_correctness"] == 1.0
    assert v.scores["logical_consistency"] == 0.0  # concluded 3.1, answered 2
    same = judge.judge(COUNT, "<think>So the answer is 2.0.</think><answer>2</answer>")
    assert same.scores["logical_consistency"] == 1.0
