"""Video-R1's own scores, reproduced case for case: its training reward and its evaluation script.

Read from tulerfeng/Video-R1 at commit 59d65c347e44efa71be27abf9d89b4a2bb7d1c05 (re-implemented, not
copied): `src/r1-v/src/open_r1/grpo.py` (`accuracy_reward`, the GRPO accuracy reward) and `src/eval_bench.py`
(`reward_fn`, `mean_relative_accuracy`). `tests/datasets/test_videor1_reward.py` holds every function here to a table
of replies scored by those definitions.

Three readings of a reply on a Video-R1 item (`solution` is the row's field as written, "<answer>B</answer>"):

- `training_reward` (**strict**: what `rmsd match` and the RL `correctness` reward use): `accuracy_reward`
  exactly, quirks included —
  1. the answer is the *first* `<answer>…</answer>` as written, whitespace trimmed; a reply without one (an
     unclosed `<answer>B` included) answers "", exactly like an empty `<answer></answer>`; the reference is read
     the same way from `solution`, so a solution without tags is "" too (and "" equals "");
  2. multiple choice: the two strings equal, nothing else ("A." , "(A)", "a", "A dog" all score 0 for "A");
  3. numerical: 0 when exactly one of answer and reference contains "." or "," ("3.0" for "3", "1200" for
     "1,200"); otherwise both read by Python's `float` after dropping every comma ("1e3", "+5", "1_000", " 3",
     "inf" parse; "3 people", "$5", "five" do not and score 0) and equal after `round(…, 2)` ("nan" never equals);
  4. OCR: 1 − word error rate, case- and punctuation-sensitive, words split on whitespace, errors divided by the
     reference's word count (at least 1), clipped to [0, 1];
  5. free-form: the mean of the ROUGE-1, ROUGE-2 and ROUGE-L F-measures of the `rouge_score` package with
     Porter stemming (its tokeniser keeps only a-z0-9: "" or all-CJK text scores 0), clipped to [0, 1];
  6. regression: 1 − min(1, max(0, (|answer − reference| + 1e-9) / (|reference| + 1e-9))): an exact answer scores
     just under 1, a reference of 0 scores 0 whatever the answer, and a reply of "nan" scores 1 (Python's `max`
     keeps its first argument when the comparison with NaN is false);
  7. any other problem type, or an error while scoring, 0.
- `eval_reward` (**harness**: what `rmsd eval` uses on a Video-R1-style set by default): `eval_bench.py`'s
  `reward_fn` — the first `<answer>` content, else *the whole reply*; multiple choice and numerical as above;
  regression by mean relative accuracy (`mean_relative_accuracy`: the share of the thresholds 0.50, 0.55, …, 0.95
  for which |answer − reference| / (|reference| + 1e-8) < 1 − threshold, computed in float32 as its torch code
  does). The script has no branch for OCR and free-form (it would score every such reply 0); here they keep the
  training reward's formulas (quirks 4 and 5) on the answer read this way, so a number on them means something:
  the one deliberate difference.
- the **lenient** reading (`rmsd.datasets.videor1.VideoR1`, mode `lenient`) is rmsd's earlier one; README
  lists where it differs.

    python -m pytest tests/datasets/test_videor1_reward.py
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

PROBLEM_TYPES = ("multiple choice", "numerical", "OCR", "free-form", "regression")
# the first <answer>…</answer>, lazily, across lines; surrounding whitespace is not part of the answer
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_MRA_THRESHOLDS = np.array([0.5 + 0.05 * i for i in range(10)], dtype=np.float32)  # torch.arange(.5, .975, .05)


def first_answer(text: str | None) -> str:
    """The content of the first `<answer>…</answer>` of `text`, trimmed; "" when there is none."""
    m = _ANSWER.search(text or "")
    return m.group(1).strip() if m else ""


def parse_number(text: str) -> float | None:
    """Video-R1's number reading: every comma dropped, then Python's `float` (None when it refuses)."""
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's word count (at least 1); words split on whitespace,
    compared as written (case and punctuation count)."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))  # one row of the edit-distance table
    for i, r in enumerate(ref, 1):
        diag, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diag, row[j] = row[j], diag if r == h else 1 + min(diag, row[j], row[j - 1])
    return row[-1] / max(1, len(ref))


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_mean(reference: str, hypothesis: str) -> float:
    """The mean of the ROUGE-1, ROUGE-2 and ROUGE-L F-measures (`rouge_score`, Porter stemming)."""
    scores = _rouge_scorer().score(reference, hypothesis)
    return (scores["rouge1"].fmeasure + scores["rouge2"].fmeasure + scores["rougeL"].fmeasure) / 3


def has_decimal_mark(text: str) -> bool:
    return "." in text or "," in text


def numerical_match(answer: str, reference: str) -> float:
    """1 when both numbers round to the same two decimals, 0 when exactly one side writes "." or "," (quirk 3)."""
    if has_decimal_mark(answer) != has_decimal_mark(reference):
        return 0.0
    a, g = parse_number(answer), parse_number(reference)
    if a is None or g is None:
        return 0.0
    return 1.0 if round(g, 2) == round(a, 2) else 0.0


def regression_reward(answer: str, reference: str) -> float:
    """The training reward's regression score (quirk 6: the clip order below is what makes "nan" score 1)."""
    a, g = parse_number(answer), parse_number(reference)
    if a is None or g is None:
        return 0.0
    relative = (abs(a - g) + 1e-9) / (abs(g) + 1e-9)
    return 1 - min(1.0, max(0.0, relative))


def mean_relative_accuracy(answer: float, reference: float) -> float:
    """`eval_bench.py`'s MRA in float32: the share of thresholds 0.50…0.95 the relative error stays under."""
    with np.errstate(all="ignore"):  # an answer beyond float32 becomes inf, and inf or nan compares false, as in torch
        pred, target = np.float32(answer), np.float32(reference)
        relative = np.abs(pred - target) / (np.abs(target) + np.float32(1e-8))
        hits = relative < (np.float32(1) - _MRA_THRESHOLDS)
    return float(np.float32(hits.sum()) / np.float32(len(hits)))


def training_score(answer: str, reference: str, problem_type: str) -> float:
    """`accuracy_reward` on answers already read by `first_answer` (module docstring: quirks 2–7)."""
    try:
        if problem_type == "multiple choice":
            return 1.0 if answer.strip() == reference.strip() else 0.0
        if problem_type == "numerical":
            return numerical_match(answer, reference)
        if problem_type == "OCR":
            return max(0.0, min(1.0, 1 - word_error_rate(reference, answer)))
        if problem_type == "free-form":
            return max(0.0, min(1.0, rouge_mean(reference, answer)))
        if problem_type == "regression":
            return regression_reward(answer, reference)
    except (ArithmeticError, ValueError, TypeError):  # Video-R1 scores any failure 0
        return 0.0
    return 0.0


def training_reward(reply: str | None, solution: str | None, problem_type: str) -> float:
    """Video-R1's `accuracy_reward` for one reply and the row's `solution` as written (quirks 1–7)."""
    return training_score(first_answer(reply), first_answer(solution), problem_type)


def eval_answer(reply: str | None) -> str:
    """What `eval_bench.py` scores: the first `<answer>` content, else the whole reply as it is."""
    return first_answer(reply) or (reply or "")


def eval_score(answer: str, reference: str, problem_type: str) -> float:
    """`reward_fn` of `eval_bench.py` on an answer read by `eval_answer` (module docstring): its multiple choice and
    numerical branches are the training reward's, it has none for OCR and free-form (which keep the training
    formulas here), and it scores regression by mean relative accuracy."""
    if problem_type != "regression":
        return training_score(answer, reference, problem_type)
    a, g = parse_number(answer), parse_number(reference)
    return 0.0 if a is None or g is None else mean_relative_accuracy(a, g)


def eval_reward(reply: str | None, solution: str | None, problem_type: str) -> float:
    """`eval_bench.py`'s `reward_fn` for one reply: the whole reply when it has no `<answer>` (module docstring)."""
    return eval_score(eval_answer(reply), first_answer(solution), problem_type)
