"""Video-R1's temporal contrast (T-GRPO): a bonus for correct answers that needed the frames' order.

For one item the policy answers G times from its frames in order and G′ times from the same
frames shuffled (same prompt, same sampling). With the correctness scores s_i of the ordered
rollouts and s̃_j of the shuffled ones,

    p = mean_i s_i,   p̃ = mean_j s̃_j                   (the share correct, for 0/1 scores)
    r_i ← r_i + α · 1[p ≥ μ · p̃] · 1[s_i > 0.1]        (ordered rollouts only)

so a correct ordered rollout earns α only when the group answers at least μ times as well
from the ordered clip as from the shuffled one; shuffled rollouts are scored, never trained
on. Video-R1 (arXiv 2503.21776) defines T-GRPO with α = 0.3 and, per its author in
tulerfeng/Video-R1#74, μ = 1; its code (tulerfeng/Video-R1,
src/r1-v/src/open_r1/trainer/grpo_trainer.py at commit
59d65c347e44efa71be27abf9d89b4a2bb7d1c05) compares against 0.8 · p̃, which the author
there calls a leftover ("should be 1.0"). "Correct" is the code's `accuracy reward > 0.1`
(a continuous score such as a tIoU counts from 0.1), and p, p̃ are means of that score, as
there. How rmsd differs: the rule is applied per item (Video-R1 trains one item per device,
`per_device_train_batch_size 1`, so its batch means are an item's), and a group without a
scored rollout (no ground truth) gets nothing.

    rmsd distill --recipe recipes/synthvid/experiment_sft_rl_temporal.yaml --matched runs/synthvid-experiment/matched
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CORRECT_ABOVE = 0.1  # Video-R1's `temporal_rewards_per_func[:, 0] > 0.1`: what counts as a correct rollout


@dataclass(frozen=True)
class TemporalContrast:
    """The rule's outcome for one item: the bonus per ordered rollout and what decided it.

    bonuses: α or 0 per ordered rollout, in their order. fired: p ≥ μ·p̃ held (and both
    groups had a score). ordered / shuffled: p and p̃ (NaN when the group had no score).
    """

    bonuses: list[float]
    fired: bool
    ordered: float
    shuffled: float


def temporal_contrast(ordered: Sequence[float | None], shuffled: Sequence[float | None], bonus: float,
                      ratio: float) -> TemporalContrast:
    """The docstring's rule for one item's G ordered and G′ shuffled correctness scores.

    ordered: s_i, one per ordered rollout (None or NaN: not scored, e.g. no ground truth).
    shuffled: s̃_j, one per shuffled rollout. bonus: α ≥ 0. ratio: μ > 0.
    Unscored rollouts are left out of p and p̃ and never get the bonus; a group with no
    scored rollout on either side fires nothing.
    """
    if bonus < 0 or not ratio > 0:
        raise ValueError(f"need bonus >= 0 and ratio > 0, got bonus={bonus}, ratio={ratio}")
    p, p_shuffled = _mean(ordered), _mean(shuffled)
    fired = not (math.isnan(p) or math.isnan(p_shuffled)) and p >= ratio * p_shuffled
    bonuses = [bonus if fired and _scored(s) and s > CORRECT_ABOVE else 0.0 for s in ordered]
    return TemporalContrast(bonuses, fired, p, p_shuffled)


def _scored(s: float | None) -> bool:
    return s is not None and not math.isnan(s)


def _mean(scores: Sequence[float | None]) -> float:
    kept = [float(s) for s in scores if _scored(s)]
    return sum(kept) / len(kept) if kept else math.nan
