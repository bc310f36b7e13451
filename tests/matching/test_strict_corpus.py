"""Strict letter extraction on a labelled corpus of realistic replies (tests/matching/strict_corpus.py):
abstention on replies whose letter a human reads without doubt stays at or under 2%, and no reply
is read as a letter other than its label (a letter read where the label is None counts as wrong)."""

from __future__ import annotations

import pytest
from strict_corpus import DEV, HELD_OUT, PROBES

from rmsd.scoring import letter_harness, letter_strict, strip_reasoning


def rates(corpus: list[tuple[str, str | None]]) -> tuple[float, list[tuple[str, str | None, str | None]]]:
    clear = [(t, label) for t, label in corpus if label is not None]
    abstained = sum(letter_strict(t) is None for t, _ in clear)
    wrong = [(t, label, got) for t, label in corpus if (got := letter_strict(t)) is not None and got != label]
    return abstained / len(clear), wrong


@pytest.mark.parametrize("name", ["dev", "held-out", "both"])
def test_strict_abstains_on_at_most_2_percent_of_clear_answers_and_never_misreads(name):
    corpus = {"dev": DEV, "held-out": HELD_OUT, "both": DEV + HELD_OUT}[name]
    abstention, wrong = rates(corpus)
    assert abstention <= 0.02, abstention
    assert wrong == []


def test_the_corpus_is_big_enough_and_has_both_kinds():
    corpus = DEV + HELD_OUT
    assert len(corpus) >= 150 and len({t for t, _ in corpus}) == len(corpus)  # no reply twice
    assert sum(label is None for _, label in corpus) >= 50  # traps: listed, rejected, coordinated, hedged-open


def test_probes_written_after_the_rules_are_never_misread():
    abstention, wrong = rates(PROBES)
    assert wrong == [] and abstention <= 0.05


def test_the_harness_misreads_what_strict_gets_right():
    """Why strict exists: the harness extractor on the same corpus reads wrong letters (kept for comparability)."""
    wrong = [t for t, label in DEV + HELD_OUT
             if (got := letter_harness(strip_reasoning(t))) is not None and got != label]
    assert len(wrong) >= 20
