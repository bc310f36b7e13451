"""Quality-aware matching: a weight in [0, 1] and a kept flag for every teacher sample.

Per item, from its K×T samples (docs/method.md, section 3):
- **Format.** A sample is valid when its record has no error, its text follows
  `<think>…</think><answer>…</answer>` (unless `require_format=False`) and the benchmark's
  strict extractor reads an answer from it. Invalid samples get weight 0 and are dropped.
- **Closed-ended** (mcq, numeric, grounding). With ground truth (and `use_ground_truth`) the
  weight is the benchmark's correctness score (0/1; temporal IoU for grounding). Without it,
  the weight is the consensus posterior of the sample's answer: Dawid–Skene EM over the
  pool per task type (teacher reliabilities learned without labels; `rmsd.matching.consensus`)
  or the plain vote share. Numeric answers vote by their normalised value; grounding spans
  are first clustered by temporal IoU ≥ `grounding_iou`, and a span votes for its cluster.
  Samples below `min_weight` (or at weight 0) are dropped. With `anchor_fraction` > 0, that
  share of the items with a known answer (a fixed, hashed subset) are gold items: the
  teachers' error models are measured on them and applied to every other item.
- **Open-ended.** Uniform weight 1 over valid samples, as in R-MSD; optionally the centrality
  (mean ROUGE-L to the item's other valid samples, divided by the item's largest) and
  dropping outliers whose centrality z-score is below `-open_outlier_z`. `min_weight` does
  not apply: centrality ranks samples, it does not judge them right or wrong.

Unlike R-MSD's rule-based filter, the label-free path weighs a teacher by how reliable the
pool's agreement shows it to be, so a strong teacher is not outvoted by two weak ones that
share their mistakes. The Dawid–Skene run is always label-free, even where ground truth is
known, so the report can set its reliability estimates beside the true accuracies.

    rmsd match --recipe recipes/synthvid/tiny_rmsd.yaml --samples runs/synthvid-tiny-rmsd/samples
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmsd.config import MatchingConfig
from rmsd.datasets.benchmark import Benchmark, repeated_id
from rmsd.errors import RmsdError
from rmsd.items import OPTION_LETTERS, Item
from rmsd.matching.consensus import VoteResult, build_votes, dawid_skene, majority_vote
from rmsd.scoring import format_number, format_ok, parse_span, rouge_l, temporal_iou

REQUIRED_FIELDS = ("key", "item_id", "teacher", "sample_index", "text")
MATCH_FIELDS = ("task_type", "answer", "format_ok", "weight", "kept", "agreement", "difficulty")
HIST_BINS = 10


@dataclass
class _Pool:
    """Working state of one matching run: rows plus per-row facts that are not written out."""

    rows: list[dict[str, Any]]
    items: list[Item]  # item of each row
    valid: list[bool]
    gt_score: list[float | None]  # benchmark score against the known answer, else None
    by_item: dict[str, list[int]]
    n_unmatched: int


# ----------------------------------------------------------------------------- entry points
def match_samples(items: list[Item], records: list[dict[str, Any]], benchmark: Benchmark,
                  config: MatchingConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Weight every record whose item is in `items`.

    benchmark: has `extract(text, item, mode) -> str | None` and `score(pred, item) -> float`
        (a `rmsd.datasets` entry).
    config: the recipe's matching section (`rmsd.config.MatchingConfig`, each knob documented there).
    Returns one row per matched record (the record's fields plus MATCH_FIELDS) and the
    statistics `rmsd.matching.report` draws.
    """
    cfg = config
    pool = _prepare(items, records, benchmark, cfg)
    item_of = {it.item_id: it for it in items}
    consensus_info: dict[str, Any] = {}
    reliability: dict[str, dict[str, dict[str, float | None]]] = defaultdict(dict)
    for task in ("mcq", "numeric", "grounding"):
        ids = [i for i in pool.by_item if item_of[i].task_type == task]
        if ids:
            consensus_info[task], per_teacher = _weight_closed(pool, ids, task, cfg)
            for teacher, values in per_teacher.items():
                reliability[teacher][task] = values
    for item_id in pool.by_item:
        if item_of[item_id].task_type == "open":
            _weight_open(pool, pool.by_item[item_id], cfg)
    return pool.rows, _statistics(pool, items, cfg, consensus_info, reliability)


# ----------------------------------------------------------------------------- validity
def _prepare(items: list[Item], records: list[dict[str, Any]], benchmark: Benchmark, cfg: MatchingConfig) -> _Pool:
    """Rows with extracted answers and format flags; every row carries the same keys."""
    item_of: dict[str, Item] = {}
    for it in items:
        if it.item_id in item_of:
            raise RmsdError(repeated_id(item_of[it.item_id], it))
        item_of[it.item_id] = it
    record_keys = list(dict.fromkeys(k for rec in records for k in rec if k not in MATCH_FIELDS))
    missing = [k for k in REQUIRED_FIELDS if k not in record_keys]
    if missing:
        raise RmsdError(f"sample records lack the field(s) {', '.join(missing)}: pass records of an rmsd sample store")
    pool = _Pool(rows=[], items=[], valid=[], gt_score=[], by_item=defaultdict(list), n_unmatched=0)
    # a judge-backed benchmark scores the whole batch concurrently here (a no-op for rule-based ones)
    matched = [(item_of[r["item_id"]], r.get("text") or "") for r in records if r.get("item_id") in item_of]
    benchmark.prefetch([it for it, _ in matched], [t for _, t in matched],
                       mode="strict" if cfg.require_format else "harness")
    for rec in records:
        item = item_of.get(rec.get("item_id"))
        if item is None:
            pool.n_unmatched += 1
            continue
        answer, fmt = _read_answer(rec, item, benchmark, cfg)
        row = {k: rec.get(k) for k in record_keys}
        row.update(task_type=item.task_type, answer=answer, format_ok=fmt, weight=0.0, kept=False,
                   agreement=0.0, difficulty=1.0)
        pool.by_item[item.item_id].append(len(pool.rows))
        pool.rows.append(row)
        pool.items.append(item)
        pool.valid.append(answer is not None)
        pool.gt_score.append(float(benchmark.score(answer, item)) if answer is not None and item.answer is not None
                             and item.closed else None)
    if records and not pool.rows:
        raise RmsdError(f"none of the {len(records)} sample records belongs to one of the {len(items)} items: "
                        "check that --samples was sampled from this recipe's dataset and split")
    return pool


def _read_answer(rec: dict[str, Any], item: Item, benchmark: Benchmark, cfg: MatchingConfig) -> tuple[str | None, bool]:
    """(answer or None when the sample is unusable, format_ok)."""
    text = rec.get("text") or ""
    if rec.get("error") or not text.strip():
        return None, False
    fmt = bool(format_ok(text))
    if cfg.require_format and not fmt:
        return None, False
    answer = benchmark.extract(text, item, mode="strict")
    if answer is None and not cfg.require_format:
        answer = benchmark.extract(text, item, mode="harness")
    if answer is not None and item.task_type == "mcq":
        offered = OPTION_LETTERS[: len(item.options)] if item.options else OPTION_LETTERS
        if len(answer) != 1 or answer not in offered:
            answer = None  # a letter the item does not offer cannot be right and cannot vote
    return answer, fmt


# ----------------------------------------------------------------------------- closed-ended
def _weight_closed(pool: _Pool, ids: list[str], task: str, cfg: MatchingConfig) -> tuple[dict, dict]:
    """Weights, kept flags, agreement and difficulty of the closed-ended items `ids` of one task type."""
    vote_rows, labels = [], []
    for item_id in ids:
        rows = [r for r in pool.by_item[item_id] if pool.valid[r]]
        if task == "grounding":
            rows, labs = _span_clusters(pool, rows, cfg.grounding_iou)
        else:
            labs = [_numeric_label(pool.rows[r]["answer"]) if task == "numeric" else pool.rows[r]["answer"]
                    for r in rows]
        vote_rows += rows
        labels += labs
    if not vote_rows:
        return {"method": None, "votes": 0}, {}
    votes, result, info = _consensus(pool, vote_rows, labels, task, cfg)
    agreement = dict(zip(votes.item_keys, np.maximum.reduceat(majority_vote(votes).posterior, votes.starts).tolist(),
                         strict=True))
    for r, p in zip(vote_rows, result.posterior[votes.cand].tolist(), strict=True):
        gt = pool.gt_score[r]
        pool.rows[r]["weight"] = gt if cfg.use_ground_truth and gt is not None else p
        pool.rows[r]["kept"] = pool.rows[r]["weight"] > 0 and pool.rows[r]["weight"] >= cfg.min_weight
    for item_id in ids:
        rows = [r for r in pool.by_item[item_id] if pool.valid[r]]
        scores = [pool.gt_score[r] for r in rows]
        use_gt = cfg.use_ground_truth and pool.items[pool.by_item[item_id][0]].answer is not None
        agree = agreement.get(item_id, 0.0)
        difficulty = 1.0 - float(np.mean(scores)) if use_gt and rows else 1.0 - agree
        for r in pool.by_item[item_id]:
            pool.rows[r]["agreement"], pool.rows[r]["difficulty"] = agree, difficulty
    return info, _teacher_reliability(pool, votes, result, vote_rows, task, cfg)


def _consensus(pool: _Pool, vote_rows: list[int], labels: list, task: str,
               cfg: MatchingConfig) -> tuple[Any, VoteResult, dict[str, Any]]:
    """Label-free consensus over the task type's valid votes (Dawid–Skene or majority)."""
    item_ids = [pool.rows[r]["item_id"] for r in vote_rows]
    teachers = [pool.rows[r]["teacher"] for r in vote_rows]
    candidates, classes, model = None, None, "one_coin"
    if task == "mcq":
        candidates = {it.item_id: it.letters for it in {id(pool.items[r]): pool.items[r] for r in vote_rows}.values()}
        if cfg.ds_model == "full":
            n = max(max(len(c) for c in candidates.values()), *(OPTION_LETTERS.index(a) + 1 for a in labels))
            classes, model = OPTION_LETTERS[:n], "full"
    votes = build_votes(item_ids, teachers, labels, candidates=candidates, classes=classes)
    if cfg.consensus == "majority":
        return votes, majority_vote(votes), {"method": "majority", "votes": len(vote_rows)}
    clamp, n_anchors = _anchors(pool, votes, vote_rows, task, cfg)
    result = dawid_skene(votes, model=model, clamp=clamp)
    info = {"method": "dawid_skene", "model": model, "votes": len(vote_rows), "n_iter": result.n_iter,
            "converged": result.converged, "log_likelihood": result.log_likelihood, "anchors": n_anchors}
    if result.prior is not None:
        info["prior"] = dict(zip(votes.classes, result.prior.round(4).tolist(), strict=True))
    return votes, result, info


def anchored(item_id: str, fraction: float) -> bool:
    """Whether an item is in the anchor subset: a hash of its id below `fraction` (stable across runs)."""
    digest = hashlib.sha256(item_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _anchors(pool: _Pool, votes: Any, vote_rows: list[int], task: str,
             cfg: MatchingConfig) -> tuple[np.ndarray | None, int]:
    """Dawid–Skene's clamp for the anchored items (see `dawid_skene`) and how many there are."""
    if cfg.anchor_fraction <= 0:
        return None, 0
    threshold = cfg.grounding_iou if task == "grounding" else 0.5
    item_of = {pool.rows[r]["item_id"]: pool.items[r] for r in vote_rows}
    index = {key: i for i, key in enumerate(votes.item_keys)}
    gold = {index[i]: it for i, it in item_of.items() if it.answer is not None and anchored(i, cfg.anchor_fraction)}
    if not gold:
        return None, 0
    chosen = list(gold)
    clamp = np.full(len(votes.labels), np.nan)
    free = ~np.isin(votes.cand_item, chosen)
    clamp[~free] = 0.0
    for v, r in enumerate(vote_rows):  # a candidate is right when one of its votes scores as right
        if not free[votes.cand[v]] and pool.gt_score[r] is not None and pool.gt_score[r] >= threshold:
            clamp[votes.cand[v]] = 1.0
    if task in ("mcq", "numeric"):  # the true label is a candidate nobody voted for (mcq letters)
        truth = {i: (it.answer if task == "mcq" else _numeric_label(it.answer)) for i, it in gold.items()}
        for c in np.flatnonzero(~free):
            if votes.labels[c] == truth[votes.cand_item[c]]:
                clamp[c] = 1.0
    totals = np.bincount(votes.cand_item[~free], weights=clamp[~free], minlength=votes.n_items)
    scale = totals[votes.cand_item[~free]]
    clamp[~free] = np.where(scale > 0, clamp[~free] / np.maximum(scale, 1e-12), 0.0)
    return clamp, len(chosen)


def _teacher_reliability(pool: _Pool, votes: Any, result: VoteResult, vote_rows: list[int], task: str,
                         cfg: MatchingConfig) -> dict[str, dict[str, float | None]]:
    """Per teacher: label-free accuracy estimate, true accuracy where ground truth exists, vote count."""
    if hasattr(result, "reliability"):
        estimate = result.reliability
    else:  # majority: the share of the teacher's votes that agree with the item's winner
        agrees = (votes.cand == result.winner[votes.item]).astype(float)
        estimate = np.bincount(votes.worker, weights=agrees, minlength=votes.n_workers) / np.maximum(
            np.bincount(votes.worker, minlength=votes.n_workers), 1)
    threshold = cfg.grounding_iou if task == "grounding" else 0.5
    right, known = defaultdict(float), defaultdict(int)
    for r in vote_rows:
        if pool.gt_score[r] is not None:
            right[pool.rows[r]["teacher"]] += pool.gt_score[r] >= threshold
            known[pool.rows[r]["teacher"]] += 1
    n_votes = np.bincount(votes.worker, minlength=votes.n_workers)
    return {t: {"estimate": float(estimate[w]), "true": right[t] / known[t] if known[t] else None,
                "votes": int(n_votes[w]), "labelled": known[t]} for w, t in enumerate(votes.worker_names)}


def _numeric_label(answer: str) -> str:
    """The category a numeric answer votes for: its canonical value, so "3", "3.0", " 3 " agree, and "1,200" and
    "1200" (a strict reading may keep the answer as written, as Video-R1's does)."""
    try:
        value = float(answer.replace(",", ""))
    except ValueError:
        return answer.strip().lower()
    return format_number(value) if np.isfinite(value) else str(value)


def _span_clusters(pool: _Pool, rows: list[int], threshold: float) -> tuple[list[int], list[int]]:
    """Cluster an item's spans by temporal IoU: the span with the most unclustered neighbours
    (tIoU ≥ threshold) opens a cluster with them, until every span has one. Rows whose answer
    is not a span become invalid. Returns (rows kept, cluster id of each)."""
    spans = []
    for r in rows:
        span = parse_span(pool.rows[r]["answer"])
        if span is None:
            pool.valid[r] = False
        else:
            spans.append((r, span))
    n = len(spans)
    near = np.eye(n, dtype=bool)
    for a in range(n):
        for b in range(a + 1, n):
            near[a, b] = near[b, a] = temporal_iou(spans[a][1], spans[b][1]) >= threshold
    cluster = np.full(n, -1)
    for c in range(n):
        free = cluster < 0
        if not free.any():
            break
        centre = int(np.argmax((near & free).sum(axis=1) * free))  # ties: the earliest span
        cluster[near[centre] & free] = c
    return [r for r, _ in spans], cluster.tolist()


# ----------------------------------------------------------------------------- open-ended
def _weight_open(pool: _Pool, rows_of_item: list[int], cfg: MatchingConfig) -> None:
    """Uniform or centrality weights over an item's valid samples; agreement = mean pairwise ROUGE-L."""
    rows = [r for r in rows_of_item if pool.valid[r]]
    n = len(rows)
    sim = _pairwise_rouge([pool.rows[r]["answer"] for r in rows])
    centrality = (sim.sum(axis=1) - np.diag(sim)) / (n - 1) if n > 1 else np.ones(n)
    agreement = float(centrality.mean()) if n else 0.0
    if cfg.open_weighting == "centrality" and n > 1 and centrality.max() > 0:
        weights = centrality / centrality.max()
    else:
        weights = np.ones(n)
    kept = np.ones(n, dtype=bool)
    if cfg.open_outlier_z is not None and n > 2 and centrality.std() > 0:
        kept = (centrality - centrality.mean()) / centrality.std() >= -cfg.open_outlier_z
    for r, w, k in zip(rows, weights.tolist(), kept.tolist(), strict=True):
        pool.rows[r]["weight"], pool.rows[r]["kept"] = (w, True) if k else (0.0, False)
    for r in rows_of_item:
        pool.rows[r]["agreement"], pool.rows[r]["difficulty"] = agreement, 1.0 - agreement


# ----------------------------------------------------------------------------- statistics
def _histogram(values: list[float]) -> dict[str, list]:
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=HIST_BINS, range=(0.0, 1.0))
    return {"edges": edges.round(4).tolist(), "counts": counts.tolist()}


def _statistics(pool: _Pool, items: list[Item], cfg: MatchingConfig, consensus: dict[str, Any],
                reliability: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """Everything the match report shows; JSON-serialisable."""
    rows = pool.rows
    kept_items = {row["item_id"] for row in rows if row["kept"]}
    per_task: dict[str, dict[str, int]] = {}
    for it in items:
        t = per_task.setdefault(it.task_type, {"items": 0, "samples": 0, "valid": 0, "kept": 0,
                                               "items_without_usable_sample": 0})
        t["items"] += 1
        t["items_without_usable_sample"] += it.item_id not in kept_items
    for r, row in enumerate(rows):
        t = per_task[row["task_type"]]
        t["samples"] += 1
        t["valid"] += pool.valid[r]
        t["kept"] += row["kept"]
    agreement = [rows[idx[0]]["agreement"] for idx in pool.by_item.values() if any(pool.valid[r] for r in idx)]
    why_unusable = {"no samples": 0, "no format-valid answer": 0, "every answer below min_weight": 0}
    for it in items:
        if it.item_id in kept_items:
            continue
        idx = pool.by_item.get(it.item_id, [])
        why_unusable["no samples" if not idx else "every answer below min_weight" if any(pool.valid[r] for r in idx)
                     else "no format-valid answer"] += 1
    return {
        "n_records": len(rows) + pool.n_unmatched,
        "n_records_without_item": pool.n_unmatched,
        "n_samples": len(rows),
        "n_items": len(items),
        "n_items_without_samples": sum(it.item_id not in pool.by_item for it in items),
        "items_without_usable_sample": len(items) - len(kept_items),
        "unusable_reasons": {k: v for k, v in why_unusable.items() if v},
        "n_valid": sum(pool.valid),
        "n_kept": sum(row["kept"] for row in rows),
        "task_types": per_task,
        "teachers": _teacher_stats(pool, reliability),
        "consensus": consensus,
        "weight_histogram": _histogram([row["weight"] for r, row in enumerate(rows) if pool.valid[r]]),
        "agreement_histogram": _histogram(agreement),
        "config": cfg.model_dump(mode="json", exclude={"out"}),
    }


def _teacher_stats(pool: _Pool, reliability: dict[str, dict[str, dict]]) -> dict[str, dict[str, Any]]:
    """Per teacher: sample counts, error and format-error rates, kept share, reliability per task type."""
    acc: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r, row in enumerate(pool.rows):
        a = acc[row["teacher"]]
        usable = not row.get("error") and bool((row.get("text") or "").strip())
        a["samples"] += 1
        a["errors"] += not usable
        a["usable"] += usable
        a["format_errors"] += usable and not row["format_ok"]
        a["valid"] += pool.valid[r]
        a["kept"] += row["kept"]
        a["weight"] += row["weight"]
    out = {}
    for teacher in sorted(acc):
        a, per_task = acc[teacher], reliability.get(teacher, {})
        votes = sum(v["votes"] for v in per_task.values())
        known = [v for v in per_task.values() if v["true"] is not None]
        out[teacher] = {
            "samples": int(a["samples"]), "errors": int(a["errors"]), "valid": int(a["valid"]), "kept": int(a["kept"]),
            "format_error_rate": a["format_errors"] / a["usable"] if a["usable"] else None,
            "mean_weight": a["weight"] / a["samples"],
            "reliability": per_task,
            # vote-weighted over closed task types, for the report's one bar per teacher
            "reliability_overall": {
                "estimate": sum(v["estimate"] * v["votes"] for v in per_task.values()) / votes if votes else None,
                "true": sum(v["true"] * v["labelled"] for v in known) / sum(v["labelled"] for v in known) if known else None,
            },
        }
    return out


def _pairwise_rouge(answers: list[str]) -> np.ndarray:
    """[n, n] ROUGE-L F between answers (the diagonal is meaningless). ROUGE-L is quadratic in
    length and teachers often repeat an answer word for word, so it is computed once per pair
    of distinct texts (and F is symmetric: once per unordered pair)."""
    position: dict[str, int] = {}
    index = [position.setdefault(a, len(position)) for a in answers]
    unique, count = list(position), np.bincount(index, minlength=len(position))
    sim = np.zeros((len(unique), len(unique)))
    for a in range(len(unique)):
        for b in range(a if count[a] > 1 else a + 1, len(unique)):  # a text against itself only if repeated
            sim[a, b] = sim[b, a] = rouge_l(unique[a], unique[b])
    return sim[np.ix_(index, index)]
