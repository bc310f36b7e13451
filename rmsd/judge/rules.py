"""Rule-based VISD judge for synthvid: checks a rollout against the item's known scene.

Reads `<think>reasoning</think><answer>X</answer>` and scores three dimensions:
- answer_correctness: option letter equality (mcq), number equality (numeric), temporal IoU
  with the reference span (grounding); for open descriptions, the share of scene objects
  described times the share of their cited facts that are right. An item without a scene is
  scored by its own benchmark (below).
- logical_consistency: the conclusion the reasoning states ("so the answer is (C)", else
  the only option/number/span it names) must equal the answer, and the reasoning must not
  reach two different conclusions; for descriptions, colours and motions named in the
  reasoning must agree with those in the answer.
- spatiotemporal_grounding: every checkable fact the reasoning cites — objects (colour,
  shape), motions, "appears at 1.0 s", "until 3.5 s", "from 1.0 s to 3.5 s", "at 2 s",
  "appears first", "I count 3 objects" — is compared with the scene (`Item.meta`, schema in
  ARCHITECTURE.md "synthvid scene"); score = right / checked.
A dimension with nothing to check scores `neutral` (0.5 by default): 1.0 would pay a
rollout for citing nothing (the cheapest way never to be wrong), 0.0 would punish a short
correct answer. The feedback names each error and quotes where it is.

How it differs from an LLM judge: exact and free, but it only understands the phrasing
synthvid answers use (English, seconds, the palette's colours); unparsed text is simply not
checked. The final answer is read by `rmsd.scoring` (strict mode); an item without a synthvid
scene (a corpus, a benchmark) is scored by its own benchmark in strict mode, so the judge scores
answers exactly as `rmsd match` scores teacher samples and the RL correctness reward scores
rollouts (Video-R1's items by Video-R1's reward); the reasoning's claims are read by this
module's own small regexes.

    rmsd distill --recipe recipes/synthvid/tiny_visd.yaml --matched runs/synthvid-tiny-visd/matched
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rmsd.items import OPTION_LETTERS, Item
from rmsd.judge.verdict import Judge, Verdict
from rmsd.scoring import letter_strict, number_strict, parse_span, span_strict, temporal_iou
from rmsd.synthvid.generator import PALETTE, SHAPES, max_visible, object_name

COLOURS = (*PALETTE, "orange", "purple", "pink", "white", "black", "brown", "grey", "gray")
SHAPE_WORDS = (*SHAPES, "rectangle", "star", "diamond", "hexagon", "oval", "ball", "dot")
WORDS = {w: i for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                     "ten"))}
NUM = r"(\d+(?:\.\d+)?)"
UNIT = r"\s*(?:s|secs?|seconds?)\b"
COUNT = r"(\d+|" + "|".join(WORDS) + r")"
MENTION = re.compile(r"\b(" + "|".join(COLOURS) + r")\b(?:\s+(" + "|".join(SHAPE_WORDS) + r")s?\b)?", re.I)
MOVE = re.compile(r"\b(?:mov(?:es|ed|ing|e)|goes|going|travel(?:s|l?ing)?|drifts?|slides?|heads?|heading)\s+"
                  r"(?:to(?:wards?)?\s+the\s+|towards?\s+)?(left|right|up|down)(?:wards?)?\b", re.I)
STILL = re.compile(r"\b(?:stays? still|stays? in place|does(?:n't| not) move|remains? (?:still|static|stationary)"
                   r"|is (?:static|stationary)|not moving|motionless)\b", re.I)
TIME_PATTERNS = (  # (kind, regex), most specific first: a text range used by one is not reused by the next
    ("span", re.compile(rf"\bfrom\s+{NUM}(?:{UNIT})?\s+(?:to|until|till)\s+{NUM}(?:{UNIT})?", re.I)),
    ("span", re.compile(rf"\bbetween\s+{NUM}(?:{UNIT})?\s+and\s+{NUM}(?:{UNIT})?", re.I)),
    ("span", re.compile(rf"\[\s*{NUM}\s*,\s*{NUM}\s*\]", re.I)),
    ("appear", re.compile(rf"\b(?:appears?|appeared|shows? up|enters|emerges)(?:\s+(?:first|last))?,?"
                          rf"\s+at\s+{NUM}{UNIT}", re.I)),
    ("disappear", re.compile(rf"\b(?:disappears?|disappeared|vanish(?:es|ed)?|leaves|exits|is gone|until|till)"
                             rf"\s+(?:at\s+)?{NUM}{UNIT}", re.I)),
    ("visible", re.compile(rf"\bat\s+{NUM}{UNIT}", re.I)),
)
FACT_PATTERNS = (  # (kind, regex) that may overlap a time ("appears first, at 0.5 s")
    ("order", re.compile(r"\bappears?\s+(first|last)\b", re.I)),
    ("count", re.compile(rf"\b(?:i count|there (?:are|were|is))\s+{COUNT}\b", re.I)),
    ("max_visible", re.compile(rf"\bat most\s+{COUNT}\s+objects?\b", re.I)),
)
FROM_TO = TIME_PATTERNS[0][1]
ANSWER_CUE = r"\b(?:answer|option|choice)\s+(?:is|would be|should be|must be|=|:)"
CONCLUSION_CUE = r"(?i:" + ANSWER_CUE + r"|\b(?:so|therefore|thus|hence),?)\s*"


class Unverifiable(Exception):
    """A claim the scene cannot confirm or refute (no object it could be about)."""


@dataclass
class Parsed:
    """A response split into its reasoning and its answer; `problems` lists format faults."""

    reasoning: str
    answer: str | None
    problems: list[str] = field(default_factory=list)


@dataclass
class Claim:
    """One checkable statement: kind, the quoted text, its value, the object (colour, shape) it is about."""

    kind: str
    quote: str
    value: Any = None
    colour: str | None = None
    shape: str | None = None


def parse_response(text: str) -> Parsed:
    """Split `<think>…</think><answer>…</answer>`; a missing or unclosed tag is a format problem."""
    think = re.search(r"<think>(.*?)</think>", text, re.DOTALL)
    answer = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    problems = []
    if think is None:
        problems.append("missing <think>…</think> around the reasoning")
    if answer is None:
        problems.append("missing <answer>…</answer>: the final answer cannot be read")
    if think is not None:
        reasoning = think.group(1)
    else:  # judge whatever reasoning there is: the text without the answer block and stray tags
        reasoning = re.sub(r"</?(?:think|answer)>", " ", text if answer is None else text.replace(answer.group(0), " "))
    return Parsed(reasoning.strip(), answer.group(1).strip() if answer else None, problems)


# ----------------------------------------------------------------------------- answer readers
def read_answer(item: Item, text: str) -> Any:
    """The answer `text` commits to, read as `rmsd match` reads it (strict mode): an option
    letter (mcq), a float (numeric), a (start, end) span (grounding); None when unreadable."""
    if item.task_type == "mcq":
        return letter_strict(text, item.letters or "ABCD")
    if item.task_type == "numeric":
        value = number_strict(text)
        return None if value is None else float(value)
    return parse_span(span_strict(text))


def _fmt_span(span: tuple[float, float]) -> str:
    return f"[{span[0]:.1f}, {span[1]:.1f}]"


def _option(item: Item, letter: str) -> str:
    """"(C) red" (or "(C)" when the letter has no option text)."""
    index = OPTION_LETTERS.index(letter) if letter in OPTION_LETTERS else len(item.options)
    return f"({letter}) {item.options[index]}" if index < len(item.options) else f"({letter})"


def _count(token: str) -> float:
    """A number the reasoning states: a word ("three") or digits, decimals included ("3.1")."""
    return float(WORDS[token]) if token in WORDS else float(token)


# ----------------------------------------------------------------------------- claims
def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?;])\s+|\n+", text) if s.strip()]


def _mentions(sentence: str) -> list[tuple[int, str, str | None]]:
    """(position, colour, shape) of each object named in the sentence, negated ones ("not blue") left out."""
    out = []
    for m in MENTION.finditer(sentence):
        if not re.search(r"\b(?:not|no|isn't)\s+(?:a\s+|an\s+|the\s+)?$", sentence[: m.start()], re.I):
            out.append((m.start(), m.group(1).lower(), m.group(2) and m.group(2).lower()))
    return out


def _time_claims(sentence: str) -> list[tuple[int, Claim]]:
    """Time, order and count claims of one sentence with their positions, each text range used once."""
    used: list[tuple[int, int]] = []
    out = []
    for kind, pattern in TIME_PATTERNS + FACT_PATTERNS:
        for m in pattern.finditer(sentence):
            if kind in dict(TIME_PATTERNS):
                if any(m.start() < b and a < m.end() for a, b in used):
                    continue
                used.append(m.span())
            groups = m.groups()
            value = (float(groups[0]), float(groups[1])) if kind == "span" else groups[0].lower()
            value = float(value) if kind in ("appear", "disappear", "visible") else value
            value = _count(value) if kind in ("count", "max_visible") else value
            out.append((m.start(), Claim(kind, m.group(0).strip(), value)))
    return out


def extract_claims(text: str) -> list[Claim]:
    """Every checkable statement of `text`, each tied to the object it is about.

    A statement belongs to the nearest object named before it in its sentence, else the
    first one named after it ("the object moving left is red"), else the last object of the
    previous sentences ("It moves left."), else none (the judge then uses the question's target).
    The final answer a sentence states ("… so the answer is [1.0, 3.5]") is left to the
    consistency check: the sentence is read only up to "answer is".
    """
    claims: list[Claim] = []
    seen: set[tuple[str, str | None]] = set()
    last: tuple[str, str | None] | None = None
    for sentence in _sentences(text):
        sentence = re.split(ANSWER_CUE, sentence, flags=re.I)[0]
        mentions = _mentions(sentence)
        for _, colour, shape in mentions:
            if (colour, shape) not in seen:
                seen.add((colour, shape))
                claims.append(Claim("object", f"the {colour}{' ' + shape if shape else ''}", None, colour, shape))
        found = [(m.start(), Claim("direction", m.group(0), m.group(1).lower())) for m in MOVE.finditer(sentence)]
        found += [(m.start(), Claim("direction", m.group(0), "none")) for m in STILL.finditer(sentence)]
        found += _time_claims(sentence)
        for pos, claim in sorted(found, key=lambda pc: pc[0]):
            before = [m for m in mentions if m[0] < pos]
            owner = before[-1] if before else (mentions[0] if mentions else None)
            claim.colour, claim.shape = (owner[1], owner[2]) if owner else (last or (None, None))
            claims.append(claim)
        if mentions:
            last = mentions[-1][1:]
    return claims


def _motion(direction: str) -> str:
    return "stays still" if direction == "none" else f"moves {direction}"


def check_claim(claim: Claim, meta: dict[str, Any], default: dict | None, tol: float, min_iou: float) -> str | None:
    """None when the claim matches the scene, else the error text.

    Raises Unverifiable when there is nothing to check it against: no object named and no
    default, or a motion/time of an object that is not in the scene (its "object" claim
    already counts that error once).
    """
    objects = meta["objects"]
    if claim.kind == "count":
        n = len(objects)
        return None if claim.value == n else f"'{claim.quote}': the video shows {n} object{'s' * (n != 1)}"
    if claim.kind == "max_visible":
        n = max_visible(meta)
        return None if claim.value == n else f"'{claim.quote}': at most {n} objects are visible at once"
    obj = next((o for o in objects if o["colour"] == claim.colour), None) if claim.colour else default
    if obj is None:
        if claim.colour is None or claim.kind != "object":
            raise Unverifiable(claim.quote)
        names = ", ".join(object_name(o) for o in objects)
        return f"'{claim.quote}': there is no {claim.colour} object (the video shows: {names})"
    name = object_name(obj)
    if claim.kind == "object":
        ok = claim.shape is None or claim.shape == obj["shape"]
        return None if ok else f"'{claim.quote}': the {obj['colour']} object is a {obj['shape']}"
    if claim.kind == "direction":
        return None if claim.value == obj["direction"] else f"'{claim.quote}': the {name} {_motion(obj['direction'])}"
    if claim.kind == "appear":
        ok = abs(claim.value - obj["appear_s"]) <= tol
        return None if ok else f"'{claim.quote}': the {name} appears at {obj['appear_s']:.1f} s"
    if claim.kind == "disappear":
        ok = abs(claim.value - obj["disappear_s"]) <= tol
        return None if ok else f"'{claim.quote}': the {name} disappears at {obj['disappear_s']:.1f} s"
    span = (obj["appear_s"], obj["disappear_s"])
    if claim.kind == "span":
        ok = temporal_iou(claim.value, span) >= min_iou
        return None if ok else f"'{claim.quote}': the {name} is visible from {span[0]:.1f} s to {span[1]:.1f} s"
    if claim.kind == "visible":
        ok = span[0] - tol <= claim.value < span[1] + tol
        return None if ok else f"'{claim.quote}': the {name} is only visible from {span[0]:.1f} s to {span[1]:.1f} s"
    pick = min if claim.value == "first" else max
    ordered = pick(objects, key=lambda o: o["appear_s"])
    ok = ordered["appear_s"] == obj["appear_s"]
    return None if ok else f"'{claim.quote}' ({name}): the {object_name(ordered)} appears {claim.value}"


# ----------------------------------------------------------------------------- the judge
def _line(dimension: str, status: str, detail: str) -> str:
    return f"{dimension}: {status} — {detail}"


def benchmark_correctness(item: Item, response_text: str) -> tuple[float, str]:
    """An item without a synthvid scene scored as its benchmark scores it in strict mode — the RL correctness
    reward's number and `rmsd match`'s reading, so a corpus with its authors' reward (Video-R1's) is judged by it."""
    from rmsd.datasets import get_benchmark

    benchmark = get_benchmark(item.benchmark)
    answer = benchmark.extract(response_text, item, mode="strict")
    score = float(benchmark.score(answer, item))
    return score, _line("answer_correctness", "right" if score >= 0.5 else "wrong",
                        f"answered {answer!r}, reference {item.answer!r}: {score:.2f} as {item.benchmark} scores it")


class RuleJudge(Judge):
    """The rule-based judge (module docstring) for items with ground truth, best with a synthvid scene.

    time_tolerance: seconds a cited time may be off (default 0.25: half of synthvid's 0.5 s
        time grid, so a time one grid step off counts as wrong; widen it for real videos).
    min_iou: temporal IoU at which a cited span counts as right.
    neutral: score of a dimension with nothing to check.
    """

    name = "rules"

    def __init__(self, time_tolerance: float = 0.25, min_iou: float = 0.5, neutral: float = 0.5):
        self.tol, self.min_iou, self.neutral = time_tolerance, min_iou, neutral

    def judge(self, item: Item, response_text: str) -> Verdict:
        if item.answer is None:
            return Verdict.failed(f"item {item.item_id} has no ground truth: the rule judge cannot judge it")
        parsed = parse_response(response_text)
        meta = item.meta if item.meta.get("objects") else None
        scores, lines = {}, [f"format: {p}" for p in parsed.problems]
        correct = self.correctness(item, parsed.answer, meta) if meta else benchmark_correctness(item, response_text)
        for dim, (score, line) in (("answer_correctness", correct),
                                   ("logical_consistency", self.consistency(item, parsed)),
                                   ("spatiotemporal_grounding", self.grounding(item, parsed.reasoning, meta))):
            scores[dim] = float(score)
            lines.append(line)
        return Verdict(scores=scores, feedback="\n".join(lines))

    # ------------------------------------------------------------------------- correctness
    def correctness(self, item: Item, answer: str | None, meta: dict | None) -> tuple[float, str]:
        dim = "answer_correctness"
        if answer is None:
            return 0.0, _line(dim, "wrong", "no <answer>…</answer> to score")
        ref = item.answer
        if item.task_type == "mcq":
            got = read_answer(item, answer)
            if got is None:
                return 0.0, _line(dim, "wrong", f"'{answer}' is not an option letter; reference ({ref})")
            ref = ref.strip().strip("()")
            if got == ref:
                return 1.0, _line(dim, "right", _option(item, got))
            return 0.0, _line(dim, "wrong", f"answered {_option(item, got)}, reference {_option(item, ref)}")
        if item.task_type == "numeric":
            got, want = read_answer(item, answer), float(ref)
            if got is not None and abs(got - want) <= 1e-6 * max(1.0, abs(want)):
                return 1.0, _line(dim, "right", f"{want:g}")
            return 0.0, _line(dim, "wrong", f"answered {answer!r}, reference {want:g}")
        if item.task_type == "grounding":
            got, want = read_answer(item, answer), parse_span(ref)
            if got is None or want is None:
                return 0.0, _line(dim, "wrong", f"'{answer}' is not a span [start, end]; reference {ref}")
            iou = temporal_iou(got, want)
            status = "right" if iou >= self.min_iou else "wrong"
            return iou, _line(dim, status, f"answered {_fmt_span(got)}, reference {_fmt_span(want)} (tIoU {iou:.2f})")
        return self._description(answer, meta, dim)

    def _description(self, answer: str, meta: dict, dim: str) -> tuple[float, str]:
        """Open items: share of scene objects described × share of the description's facts that are right."""
        named = {m[1] for s in _sentences(answer) for m in _mentions(s)}
        missing = [o for o in meta["objects"] if o["colour"] not in named]
        errors, checked = self._check(extract_claims(answer), meta, None)
        coverage = 1 - len(missing) / len(meta["objects"])
        score = coverage * ((checked - len(errors)) / checked if checked else 1.0)
        problems = errors + [f"the {object_name(o)} is not described" for o in missing]
        if not problems:
            return score, _line(dim, "right", f"all {len(meta['objects'])} objects described correctly")
        return score, _line(dim, "wrong" if score < 0.5 else "partly right", "; ".join(problems))

    def _check(self, claims: list[Claim], meta: dict, default: dict | None) -> tuple[list[str], int]:
        errors, checked = [], 0
        for claim in claims:
            try:
                error = check_claim(claim, meta, default, self.tol, self.min_iou)
            except Unverifiable:
                continue
            checked += 1
            if error:
                errors.append(error)
        return errors, checked

    # ------------------------------------------------------------------------- grounding
    def grounding(self, item: Item, reasoning: str, meta: dict | None) -> tuple[float, str]:
        dim = "spatiotemporal_grounding"
        if meta is None:
            return self.neutral, _line(dim, "unchecked", "the item has no scene to check citations against")
        objects = meta["objects"]
        target = next((o for o in objects if o["id"] == meta.get("target")), None)
        default = target if target is not None else (objects[0] if len(objects) == 1 else None)
        errors, checked = self._check(extract_claims(reasoning), meta, default)
        if not checked:
            return self.neutral, _line(dim, "unchecked", "the reasoning cites no time, object or motion")
        score = (checked - len(errors)) / checked
        if not errors:
            return score, _line(dim, "right", f"all {checked} cited facts match the video")
        status = "wrong" if score < 0.5 else "partly right"
        detail = f"{checked - len(errors)} of {checked} cited facts match; " + "; ".join(errors)
        return score, _line(dim, status, detail)

    # ------------------------------------------------------------------------- consistency
    def consistency(self, item: Item, parsed: Parsed) -> tuple[float, str]:
        dim = "logical_consistency"
        if parsed.answer is None:
            return 0.0, _line(dim, "wrong", "the reasoning leads to no stated <answer>")
        if item.task_type == "open":
            return self._description_consistency(parsed.reasoning, parsed.answer, dim)
        conclusions = self._conclusions(item, parsed.reasoning)
        shown = [self._show(item, c) for c in conclusions]
        if len(set(shown)) > 1:
            return 0.0, _line(dim, "wrong", f"the reasoning concludes both {shown[0]} and {shown[-1]}")
        if not conclusions:
            return self.neutral, _line(dim, "unchecked", "the reasoning states no conclusion to compare with")
        answer = read_answer(item, parsed.answer)
        if answer is not None and self._same(item, conclusions[0], answer):
            return 1.0, _line(dim, "right", f"the reasoning concludes {shown[0]}, as the answer does")
        return 0.0, _line(dim, "wrong", f"the reasoning concludes {shown[0]} but the answer says {parsed.answer}")

    def _show(self, item: Item, value: Any) -> str:
        if item.task_type == "mcq":
            return f"({value})"
        return f"{value:g}" if item.task_type == "numeric" else _fmt_span(value)

    def _same(self, item: Item, a: Any, b: Any) -> bool:
        if item.task_type == "grounding":
            return abs(a[0] - b[0]) <= self.tol and abs(a[1] - b[1]) <= self.tol
        return a == b

    def _conclusions(self, item: Item, reasoning: str) -> list[Any]:
        """Explicit conclusions ("so the answer is (C)"), else the only option/number/span the reasoning names."""
        value = {"mcq": r"\(?([A-Z])\)?(?=\s*(?:[.,;:!]|$))", "numeric": NUM,
                 "grounding": rf"\[\s*{NUM}\s*,\s*{NUM}\s*\]"}[item.task_type]
        found = [m.groups() for m in re.finditer(CONCLUSION_CUE + r"(?:the\s+)?" + value, reasoning)]
        if not found:
            if item.task_type == "mcq":
                found = [(m,) for m in dict.fromkeys(re.findall(r"\(([A-Z])\)", reasoning))]
                if not found:  # option texts named in the reasoning, when exactly one is
                    found = [(x,) for x, opt in zip(item.letters, item.options, strict=True)
                             if re.search(rf"\b{re.escape(opt.lower())}\b", reasoning.lower())]
            elif item.task_type == "numeric":
                found = [(m,) for m in dict.fromkeys(re.findall(rf"\b{COUNT}\s+objects?\b", reasoning.lower()))]
            else:  # "[1.0, 3.5]" or "from 1.0 s to 3.5 s"
                spans = re.findall(rf"\[\s*{NUM}\s*,\s*{NUM}\s*\]", reasoning) + FROM_TO.findall(reasoning)
                found = list(dict.fromkeys((float(a), float(b)) for a, b in spans))
            if len(found) != 1:
                return []
        if item.task_type == "mcq":
            return [g[0] for g in found if g[0] in OPTION_LETTERS[: max(len(item.options), 1)]]
        if item.task_type == "numeric":
            return [float(_count(g[0])) for g in found]
        return [(float(g[0]), float(g[1])) for g in found]

    def _description_consistency(self, reasoning: str, answer: str, dim: str) -> tuple[float, str]:
        """Open items: colours and motions named in the reasoning must match those of the answer."""
        said, answered = self._motions(reasoning), self._motions(answer)
        if not said:
            return self.neutral, _line(dim, "unchecked", "the reasoning names no object to compare with the answer")
        problems = [f"the reasoning describes a {c} object the answer does not mention" for c in said
                    if c not in answered]
        problems += [f"the answer describes a {c} object the reasoning never mentions"
                     for c in answered if c not in said]
        problems += [f"the reasoning says the {c} object {_motion(said[c])} but the answer says it "
                     f"{_motion(answered[c])}" for c in said
                     if said[c] and answered.get(c) and said[c] != answered[c]]
        if problems:
            return 0.0, _line(dim, "wrong", "; ".join(problems))
        return 1.0, _line(dim, "right", "the answer describes the objects as the reasoning does")

    @staticmethod
    def _motions(text: str) -> dict[str, str | None]:
        """colour -> its stated motion (None when none is stated), for each object the text names."""
        out: dict[str, str | None] = {}
        for claim in extract_claims(text):
            if claim.kind == "object":
                out.setdefault(claim.colour, None)
            elif claim.kind == "direction" and claim.colour:
                out[claim.colour] = out.get(claim.colour) or claim.value
        return out
