"""Video-R1's T-GRPO temporal bonus (`rmsd.losses.temporal_bonus`) on hand-computed groups.

Held to Video-R1's own definition, read from tulerfeng/Video-R1,
src/r1-v/src/open_r1/trainer/grpo_trainer.py at commit 59d65c347e44efa71be27abf9d89b4a2bb7d1c05
(`_prepare_inputs`, the `if self.temporal and video_inputs:` block): acc_mean and
shuffled_acc_mean are the means of the accuracy reward over the ordered and the shuffled
rollouts; when acc_mean >= 0.8 * shuffled_acc_mean, every rollout whose accuracy reward is
> 0.1 gets +0.3 on it; the shuffled rewards enter nothing else. Its author says in
tulerfeng/Video-R1#74 that the 0.8 should be 1.0 (the paper's rule), rmsd's default.
"""

from __future__ import annotations

import math

import pytest

from rmsd.config import AdversarialStageConfig, TemporalConfig
from rmsd.losses.temporal_bonus import temporal_contrast


def _video_r1(ordered: list[float], shuffled: list[float], mu: float = 0.8, alpha: float = 0.3) -> list[float]:
    """Video-R1's rule as its code states it (the module docstring), on one device's group: the new accuracy rewards."""
    acc_mean, shuffled_acc_mean = sum(ordered) / len(ordered), sum(shuffled) / len(shuffled)
    if acc_mean >= mu * shuffled_acc_mean:
        return [r + alpha if r > 0.1 else r for r in ordered]
    return list(ordered)


def test_bonus_fires_when_ordered_beats_shuffled_and_pays_only_correct_ordered_rollouts():
    # p = 3/4, p̃ = 1/2: 0.75 >= 1.0 * 0.5
    out = temporal_contrast([1.0, 0.0, 1.0, 1.0], [1.0, 0.0], bonus=0.3, ratio=1.0)
    assert out.fired and out.ordered == 0.75 and out.shuffled == 0.5
    assert out.bonuses == [0.3, 0.0, 0.3, 0.3]
    assert len(out.bonuses) == 4  # one per ordered rollout: the shuffled ones get nothing to train on


def test_no_bonus_when_shuffled_frames_answer_better():
    # p = 1/4, p̃ = 1/2: 0.25 < 0.5, nobody is paid, not even the correct ordered rollout
    out = temporal_contrast([1.0, 0.0, 0.0, 0.0], [1.0, 0.0], bonus=0.3, ratio=1.0)
    assert not out.fired and out.bonuses == [0.0, 0.0, 0.0, 0.0]


def test_the_ratio_decides_near_ties_and_equality_fires():
    ordered, shuffled = [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]  # p = 0.5, p̃ = 0.75
    assert not temporal_contrast(ordered, shuffled, 0.3, ratio=1.0).fired  # 0.5 < 0.75
    assert temporal_contrast(ordered, shuffled, 0.3, ratio=0.6).fired  # 0.5 >= 0.45
    tie = temporal_contrast([1.0, 0.0], [0.0, 1.0], 0.3, ratio=1.0)  # p = p̃: ">=" fires
    assert tie.fired and tie.bonuses == [0.3, 0.0]
    none_right = temporal_contrast([0.0, 0.0], [0.0, 0.0], 0.3, ratio=1.0)  # fires (0 >= 0), pays nobody
    assert none_right.fired and none_right.bonuses == [0.0, 0.0]


def test_continuous_scores_count_as_correct_above_video_r1s_threshold():
    # tIoU-like scores: p = (0.05 + 0.5 + 0.9) / 3, p̃ = 0.2; the 0.05 rollout is below 0.1, so unpaid
    out = temporal_contrast([0.05, 0.5, 0.9], [0.2, 0.2], bonus=0.3, ratio=1.0)
    assert out.fired and out.ordered == pytest.approx(1.45 / 3) and out.bonuses == [0.0, 0.3, 0.3]


def test_unscored_rollouts_are_left_out_and_unpaid():
    out = temporal_contrast([1.0, None, float("nan"), 0.0], [0.0, None], bonus=0.3, ratio=1.0)
    assert out.ordered == 0.5 and out.shuffled == 0.0 and out.bonuses == [0.3, 0.0, 0.0, 0.0]
    nothing = temporal_contrast([1.0, 1.0], [None, None], bonus=0.3, ratio=1.0)
    assert not nothing.fired and math.isnan(nothing.shuffled) and nothing.bonuses == [0.0, 0.0]


@pytest.mark.parametrize("ordered, shuffled", [
    ([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]),  # 0.5 >= 0.8 * 0.5
    ([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]),  # 0.25 < 0.4
    ([0.0, 0.3, 0.05, 1.0], [0.5, 0.5]),  # 0.3375 < 0.4
    ([0.7, 0.3, 0.05, 1.0], [0.5, 0.5]),  # 0.5125 >= 0.4, the 0.05 unpaid
])
def test_with_video_r1s_code_constants_the_rewards_are_video_r1s(ordered, shuffled):
    out = temporal_contrast(ordered, shuffled, bonus=0.3, ratio=0.8)
    new = [r + b for r, b in zip(ordered, out.bonuses, strict=True)]
    assert new == pytest.approx(_video_r1(ordered, shuffled))


def test_bad_constants_are_refused():
    with pytest.raises(ValueError, match="ratio"):
        temporal_contrast([1.0], [1.0], bonus=0.3, ratio=0.0)
    with pytest.raises(ValueError, match="bonus"):
        temporal_contrast([1.0], [1.0], bonus=-0.1, ratio=1.0)


def test_the_recipe_defaults_are_the_papers_and_the_correctness_reward_is_required():
    from pydantic import ValidationError

    t = TemporalConfig()
    assert (t.enabled, t.bonus, t.ratio, t.shuffled_generations) == (False, 0.3, 1.0, None)
    stage = AdversarialStageConfig(num_generations=8, reward_weights={"correctness": 1.0},
                                   temporal={"enabled": True})
    assert stage.shuffled_generations == 4  # Video-R1: num_generations // 2
    assert AdversarialStageConfig(reward_weights={"correctness": 1.0},
                                  temporal={"enabled": True, "shuffled_generations": 3}).shuffled_generations == 3
    with pytest.raises(ValidationError, match="temporal needs the correctness reward"):
        AdversarialStageConfig(reward_weights={"discriminator": 1.0, "correctness": 0.0}, temporal={"enabled": True})
    with pytest.raises(ValidationError, match="ratio"):
        TemporalConfig(ratio=0)
    with pytest.raises(ValidationError, match="shuffled_generations"):
        TemporalConfig(shuffled_generations=0)
