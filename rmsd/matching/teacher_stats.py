"""How a teacher pool errs, measured against ground truth: accuracy, quality spreads, format, correlation.

For any sample store whose items have known answers (a simulated pool on synthvid, or real
teachers on a labelled benchmark), per teacher and task type:

- `format_violation_rate`: share of responses that are unusable for matching (a record
  error, no `<think>…</think><answer>…</answer>`, or an answer the benchmark's strict
  extractor cannot read) — the definition `rmsd match` drops samples by;
- `accuracy`: share of the format-valid responses whose answer is right (mcq and numeric
  exact, grounding tIoU ≥ 0.5, open description score ≥ 0.5, the rule judge's
  answer_correctness);
- **response quality** q ∈ [0, 1] of a format-valid response: the mean of the rule judge's
  three scores (`rmsd.judge.rules`): answer correctness (0/1 for mcq and numeric, tIoU for
  grounding, the description score for open items), logical consistency (does the
  reasoning conclude what the answer says) and spatio-temporal grounding (share of the
  facts the reasoning cites that match the scene); items without a scene (real
  benchmarks and corpora) average the first two only, since nothing can check the citations,
  and their answer correctness is their benchmark's own strict score (Video-R1's reward for
  Video-R1's items);
- `sigma_cross`: the standard deviation over questions of the teacher's mean quality on
  each question (cross-question spread); `sigma_within`: the pooled within-question
  standard deviation, sqrt(mean over questions with ≥ 2 valid responses of the unbiased
  variance of q across that question's responses) (repeated-sampling spread);
  `*_correct`: the same two spreads of 0/1 correctness, beside them;
- `error_correlation` between two teachers: Pearson correlation, over the questions both
  answered, of their per-question error rates (1 − mean correctness); `same_wrong_answer`:
  of the questions both got wrong (mcq, numeric), the share where their commonest wrong
  answers are the same (what breaks a plain vote).

Why a continuous quality: with 0/1 correctness a within-question σ of 0.07–0.15 (the
figure reported for GPT-4o-class teachers, arXiv 2603.11423) forces every per-question
competence near 0 or 1, and with accuracy ~0.7 the cross-question σ is then near
sqrt(0.7 · 0.3) ≈ 0.46, not the reported 0.22; a quality that gives partial credit
(a wrong answer argued from mostly right facts) can meet both figures at once.

    rmsd match stats --recipe recipes/synthvid/experiment_base.yaml --samples runs/synthvid-experiment/samples
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

from rmsd.datasets.benchmark import Benchmark
from rmsd.items import Item
from rmsd.judge.rules import RuleJudge
from rmsd.scoring import format_ok
from rmsd.teachers.perception import SIGNATURES, signature

ALL = "all"
STAT_KEYS = ("items", "samples", "format_violation_rate", "accuracy", "quality", "sigma_cross", "sigma_within",
             "sigma_cross_correct", "sigma_within_correct")


def response_scores(judge: RuleJudge, item: Item, text: str) -> tuple[float, float]:
    """(quality, correctness) of one format-valid response (module docstring)."""
    scores = judge.judge(item, text).scores
    parts = [scores["answer_correctness"], scores["logical_consistency"]]
    if item.meta.get("objects"):
        parts.append(scores["spatiotemporal_grounding"])
    return sum(parts) / len(parts), float(scores["answer_correctness"] >= 0.5)


def usable(record: dict[str, Any], item: Item, benchmark: Benchmark | None) -> str | None:
    """The strictly extracted answer of a record, or None when `rmsd match` would drop it for its format."""
    text = record.get("text") or ""
    if record.get("error") or not format_ok(text):
        return None
    if benchmark is None:
        return text
    return benchmark.extract(text, item, mode="strict")


def teacher_statistics(items: list[Item], records: list[dict[str, Any]], benchmark: Benchmark | None = None,
                       judge: RuleJudge | None = None) -> dict[str, Any]:
    """Per teacher and task type (and "all"): STAT_KEYS; per task type: pairwise error correlations.

    Only items with a known answer count; records of other items are ignored. benchmark:
    reads answers (`extract(text, item, mode)`) as `rmsd match` does; None: the answer tag."""
    judge = judge or RuleJudge()
    item_of = {it.item_id: it for it in items if it.answer is not None}
    # (teacher, item) -> list of (quality, correct, answer) for valid responses; and response counts
    valid: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for rec in records:
        item = item_of.get(rec.get("item_id"))
        if item is None:
            continue
        teacher = rec["teacher"]
        answer = usable(rec, item, benchmark)
        for task in (item.task_type, ALL):
            counts[(teacher, task)]["samples"] += 1
            counts[(teacher, task)]["violations"] += answer is None
        if answer is not None:
            quality, correct = response_scores(judge, item, rec["text"])
            valid[(teacher, item.item_id)].append((quality, correct, answer))
    teachers = sorted({t for t, _ in counts})
    per_teacher = {t: {task: _summary(t, task, valid, counts, item_of) for task in _tasks(counts, t)}
                   for t in teachers}
    return {"definition": "quality = mean of the rule judge's answer_correctness, logical_consistency and "
                          "spatiotemporal_grounding (the last only where the item has a scene); sigmas over "
                          "format-valid responses (rmsd.matching.teacher_stats)",
            "n_items": len(item_of), "teachers": per_teacher, "pairs": _pairs(teachers, valid, item_of),
            "signatures": {"definitions": SIGNATURES, "teachers": {t: weakness_rates(
                [(item_of[i], r[2]) for (u, i), rows in valid.items() if u == t for r in rows]) for t in teachers}}}


def weakness_rates(answers: list[tuple[Item, str]]) -> dict[str, dict[str, float | int]]:
    """Per weakness signature (rmsd.teachers.perception.SIGNATURES): how many answers could show it
    and the share that do; for teachers' samples here, for a student's predictions in an experiment."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for item, answer in answers:
        if item.meta.get("objects") is not None:
            for kind, shown in signature(item, answer).items():
                hits[kind].append(shown)
    return {kind: {"n": len(hits[kind]), "rate": _mean(hits[kind])} for kind in SIGNATURES if hits[kind]}


def _tasks(counts: dict, teacher: str) -> list[str]:
    order = ("mcq", "numeric", "grounding", "open", ALL)
    return [task for task in order if (teacher, task) in counts]


def _summary(teacher: str, task: str, valid: dict, counts: dict, item_of: dict[str, Item]) -> dict[str, Any]:
    per_item = [v for (t, i), v in valid.items() if t == teacher and (task == ALL or item_of[i].task_type == task)]
    c = counts[(teacher, task)]
    flat = [r for rows in per_item for r in rows]
    out: dict[str, Any] = {"items": len(per_item), "samples": c["samples"],
                           "format_violation_rate": c["violations"] / c["samples"] if c["samples"] else None,
                           "accuracy": _mean([r[1] for r in flat]), "quality": _mean([r[0] for r in flat])}
    for suffix, col in (("", 0), ("_correct", 1)):
        out[f"sigma_cross{suffix}"] = _std([_mean([r[col] for r in rows]) for rows in per_item])
        out[f"sigma_within{suffix}"] = _pooled_within([[r[col] for r in rows] for rows in per_item])
    return out


def _pairs(teachers: list[str], valid: dict, item_of: dict[str, Item]) -> dict[str, dict[str, Any]]:
    """"a|b" -> per task type (and all): n items both answered, error correlation, same wrong answer share."""
    out: dict[str, dict[str, Any]] = {}
    for a, b in combinations(teachers, 2):
        by_task: dict[str, dict[str, Any]] = {}
        shared = [i for (t, i) in valid if t == a and (b, i) in valid]
        for task in ("mcq", "numeric", "grounding", "open", ALL):
            ids = [i for i in shared if task == ALL or item_of[i].task_type == task]
            if not ids:
                continue
            ea = [1 - _mean([r[1] for r in valid[(a, i)]]) for i in ids]
            eb = [1 - _mean([r[1] for r in valid[(b, i)]]) for i in ids]
            both_wrong = [i for i, x, y in zip(ids, ea, eb, strict=True) if x > 0.5 and y > 0.5
                          and item_of[i].task_type in ("mcq", "numeric")]
            same = [_commonest_wrong(valid[(a, i)]) == _commonest_wrong(valid[(b, i)]) for i in both_wrong]
            by_task[task] = {"items": len(ids), "error_correlation": _pearson(ea, eb),
                             "both_wrong": len(both_wrong), "same_wrong_answer": _mean(same)}
        out[f"{a}|{b}"] = by_task
    return out


def _commonest_wrong(rows: list[tuple[float, float, str]]) -> str | None:
    wrong = Counter(r[2] for r in rows if r[1] < 0.5)
    return wrong.most_common(1)[0][0] if wrong else None


# ----------------------------------------------------------------------------- small statistics
def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: list[float]) -> float | None:
    """Population standard deviation (None for fewer than two values)."""
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def _pooled_within(groups: list[list[float]]) -> float | None:
    """sqrt(mean of the unbiased within-group variances) over groups of two or more values."""
    variances = []
    for g in groups:
        if len(g) >= 2:
            m = sum(g) / len(g)
            variances.append(sum((v - m) ** 2 for v in g) / (len(g) - 1))
    return math.sqrt(sum(variances) / len(variances)) if variances else None


def _pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson correlation, None when either side is constant (no spread to correlate)."""
    if len(x) < 2:
        return None
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sx = math.sqrt(sum((v - mx) ** 2 for v in x))
    sy = math.sqrt(sum((v - my) ** 2 for v in y))
    if sx == 0 or sy == 0:
        return None
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / (sx * sy)
