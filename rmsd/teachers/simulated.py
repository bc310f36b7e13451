"""A SIMULATED teacher: a scripted noisy oracle that reads the ground truth of synthvid items.

It is not a model. It looks at `item.answer` and the scene in `item.meta`, decides per
sample whether to be right (accuracy per task type, minus a penalty per difficulty tier),
and writes a `<think>…</think><answer>…</answer>` response whose reasoning cites the scene
("The red square appears at 1.0 s and moves left until 3.5 s."). Its mistakes are plausible
(another option, a count off by one, a shifted or shrunk span, a description with a wrong
colour or direction) and its reasoning argues for the answer it gives, except at
`inconsistency_rate`, where the reasoning argues for something else (material for the VISD
judge). Other knobs: a bias toward one option letter, a format error rate, verbosity.

Errors like a real teacher's (issue 14), both off by default: with `question_difficulty` /
`competence_spread` the chance of being right is a per-question competence (a latent
difficulty shared by all teachers plus the teacher's own deviation, on the logit scale),
so a teacher is reliably right on some questions and reliably wrong on others, with one
wrong answer per question; `weaknesses` (rmsd.teachers.perception) distort what it
perceives of the scene — two directions confused, crowded scenes miscounted, short-lived
objects missed, spans placed early, a preferred letter — on a fixed share of the
questions where that matters. Sample i is still right with probability equal to the
competence, drawn per sample, so repeated samples vary around it.

It exists to measure the distillation method under known teacher noise; results obtained
with it say nothing about real teachers, and it is labelled as a simulator in its class
name, docstring, `backend` and `is_simulator`. Every sample is a pure function of
(seed, name, item, sample_index) through hash-seeded `random.Random`s, so a resumed run
reproduces the same text; teachers sharing an `error_seed` make the same mistakes.

    rmsd sample --recipe recipes/synthvid/tiny_rmsd.yaml   # with teachers/synthvid_sim.yaml
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import re
from functools import lru_cache
from typing import Any

from rmsd.config.pools import SimulatedOptions, TeacherConfig
from rmsd.errors import RmsdError
from rmsd.items import OPTION_LETTERS, TASK_TYPES, Item
from rmsd.synthvid.generator import DIRECTIONS, PALETTE, SHAPES, TIME_STEP, describe_objects, format_span, object_name
from rmsd.teachers.perception import applies, believed_answer
from rmsd.teachers.teacher import GenParams, Media, Response, Teacher

TIERS = ("easy", "medium", "hard")
FORMAT_ERRORS = ("no_tags", "broken_tags", "unextractable")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_OPENERS = ("I go through the frames in order.", "Let me track each object over time.",
            "I watch how every object moves.")
_CONCLUDE = ("So the answer is {}.", "Therefore the answer is {}.", "The correct answer is {}.")


def _rng(*parts: Any) -> random.Random:
    """A private generator seeded by a hash of `parts` (never the global random state)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _span(text: str) -> tuple[float, float]:
    a, b = re.findall(r"-?\d+(?:\.\d+)?", text)[:2]
    return float(a), float(b)


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


class SimulatedTeacher(Teacher):
    """SIMULATOR: a scripted noisy oracle over synthvid ground truth (see the module docstring).

    accuracy: probability of a correct answer per task type ({"mcq": 0.8, ...}); a float
        applies to all four.
    difficulty_penalty: subtracted from accuracy per tier ({"hard": 0.2}), so hard items are
        harder for every simulated teacher.
    bias_letter, bias_strength: when wrong on an mcq, answer `bias_letter` with this
        probability (1.0: every mistake lands on it), else another wrong option at random.
    format_error_rate: share of responses with no tags, broken tags or an answer in a form
        no extractor reads.
    inconsistency_rate: share of responses whose reasoning argues for a different answer.
    verbosity: "short" (one fact + conclusion) or "long" (a timestamped timeline first).
    seed: style and format randomness; error_seed: mistakes (default: private per teacher).
    question_difficulty, competence_spread, difficulty_seed: the per-question competence
        (module docstring; rmsd.config.pools.SimulatedOptions documents each).
    weaknesses: systematic mistakes, dicts as rmsd.config.pools.SimulatedOptions.weaknesses dumps them.
    """

    backend = "simulated"
    is_simulator = True

    def __init__(self, name: str, accuracy: dict[str, float] | float, difficulty_penalty: dict[str, float] | None = None,
                 bias_letter: str | None = None, bias_strength: float = 0.0, format_error_rate: float = 0.0,
                 inconsistency_rate: float = 0.0, verbosity: str = "short", seed: int = 0,
                 error_seed: int | None = None, question_difficulty: float = 0.0, competence_spread: float = 0.0,
                 difficulty_seed: int = 0, weaknesses: list[dict[str, Any]] | None = None):
        super().__init__(name)
        self.accuracy = {t: float(accuracy) for t in TASK_TYPES} if isinstance(accuracy, int | float) else dict(accuracy)
        self.difficulty_penalty = dict(difficulty_penalty or {})
        self.bias_letter, self.bias_strength = bias_letter, float(bias_strength)
        self.format_error_rate, self.inconsistency_rate = float(format_error_rate), float(inconsistency_rate)
        self.verbosity, self.seed, self.error_seed = verbosity, seed, error_seed
        self.question_difficulty, self.competence_spread = float(question_difficulty), float(competence_spread)
        self.difficulty_seed = difficulty_seed
        self.weaknesses = _weaknesses(name, weaknesses or [])
        self._validate()

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> SimulatedTeacher:
        teacher = cls(cfg.name, **cfg.simulated.model_dump())
        teacher.media_needs = cls.needs_of(cfg)
        return teacher

    @classmethod
    def record_model(cls, cfg: TeacherConfig) -> str:
        return "simulated"

    @classmethod
    def needs_of(cls, cfg: TeacherConfig) -> frozenset[str]:
        return frozenset()  # a pool's simulator reads the ground truth, never the pixels

    def _validate(self) -> None:
        where = f"simulated teacher {self.name!r}"
        if set(self.accuracy) - set(TASK_TYPES):
            raise RmsdError(f"{where}: accuracy keys must be task types {TASK_TYPES}, got {sorted(self.accuracy)}")
        if set(self.difficulty_penalty) - set(TIERS):
            raise RmsdError(f"{where}: difficulty_penalty keys must be {TIERS}, got {sorted(self.difficulty_penalty)}")
        probs = {**{f"accuracy[{k}]": v for k, v in self.accuracy.items()},
                 **{f"difficulty_penalty[{k}]": v for k, v in self.difficulty_penalty.items()},
                 "bias_strength": self.bias_strength, "format_error_rate": self.format_error_rate,
                 "inconsistency_rate": self.inconsistency_rate}
        for key, value in probs.items():
            if not 0.0 <= value <= 1.0:
                raise RmsdError(f"{where}: {key} must be in [0, 1], got {value}")
        if self.bias_letter is not None and not re.fullmatch(r"[A-Z]", self.bias_letter):
            raise RmsdError(f"{where}: bias_letter must be one capital letter, got {self.bias_letter!r}")
        if self.verbosity not in ("short", "long"):
            raise RmsdError(f"{where}: verbosity must be 'short' or 'long', got {self.verbosity!r}")
        if not (0.0 <= self.question_difficulty <= 10.0 and 0.0 <= self.competence_spread <= 10.0):
            raise RmsdError(f"{where}: question_difficulty and competence_spread must be in [0, 10]")

    def __repr__(self) -> str:
        return f"SimulatedTeacher(name={self.name!r}, SIMULATOR reading ground truth, accuracy={self.accuracy})"

    async def generate(self, item: Item, media: Media, n: int, params: GenParams, start_index: int = 0) -> list[Response]:
        """n responses for sample indices start_index .. start_index+n-1 (media and params are ignored:
        the noise comes from this teacher's own knobs, not from the sampling temperature)."""
        return [self.respond(item, start_index + i) for i in range(n)]

    def respond(self, item: Item, sample_index: int) -> Response:
        text = self.sample_text(item, sample_index)
        return Response(text=text, finish_reason="stop", prompt_tokens=len(item.prompt.split()),
                        completion_tokens=len(text.split()))

    # ------------------------------------------------------------------------- decisions
    def p_correct(self, item: Item) -> float:
        """This teacher's mean probability of answering an item of this task type and tier correctly."""
        if item.task_type not in self.accuracy:
            raise RmsdError(f"simulated teacher {self.name!r} has no accuracy for task type {item.task_type!r}: "
                            f"add it under simulated.accuracy")
        penalty = self.difficulty_penalty.get(item.meta.get("difficulty"), 0.0)
        return min(max(self.accuracy[item.task_type] - penalty, 0.0), 1.0)

    @property
    def persistent(self) -> bool:
        """Per-question competence (and one wrong answer per question) rather than independent coin flips."""
        return self.question_difficulty > 0 or self.competence_spread > 0

    def competence(self, item: Item) -> float:
        """Probability that a sample of `item` is right (before weaknesses): p_correct without spreads, else
        sigmoid(b - question_difficulty * d + competence_spread * u) with b keeping the mean at p_correct."""
        p = self.p_correct(item)
        if not self.persistent or p in (0.0, 1.0):
            return p
        d = _rng("difficulty", self.difficulty_seed, item.benchmark, item.item_id).gauss(0.0, 1.0)
        u = _rng("competence", *self._identity(), item.benchmark, item.item_id).gauss(0.0, 1.0)
        z = _offset(p, math.hypot(self.question_difficulty, self.competence_spread))
        return _sigmoid(z - self.question_difficulty * d + self.competence_spread * u)

    def fired_weaknesses(self, item: Item) -> list[dict[str, Any]]:
        """The weaknesses that act on `item` (fixed per teacher identity and question, not per sample)."""
        fired = []
        for w in self.weaknesses:
            draw = _rng("weakness", *self._identity(), json.dumps(w, sort_keys=True), item.benchmark, item.item_id)
            if draw.random() < w["rate"] and applies(w, item):
                fired.append(w)
        return fired

    def sample_text(self, item: Item, sample_index: int) -> str:
        """The response text of sample `sample_index` (deterministic)."""
        if item.answer is None:
            raise RmsdError(f"simulated teacher {self.name!r} needs ground truth, item {item.item_id} has no answer")
        errors = self._error_rng(item, sample_index)
        style = _rng("style", self.seed, self.name, item.benchmark, item.item_id, sample_index)
        correct = errors.random() < self.competence(item)
        inconsistent = style.random() < self.inconsistency_rate
        scene = item.meta.get("objects")
        fired = self.fired_weaknesses(item) if scene and self.weaknesses else []
        belief, seen = believed_answer(item, fired) if fired else (item.answer, scene)
        # a wrong sample, or a belief the perceived scene could not form, gives the question's wrong answer
        mistakes = _rng("mistake", *self._identity(), item.benchmark, item.item_id) \
            if self.persistent or belief is None else errors
        if item.task_type == "open" and scene:
            claimed = seen if correct and belief is not None else _mutate(seen or scene, mistakes)
            answer = describe_objects(claimed, timed=item.meta.get("difficulty") == "hard")
            basis, basis_objects = answer, _mutate(claimed, style) if inconsistent else claimed
        else:
            answer = belief if correct and belief is not None else self._perturb(item, item.answer, mistakes, True)
            basis = self._perturb(item, answer, style, biased=False) if inconsistent else answer
            base = seen if basis == belief and seen else scene
            basis_objects = _claimed_objects(item, basis, base) if scene else None
        reasoning = self._reasoning(item, basis, basis_objects, style)
        return self._format(item, reasoning, answer, style)

    def _identity(self) -> tuple:
        """Whose mistakes these are: the shared error_seed, else this teacher's own seed and name."""
        return ("shared", self.error_seed) if self.error_seed is not None else (self.seed, self.name)

    def _error_rng(self, item: Item, sample_index: int) -> random.Random:
        if self.error_seed is not None:  # shared by every teacher with this error_seed: correlated mistakes
            return _rng("error", self.error_seed, item.benchmark, item.item_id, sample_index)
        return _rng("error", self.seed, self.name, item.benchmark, item.item_id, sample_index)

    def _perturb(self, item: Item, answer: str, rng: random.Random, biased: bool) -> str:
        """A plausible answer different from `answer`."""
        if item.task_type == "mcq":
            letters = item.letters or list("ABCD")
            others = [x for x in letters if x != answer] or letters
            if biased and self.bias_letter in others and rng.random() < self.bias_strength:
                return self.bias_letter
            return rng.choice(others)
        if item.task_type == "numeric":
            return _perturb_number(answer, rng, item.meta.get("question_kind"))
        if item.task_type == "grounding":
            return _perturb_span(answer, rng, float(item.meta.get("duration", 0.0)))
        return "I cannot tell what happens in the video."  # open item without a scene

    # ------------------------------------------------------------------------- text
    def _reasoning(self, item: Item, basis: str, objects: list[dict] | None, rng: random.Random) -> str:
        parts = []
        if self.verbosity == "long":
            parts.append(rng.choice(_OPENERS))
            if objects:
                parts.append(describe_objects(objects, timed=True))
        parts.append(_fact(item, basis, objects))
        if item.task_type != "open":
            shown = f"({basis})" if item.task_type == "mcq" else basis
            parts.append(rng.choice(_CONCLUDE).format(shown))
        return " ".join(parts)

    def _format(self, item: Item, reasoning: str, answer: str, rng: random.Random) -> str:
        shown = f"({answer})" if item.task_type == "mcq" else answer
        if rng.random() >= self.format_error_rate:
            return f"<think>{reasoning}</think><answer>{shown}</answer>"
        error = rng.choice(FORMAT_ERRORS)
        if error == "no_tags":
            return f"{reasoning} Final answer: {shown}"
        if error == "broken_tags":
            return rng.choice((f"<think>{reasoning}</think><answer>{shown}",
                               f"<think>{reasoning}<answer>{shown}</answer>"))
        return f"<think>{reasoning}</think><answer>{_unextractable(item, answer)}</answer>"


def _weaknesses(name: str, given: list[Any]) -> list[dict[str, Any]]:
    """Weaknesses validated and completed by rmsd.config (the one declaration of their fields and
    ranges), as dicts: a teacher built from a pool and one built by hand fire on the same questions."""
    try:
        parsed = SimulatedOptions(weaknesses=[w.model_dump() if hasattr(w, "model_dump") else dict(w) for w in given])
    except ValueError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:3])
        raise RmsdError(f"simulated teacher {name!r}: {detail}") from None
    return [w.model_dump() for w in parsed.weaknesses]


# ----------------------------------------------------------------------------- competence
def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


@lru_cache(maxsize=4096)
def _offset(p: float, spread: float) -> float:
    """b with E[sigmoid(b + spread * x)] = p for x ~ N(0, 1) (Gauss-Hermite quadrature, bisection)."""
    import numpy as np

    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    weights = weights / weights.sum()
    lo, hi = -40.0, 40.0
    for _ in range(80):
        mid = (lo + hi) / 2
        mean = float(np.sum(weights / (1.0 + np.exp(-(mid + spread * nodes)))))
        lo, hi = (mid, hi) if mean < p else (lo, mid)
    return (lo + hi) / 2


# ----------------------------------------------------------------------------- wrong answers
def _perturb_number(answer: str, rng: random.Random, kind: str | None) -> str:
    value = float(answer)
    if value != int(value):
        return f"{value * rng.choice((0.5, 1.5)):g}"
    floor = 1 if kind in ("count", "max_visible") else 0  # a scene has at least one object
    candidates = [int(value) + d for d in (-1, 1) if int(value) + d >= floor]
    return str(rng.choice(candidates))


def _perturb_span(answer: str, rng: random.Random, duration: float) -> str:
    """A shifted or shrunk span with tIoU < 0.5 against `answer` (wrong under the usual threshold)."""
    a, b = _span(answer)
    end = max(duration, b)
    length = b - a
    candidates = [(a + s, b + s) for s in (-2.0, -1.5, -1.0, 1.0, 1.5, 2.0)]
    candidates += [(a, a + 0.3 * length), (b - 0.3 * length, b), (a + 0.35 * length, b - 0.35 * length)]
    candidates = [(max(0.0, x), min(end, y)) for x, y in candidates]
    good = [c for c in candidates if c[1] - c[0] >= 0.2 and _iou(c, (a, b)) < 0.5]
    start, stop = rng.choice(good) if good else (max(0.0, a - length - 1.0), max(0.0, a - 0.5))
    return format_span(start, stop)


def _mutate(objects: list[dict], rng: random.Random) -> list[dict]:
    """The scene with one object's colour (to one absent from it) or direction changed."""
    out = copy.deepcopy(objects)
    obj = rng.choice(out)
    if rng.random() < 0.5:
        obj["colour"] = rng.choice([c for c in PALETTE if c not in {o["colour"] for o in out}])
    else:
        obj["direction"] = rng.choice([d for d in (*DIRECTIONS, "none") if d != obj["direction"]])
    return out


def _option(item: Item, letter: str) -> str:
    index = OPTION_LETTERS.index(letter)
    return item.options[index] if index < len(item.options) else letter


def _claimed_objects(item: Item, basis: str, perceived: list[dict]) -> list[dict]:
    """The scene as a teacher answering `basis` must have perceived it (starting from what it did perceive)."""
    objects = copy.deepcopy(perceived)
    kind, target_id = item.meta.get("question_kind"), item.meta.get("target")
    target = next((o for o in objects if o["id"] == target_id), None)
    if kind in ("colour", "direction") and target is not None:
        target[kind] = _option(item, basis)
    elif kind in ("order", "last") and target is not None:
        named = next((o for o in objects if object_name(o) == _option(item, basis)), None)
        if named is None:  # an object that is not in the video: the teacher saw the target as it
            target["colour"], target["shape"] = (_option(item, basis).split(" ", 1) + ["square"])[:2]
        else:
            named["appear_s"], target["appear_s"] = target["appear_s"], named["appear_s"]
    elif kind == "count":
        k = int(float(basis))
        objects = objects[:k] + [_hallucinated(objects or item.meta["objects"], i) for i in range(k - len(objects))]
    elif kind == "when" and target is not None:
        target["appear_s"], target["disappear_s"] = _span(basis)
    return objects


def _hallucinated(objects: list[dict], i: int) -> dict:
    colour = [c for c in PALETTE if c not in {o["colour"] for o in objects}][i % 2]
    return {"id": len(objects) + i, "colour": colour, "shape": SHAPES[i % len(SHAPES)], "size": objects[0]["size"],
            "appear_s": TIME_STEP * (i + 1), "disappear_s": TIME_STEP * (i + 4), "start": [0, 0], "end": [0, 0],
            "direction": "none"}


def _letter_follows(item: Item) -> bool:
    """synthvid v3 prompts write options as "- red (A)": a fact then names the value with its letter."""
    return bool(item.options) and f"- {item.options[0]} (A)" in item.prompt


def _fact(item: Item, basis: str, objects: list[dict] | None) -> str:
    """The one sentence of evidence behind `basis` (for mcq on v3 prompts, the value followed by its letter)."""
    kind = item.meta.get("question_kind")
    if not objects:
        return {"mcq": f"Option ({basis}) fits what I see.", "numeric": f"I estimate {basis}.",
                "grounding": f"It happens during {basis} seconds.", "open": "I summarise what happens."}[item.task_type]
    tag = f" ({basis})" if item.task_type == "mcq" and _letter_follows(item) else ""
    target = next((o for o in objects if o["id"] == item.meta.get("target")), None)
    names = ", ".join(f"the {object_name(o)}" for o in objects)
    if kind == "colour" and target is not None:
        if item.meta.get("difficulty") == "easy":
            return f"The object is {target['colour']}{tag}."
        return f"The object moving {target['direction']} is {target['colour']}{tag}."
    if kind == "direction" and target is not None:
        return f"The {target['colour']} object moves {target['direction']}{tag}."
    if kind in ("order", "last"):
        pick = min if kind == "order" else max
        first = pick(objects, key=lambda o: o["appear_s"])
        return (f"The {object_name(first)}{tag} appears {'first' if kind == 'order' else 'last'}, "
                f"at {first['appear_s']:.1f} s.")
    if kind == "count":
        return f"I count {len(objects)} object{'s' if len(objects) != 1 else ''}: {names}."
    if kind == "max_visible":
        return f"At most {basis} objects are on screen at the same time."
    if kind == "when" and target is not None:
        return (f"The {object_name(target)} is visible from {target['appear_s']:.1f} s "
                f"to {target['disappear_s']:.1f} s.")
    return f"I follow each object: {names}."


def _unextractable(item: Item, answer: str) -> str:
    """The answer in a form no extractor reads (option text, number words, a vague time)."""
    if item.task_type == "mcq":
        return _option(item, answer).lower()
    if item.task_type == "numeric":
        value = float(answer)
        return _NUMBER_WORDS[int(value)] if value == int(value) and 0 <= value <= 10 else "several"
    if item.task_type == "grounding":
        return "somewhere in the middle of the video"
    return ""
