"""Label-free consensus over a teacher pool: majority vote, weighted vote, Dawid–Skene EM.

Each closed-ended item gets answers from several teachers (K samples each). Without ground
truth, a sample's quality is the probability that its answer is the true one. A plain
majority vote treats every teacher alike; Dawid–Skene (Dawid & Skene 1979) estimates each
teacher's reliability from the agreement pattern alone (EM: posterior over true answers ⇄
per-teacher error model) and so trusts a strong teacher over two weak ones.

How this differs from the textbook algorithm:
- **Item-specific label sets.** Options differ per item and numeric answers are unbounded,
  so the default error model is the "one-coin" (symmetric) one: teacher t answers the true
  label with probability p_t, otherwise uniformly one of the item's other candidates
  (its observed answers plus any declared possible labels, e.g. all option letters).
- **Full confusion for letters** (`model="full"`): when every candidate is one of a shared
  class set (mcq letters A, B, ...), each teacher gets a full confusion matrix over the
  letters and a class prior is learned; this captures a teacher's bias toward a letter.
  Items with fewer options only restrict the true class (the row normalisation stays global:
  an approximation, documented here because it is one).
- **K samples per teacher per item** are K votes of the same teacher, each with the same
  error model. This assumes a teacher's samples are independent given the true answer; real
  samples are positively correlated, which makes the posterior over-confident but leaves
  the ranking of answers (and the reliability estimate, an average over votes) sound.
- **A prior that teachers beat chance**: each teacher starts with `prior_right` pseudo-votes
  for the truth and `prior_wrong` against it (Beta(2, 1) by default; on the diagonal and
  spread off it for the full model). It keeps every probability inside (0, 1) (no log(0)
  for a teacher that is always right), settles the label-swap symmetry of EM, and gives a
  lone vote a posterior above chance (with Beta(1, 1) it would sink to exactly chance). Its
  weight vanishes once a teacher has more than a few dozen votes.

Everything is vectorised over votes (numpy bincount / reduceat on item-sorted candidates):
100k votes take well under a second per EM run. Used by `rmsd.matching.matcher`:

    rmsd match --recipe recipes/synthvid/tiny_rmsd.yaml --samples runs/synthvid-tiny-rmsd/samples
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rmsd.errors import RmsdError

MODELS = ("one_coin", "full")


@dataclass
class Votes:
    """A vote table: N votes over I items, W workers (teachers) and C candidate answers.

    Candidates are sorted by item, so the candidates of item i are the contiguous range
    `starts[i] : starts[i + 1]`; every item has at least one candidate.

    item, worker, cand: [N] int arrays (item index, worker index, global candidate index).
    cand_item: [C] item index of each candidate (non-decreasing).
    labels: [C] the answer each candidate stands for.
    item_keys, worker_names: the original item ids / teacher names, by index.
    cand_class: [C] index of each candidate's label in `classes`, or None when the labels
        are not drawn from one shared class set.
    classes: the shared class labels (e.g. ("A", "B", "C", "D")), or None.
    """

    item: np.ndarray
    worker: np.ndarray
    cand: np.ndarray
    cand_item: np.ndarray
    labels: list[Hashable]
    item_keys: list[Hashable]
    worker_names: list[Hashable]
    cand_class: np.ndarray | None = None
    classes: tuple[Hashable, ...] | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_keys)

    @property
    def n_workers(self) -> int:
        return len(self.worker_names)

    @property
    def starts(self) -> np.ndarray:
        return np.searchsorted(self.cand_item, np.arange(self.n_items))

    def candidates_per_item(self) -> np.ndarray:
        return np.bincount(self.cand_item, minlength=self.n_items)


def build_votes(items: Sequence[Hashable], workers: Sequence[Hashable], answers: Sequence[Hashable],
                candidates: Mapping[Hashable, Sequence[Hashable]] | None = None,
                classes: Sequence[Hashable] | None = None) -> Votes:
    """A vote table from parallel sequences (one entry per vote: item id, teacher, answer label).

    candidates: extra possible labels per item (e.g. every option letter of an mcq item), so
        an answer nobody gave still counts in the one-coin error model. Only items with at
        least one vote appear in the table.
    classes: the shared label set for `model="full"` (option letters); every label must be in it.
    """
    if not len(items) == len(workers) == len(answers):
        raise ValueError(f"items, workers, answers differ in length: {len(items)}, {len(workers)}, {len(answers)}")
    item_index: dict[Hashable, int] = {}
    worker_index: dict[Hashable, int] = {}
    item_idx = np.fromiter((item_index.setdefault(k, len(item_index)) for k in items), np.int64, len(items))
    worker_idx = np.fromiter((worker_index.setdefault(w, len(worker_index)) for w in workers), np.int64, len(items))
    labels_of: list[dict[Hashable, None]] = [{} for _ in item_index]  # insertion-ordered sets
    for i, a in zip(item_idx.tolist(), answers, strict=True):
        labels_of[i][a] = None
    for key, extra in (candidates or {}).items():
        if key in item_index:
            labels_of[item_index[key]].update(dict.fromkeys(extra))
    class_index = {c: j for j, c in enumerate(classes)} if classes is not None else None
    cand_of: dict[tuple[int, Hashable], int] = {}
    cand_item, labels = [], []
    for i, labs in enumerate(labels_of):
        if class_index is not None:
            unknown = [lab for lab in labs if lab not in class_index]
            if unknown:
                raise ValueError(f"label {unknown[0]!r} of item {list(item_index)[i]!r} is not one of classes "
                                 f"{tuple(classes)}")
        ordered = sorted(labs, key=class_index.__getitem__) if class_index is not None else list(labs)
        for lab in ordered:
            cand_of[(i, lab)] = len(labels)
            cand_item.append(i)
            labels.append(lab)
    cand = np.fromiter((cand_of[(i, a)] for i, a in zip(item_idx.tolist(), answers, strict=True)), np.int64,
                       len(items))
    cand_class = np.array([class_index[lab] for lab in labels], np.int64) if class_index is not None else None
    return Votes(item=item_idx, worker=worker_idx, cand=cand, cand_item=np.asarray(cand_item, np.int64),
                 labels=labels, item_keys=list(item_index), worker_names=list(worker_index),
                 cand_class=cand_class, classes=tuple(classes) if classes is not None else None)


@dataclass
class VoteResult:
    """posterior: [C] probability (or vote share) of each candidate within its item.
    winner: [I] global candidate index of each item's top answer (ties: the first candidate)."""

    posterior: np.ndarray
    winner: np.ndarray

    def winner_labels(self, votes: Votes) -> dict[Hashable, Hashable]:
        return {key: votes.labels[c] for key, c in zip(votes.item_keys, self.winner.tolist(), strict=True)}


@dataclass
class DSResult(VoteResult):
    """Dawid–Skene output, on top of the posterior and winners.

    reliability: [W] each teacher's expected accuracy under the posterior (share of its votes
        that are right), comparable across models.
    prior: [n_classes] learned class prior (shared classes only), else None.
    confusion: [W, n_classes, n_classes] P(answer l | true j) (`model="full"`), else None.
    coin: [W] the one-coin accuracy parameter p_t (`model="one_coin"`), else None.
    """

    reliability: np.ndarray
    prior: np.ndarray | None
    confusion: np.ndarray | None
    coin: np.ndarray | None
    n_iter: int
    converged: bool
    log_likelihood: float


# ----------------------------------------------------------------------------- segment helpers
def _segment_softmax(logits: np.ndarray, cand_item: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, float]:
    """Softmax of `logits` within each item's candidate range; also the summed log-normaliser."""
    top = np.maximum.reduceat(logits, starts)
    e = np.exp(logits - top[cand_item])
    total = np.add.reduceat(e, starts)
    return e / total[cand_item], float(np.sum(top + np.log(total)))


def _segment_argmax(scores: np.ndarray, cand_item: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Global index of the first maximal candidate of each item."""
    is_top = scores >= np.maximum.reduceat(scores, starts)[cand_item]
    index = np.where(is_top, np.arange(len(scores)), len(scores))
    return np.minimum.reduceat(index, starts)


def weighted_vote(votes: Votes, worker_weights: Sequence[float] | np.ndarray) -> VoteResult:
    """Each vote counts its teacher's weight (≥ 0); posterior = weighted share within the item."""
    w = np.asarray(worker_weights, dtype=np.float64)
    if w.shape != (votes.n_workers,) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"worker_weights must be {votes.n_workers} finite non-negative numbers, got {w}")
    score = np.bincount(votes.cand, weights=w[votes.worker], minlength=len(votes.labels))
    total = np.add.reduceat(score, votes.starts)[votes.cand_item]
    share = np.divide(score, total, out=np.zeros_like(score), where=total > 0)
    return VoteResult(posterior=share, winner=_segment_argmax(share, votes.cand_item, votes.starts))


def majority_vote(votes: Votes) -> VoteResult:
    """Every vote counts 1; posterior = the candidate's share of the item's votes."""
    return weighted_vote(votes, np.ones(votes.n_workers))


# ----------------------------------------------------------------------------- Dawid–Skene
def dawid_skene(votes: Votes, model: str = "one_coin", tol: float = 1e-6, max_iter: int = 200,
                prior_right: float = 2.0, prior_wrong: float = 1.0, clamp: np.ndarray | None = None) -> DSResult:
    """Dawid–Skene EM, initialised from the majority vote, iterated until the largest change
    of any posterior is below `tol` (or `max_iter` rounds).

    model: "one_coin" (any labels) or "full" (needs `votes.classes`: a confusion matrix per
        teacher over the shared classes).
    prior_right, prior_wrong: pseudo-votes per teacher for and against the truth (a Beta prior
        on the one-coin accuracy; a Dirichlet prior on each confusion row); both must be > 0.
    clamp: gold items. [n_candidates] posteriors fixed for the anchored items (items whose
        truth is known: 1 on the right candidate, 0 elsewhere; all 0 when no teacher was right)
        and NaN for the free ones. The error models are then estimated on the anchored items'
        votes alone and applied to the free items (the crowdsourcing practice of gold
        questions). Label-free EM has one blind spot, teachers that share their mistakes look
        like teachers that agree because they are right, and letting the free items take part
        in the M-step drags the estimates back to that wrong fixed point. Measured on the
        correlated pool of tests/matching/test_consensus.py (1,000 items, 10% anchored):
        label-free 0.615 of the items right; anchors inside a full semi-supervised EM 0.656;
        error models from the anchors alone 0.839.
    """
    if model not in MODELS:
        raise RmsdError(f"Dawid–Skene model {model!r} is unknown: use one of {MODELS}")
    if model == "full" and votes.classes is None:
        raise RmsdError("Dawid–Skene model 'full' needs answers from a shared class set (mcq letters): "
                        "use model 'one_coin' for numeric or grounding answers")
    if prior_right <= 0 or prior_wrong <= 0:
        raise ValueError(f"prior_right and prior_wrong must be > 0, got {prior_right}, {prior_wrong}")
    if len(votes.cand) == 0:
        raise ValueError("Dawid–Skene needs at least one vote")
    fixed, learn = None, np.ones(len(votes.cand))
    if clamp is not None:
        clamp = np.asarray(clamp, dtype=float)
        if clamp.shape != (len(votes.labels),):
            raise ValueError(f"clamp needs one entry per candidate ({len(votes.labels)}), got shape {clamp.shape}")
        fixed = ~np.isnan(clamp)
        learn = fixed[votes.cand].astype(float)  # the M-step reads the gold items' votes only
    posterior = majority_vote(votes).posterior
    if fixed is not None:
        posterior[fixed] = clamp[fixed]
    step = _one_coin_step if model == "one_coin" else _full_step
    converged, n_iter, params = False, 0, {}
    for n_iter in range(1, max_iter + 1):  # noqa: B007 — n_iter is reported
        new_posterior, log_lik, params = step(votes, posterior, prior_right, prior_wrong, learn)
        if fixed is not None:
            new_posterior[fixed] = clamp[fixed]
        delta = float(np.max(np.abs(new_posterior - posterior)))
        posterior = new_posterior
        if delta < tol:
            converged = True
            break
    n_votes = np.bincount(votes.worker, minlength=votes.n_workers)
    right = np.bincount(votes.worker, weights=posterior[votes.cand], minlength=votes.n_workers)
    return DSResult(posterior=posterior, winner=_segment_argmax(posterior, votes.cand_item, votes.starts),
                    reliability=right / np.maximum(n_votes, 1), prior=params.get("prior"),
                    confusion=params.get("confusion"), coin=params.get("coin"), n_iter=n_iter,
                    converged=converged, log_likelihood=log_lik)


def _class_prior(votes: Votes, posterior: np.ndarray) -> np.ndarray:
    """Share of posterior mass per class, add-one smoothed (a class nobody chose keeps some prior)."""
    counts = np.bincount(votes.cand_class, weights=posterior, minlength=len(votes.classes)) + 1.0
    return counts / counts.sum()


def _one_coin_step(votes: Votes, posterior: np.ndarray, prior_right: float, prior_wrong: float,
                   learn: np.ndarray) -> tuple[np.ndarray, float, dict]:
    """One M-step (p_t, class prior) then one E-step (posterior over each item's candidates).

    learn: [N] weight of each vote in the M-step (1, or 0 outside the gold items)."""
    n_votes = np.bincount(votes.worker, weights=learn, minlength=votes.n_workers)
    right = np.bincount(votes.worker, weights=posterior[votes.cand] * learn, minlength=votes.n_workers)
    coin = (right + prior_right) / (n_votes + prior_right + prior_wrong)
    # A wrong vote picks one of the item's other candidates uniformly; with a single candidate
    # there is nothing to be wrong about and the term cancels in the softmax anyway.
    others = np.maximum(votes.candidates_per_item() - 1, 1)
    log_right = np.log(coin)[votes.worker]
    log_wrong = np.log1p(-coin)[votes.worker] - np.log(others)[votes.item]
    # log P(votes | true = c) = Σ_v log_wrong(v) + Σ_{v voted c} (log_right − log_wrong)
    base = np.bincount(votes.item, weights=log_wrong, minlength=votes.n_items)
    bonus = np.bincount(votes.cand, weights=log_right - log_wrong, minlength=len(votes.labels))
    logits = base[votes.cand_item] + bonus
    params: dict = {"coin": coin}
    if votes.classes is not None:
        params["prior"] = _class_prior(votes, posterior)
        logits = logits + np.log(params["prior"])[votes.cand_class]
    new_posterior, log_lik = _segment_softmax(logits, votes.cand_item, votes.starts)
    return new_posterior, log_lik, params


def _full_step(votes: Votes, posterior: np.ndarray, prior_right: float, prior_wrong: float,
               learn: np.ndarray) -> tuple[np.ndarray, float, dict]:
    """One M-step (confusion per teacher, class prior) then one E-step, on a dense [I, K] posterior."""
    n_classes = len(votes.classes)
    dense = np.zeros((votes.n_items, n_classes))
    dense[votes.cand_item, votes.cand_class] = posterior
    answered = votes.cand_class[votes.cand]  # [N] class each vote chose
    cell = votes.worker * n_classes + answered
    # counts[w, j, l] = Σ_{votes of w answering l} P(true = j); one bincount per true class j.
    counts = np.stack([np.bincount(cell, weights=dense[votes.item, j] * learn, minlength=votes.n_workers * n_classes)
                       for j in range(n_classes)])  # [j, (w, l)]
    counts = counts.reshape(n_classes, votes.n_workers, n_classes).transpose(1, 0, 2)  # [w, j, l]
    diagonal = np.eye(n_classes, dtype=bool)
    confusion = counts + np.where(diagonal, prior_right, prior_wrong / max(n_classes - 1, 1))
    confusion /= confusion.sum(axis=2, keepdims=True)
    prior = _class_prior(votes, posterior)
    log_conf = np.log(confusion)
    contrib = log_conf[votes.worker, :, answered]  # [N, K]: log P(vote | true = j)
    scores = np.stack([np.bincount(votes.item, weights=contrib[:, j], minlength=votes.n_items)
                       for j in range(n_classes)], axis=1) + np.log(prior)
    logits = scores[votes.cand_item, votes.cand_class]  # only the item's own candidates compete
    new_posterior, log_lik = _segment_softmax(logits, votes.cand_item, votes.starts)
    return new_posterior, log_lik, {"prior": prior, "confusion": confusion}
