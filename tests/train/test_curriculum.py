"""Curriculum: pacing, easy-first draws, full availability at the end, pass-rate re-ranking, determinism."""

import pytest

from rmsd.errors import RmsdError
from rmsd.train.curriculum import Curriculum, CurriculumSampler, difficulty_from_matched, pacing_fraction

IDS = [f"item{i}" for i in range(10)]
DIFFICULTY = {f"item{i}": i / 10 for i in range(10)}  # item0 easiest


def _cur(difficulty=DIFFICULTY, **kw):
    return Curriculum(IDS, difficulty, **{"total_steps": 100, "start_fraction": 0.3, "full_at": 0.5, "seed": 0, **kw})


def test_pacing_functions():
    assert pacing_fraction(0, 100, 0.3, 0.5) == pytest.approx(0.3)
    assert pacing_fraction(25, 100, 0.3, 0.5) == pytest.approx(0.65)
    assert pacing_fraction(50, 100, 0.3, 0.5) == 1.0 and pacing_fraction(99, 100, 0.3, 0.5) == 1.0
    assert pacing_fraction(25, 100, 0.3, 0.5, "root") == pytest.approx((0.09 + 0.91 * 0.5) ** 0.5)
    fr = [pacing_fraction(s, 100, 0.3, 0.5, "root") for s in range(0, 60, 5)]
    assert fr == sorted(fr) and fr[0] == pytest.approx(0.3) and fr[-1] == 1.0
    assert all(pacing_fraction(s, 100, 0.3, 0.5, "root") >= pacing_fraction(s, 100, 0.3, 0.5) for s in range(60))
    with pytest.raises(RmsdError):
        pacing_fraction(0, 10, kind="step")


def test_early_steps_only_draw_easy_items():
    cur = _cur()
    drawn = {cur.item_ids[p] for step in range(3) for p in cur.draw(step, 4)}
    assert drawn <= {"item0", "item1", "item2", "item3"}  # ceil(0.3..0.34 * 10) easiest
    assert {cur.item_ids[p] for p in cur.draw(0, 3)} == {"item0", "item1", "item2"}


def test_all_items_are_available_at_the_end():
    cur = _cur()
    assert len(cur.available(50)) == 10 and len(cur.available(99)) == 10
    drawn = {p for step in range(60, 100) for p in cur.draw(step, 4)}
    assert drawn == set(range(10))


def test_pass_rate_updates_rerank():
    cur = _cur(source="pass_rate", pass_rate_decay=0.5)
    assert [cur.item_ids[p] for p in cur.ranked()[:3]] == ["item0", "item1", "item2"]  # prior from the pool
    for _ in range(4):
        cur.update("item9", 1.0)  # the student solves the hardest item
        cur.update("item0", 0.0)  # and fails the easiest
    assert cur.difficulty("item9") < 0.1 < 0.9 < cur.difficulty("item0")
    early = [cur.item_ids[p] for p in cur.available(0)]
    assert "item9" in early and "item0" not in early
    agreement = _cur(source="agreement")
    agreement.update("item9", 1.0)  # recorded, but the ranking follows the pool
    assert agreement.item_ids[agreement.ranked()[-1]] == "item9"


def test_pass_rate_without_pool_data_and_checkpoint_round_trip():
    cur = Curriculum(IDS, None, total_steps=10, source="pass_rate", seed=1)
    assert {cur.difficulty(i) for i in IDS} == {0.5}
    cur.update("item4", 1.0)
    assert cur.ranked()[0] == 4
    fresh = Curriculum(IDS, None, total_steps=10, source="pass_rate", seed=1)
    fresh.load_state_dict(cur.state_dict())
    assert fresh.ranked() == cur.ranked()
    with pytest.raises(RmsdError, match="agreement"):
        Curriculum(IDS, None, total_steps=10, source="agreement")


def test_deterministic_with_a_seed_and_ties_broken_by_it():
    flat = dict.fromkeys(IDS, 0.5)
    a = list(CurriculumSampler(_cur(difficulty=flat, seed=3), batch_size=2))
    b = list(CurriculumSampler(_cur(difficulty=flat, seed=3), batch_size=2))
    c = list(CurriculumSampler(_cur(difficulty=flat, seed=4), batch_size=2))
    assert a == b and a != c


def test_sampler_has_trl_repeat_layout_and_pacing_runs_across_epochs():
    cur = _cur(total_steps=10, full_at=1.0)
    sampler = CurriculumSampler(cur, batch_size=2, mini_repeat_count=3, repeat_count=2, steps_per_epoch=5)
    first = list(sampler)
    assert len(first) == len(sampler) == 5 * 2 * 3 * 2
    chunk = first[:12]  # one step: [a a a b b b] twice
    assert chunk[:6] == chunk[6:] and chunk[:3] == [chunk[0]] * 3 and chunk[3:6] == [chunk[3]] * 3
    assert chunk[0] != chunk[3]
    second = list(sampler)  # epoch 1 = steps 5..9: a larger pool
    assert max(cur.ranked().index(p) for p in second) > max(cur.ranked().index(p) for p in first[:12])
    sampler.set_epoch(0)
    assert list(sampler) == first  # replaying an epoch draws the same batches (resume)


def test_difficulty_from_matched_rows():
    rows = [{"item_id": "a", "difficulty": 0.2, "agreement": 0.9}, {"item_id": "a", "difficulty": 0.2},
            {"item_id": "b", "agreement": 0.75}, {"item_id": "c"}]
    assert difficulty_from_matched(rows) == {"a": 0.2, "b": 0.25}
    cur = Curriculum(["a", "b", "c"], difficulty_from_matched(rows), total_steps=5)
    assert cur.difficulty("c") == 1.0  # no pool data: hardest
