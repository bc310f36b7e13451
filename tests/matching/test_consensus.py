"""Consensus: vote tables, majority / weighted votes, and Dawid–Skene EM on simulated pools
with known teacher reliabilities, correlated mistakes and a letter bias."""

from __future__ import annotations

import numpy as np
import pytest

from rmsd.errors import RmsdError
from rmsd.matching.consensus import build_votes, dawid_skene, majority_vote, weighted_vote

LETTERS = ("A", "B", "C", "D")


def simulate(accuracies, n_items=2000, k=4, seed=0, bias=None, decoy=None):
    """Votes of teachers with the given accuracies on 4-option items (K samples each).

    bias: {teacher: (letter index, strength)}: a wrong answer lands on that letter with this probability.
    decoy: {teacher: strength}: a wrong answer is the item's shared decoy with this probability
        (teachers with a decoy make the *same* mistakes: correlated errors).
    Returns (truth [I], answers [T, I, K]).
    """
    rng = np.random.default_rng(seed)
    truth = rng.integers(4, size=n_items)
    decoy_answer = (truth + rng.integers(1, 4, size=n_items)) % 4
    answers = []
    for t, acc in enumerate(accuracies):
        correct = rng.random((n_items, k)) < acc
        wrong = (truth[:, None] + rng.integers(1, 4, size=(n_items, k))) % 4
        if bias and t in bias:
            letter, strength = bias[t]
            wrong = np.where((rng.random((n_items, k)) < strength) & (truth[:, None] != letter), letter, wrong)
        if decoy and t in decoy:
            wrong = np.where(rng.random((n_items, k)) < decoy[t], decoy_answer[:, None], wrong)
        answers.append(np.where(correct, truth[:, None], wrong))
    return truth, np.stack(answers)


def to_votes(answers, classes=True):
    n_teachers, n_items, k = answers.shape
    t, i, _ = np.meshgrid(np.arange(n_teachers), np.arange(n_items), np.arange(k), indexing="ij")
    labels = [LETTERS[a] for a in answers.ravel()]
    return build_votes(i.ravel().tolist(), [f"t{x}" for x in t.ravel()], labels,
                       candidates={x: LETTERS for x in range(n_items)}, classes=LETTERS if classes else None)


def accuracy_of(result, votes, truth):
    winners = result.winner_labels(votes)
    return np.mean([winners[i] == LETTERS[truth[i]] for i in range(len(truth))])


# ----------------------------------------------------------------------------- hand-made tables
def test_build_votes_groups_candidates_by_item_and_adds_declared_options():
    votes = build_votes(["q2", "q1", "q2", "q1"], ["a", "a", "b", "b"], ["C", "A", "A", "A"],
                        candidates={"q1": "ABC", "q2": "ABC", "unseen": "AB"}, classes="ABC")
    assert votes.item_keys == ["q2", "q1"]  # the item without votes is left out
    assert votes.labels == ["A", "B", "C", "A", "B", "C"]  # every option, in class order
    assert votes.cand_item.tolist() == [0, 0, 0, 1, 1, 1]
    assert [votes.labels[c] for c in votes.cand] == ["C", "A", "A", "A"]
    assert votes.cand_class.tolist() == [0, 1, 2, 0, 1, 2]


def test_build_votes_rejects_a_label_outside_the_classes():
    with pytest.raises(ValueError, match="not one of classes"):
        build_votes(["q"], ["a"], ["E"], classes="ABCD")


def test_majority_vote_shares_and_first_candidate_wins_a_tie():
    votes = build_votes(["q"] * 4 + ["r"] * 2, ["a", "b", "c", "d", "a", "b"], ["B", "B", "A", "C", "7", "3"])
    result = majority_vote(votes)
    shares = dict(zip(votes.labels, result.posterior.round(3).tolist(), strict=True))
    assert shares == {"B": 0.5, "A": 0.25, "C": 0.25, "7": 0.5, "3": 0.5}
    assert result.winner_labels(votes) == {"q": "B", "r": "7"}


def test_weighted_vote_lets_one_heavy_teacher_outvote_two():
    votes = build_votes(["q"] * 3, ["strong", "weak1", "weak2"], ["A", "B", "B"])
    assert majority_vote(votes).winner_labels(votes) == {"q": "B"}
    result = weighted_vote(votes, [3.0, 1.0, 1.0])
    assert result.winner_labels(votes) == {"q": "A"}
    assert result.posterior.tolist() == pytest.approx([0.6, 0.4])
    with pytest.raises(ValueError, match="non-negative"):
        weighted_vote(votes, [1.0, -1.0, 1.0])


def test_dawid_skene_with_a_single_candidate_is_certain_and_bad_models_are_user_errors():
    votes = build_votes(["q", "q", "r"], ["a", "b", "a"], ["1", "1", "2"])
    result = dawid_skene(votes)
    assert result.posterior.tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(RmsdError, match="one_coin"):
        dawid_skene(votes, model="full")
    with pytest.raises(RmsdError, match="unknown"):
        dawid_skene(votes, model="three_coin")


# ----------------------------------------------------------------------------- simulated pools
@pytest.mark.parametrize("model", ["one_coin", "full"])
def test_dawid_skene_recovers_known_teacher_reliabilities(model):
    truth, answers = simulate([0.9, 0.7, 0.55], k=4, seed=1)
    votes = to_votes(answers)
    result = dawid_skene(votes, model=model)
    empirical = (answers == truth[None, :, None]).mean(axis=(1, 2))
    assert result.converged
    assert votes.worker_names == ["t0", "t1", "t2"]
    assert np.abs(result.reliability - empirical).max() < 0.05
    assert np.abs(result.reliability - [0.9, 0.7, 0.55]).max() < 0.05
    assert accuracy_of(result, votes, truth) > 0.97
    if model == "one_coin":
        assert np.abs(result.coin - empirical).max() < 0.05


def test_dawid_skene_works_on_open_label_sets_without_classes():
    """Numeric-style answers: labels are arbitrary strings, candidates only what was observed."""
    truth, answers = simulate([0.85, 0.6, 0.5], k=3, seed=2)
    n_teachers, n_items, k = answers.shape
    t, i, _ = np.meshgrid(np.arange(n_teachers), np.arange(n_items), np.arange(k), indexing="ij")
    labels = [str(100 * x + a) for x, a in zip(i.ravel(), answers.ravel(), strict=True)]  # unique per item
    votes = build_votes(i.ravel().tolist(), t.ravel().tolist(), labels)
    result = dawid_skene(votes)
    empirical = (answers == truth[None, :, None]).mean(axis=(1, 2))
    assert np.abs(result.reliability - empirical).max() < 0.05
    assert result.prior is None and result.confusion is None


def test_posterior_vote_beats_majority_when_two_weak_teachers_share_their_mistakes():
    # one strong teacher; two weak ones whose mistakes mostly land on the same decoy answer
    truth, answers = simulate([0.9, 0.4, 0.4], k=3, seed=3, decoy={1: 0.9, 2: 0.9})
    votes = to_votes(answers)
    majority = accuracy_of(majority_vote(votes), votes, truth)
    ds = dawid_skene(votes)
    posterior = accuracy_of(ds, votes, truth)
    assert posterior > majority + 0.05, (posterior, majority)
    assert ds.reliability[0] > ds.reliability[1] + 0.2 and ds.reliability[0] > ds.reliability[2] + 0.2
    # the posterior of the correct answer is higher than its vote share on average
    correct = np.array([votes.labels[c] == LETTERS[truth[votes.cand_item[c]]] for c in range(len(votes.labels))])
    assert ds.posterior[correct].mean() > majority_vote(votes).posterior[correct].mean()


def test_full_confusion_recovers_a_letter_bias():
    # teacher 1 puts 90% of its mistakes on "B"; teacher 0 and 2 err uniformly
    truth, answers = simulate([0.85, 0.6, 0.7], k=4, seed=4, bias={1: (1, 0.9)})
    votes = to_votes(answers)
    result = dawid_skene(votes, model="full")
    conf = result.confusion  # [teacher, true, answer]
    for j in (0, 2, 3):
        said = answers[1][truth == j].ravel()
        assert abs(conf[1, j, 1] - np.mean(said == 1)) < 0.05  # P(answer B | true j) for the biased teacher
        assert conf[1, j, 1] > 0.3 and conf[0, j, 1] < 0.1 and conf[2, j, 1] < 0.15
    assert np.abs(result.prior - np.bincount(truth, minlength=4) / len(truth)).max() < 0.03
    # knowing the bias, a "B" from teacher 1 is weak evidence: full is at least as accurate as one-coin
    one_coin = dawid_skene(votes, model="one_coin")
    assert accuracy_of(result, votes, truth) >= accuracy_of(one_coin, votes, truth) - 0.005


def test_the_prior_that_teachers_beat_chance_lifts_a_lone_vote_above_chance():
    votes = build_votes(["q"], ["t"], ["A"], candidates={"q": "AB"})
    # fixed point of p = (p + 2) / (1 + 3): the posterior of the lone answer is 2/3
    assert dawid_skene(votes).posterior[0] == pytest.approx(2 / 3, abs=1e-4)
    assert dawid_skene(votes, prior_right=1.0, prior_wrong=1.0).posterior[0] == pytest.approx(0.5, abs=1e-4)
    lettered = build_votes(["q"], ["t"], ["A"], candidates={"q": "AB"}, classes="AB")
    for model in ("one_coin", "full"):  # the learned class prior leans toward A as well
        assert dawid_skene(lettered, model=model).posterior[0] > 2 / 3
    with pytest.raises(ValueError, match="prior_right"):
        dawid_skene(votes, prior_wrong=0.0)


def simulate_shared_mistakes(n_items=1000, k=2, seed=0, strong=0.75, weak=(0.4, 0.55)):
    """A strong teacher and two weak ones whose mistakes coincide: one draw decides whether
    both err on a sample, and both then give the item's decoy (two small models trained on
    the same data). Label-free EM cannot tell that pair from two teachers that are right."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(4, size=n_items)
    decoy = (truth + rng.integers(1, 4, size=n_items)) % 4
    own = np.where(rng.random((n_items, k)) < strong, truth[:, None],
                   (truth[:, None] + rng.integers(1, 4, size=(n_items, k))) % 4)
    u = rng.random((n_items, k))
    return truth, np.stack([own, *(np.where(u < acc, truth[:, None], decoy[:, None]) for acc in weak)])


def gold_clamp(votes, truth, fraction, seed=1):
    """Dawid–Skene's clamp with `fraction` of the items labelled (1 on the truth, 0 elsewhere)."""
    gold = np.random.default_rng(seed).random(len(truth)) < fraction
    clamp = np.full(len(votes.labels), np.nan)
    for c, i in enumerate(votes.cand_item):
        item = votes.item_keys[i]
        if gold[item]:
            clamp[c] = float(votes.labels[c] == LETTERS[truth[item]])
    return clamp, gold


@pytest.mark.parametrize("model", ["one_coin", "full"])
def test_gold_items_see_through_teachers_that_share_their_mistakes(model):
    truth, answers = simulate_shared_mistakes()
    votes = to_votes(answers, classes=model == "full")
    free = dawid_skene(votes, model=model)
    assert free.reliability[0] < free.reliability[1]  # label-free: the strong teacher ranked below a weak one
    clamp, gold = gold_clamp(votes, truth, 0.05)
    anchored = dawid_skene(votes, model=model, clamp=clamp)
    assert anchored.reliability[0] > anchored.reliability[1] + 0.15 and anchored.reliability[0] > anchored.reliability[2]
    winners = anchored.winner_labels(votes)
    unlabelled = [i for i in range(len(truth)) if not gold[i]]
    right = np.mean([winners[i] == LETTERS[truth[i]] for i in unlabelled])
    free_right = np.mean([free.winner_labels(votes)[i] == LETTERS[truth[i]] for i in unlabelled])
    assert right > free_right + 0.15, (right, free_right)
    fixed = ~np.isnan(clamp)
    np.testing.assert_array_equal(anchored.posterior[fixed], clamp[fixed])  # gold posteriors stay the labels
    assert anchored.converged
    with pytest.raises(ValueError, match="one entry per candidate"):
        dawid_skene(votes, clamp=clamp[:-1])
