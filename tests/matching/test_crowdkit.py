"""Our Dawid–Skene (rmsd.matching.consensus) against crowd-kit's (`crowdkit.aggregation`) on
the same votes.

crowd-kit 1.4.2's `DawidSkene` is the classic model: a full confusion matrix per worker, a
learned class prior, initialised by majority vote, maximum likelihood (no prior on the
confusions: zero counts are clipped at 1e-10), every task over the same global label set,
and a worker's repeated votes on one task counted as independent votes. `OneCoinDawidSkene`
is the same with one accuracy per worker, mistakes spread evenly over the other labels.

Ours coincides with them when (a) every item's candidates are the whole label set, (b) the
pseudo-vote prior on the teachers is made negligible (`prior_right`, `prior_wrong` ~1e-10),
and (c) the class prior is the plain share of posterior mass: ours adds one pseudo-item per
class (`consensus._class_prior`), a difference that fades as 1/items; (c) is patched here to
isolate it. Both start from the majority vote and alternate M and E steps in the same order,
so after the same number of rounds the posteriors agree to rounding. With our defaults
(Beta(2, 1) pseudo-votes, smoothed class prior) they agree closely on thousands of votes.
What crowd-kit has no counterpart for (gold items that alone set the error models, item-
specific candidate sets for numeric answers and span clusters, one model per task type) is
in ARCHITECTURE.md, "Build or reuse"; the speed comparison in benchmarks/results/consensus.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene, OneCoinDawidSkene

from rmsd.matching import consensus
from rmsd.matching.consensus import build_votes, dawid_skene

LETTERS = ("A", "B", "C", "D")
TINY = 1e-10  # crowd-kit's clip for zero probabilities; our pseudo-votes set to it


def simulated_votes(n_items: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Votes of five workers (two votes each per item they see) on 4-option items, one biased to "B".

    Each worker skips 20% of the items, so the table is not a full grid. Returns (votes with
    columns task, worker, label; true label index per item)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(4, size=n_items)
    accuracies = {"strong": 0.85, "good": 0.7, "weak": 0.5, "noisy": 0.4, "biased": 0.6}
    frames = []
    for name, acc in accuracies.items():
        seen = np.flatnonzero(rng.random(n_items) < 0.8)
        for _ in range(2):  # a worker voting twice on an item: two independent votes in both models
            wrong = (truth[seen] + rng.integers(1, 4, size=len(seen))) % 4
            if name == "biased":
                wrong = np.where((rng.random(len(seen)) < 0.8) & (truth[seen] != 1), 1, wrong)
            answer = np.where(rng.random(len(seen)) < acc, truth[seen], wrong)
            frames.append(pd.DataFrame({"task": seen, "worker": name, "label": [LETTERS[a] for a in answer]}))
    return pd.concat(frames, ignore_index=True), truth


def ours(df: pd.DataFrame, model: str, **kw):
    votes = build_votes(df.task.tolist(), df.worker.tolist(), df.label.tolist(),
                        candidates={t: LETTERS for t in df.task.unique()}, classes=LETTERS)
    return votes, dawid_skene(votes, model=model, **kw)


def as_table(votes, result) -> pd.DataFrame:
    """Our posterior as crowd-kit's table: one row per task, one column per label."""
    table = np.zeros((votes.n_items, len(LETTERS)))
    table[votes.cand_item, votes.cand_class] = result.posterior
    return pd.DataFrame(table, index=votes.item_keys, columns=list(LETTERS)).sort_index()


def theirs(df: pd.DataFrame, model: str, n_iter: int, tol: float) -> pd.DataFrame:
    cls = DawidSkene if model == "full" else OneCoinDawidSkene
    probas = cls(n_iter=n_iter, tol=tol).fit_predict_proba(df)
    return probas.reindex(columns=list(LETTERS)).sort_index()


def plain_class_prior(votes, posterior):
    """crowd-kit's class prior: the mean posterior over tasks (ours adds one pseudo-item per class)."""
    mass = np.bincount(votes.cand_class, weights=posterior, minlength=len(votes.classes))
    return mass / mass.sum()


@pytest.mark.parametrize("model", ["full", "one_coin"])
@pytest.mark.parametrize("rounds", [1, 5, 30])
def test_same_posteriors_as_crowdkit_when_the_models_coincide(model, rounds, monkeypatch):
    df, _ = simulated_votes(1500)
    monkeypatch.setattr(consensus, "_class_prior", plain_class_prior)
    # tol=0 / -inf: neither stops early, both run exactly `rounds` M+E rounds from the majority vote
    votes, result = ours(df, model, prior_right=TINY, prior_wrong=TINY * (len(LETTERS) - 1), tol=0.0,
                         max_iter=rounds)
    assert result.n_iter == rounds
    mine, ref = as_table(votes, result), theirs(df, model, n_iter=rounds, tol=-np.inf)
    assert list(mine.index) == list(ref.index)
    assert np.abs(mine.to_numpy() - ref.to_numpy()).max() < 1e-7


def test_the_smoothed_class_prior_is_the_only_gap_and_it_is_small(monkeypatch):
    df, _ = simulated_votes(1500)
    kw = {"prior_right": TINY, "prior_wrong": TINY * 3, "tol": 0.0, "max_iter": 30}
    ref = theirs(df, "full", n_iter=30, tol=-np.inf).to_numpy()
    gap = np.abs(as_table(*ours(df, "full", **kw)).to_numpy() - ref).max()
    monkeypatch.setattr(consensus, "_class_prior", plain_class_prior)
    assert np.abs(as_table(*ours(df, "full", **kw)).to_numpy() - ref).max() < 1e-7 < gap < 0.05


@pytest.mark.parametrize("model", ["full", "one_coin"])
def test_with_our_defaults_both_converge_to_nearly_the_same_answers(model):
    """Our Beta(2, 1) pseudo-votes and smoothed class prior against plain maximum likelihood:
    with ~2,400 votes per worker the mean posterior moves by under a thousandth (measured
    2e-4 full, 6e-4 one-coin), the largest move is a few hundredths on a contested item
    (0.010, 0.027), and the winners differ on one or two items in 1,500."""
    df, truth = simulated_votes(1500)
    votes, result = ours(df, model, tol=1e-9, max_iter=500)
    mine, ref = as_table(votes, result), theirs(df, model, n_iter=500, tol=1e-12)
    assert result.converged
    gap = np.abs(mine.to_numpy() - ref.to_numpy())
    assert 0 < gap.mean() < 1e-3 and gap.max() < 0.05
    assert (mine.idxmax(axis=1) == ref.idxmax(axis=1)).mean() > 0.995
    right = np.array([LETTERS[t] for t in truth[mine.index.to_numpy()]])
    assert abs((mine.idxmax(axis=1) == right).mean() - (ref.idxmax(axis=1) == right).mean()) < 0.005
