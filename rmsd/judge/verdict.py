"""The judge interface of VISD: a student rollout in, named scores and structured feedback out.

A judge (`rules.py` for synthvid's known scenes; an LLM judge for real benchmarks) scores a
rollout on three dimensions — answer correctness, logical consistency (does the reasoning's
conclusion equal the answer?) and spatio-temporal grounding (are the cited times, objects,
colours and motions right?) — and writes short feedback that names what was wrong and
where. `feedback_prompt` turns that feedback into the *privileged-information* prompt read
by the EMA teacher (RLSD, arXiv 2604.03128): the item's prompt, the feedback and the
reference answer. The student's own prompt never contains any of it.

How it differs from a reward model: the judge's main output is text for the teacher, which
redistributes credit over tokens; the scores are logged and can also serve as rewards.

    rmsd distill --recipe recipes/synthvid/tiny_visd.yaml --matched runs/synthvid-tiny-visd/matched
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rmsd.errors import RmsdError
from rmsd.items import OPTION_LETTERS, Item

DIMENSIONS = ("answer_correctness", "logical_consistency", "spatiotemporal_grounding")
PLACEHOLDERS = ("prompt", "feedback", "reference", "response")
DEFAULT_FEEDBACK_TEMPLATE = (
    "{prompt}\n\n"
    "A reviewer checked an earlier answer to this question and wrote:\n{feedback}\n"
    "Reference answer: {reference}"
)


@dataclass
class Verdict:
    """A judge's view of one rollout.

    scores: one value in [0, 1] per name of DIMENSIONS (empty when `ok` is False).
    feedback: one line per dimension, "<dimension>: <right|wrong|...> — <what and where>".
    ok: False when the judge could not judge (no ground truth, judge call failed): the
        trainer then gives that rollout reward-only credit (no token modulation).
    """

    scores: dict[str, float] = field(default_factory=dict)
    feedback: str = ""
    ok: bool = True

    def __post_init__(self) -> None:
        if self.ok and set(self.scores) != set(DIMENSIONS):
            raise ValueError(f"a verdict scores exactly {DIMENSIONS}; got {sorted(self.scores)}")
        for name, value in self.scores.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"score {name}={value} is outside [0, 1]")

    @classmethod
    def failed(cls, reason: str) -> Verdict:
        return cls(scores={}, feedback=reason, ok=False)

    def total(self, weights: Mapping[str, float] | None = None) -> float | None:
        """Weighted mean of the scores (equal weights by default); None when the judge could not judge."""
        if not self.ok:
            return None
        weights = dict(weights) if weights is not None else dict.fromkeys(DIMENSIONS, 1.0)
        unknown = set(weights) - set(DIMENSIONS)
        if unknown or sum(weights.values()) <= 0:
            raise RmsdError(f"judge weights must name some of {DIMENSIONS} with a positive sum; got {weights}")
        return sum(weights[k] * self.scores[k] for k in weights) / sum(weights.values())


class Judge(abc.ABC):
    """Scores rollouts; subclasses implement `judge`. `name` appears in logs."""

    name: str = "judge"

    @abc.abstractmethod
    def judge(self, item: Item, response_text: str) -> Verdict:
        """The verdict on one response to `item`."""

    def judge_many(self, items: Sequence[Item], responses: Sequence[str]) -> list[Verdict]:
        """Verdicts for pairs (items[i], responses[i]); an LLM judge overrides this to batch its calls."""
        if len(items) != len(responses):
            raise ValueError(f"{len(items)} items but {len(responses)} responses")
        return [self.judge(item, text) for item, text in zip(items, responses, strict=True)]


def reference_text(item: Item) -> str | None:
    """The ground truth as a reader sees it: "(C) red" for an mcq, the answer text otherwise."""
    if item.answer is None:
        return None
    letter = item.answer.strip().strip("()")
    if item.task_type == "mcq" and len(letter) == 1 and letter in OPTION_LETTERS[: len(item.options)]:
        return f"({letter}) {item.options[OPTION_LETTERS.index(letter)]}"
    return item.answer


def check_template(template: str) -> None:
    """Raise RmsdError unless `template` has {prompt} and {feedback} and no unknown {placeholder}."""
    names = set(re.findall(r"\{(\w+)\}", template))
    unknown = names - set(PLACEHOLDERS)
    if unknown or not {"prompt", "feedback"} <= names:
        raise RmsdError(f"visd.feedback_template must contain {{prompt}} and {{feedback}} and may use "
                        f"{{reference}}, {{response}}; found {sorted(names)}")


def feedback_prompt(item: Item, response_text: str, verdict: Verdict, template: str | None = None) -> str:
    """The privileged prompt of the EMA teacher: the item's prompt + the judge's feedback (+ reference).

    template: text with {prompt}, {feedback} and optionally {reference}, {response} (the
        rollout, for templates that quote it); other braces are left alone. Lines naming
        {reference} are dropped when the item has no ground truth. The rollout itself is
        scored as the teacher's completion after this prompt, so the default omits it.
    """
    template = DEFAULT_FEEDBACK_TEMPLATE if template is None else template
    check_template(template)
    reference = reference_text(item)
    if reference is None:
        template = "\n".join(line for line in template.split("\n") if "{reference}" not in line)
    feedback = verdict.feedback.strip() or "(no feedback)"
    values = {"prompt": item.prompt, "feedback": feedback, "reference": reference or "", "response": response_text}
    # one pass over the template, so a brace inside the feedback or the prompt is never re-substituted
    return re.sub(r"\{(" + "|".join(PLACEHOLDERS) + r")\}", lambda m: values[m.group(1)], template)
