"""LLM judge of VISD: any teacher backend reads a rubric prompt and answers with a JSON verdict.

The rubric prompt gives the judge the question (with its options), the reference answer,
for synthvid items the ground-truth scene (objects, colours, shapes, when each is visible,
how it moves — `Item.meta`, ARCHITECTURE.md "synthvid scene") and the student's rollout,
and asks for one JSON object: the three scores of `rmsd.judge.verdict.DIMENSIONS` in [0, 1]
and a feedback line per dimension naming what was wrong and where. The reply is parsed
leniently (```json fences and prose around the object are fine) and checked strictly
(three numbers in [0, 1], a feedback string). A malformed reply is asked again, with a
one-line reminder of the format, up to `retries` times; if it stays malformed, or the call
itself fails, the verdict is `Verdict.failed` — the trainer gives that rollout reward-only
credit — and a warning names the item. Good verdicts are cached in a JSONL file keyed by
content hashes, so a resumed or repeated run pays for no verdict twice; failed ones are not
cached, so the next run tries them again.

How it differs from the rule judge (`rules.py`): it understands any phrasing and any
benchmark, but costs a call per rollout and can be wrong; and it sees the scene only as
text (the judge call carries no frames), so for items without a scene it can check
grounding only against the question and the reference.

    rmsd distill --recipe recipes/synthvid/tiny_visd.yaml --matched runs/synthvid-tiny-visd/matched
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rmsd.cache import JsonlCache, PrivateLoop, content_key
from rmsd.config.pools import PoolConfig
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.judge.verdict import DIMENSIONS, Judge, Verdict, reference_text
from rmsd.synthvid.generator import object_name

log = logging.getLogger(__name__)

RUBRIC_PLACEHOLDERS = ("prompt", "reference", "scene", "response")
JSON_SHAPE = ('{"answer_correctness": x, "logical_consistency": y, "spatiotemporal_grounding": z, '
              '"feedback": "one short line per dimension"}')
DEFAULT_RUBRIC = (
    "You grade a student's answer to a question about a video.\n\n"
    "Question:\n{prompt}\n\n"
    "Reference answer: {reference}\n"
    "What the video really shows: {scene}\n\n"
    "Student's response:\n{response}\n\n"
    "Score the response on three dimensions, each a number from 0 (wrong) to 1 (right):\n"
    "- answer_correctness: does the final answer agree with the reference answer?\n"
    "- logical_consistency: does the reasoning lead to the final answer given, without contradicting itself?\n"
    "- spatiotemporal_grounding: are the objects, colours, motions and times the reasoning cites true of the "
    "video? (0.5 when it cites none)\n"
    "Reply with ONE JSON object and nothing else:\n"
    '{"answer_correctness": x, "logical_consistency": y, "spatiotemporal_grounding": z, '
    '"feedback": "one short line per dimension naming what was wrong and where"}\n'
    "where x, y, z are numbers in [0, 1] and each feedback line reads "
    '"<dimension>: right|partly right|wrong — <what was wrong, quoting the response>".'
)


def reminder(reason: str) -> str:
    """The line appended to the rubric when the judge is asked again."""
    return f"Your previous reply could not be used ({reason}). Reply with only one JSON object: {JSON_SHAPE}"


class MalformedVerdict(ValueError):
    """A judge reply that is not one JSON verdict of the expected shape."""


class JudgeCallFailed(Exception):
    """`ask` raised (TeacherError, a timeout, a custom ask's error); the cause is chained."""


# ----------------------------------------------------------------------------- prompt
def check_rubric(template: str) -> None:
    """Raise RmsdError unless `template` has {prompt} and {response} and no unknown {placeholder}."""
    names = set(re.findall(r"\{(\w+)\}", template))
    if names - set(RUBRIC_PLACEHOLDERS) or not {"prompt", "response"} <= names:
        raise RmsdError(f"the LLM judge's rubric template must contain {{prompt}} and {{response}} and may use "
                        f"{{reference}}, {{scene}}; found {sorted(names)} (write other braces as JSON, "
                        "e.g. {\"score\": x})")


def describe_scene(meta: dict[str, Any]) -> str | None:
    """The synthvid scene in a few lines ("- red square: visible from 1.0 s to 3.5 s, moves left"); None without one."""
    objects = meta.get("objects")
    if not objects:
        return None
    duration = f" in a {meta['duration']:.1f} s video" if meta.get("duration") else ""
    lines = [f"{len(objects)} object{'s' * (len(objects) != 1)}{duration}, in order of appearance:"]
    for obj in sorted(objects, key=lambda o: o["appear_s"]):
        motion = "stays still" if obj["direction"] == "none" else f"moves {obj['direction']}"
        lines.append(f"- {object_name(obj)}: visible from {obj['appear_s']:.1f} s to {obj['disappear_s']:.1f} s, "
                     f"{motion}")
    return "\n".join(lines)


def render_rubric(template: str, item: Item, response_text: str) -> str:
    """The judge's prompt; lines naming {reference} or {scene} are dropped when the item has none."""
    values = {"prompt": item.prompt, "reference": reference_text(item), "scene": describe_scene(item.meta),
              "response": response_text}
    lines = [line for line in template.split("\n")
             if not any(values[name] is None and f"{{{name}}}" in line for name in ("reference", "scene"))]
    # one pass, so braces inside the response or the prompt are never substituted again
    return re.sub(r"\{(" + "|".join(RUBRIC_PLACEHOLDERS) + r")\}", lambda m: values[m.group(1)] or "", "\n".join(lines))


# ----------------------------------------------------------------------------- reply
def parse_verdict(text: str) -> Verdict:
    """The first JSON object in `text` that is a valid verdict; MalformedVerdict says why none is."""
    decoder, first_error = json.JSONDecoder(), None
    for brace in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, brace.start())
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        try:
            return _verdict(obj)
        except MalformedVerdict as e:
            first_error = first_error or e
    raise first_error or MalformedVerdict("no JSON object in the reply")


def _verdict(obj: dict[str, Any]) -> Verdict:
    missing = [d for d in DIMENSIONS if d not in obj]
    if missing:
        raise MalformedVerdict(f"no {', '.join(missing)}")
    for dim in DIMENSIONS:
        value = obj[dim]
        # bool is an int in Python; a judge answering `true` has not given a score
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise MalformedVerdict(f"{dim}={json.dumps(value)[:40]} is not a number in [0, 1]")
    if not isinstance(obj.get("feedback"), str):
        raise MalformedVerdict("feedback is missing or not a string")
    scores = {dim: float(obj[dim]) for dim in DIMENSIONS}
    return Verdict(scores=scores, feedback=normalise_feedback(obj["feedback"], scores))


ALIASES = {"answercorrectness": "answer_correctness", "correctness": "answer_correctness",
           "logicalconsistency": "logical_consistency", "consistency": "logical_consistency",
           "spatiotemporalgrounding": "spatiotemporal_grounding", "grounding": "spatiotemporal_grounding"}
DIMENSION_LINE = re.compile(r"^[\s*•-]*(?:\d+[.)]\s*)?\**\s*(answer[\s_-]*correctness|logical[\s_-]*consistency|"
                            r"spatio[\s_-]*temporal[\s_-]*grounding|correctness|consistency|grounding)"
                            r"\s*\**\s*[:=—–-]\s*\**\s*(.*)$", re.I)
STATUS = re.compile(r"^(right|partly right|partially right|wrong|correct|incorrect|unchecked)\b", re.I)
DIMENSION_START = re.compile(r"(?=\b(?:" + "|".join(DIMENSIONS) + r")\s*:)")


def normalise_feedback(feedback: str, scores: dict[str, float]) -> str:
    """One "<dimension>: <status> — <detail>" line per dimension the judge wrote about, as the rule
    judge writes them (the status from the score when the judge gave none); other lines as given."""
    pieces = [p.strip().rstrip(";").strip()
              for line in feedback.strip().split("\n") for p in DIMENSION_START.split(line)]
    out = []
    for piece in filter(None, pieces):
        m = DIMENSION_LINE.match(piece)
        if m is None:
            out.append(piece)
            continue
        dim, detail = ALIASES[re.sub(r"[\W_]", "", m.group(1).lower())], m.group(2).strip()
        if not STATUS.match(detail):
            score = scores[dim]
            status = "right" if score >= 1.0 else "partly right" if score >= 0.5 else "wrong"
            detail = f"{status} — {detail}" if detail else status
        out.append(f"{dim}: {detail}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- the judge
class LLMJudge(Judge):
    """The LLM judge (module docstring) over any async `ask(prompt) -> str`, e.g. `teacher.ask`.

    cache_path: JSONL of good verdicts, appended as they come (None: no cache).
    name: the judge's name in logs and cache keys; name it after the judge model, so another
        model never reuses its verdicts.
    retries: re-asks after a malformed reply before the rollout falls back to reward-only credit.
    concurrency: judge calls in flight at once in `judge_many`.
    template: the rubric prompt, with {prompt}, {response} and optionally {reference}, {scene}.
    stats: calls (requests sent), cached (verdicts read from the cache), retries, fallbacks.
    """

    def __init__(self, ask: Callable[[str], Awaitable[str]], cache_path: str | Path | None = None,
                 name: str = "llm", retries: int = 2, concurrency: int = 8, template: str | None = None):
        if retries < 0 or concurrency < 1:
            raise RmsdError(f"LLMJudge: retries must be >= 0 and concurrency >= 1; got {retries}, {concurrency}")
        self.ask, self.name, self.retries, self.concurrency = ask, name, retries, concurrency
        self.template = DEFAULT_RUBRIC if template is None else template
        check_rubric(self.template)
        self.stats = dict.fromkeys(("calls", "cached", "retries", "fallbacks"), 0)
        self._cache = JsonlCache(cache_path, name)
        self._loop = PrivateLoop("LLMJudge")
        self._aclose: Callable[[], Awaitable[None]] | None = None
        self._verdicts: dict[str, Verdict] = {}
        for n, rec in self._cache.records():
            try:
                self._verdicts[rec["key"]] = Verdict(scores=rec["scores"], feedback=rec["feedback"])
            except (KeyError, TypeError, ValueError):
                raise self._cache.error(n, "is not a verdict of the LLM judge") from None

    @classmethod
    def from_pool(cls, pool: PoolConfig, teacher_name: str | None, cache_path: str | Path | None = None,
                  **options: Any) -> LLMJudge:
        """The judge asking the pool's teacher `teacher_name` (any backend); `close()` releases it."""
        from rmsd.teachers.build import build_teacher, model_name

        cfg = next((t for t in pool.teachers if t.name == teacher_name), None)
        if cfg is None:
            raise RmsdError(f"visd.judge_teacher {teacher_name!r} is not a teacher of pool {pool.name}: "
                            f"set it to one of {', '.join(t.name for t in pool.teachers)}")
        teacher = build_teacher(cfg, pool)
        options.setdefault("name", f"llm:{cfg.name}:{model_name(cfg)}")
        options.setdefault("concurrency", cfg.concurrency)
        judge = cls(teacher.ask, cache_path, **options)
        judge._aclose = teacher.aclose
        return judge

    def prompt(self, item: Item, response_text: str) -> str:
        """The rubric prompt the judge model reads for this rollout."""
        return render_rubric(self.template, item, response_text)

    def key(self, item: Item, response_text: str) -> str:
        # the scene is part of the key: two synthvid sets can share a question and reference, not a scene
        return content_key(self.name, self.template, item.prompt, reference_text(item), describe_scene(item.meta),
                           response_text)

    # ------------------------------------------------------------------------- async
    async def ajudge(self, item: Item, response_text: str) -> Verdict:
        """The verdict on one rollout: cached, asked, or `Verdict.failed` (logged) when the judge cannot say."""
        key = self.key(item, response_text)
        if key in self._verdicts:
            self.stats["cached"] += 1
            return _copy(self._verdicts[key])
        try:
            verdict = await self._ask_verdict(self.prompt(item, response_text))
        except MalformedVerdict as e:
            reason = f"malformed verdict after {self.retries + 1} tries: {e}"
        except JudgeCallFailed as e:
            reason = f"judge call failed: {type(e.__cause__).__name__}: {e.__cause__}"
        else:
            self._verdicts[key] = verdict
            self._cache.append({"key": key, "item_id": item.item_id, "scores": verdict.scores,
                                "feedback": verdict.feedback})
            return _copy(verdict)
        reason = " ".join(reason.split())  # one log line, one feedback line
        self.stats["fallbacks"] += 1
        log.warning("%s judge: item %s: %s; this rollout gets reward-only credit", self.name, item.item_id, reason)
        return Verdict.failed(reason)

    async def _ask_verdict(self, prompt: str) -> Verdict:
        asked = prompt
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self.stats["calls"] += 1
            try:
                reply = await self.ask(asked)
            except RmsdError:
                raise  # a user mistake (a misconfigured backend): falling back would hide it on every rollout
            except Exception as e:  # only this rollout falls back; a bug of the judge itself keeps its traceback
                raise JudgeCallFailed() from e
            try:
                return parse_verdict(reply)
            except MalformedVerdict as e:
                error = e
                asked = prompt + "\n\n" + reminder(str(e))
        raise error

    async def ajudge_many(self, items: Sequence[Item], responses: Sequence[str]) -> list[Verdict]:
        """`ajudge` over pairs, `concurrency` at a time; identical rollouts of an item are judged once."""
        if len(items) != len(responses):
            raise ValueError(f"{len(items)} items but {len(responses)} responses")
        gate = asyncio.Semaphore(self.concurrency)
        pairs = list(zip(items, responses, strict=True))
        unique = {self.key(item, text): (item, text) for item, text in pairs}

        async def one(item: Item, text: str) -> Verdict:
            async with gate:
                return await self.ajudge(item, text)

        done = dict(zip(unique, await asyncio.gather(*(one(*p) for p in unique.values())), strict=True))
        return [_copy(done[self.key(item, text)]) for item, text in pairs]

    # ------------------------------------------------------------------------- sync
    def judge(self, item: Item, response_text: str) -> Verdict:
        return self.judge_many([item], [response_text])[0]

    def judge_many(self, items: Sequence[Item], responses: Sequence[str]) -> list[Verdict]:
        """All pairs concurrently, from synchronous code (the trainers), on the judge's own event loop."""
        return self._loop.run(self.ajudge_many(items, responses))

    def __enter__(self) -> LLMJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the teacher built by `from_pool` (its HTTP clients live on the judge's loop)."""
        if self._aclose is not None:
            self._loop.run(self._aclose())
            self._aclose = None
        self._loop.close()


def _copy(verdict: Verdict) -> Verdict:
    # verdicts are mutable dataclasses: a caller editing one must not edit the cached original
    return dataclasses.replace(verdict, scores=dict(verdict.scores))
