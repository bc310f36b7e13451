"""LLMJudge through the real `openai` backend against the fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import re
import socket

import pytest
from fake_openai import FakeOpenAIServer

from rmsd.config.pools import OpenAIOptions, PoolConfig
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.judge.llm import LLMJudge, MalformedVerdict, parse_verdict, reminder
from rmsd.judge.verdict import DIMENSIONS, reference_text
from rmsd.synthvid.generator import build_items, object_name
from rmsd.teachers.openai_api import OpenAITeacher

ITEM = Item(item_id="q1", benchmark="t", task_type="mcq", question="Which colour is the square?",
            prompt="Which colour is the square? (A) red (B) blue", options=["red", "blue"], answer="A")
RESPONSE = "<think>The square is blue.</think><answer>(B)</answer>"
SCORES = {"answer_correctness": 0.0, "logical_consistency": 1.0, "spatiotemporal_grounding": 0.25}
GOOD = json.dumps({**SCORES, "feedback": "answer_correctness: wrong — answered (B) blue, reference (A) red\n"
                                         "logical_consistency: right — the reasoning leads to (B)\n"
                                         "spatiotemporal_grounding: wrong — 'the square is blue': it is red"})


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def pool(url: str, **openai) -> PoolConfig:
    return PoolConfig(name="judges", teachers=[
        {"name": "grader", "backend": "openai", "openai": {"model": "fake-judge", "base_url": url, **openai}},
        {"name": "other", "backend": "simulated", "simulated": {}}])


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_a_clean_verdict_becomes_scores_and_feedback(server):
    server.reset(replies=[GOOD])
    with LLMJudge.from_pool(pool(server.url), "grader") as judge:
        v = judge.judge(ITEM, RESPONSE)
    assert v.ok and v.scores == SCORES and v.total() == pytest.approx(1.25 / 3)
    assert v.feedback.splitlines() == json.loads(GOOD)["feedback"].splitlines()
    assert server.stats.requests == 1 and judge.stats == {"calls": 1, "cached": 0, "retries": 0, "fallbacks": 0}
    assert server.stats.models == {"fake-judge": 1}


@pytest.mark.parametrize("wrap", [
    "```json\n{}\n```",
    "Let me check the reasoning. Scores lie in {{0, 1}}; mine:\n{}\nHope this helps!",
])
def test_a_fenced_or_prose_wrapped_verdict_is_read_and_its_feedback_normalised(server, wrap):
    verdict = json.dumps({**SCORES, "feedback": "1. **Answer correctness**: picked (B) instead of (A); "
                                                "logical_consistency: fine\n- Grounding: cites a blue square"})
    server.reset(replies=[wrap.format(verdict)])
    with LLMJudge.from_pool(pool(server.url), "grader", retries=0) as judge:
        v = judge.judge(ITEM, RESPONSE)
    assert v.ok and v.scores == SCORES
    assert v.feedback.splitlines() == [  # the rule judge's shape; the status from the score where none was given
        "answer_correctness: wrong — picked (B) instead of (A)",
        "logical_consistency: right — fine",
        "spatiotemporal_grounding: wrong — cites a blue square"]


def _recording_judge(url: str, **kw) -> tuple[LLMJudge, list[str]]:
    teacher, prompts = OpenAITeacher("grader", OpenAIOptions(model="fake-judge", base_url=url), timeout_s=5.0), []

    async def ask(prompt: str) -> str:
        prompts.append(prompt)
        return await teacher.ask(prompt)

    judge = LLMJudge(ask, **kw)
    judge._aclose = teacher.aclose
    return judge, prompts


def test_a_malformed_reply_is_asked_again_with_a_reminder(server):
    server.reset(replies=["I think the answer is wrong.", GOOD])
    judge, prompts = _recording_judge(server.url)
    with judge:
        v = judge.judge(ITEM, RESPONSE)
    assert v.ok and v.scores == SCORES
    assert judge.stats["calls"] == 2 and judge.stats["retries"] == 1 and judge.stats["fallbacks"] == 0
    assert server.stats.requests == 2
    assert prompts[1] == prompts[0] + "\n\n" + reminder("no JSON object in the reply")


def test_a_verdict_that_stays_malformed_falls_back_and_is_logged_not_cached(server, tmp_path, caplog):
    cache = tmp_path / "judge.jsonl"
    bad = json.dumps({**SCORES, "answer_correctness": 1.5, "feedback": "x"})  # out of range
    server.reset(replies=[bad] * 3)
    with caplog.at_level(logging.WARNING, logger="rmsd.judge.llm"), \
            LLMJudge.from_pool(pool(server.url), "grader", cache_path=cache, retries=2) as judge:
        v = judge.judge(ITEM, RESPONSE)
    assert not v.ok and v.total() is None and v.scores == {}
    assert "answer_correctness=1.5" in v.feedback and "after 3 tries" in v.feedback
    assert judge.stats == {"calls": 3, "cached": 0, "retries": 2, "fallbacks": 1} and server.stats.requests == 3
    (record,) = [r for r in caplog.records if r.name == "rmsd.judge.llm"]
    assert record.levelno == logging.WARNING and "item q1" in record.getMessage()
    assert "reward-only" in record.getMessage() and "\n" not in record.getMessage()
    assert not cache.exists() or cache.read_text() == ""
    server.reset(replies=[GOOD])  # a later run asks again
    with LLMJudge.from_pool(pool(server.url), "grader", cache_path=cache) as again:
        assert again.judge(ITEM, RESPONSE).ok and server.stats.requests == 1


@pytest.mark.parametrize("reply, why", [
    ({**SCORES, "logical_consistency": -0.1, "feedback": ""}, "logical_consistency=-0.1"),
    ({**SCORES, "spatiotemporal_grounding": True, "feedback": ""}, "spatiotemporal_grounding=true"),
    ({**SCORES, "answer_correctness": "1", "feedback": ""}, 'answer_correctness="1"'),
    ({"answer_correctness": 1, "feedback": ""}, "no logical_consistency, spatiotemporal_grounding"),
    ({**SCORES, "feedback": ["a", "b"]}, "feedback"),
    ({**SCORES}, "feedback"),
])
def test_scores_outside_0_1_booleans_strings_and_missing_fields_are_malformed(reply, why):
    with pytest.raises(MalformedVerdict, match=re.escape(why)):
        parse_verdict("verdict: " + json.dumps(reply))
    edge = parse_verdict(json.dumps({**SCORES, "answer_correctness": 1, "logical_consistency": 0, "feedback": ""}))
    assert edge.scores["answer_correctness"] == 1.0 and edge.scores["logical_consistency"] == 0.0  # ints are numbers


def test_an_unreachable_server_gives_a_failed_verdict_not_a_crash(caplog):
    with caplog.at_level(logging.WARNING, logger="rmsd.judge.llm"), \
            LLMJudge.from_pool(pool(dead_url()), "grader") as judge:
        verdicts = judge.judge_many([ITEM, ITEM], [RESPONSE, "<answer>(A)</answer>"])
    assert [v.ok for v in verdicts] == [False, False]
    assert all("cannot reach" in v.feedback for v in verdicts) and judge.stats["fallbacks"] == 2
    assert judge.stats["retries"] == 0  # a failed call is not a malformed reply: no re-ask
    assert sum("item q1" in r.getMessage() for r in caplog.records) == 2


def test_a_second_judge_on_the_same_cache_asks_nothing(server, tmp_path):
    cache = tmp_path / "judge.jsonl"
    items = [i for split in build_items(4, seed=0).values() for i in split][:3]
    responses = ["<answer>(A)</answer>", "<answer>(B)</answer>", "<answer>(A)</answer>"]
    batch_items, batch_texts = [*items, items[0]], [*responses, responses[0]]  # a repeated rollout
    server.reset(replies=[GOOD] * 3)
    with LLMJudge.from_pool(pool(server.url), "grader", cache_path=cache) as first:
        verdicts = first.judge_many(batch_items, batch_texts)
    assert server.stats.requests == 3 and all(v.ok for v in verdicts) and verdicts[0] == verdicts[3]
    assert len(cache.read_text().splitlines()) == 3
    server.reset()
    with LLMJudge.from_pool(pool(server.url), "grader", cache_path=cache) as second:
        assert second.judge_many(batch_items, batch_texts) == verdicts
    assert server.stats.requests == 0 and second.stats["cached"] == 3 and second.stats["calls"] == 0
    server.reset(replies=[GOOD] * 3)  # another judge model, or another rubric, decides afresh
    with LLMJudge.from_pool(pool(server.url), "grader", cache_path=cache, name="llm:another-model") as other:
        other.judge_many(items, responses)
    assert server.stats.requests == 3


def test_a_corrupt_cache_line_is_an_error_naming_file_and_line(server, tmp_path):
    cache = tmp_path / "judge.jsonl"
    good = {"key": "k", "judge": "llm", "scores": SCORES, "feedback": ""}
    cache.write_text(json.dumps(good) + "\n" + json.dumps(good)[:20])  # a last line cut short by a kill
    server.reset(replies=[GOOD])
    with LLMJudge.from_pool(pool(server.url), "grader", cache_path=cache, name="llm") as judge:
        assert judge.judge(ITEM, RESPONSE).ok  # the cut line is skipped, then dropped before the new record
    assert len(LLMJudge(None, cache_path=cache)._verdicts) == 2
    cache.write_text(json.dumps(good) + "\n{oops\n" + json.dumps(good) + "\n")
    with pytest.raises(RmsdError, match=rf"{cache}:2 is not JSON"):
        LLMJudge(None, cache_path=cache)
    cache.write_text(json.dumps({**good, "scores": {"answer_correctness": 1}}) + "\n")
    with pytest.raises(RmsdError, match=rf"{cache}:1 is not a verdict"):
        LLMJudge(None, cache_path=cache)


def test_the_api_key_never_reaches_the_cache_or_the_log(server, tmp_path, monkeypatch, caplog):
    secret = "sk-judge-" + "Xy7" * 10
    monkeypatch.setenv("JUDGE_TEST_KEY", secret)
    cache = tmp_path / "judge.jsonl"
    server.reset(require_key=secret, replies=[GOOD])
    with LLMJudge.from_pool(pool(server.url, api_key_env="JUDGE_TEST_KEY"), "grader", cache_path=cache) as judge:
        assert judge.judge(ITEM, RESPONSE).ok
    server.reset(require_key="another-key")  # a 401 that echoes the key it received
    with caplog.at_level(logging.WARNING, logger="rmsd.judge.llm"), \
            LLMJudge.from_pool(pool(server.url, api_key_env="JUDGE_TEST_KEY"), "grader", cache_path=cache) as judge:
        failed = judge.judge(ITEM, "<answer>(A)</answer>")
    assert not failed.ok and "HTTP 401" in failed.feedback and secret not in failed.feedback
    assert secret not in caplog.text and secret not in cache.read_text() and len(cache.read_text().splitlines()) == 1


def test_the_rubric_prompt_carries_the_reference_and_the_scene():
    items = [i for split in build_items(4, seed=0).values() for i in split]
    judge = LLMJudge(None)
    for item in items:
        text = judge.prompt(item, "<think>red {scene} first</think><answer>(A)</answer>")
        assert item.prompt in text and f"Reference answer: {reference_text(item)}\n" in text
        assert "<think>red {scene} first</think>" in text  # braces in the rollout are not substituted
        for obj in item.meta["objects"]:
            assert f"- {object_name(obj)}: visible from {obj['appear_s']:.1f} s to {obj['disappear_s']:.1f} s" in text
        assert all(dim in text for dim in DIMENSIONS)
    bare = judge.prompt(Item(item_id="x", benchmark="t", task_type="open", question="Q?", prompt="Q?"), "R")
    assert "Reference answer" not in bare and "What the video really shows" not in bare and "Q?" in bare


def test_bad_templates_and_unknown_teachers_are_one_line_errors(server):
    with pytest.raises(RmsdError, match=r"\{prompt\} and \{response\}.*\['answer', 'prompt', 'response'\]"):
        LLMJudge(None, template="{prompt} {response} {answer}")
    with pytest.raises(RmsdError, match="must contain"):
        LLMJudge(None, template="Grade this: {prompt}")
    with pytest.raises(RmsdError, match="not a teacher of pool judges: set it to one of grader, other"):
        LLMJudge.from_pool(pool(server.url), "gpt-judge")
