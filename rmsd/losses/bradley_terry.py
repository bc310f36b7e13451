"""Bradley–Terry discriminator loss of the adversarial stage (GAD, arXiv 2511.10643, eq. 3).

    L_D = E[ −log σ(D(x, y_T) − D(x, y_S)) ],   −log σ(m) = softplus(−m)

The discriminator D scores a (prompt, response) pair; the loss pushes the teacher sample's
score above the student rollout's. How it differs from GAD: pairs may carry weights (R-MSD's
quality-aware matching: a teacher sample that the pool agrees on counts more), so the
expectation is a weighted mean. Written with softplus, which stays finite and exact for
margins of any size (log(sigmoid(m)) underflows to −inf for m ≈ −100 in float32).

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(score_teacher: torch.Tensor, score_student: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean of −log σ(D_T − D_S), a scalar.

    score_teacher, score_student: [B] scores of paired teacher samples and student rollouts.
    weights: [B] ≥ 0, or None for a plain mean; when they sum to 0 the loss is 0 with a zero gradient.
    """
    if score_teacher.shape != score_student.shape or score_teacher.dim() != 1:
        raise ValueError(f"expected two [B] score tensors, got {tuple(score_teacher.shape)} and "
                         f"{tuple(score_student.shape)}")
    per_pair = F.softplus(score_student - score_teacher)  # = −log σ(D_T − D_S)
    if weights is None:
        return per_pair.mean()
    if weights.shape != per_pair.shape:
        raise ValueError(f"weights {tuple(weights.shape)} must match the scores {tuple(per_pair.shape)}")
    weights = weights.to(per_pair.dtype)
    return (weights * per_pair).sum() / weights.sum().clamp(min=torch.finfo(per_pair.dtype).tiny)


def discriminator_accuracy(score_teacher: torch.Tensor, score_student: torch.Tensor) -> torch.Tensor:
    """Share of pairs in which the teacher sample scores higher (ties count one half), a 0-dim tensor.

    0.5 is chance: a discriminator the student fools completely; 1.0 separates every pair.
    """
    wins = (score_teacher > score_student).float() + 0.5 * (score_teacher == score_student).float()
    return wins.mean() if wins.numel() else wins.new_tensor(float("nan"))
