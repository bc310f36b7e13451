"""The simulated teacher: configured accuracy, format errors, bias, determinism, correlated mistakes."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest

from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.synthvid.generator import build_items
from rmsd.teachers.simulated import SimulatedTeacher
from rmsd.teachers.teacher import GenParams, Media

STRICT = re.compile(r"<think>(.+?)</think><answer>(.*?)</answer>", re.S)
VALID_ANSWER = {
    "mcq": re.compile(r"\(([A-Z])\)"),
    "numeric": re.compile(r"(-?\d+(?:\.\d+)?)"),
    "grounding": re.compile(r"(\[\d+(?:\.\d+)?, \d+(?:\.\d+)?\])"),
    "open": re.compile(r"(.+)", re.S),
}
ACCURACY = {"mcq": 0.7, "numeric": 0.6, "grounding": 0.5, "open": 0.8}
SAMPLES = 8


@pytest.fixture(scope="module")
def items() -> list[Item]:
    splits = build_items(500, seed=7)
    return splits["train"] + splits["test"]


def extract(text: str, task_type: str) -> str | None:
    """Strict extraction: the whole text is think + answer tags and the answer has its task's form."""
    m = STRICT.fullmatch(text)
    if not m:
        return None
    a = VALID_ANSWER[task_type].fullmatch(m.group(2))
    return a.group(1) if a else None


def iou(a: str, b: str) -> float:
    (x0, x1), (y0, y1) = (tuple(map(float, re.findall(r"[\d.]+", s))) for s in (a, b))
    inter = max(0.0, min(x1, y1) - max(x0, y0))
    return inter / (max(x1, y1) - min(x0, y0))


def run(teacher: SimulatedTeacher, item: Item, n: int = SAMPLES, start: int = 0) -> list[str]:
    return [r.text for r in asyncio.run(teacher.generate(item, Media(), n, GenParams(), start_index=start))]


def test_accuracy_per_task_type_and_difficulty(items):
    teacher = SimulatedTeacher("sim", ACCURACY, difficulty_penalty={"medium": 0.1, "hard": 0.25}, verbosity="long")
    hits, expected = Counter(), Counter()
    draws = Counter()
    for item in items:
        for text in run(teacher, item):
            key = (item.task_type, item.meta["difficulty"])
            draws[key] += 1
            hits[key] += extract(text, item.task_type) == item.answer
            expected[key] += teacher.p_correct(item)
    for task in ACCURACY:
        got = sum(v for k, v in hits.items() if k[0] == task) / sum(v for k, v in draws.items() if k[0] == task)
        want = sum(v for k, v in expected.items() if k[0] == task) / sum(v for k, v in draws.items() if k[0] == task)
        assert abs(got - want) <= 0.05, (task, got, want)
    easy_mcq = hits[("mcq", "easy")] / draws[("mcq", "easy")]
    hard_mcq = hits[("mcq", "hard")] / draws[("mcq", "hard")]
    assert abs(easy_mcq - 0.7) <= 0.05 and abs(hard_mcq - 0.45) <= 0.07  # the per-question difficulty


def test_mistakes_are_plausible(items):
    teacher = SimulatedTeacher("sim", 0.0)  # always wrong
    for item in items[:150]:
        for text in run(teacher, item, n=2):
            answer = extract(text, item.task_type)
            assert answer is not None and answer != item.answer
            if item.task_type == "mcq":
                assert answer in item.letters
            elif item.task_type == "numeric":
                assert abs(int(answer) - int(item.answer)) == 1 and int(answer) >= 1
            elif item.task_type == "grounding":
                assert iou(answer, item.answer) < 0.5
            else:  # the same kind of description, one colour or direction wrong
                assert answer.count(". ") == item.answer.count(". ") and answer.startswith("The ")


def test_format_error_rate(items):
    teacher = SimulatedTeacher("sim", ACCURACY, format_error_rate=0.3)
    texts = [(item, text) for item in items for text in run(teacher, item, n=4)]
    broken = sum(extract(text, item.task_type) is None for item, text in texts) / len(texts)
    assert abs(broken - 0.3) <= 0.03
    clean = SimulatedTeacher("sim", ACCURACY)
    assert all(extract(t, it.task_type) is not None for it in items[:100] for t in run(clean, it, n=4))


def test_bias_toward_a_letter(items):
    mcq = [it for it in items if it.task_type == "mcq" and it.answer != "A"]

    def share_of_a(teacher: SimulatedTeacher) -> float:
        wrong = [extract(t, "mcq") for it in mcq for t in run(teacher, it, n=4)]
        wrong = [a for a, it in zip(wrong, [it for it in mcq for _ in range(4)], strict=True) if a != it.answer]
        return sum(a == "A" for a in wrong) / len(wrong)

    assert abs(share_of_a(SimulatedTeacher("plain", {"mcq": 0.5})) - 1 / 3) <= 0.06
    assert share_of_a(SimulatedTeacher("always-a", {"mcq": 0.5}, bias_letter="A", bias_strength=1.0)) == 1.0
    half = share_of_a(SimulatedTeacher("half-a", {"mcq": 0.5}, bias_letter="A", bias_strength=0.5))
    assert abs(half - (0.5 + 0.5 / 3)) <= 0.06


def test_deterministic_per_item_and_sample_index(items):
    item = items[3]
    a = SimulatedTeacher("sim", ACCURACY, format_error_rate=0.2, inconsistency_rate=0.2, seed=1)
    b = SimulatedTeacher("sim", ACCURACY, format_error_rate=0.2, inconsistency_rate=0.2, seed=1)
    assert run(a, item) == run(b, item)
    assert run(a, item, n=3, start=5) == run(a, item, n=8)[5:8]  # resume: same text whichever batch
    other = SimulatedTeacher("sim", ACCURACY, format_error_rate=0.2, inconsistency_rate=0.2, seed=2)
    assert [run(a, it) for it in items[:20]] != [run(other, it) for it in items[:20]]
    assert len(set(run(a, items[0], n=8))) > 1  # samples of one item differ


def test_shared_error_seed_means_shared_mistakes(items):
    kinds = dict(accuracy=ACCURACY)
    one = SimulatedTeacher("one", **kinds, error_seed=42, seed=1, verbosity="short")
    two = SimulatedTeacher("two", **kinds, error_seed=42, seed=2, verbosity="long")
    free = SimulatedTeacher("free", **kinds, seed=3)
    same = other = 0
    for item in items[:200]:
        for t1, t2, t3 in zip(run(one, item, n=4), run(two, item, n=4), run(free, item, n=4), strict=True):
            a1, a2, a3 = (extract(t, item.task_type) for t in (t1, t2, t3))
            assert a1 == a2  # same decisions and the same wrong answers
            same += a1 != item.answer
            other += (a1 != item.answer) and (a3 != item.answer)
    assert same > 150 and other < 0.6 * same  # an independent teacher shares far fewer mistakes


def test_reasoning_agrees_with_the_answer_unless_told_otherwise(items):
    closed = [it for it in items if it.closed][:200]

    def disagreement(teacher: SimulatedTeacher) -> float:
        pairs = []
        for item in closed:
            for text in run(teacher, item, n=4):
                think, answer = STRICT.fullmatch(text).groups()
                concluded = re.search(r"answer is (.+?)\.$", think).group(1)
                pairs.append(concluded != answer)
        return sum(pairs) / len(pairs)

    assert disagreement(SimulatedTeacher("sim", ACCURACY)) == 0.0
    assert abs(disagreement(SimulatedTeacher("sim", ACCURACY, inconsistency_rate=0.3)) - 0.3) <= 0.05


def test_long_reasoning_cites_the_scene(items):
    item = next(it for it in items if it.meta["question_kind"] == "direction" and it.meta["difficulty"] == "medium")
    target = next(o for o in item.meta["objects"] if o["id"] == item.meta["target"])
    text = run(SimulatedTeacher("sim", 1.0, verbosity="long"), item, n=1)[0]
    assert f"The {target['colour']} {target['shape']} appears at {target['appear_s']:.1f} s and moves" in text
    short = run(SimulatedTeacher("sim", 1.0, verbosity="short"), item, n=1)[0]
    assert " appears at " not in short and len(short.split()) < len(text.split())


def test_response_fields_and_generic_items():
    item = Item("q1", "custom", "mcq", "Which?", "Which?\n(A) x\n(B) y", options=["x", "y"], answer="B")
    responses = asyncio.run(SimulatedTeacher("sim", 1.0).generate(item, Media(), 3, GenParams()))
    assert len(responses) == 3
    for r in responses:
        assert r.finish_reason == "stop" and extract(r.text, "mcq") == "B"
        assert r.completion_tokens == len(r.text.split()) and r.prompt_tokens == len(item.prompt.split())
    assert SimulatedTeacher.is_simulator and SimulatedTeacher.backend == "simulated"
    assert "SIMULATOR" in (SimulatedTeacher.__doc__ or "") and "SIMULATOR" in repr(SimulatedTeacher("s", 1.0))


def test_user_mistakes_are_clear():
    with pytest.raises(RmsdError, match=r"accuracy\[mcq\] must be in \[0, 1\]"):
        SimulatedTeacher("sim", {"mcq": 1.5})
    with pytest.raises(RmsdError, match="verbosity"):
        SimulatedTeacher("sim", 0.5, verbosity="chatty")
    with pytest.raises(RmsdError, match="bias_letter"):
        SimulatedTeacher("sim", 0.5, bias_letter="ab")
    item = Item("q1", "custom", "numeric", "How many?", "How many?", answer="3")
    with pytest.raises(RmsdError, match="no accuracy for task type 'numeric'"):
        SimulatedTeacher("sim", {"mcq": 0.5}).sample_text(item, 0)
    item.answer = None
    with pytest.raises(RmsdError, match="needs ground truth"):
        SimulatedTeacher("sim", 0.5).sample_text(item, 0)
