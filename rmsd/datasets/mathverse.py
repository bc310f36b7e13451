"""MathVerse: math problems on diagrams in several problem versions (text dominant, vision
only, …), multiple-choice and free-form. An image benchmark: `Item.image` is set, not `video`.

Rows keep the public schema (`testmini.json` of the release, or the hub's parquet):
`sample_index, problem_index, problem_version, question, image, answer, question_type
(multi-choice | free-form), metadata, query_wo, query_cot, question_for_eval`. `image` is a
path relative to the dataset folder, an empty string (text-only versions), or, in parquet,
the image bytes, which are written once to `.rmsd_images/` beside the data (or video_root).
The prompt is `query_wo`, as lmms-eval's default ("format-prompt", query without CoT).

Scoring, as the harness does it: an LLM judge first extracts the answer from the response,
then judges it against the standard answer (0/1), with MathVerse's two few-shot prompts.
`MathVerseJudge` takes any async `ask(prompt) -> str` (a teacher backend), caches verdicts
in a JSONL file keyed by hash(question, response, answer), and runs a batch concurrently
through `prefetch`. Without a judge, an offline rule-based fallback scores instead (choice
letters, numbers at the standard answer's precision, simple fractions, normalised strings);
its aggregate carries `"judge": "rule-fallback"` so such numbers are never taken for judged ones.

    rmsd eval --recipe recipes/mathverse/qwen2_5_vl_3b_rmsd.yaml --model runs/.../student
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmsd import scoring as ex
from rmsd.cache import JsonlCache, PrivateLoop, content_key
from rmsd.datasets.benchmark import Benchmark, find_media, missing_media_error, read_rows, require_fields
from rmsd.errors import RmsdError
from rmsd.items import OPTION_LETTERS, Item

FIELDS = ("sample_index", "problem_index", "problem_version", "question", "image", "answer", "question_type",
          "metadata", "query_wo", "query_cot", "question_for_eval")
FALLBACK = "rule-fallback"

# MathVerse's evaluation prompts, as lmms-eval sends them (the extraction demo is stripped and
# followed by the response; the scoring demo is stripped, then .format()ted, so {{ }} are braces).
EXTRACT_DEMO = """
I am providing you a response from a model to a math problem, termed 'Model Response'. You should extract the answer from the response as 'Extracted Answer'. Directly output the extracted answer with no explanation.

1.
Model response: 'Rounded to two decimal places, the perimeter of the sector is approximately:\n\n(-2, 1)'
Extracted Answer: (-2, 1)

2.
Model response: 'at those points.\n\nTherefore, the correct option that represents the meaning of the intersection points of the graphs is:\n\nD. They give the solutions to the equation $f(t)=g(t)$.",'
Extracted Answer: D

3.
Model response: ' at 1 (there's a closed circle at y = 1), the range in interval notation is \\((-4, 1]\\).\n\nFinal values:\nDomain: \\((-3, 3]\\)\nRange: \\((-4, 1]\\)'
Extracted Answer: Domain: \\((-3, 3]\\)\nRange: \\((-4, 1]\\)

4.
Model response: 'As it stands, I cannot provide the correct option letter because there isn't enough information to solve for 'y'.'
Extracted Answer: null

5.
Model response: 'Given that AB = 17.6 meters, we can now substitute into the equation:\n\nd = 17.6 / cos(38\u00b0)\n\nTherefore, to one decimal place, the distance d between Ned and Bart is approximately 22.3 meters.'
Extracted answer: 22.3

6.
Model response:  have all the coefficients for the quadratic function:\n\\( f(x) = ax^2 + bx + c \\)\n\\( f(x) = -1x^2 - 2x + 1 \\)\n\nTherefore, the equation for the graphed function \\( f \\) is:\n\\( f(x) = -x^2 - 2x + 1 \\)"'
Extracted answer: f(x) = -x^2 - 2x + 1

7.
"""  # noqa: E501

SCORE_DEMO = """
Below are two answers to a math question. Question is [Question], [Standard Answer] is the standard answer to the question, and [Model_answer] is the answer extracted from a model's output to this question.  Determine whether these two answers are consistent.
Please note that only when the [Model_answer] completely matches the [Standard Answer] means they are consistent. For non-multiple-choice questions, if the meaning is expressed in the same way, it is also considered consistent, for example, 0.5m and 50cm.
If they are consistent, Judement is 1; if they are different, Judement is 0.

[Question]: Write the set of numbers represented on the number line in interval notation.
[Standard Answer]: (-2,1]
[Model_answer] : Extracted Answer: \\((-2, 1)\\)
Judgement: 0

[Question]: As shown in the figure, circle O has a radius 1.0, if angle BAC = 60.0, then the length of BC is ()\nChoices:\nA:2\nB:2\u221a{{3}}\nC:\u221a{{3}}\nD:2\u221a{{2}}
[Standard Answer]: C
[Model_answer] : B:2\u221a{{3}}
Judgement: 0

[Question]: Find the domain and range of the function f using interval notation.
[Standard Answer]: domain: [-4, 0) and range: (-3, 1]
[Model_answer] : Range: \\((-4, 1]\\)
Judgement: 0

[Question]: As shown in the figure, circle O has a radius 1.0, if angle BAC = 60.0, then the length of BC is ()\nChoices:\nA:2\nB:2\u221a{{3}}\nC:\u221a{{3}}\nD:2\u221a{{2}}
[Standard Answer]: C
[Model_answer] : null
Judgement: 0

[Question]: Given the graph of the ellipse that intersects with x-axis at 9 and -9 and with y-axis at 3 and -3, determine its equation.A. \\frac{{x^2}}{{81}} + \\frac{{y^2}}{{9}} = 1 B. Can not determine.\n
[Standard Answer]: A
[Model_answer] : \\frac{{x^2}}{{81}} + \\frac{{y^2}}{{9}} = 1
Judgement: 1

[Question]: {question}
[Standard Answer]: {gt}
[Model_answer] : {extraction}
Judgement: """  # noqa: E501


def extract_prompt(response: str) -> str:
    return f"{EXTRACT_DEMO.strip()}\n\nModel response: '{response}'\nExtracted Answer: "


def score_prompt(question: str, answer: str, extraction: str) -> str:
    return SCORE_DEMO.strip().format(question=question, gt=answer, extraction=extraction)


# ----------------------------------------------------------------------------- LLM judge
@dataclass
class JudgeVerdict:
    extraction: str
    correct: bool
    judge: str
    cached: bool = False


class MathVerseJudge:
    """MathVerse's two-step LLM judge (extract, then match) over any async `ask(prompt) -> str`.

    cache_path: JSONL of verdicts, appended as they come, keyed by hash(question, response,
        answer) (full verdicts) and hash(question, extraction, answer) (match step); a second
        run with the same cache asks nothing again. Records of a judge with another `name` are
        ignored, so name the judge after its model.
    quick_match: skip the match call and compare the extraction to the answer exactly (the
        harness's `quick_match` option).
    max_retries: times the match prompt is asked at most, while the reply is not "0"/"1" (the
        harness retries without end); after that the verdict is 0 and `unparsed` counts it.
    concurrency: judge calls in flight at once in `judge_many`.
    """

    def __init__(self, ask: Callable[[str], Awaitable[str]], cache_path: str | Path | None = None,
                 name: str = "llm-judge", quick_match: bool = False, max_retries: int = 3, concurrency: int = 8):
        if max_retries < 1 or concurrency < 1:
            raise RmsdError("MathVerseJudge: max_retries and concurrency must be at least 1")
        self.ask, self.name, self.quick_match = ask, name, quick_match
        self.max_retries, self.concurrency = max_retries, concurrency
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.unparsed = 0
        self._verdicts: dict[str, dict[str, Any]] = {}
        self._matches: dict[str, bool] = {}
        self._cache = JsonlCache(self.cache_path, name)
        self._loop = PrivateLoop("MathVerseJudge")
        self._load()

    def _load(self) -> None:
        for _, rec in self._cache.records():
            if rec.get("key"):
                self._verdicts[rec["key"]] = rec
            if rec.get("match_key"):
                self._matches[rec["match_key"]] = bool(rec["correct"])

    def _write(self, rec: dict[str, Any]) -> None:
        if rec.get("key"):
            self._verdicts[rec["key"]] = rec
        self._matches[rec["match_key"]] = rec["correct"]
        self._cache.append(rec)

    async def extract(self, response: str) -> str:
        """Step 1: the answer the judge reads out of `response` ("" for an empty response)."""
        return (await self.ask(extract_prompt(response))).strip() if response else ""

    async def _decide(self, question: str, extraction: str, answer: str) -> bool:
        if self.quick_match:
            return extraction == answer
        for _ in range(self.max_retries):
            reply = (await self.ask(score_prompt(question, answer, extraction))).replace("Judgement:", "").strip()
            if reply in ("0", "1"):
                return reply == "1"
        self.unparsed += 1
        return False

    async def match(self, question: str, extraction: str, answer: str) -> bool:
        """Step 2: does the extraction match the standard answer (cached)?"""
        mkey = content_key(question, extraction, answer)
        if mkey not in self._matches:
            correct = await self._decide(question, extraction, answer)
            self._write({"key": None, "match_key": mkey, "extraction": extraction, "correct": correct,
                         "judge": self.name})
        return self._matches[mkey]

    async def judge(self, question: str, response: str, answer: str) -> JudgeVerdict:
        """Both steps for one response, from the cache when this triple was judged before."""
        key = content_key(question, response, answer)
        if key in self._verdicts:
            rec = self._verdicts[key]
            return JudgeVerdict(rec["extraction"], bool(rec["correct"]), rec.get("judge", self.name), cached=True)
        extraction = await self.extract(response)
        mkey = content_key(question, extraction, answer)
        correct = self._matches[mkey] if mkey in self._matches else await self._decide(question, extraction, answer)
        self._write({"key": key, "match_key": mkey, "extraction": extraction, "correct": correct, "judge": self.name})
        return JudgeVerdict(extraction, correct, self.name)

    async def judge_many(self, triples: list[tuple[str, str, str]]) -> list[JudgeVerdict]:
        """`judge` over (question, response, answer) triples, `concurrency` at a time; repeated
        triples are judged once."""
        gate = asyncio.Semaphore(self.concurrency)
        unique = {content_key(*t): t for t in triples}

        async def one(triple: tuple[str, str, str]) -> JudgeVerdict:
            async with gate:
                return await self.judge(*triple)

        done = dict(zip(unique, await asyncio.gather(*(one(t) for t in unique.values())), strict=True))
        return [done[content_key(*t)] for t in triples]

    def run(self, coro: Awaitable[Any]) -> Any:
        """Run a judge coroutine from synchronous code, on one private event loop kept for the
        judge's lifetime (an async client bound to its first loop keeps working)."""
        return self._loop.run(coro)


# ----------------------------------------------------------------------------- rule fallback
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_ANSWER_IS = re.compile(r"(?i:(?:final\s+)?answer\s*(?:is|:|：)\s*)|答案\s*(?:是|为|：|:)\s*")


def free_form_answer(region: str | None, tagged: bool, strict: bool) -> str | None:
    """The answer of a free-form response: the last \\boxed{…}, else the rest of the line after
    the last "answer is"/"Answer:", else (tagged answers) the whole tag content, else (harness
    only) the last non-empty line."""
    if not region:
        return None
    boxed = _BOXED.findall(region)
    if boxed:
        return boxed[-1].strip() or None
    marks = list(_ANSWER_IS.finditer(region))
    if marks:
        tail = region[marks[-1].end():].split("\n")[0].strip().rstrip(".。").strip("$ ").strip()
        if tail:
            return tail
    if tagged:
        return region.strip()
    if strict:
        return None
    return region.strip().splitlines()[-1].strip() or None


def math_value(text: str | None) -> float | None:
    """A number written plainly, as a fraction (a/b, \\frac{a}{b}), with a degree/percent sign,
    a trailing unit or an "x =" in front; None for anything else."""
    if not text:
        return None
    t = text.strip().strip("$").replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    t = t.split("=")[-1].replace(" ", "").replace(",", "")
    t = re.sub(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}", r"\1/\2", t)
    t = re.sub(r"(?:\^\{?\\circ\}?|°|\\%|%|[A-Za-z]+(?:\^?\d)?)$", "", t).rstrip(".")
    m = re.fullmatch(r"\(?(-?\d*\.?\d+)\)?(?:/\(?(-?\d*\.?\d+)\)?)?", t)
    if not m:
        return None
    value = float(m.group(1))
    if m.group(2) is not None:
        if float(m.group(2)) == 0:
            return None
        value /= float(m.group(2))
    return value


def _normal(text: str) -> str:
    t = text.lower().replace("\\left", "").replace("\\right", "").replace("\\(", "").replace("\\)", "")
    return re.sub(r"[\s$]", "", t).rstrip(".")


def rule_correct(pred: str | None, item: Item) -> bool:
    """Offline match: option letters; numbers equal at the precision the standard answer is
    written to ("22.3" accepts 22.31 and 22.30, not 22.4; "0.33" accepts 1/3), else within 0.1 %;
    else equal normalised strings."""
    if pred is None or item.answer is None:
        return False
    if item.task_type == "mcq":
        return pred.strip().upper() == item.answer.strip().upper()
    a, b = math_value(pred), math_value(item.answer)
    if a is None or b is None:
        return _normal(pred) == _normal(item.answer)
    plain = re.fullmatch(r"-?\d+\.(\d+)", item.answer.strip())
    if plain:
        return abs(round(a, len(plain.group(1))) - b) < 10 ** -(len(plain.group(1)) + 3)
    return ex.numbers_match(a, b, rel_tol=1e-3)


# ----------------------------------------------------------------------------- benchmark
def parse_choices(question: str) -> list[str]:
    """Option texts from the "Choices:\\nA:…\\nB:…" block MathVerse writes into multi-choice questions."""
    block = re.split(r"Choices?\s*[:：]", question, maxsplit=1)
    found = re.findall(r"^\s*([A-H])\s*[:.：)]\s*(.*?)\s*$", block[1], re.M) if len(block) == 2 else []
    letters = [x for x, _ in found]
    return [text for _, text in found] if letters == list(OPTION_LETTERS[: len(letters)]) else []


class MathVerse(Benchmark):
    """MathVerse with an optional LLM judge (`judge`), else the rule fallback."""

    name = "mathverse"
    default_split = "testmini"
    breakdown_keys = ("problem_version", "question_type", "subfield")
    breakdown_order = {"problem_version": ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant",
                                           "Vision Only", "Text Only")}

    media = "image"
    llm_judge = True

    def __init__(self, judge: MathVerseJudge | None = None):
        super().__init__()
        self.judge = judge

    def with_judge(self, ask: Any, cache_path: Path, name: str) -> MathVerse:
        """MathVerse's two-step LLM judge (extract, then match) asking `ask`, verdicts cached at `cache_path`."""
        return MathVerse(judge=MathVerseJudge(ask, cache_path=cache_path, name=name))

    @property
    def judge_name(self) -> str:
        return self.judge.name if self.judge is not None else FALLBACK

    def load_items(self, path: str | Path, split: str | None = None, video_root: str | Path | None = None,
                   limit: int | None = None, config: str | None = None, on_bad_row: str = "error") -> list[Item]:
        """Items of `split` (default "testmini"); relative image paths resolve under `video_root`
        or the dataset folder; embedded image bytes are written under `.rmsd_images/` there."""
        rows, data_dir = read_rows(path, split or self.default_split, config, self.name)
        require_fields(rows, FIELDS, self.name, path)
        rows = rows[:limit] if limit is not None else rows
        root = Path(video_root) if video_root is not None else data_dir
        image_dir = (root if root is not None else Path.home() / ".cache" / "rmsd" / "mathverse") / ".rmsd_images"
        items, missing = [], []
        for row in rows:
            image, ref = self._image(row, root, image_dir)
            if ref is not None and image is None:
                missing.append(ref)
            items.append(self._item(row, image))
        if missing:
            raise missing_media_error(self.name, missing, [root])
        return items

    @staticmethod
    def _image(row: dict, root: Path | None, image_dir: Path) -> tuple[Path | None, str | None]:
        """(image file, its reference) — (None, None) for a text-only row."""
        img = row["image"]
        if isinstance(img, dict) and img.get("bytes"):
            suffix = Path(img.get("path") or "x.png").suffix or ".png"
            target = image_dir / f"{row['sample_index']}{suffix}"
            if not target.is_file() or target.stat().st_size != len(img["bytes"]):
                image_dir.mkdir(parents=True, exist_ok=True)
                target.write_bytes(img["bytes"])
            return target.resolve(), str(target)
        if hasattr(img, "save"):  # a PIL image from datasets.load_dataset
            target = image_dir / f"{row['sample_index']}.png"
            if not target.is_file():
                image_dir.mkdir(parents=True, exist_ok=True)
                img.save(target)
            return target.resolve(), str(target)
        ref = img.get("path") if isinstance(img, dict) else img
        if not ref or not str(ref).strip():
            return None, None
        return find_media([root], [str(ref)]), str(ref)

    def _item(self, row: dict, image: Path | None) -> Item:
        answer = None if row["answer"] is None else str(row["answer"]).strip()
        mcq = row["question_type"] == "multi-choice"
        task = "mcq" if mcq else "numeric" if answer is not None and math_value(answer) is not None and re.fullmatch(
            r"-?\d+(?:\.\d+)?", answer) else "open"
        metadata = row["metadata"] if isinstance(row["metadata"], dict) else {}
        meta = {k: v for k, v in row.items() if k != "image"}
        meta.update(image=str(image) if image else "", subfield=metadata.get("subfield") or "unknown")
        return Item(item_id=str(row["sample_index"]), benchmark=self.name, task_type=task, question=row["question"],
                    prompt=str(row["query_wo"]).strip(), options=parse_choices(row["question"]) if mcq else [],
                    answer=answer, image=str(image) if image else None, meta=meta)

    # ------------------------------------------------------------------------- scoring
    def extract(self, text: str | None, item: Item, mode: str = "harness") -> str | None:
        """harness: the judge's extraction (or the rule reading without a judge); strict: rules only."""
        self.check_mode(mode)
        letters = item.letters or "ABCD"
        if mode == "harness" and self.judge is not None:
            verdict = self.judge.run(self.judge.judge(item.meta["question_for_eval"], ex.strip_reasoning(text or ""),
                                                      item.answer or ""))
            return verdict.extraction or None
        if item.task_type == "mcq":
            if mode == "strict":
                return ex.letter_strict(text, letters)
            return ex.letter_harness(ex.harness_region(text), letters)
        tagged = "<answer>" in (text or "")
        region = ex.answer_region(text) if mode == "strict" else ex.harness_region(text)
        answer = free_form_answer(region, tagged, strict=mode == "strict")
        if mode == "strict" and item.task_type == "numeric" and math_value(answer) is not None:
            return ex.format_number(math_value(answer))  # canonical, so teachers' answers vote by value
        return answer

    def score(self, pred: str | None, item: Item, mode: str | None = None) -> float:
        if pred is None or item.answer is None:
            return 0.0
        if self.judge is not None:
            return float(self.judge.run(self.judge.match(item.meta["question_for_eval"], pred, item.answer)))
        return float(rule_correct(pred, item))

    def prefetch(self, items: list[Item], texts: list[str], mode: str = "harness") -> None:
        """Judge a whole batch concurrently (fills the cache `extract` and `score` then read)."""
        if self.judge is None or mode != "harness":
            return
        triples = [(it.meta["question_for_eval"], ex.strip_reasoning(t or ""), it.answer or "")
                   for it, t in zip(items, texts, strict=True) if it.answer is not None]
        self.judge.run(self.judge.judge_many(triples))

    def breakdowns(self, item: Item) -> dict[str, str]:
        return {"problem_version": str(item.meta["problem_version"]), "question_type": str(item.meta["question_type"]),
                "subfield": str(item.meta["subfield"])}

    def aggregate(self, per_item: list[dict[str, Any]]) -> dict[str, Any]:
        return {**super().aggregate(per_item), "judge": self.judge_name}
