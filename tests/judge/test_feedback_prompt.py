"""feedback_prompt: the EMA teacher's privileged prompt; the student's prompt never carries feedback."""

import copy

import pytest

from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.judge.verdict import Verdict, feedback_prompt
from rmsd.teachers.teacher import Teacher

ITEM = Item(item_id="i1", benchmark="synthvid", task_type="mcq", question="Which colour?",
            prompt="Which colour?\n(A) red\n(B) blue\nReply <think>...</think><answer>(X)</answer>.",
            options=["red", "blue"], answer="B")
FEEDBACK = ("answer_correctness: wrong — answered (A) red, reference (B) blue\n"
            "logical_consistency: right — the reasoning concludes (A), as the answer does")
VERDICT = Verdict(scores={"answer_correctness": 0.0, "logical_consistency": 1.0, "spatiotemporal_grounding": 0.5},
                  feedback=FEEDBACK)
ROLLOUT = "<think>It is red.</think><answer>(A)</answer>"


class _Echo(Teacher):
    async def generate(self, item, media, n, params, start_index=0):
        return []


def test_default_prompt_holds_prompt_feedback_and_reference():
    text = feedback_prompt(ITEM, ROLLOUT, VERDICT)
    assert text.startswith(ITEM.prompt)
    assert FEEDBACK in text
    assert "Reference answer: (B) blue" in text
    assert ROLLOUT not in text  # the rollout is scored as the teacher's completion, not shown in its prompt


def test_student_prompt_never_contains_the_feedback():
    before = copy.deepcopy(ITEM)
    teacher_prompt = feedback_prompt(ITEM, ROLLOUT, VERDICT)
    student_prompt = _Echo("student").render_prompt(ITEM)
    assert ITEM == before  # nothing written back into the item
    assert FEEDBACK not in student_prompt and "answer_correctness" not in student_prompt
    assert "Reference answer" not in student_prompt
    assert teacher_prompt != student_prompt and student_prompt in teacher_prompt


def test_custom_template_and_unknown_reference():
    template = "Q: {prompt}\nReview: {feedback}\nGold: {reference}\nDraft: {response}\nJSON: {\"k\": 1}"
    text = feedback_prompt(ITEM, ROLLOUT, VERDICT, template)
    assert "Gold: (B) blue" in text and f"Draft: {ROLLOUT}" in text and '{"k": 1}' in text
    no_answer = Item(**{**ITEM.to_dict(), "answer": None})
    text = feedback_prompt(no_answer, ROLLOUT, VERDICT, template)
    assert "Gold" not in text and "Review:" in text  # the reference line is dropped, the rest kept


def test_braces_in_feedback_are_not_substituted_again():
    verdict = Verdict(scores=VERDICT.scores, feedback="quoted '{reference}' literally")
    assert "quoted '{reference}' literally" in feedback_prompt(ITEM, ROLLOUT, verdict)


@pytest.mark.parametrize("template", ["{prompt} only", "{prompt} {feedback} {refrence}"])
def test_bad_templates_are_user_errors(template):
    with pytest.raises(RmsdError, match="feedback_template"):
        feedback_prompt(ITEM, ROLLOUT, VERDICT, template)
