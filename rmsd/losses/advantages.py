"""The VISD direction–magnitude decoupling of GRPO advantages, and its λ schedule.

TRL's GRPOTrainer computes the rollout advantages A_i = (r_i − mean_g) / (std_g + 1e-4) and
the clipped-ratio loss; the adversarial trainer turns A into per-token advantages here:

   VISD token advantages (closest published form: RLSD, arXiv 2604.03128):
       δ_t = sg(log π_T(y_t | x, feedback, y_<t) − log π_θ(y_t | x, y_<t))
       Â_t = A · ((1−λ) + λ · clip(exp(sign(A) · δ_t), 1−ε, 1+ε))
   How it differs from token-level distillation: the rollout's A alone sets the *direction*
   of every token's update (sign(Â_t) = sign(A)); the feedback-informed teacher only
   rescales the *magnitude*, within [1−ε, 1+ε]. With A > 0, tokens the teacher endorses
   (δ > 0) get more credit; with A < 0, tokens it rejects (δ < 0, so exp(−δ) > 1) get more
   blame. λ = 0 is plain GRPO. (tests/losses/oracles.py writes out TRL's loss with per-token
   advantages, against which the tests check that λ = 0 is TRL's update exactly.)

    rmsd distill --recipe recipes/synthvid/tiny_visd.yaml --matched runs/synthvid-tiny-visd/matched
"""

from __future__ import annotations

import torch


def decoupled_token_advantages(adv: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor, lam: float,
                               eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VISD per-token advantages Â [B, T] (the module docstring's Â_t) and statistics.

    adv: [B] rollout advantages A.  delta: [B, T] δ_t (detached here: the teacher only weighs).
    mask: [B, T] completion tokens. lam: λ ∈ [0, 1]. eps: ε ∈ [0, 1).
    Outside the mask, and where δ is not finite, the factor is 1 (Â = A): padding is masked by
    the loss anyway, and a token the teacher could not score is left unmodulated.
    Stats (detached 0-dim tensors) over masked tokens of rollouts with A ≠ 0:
    `scale_mean` mean |Â_t / A| (1.0 when there are none), `clip_fraction` share where
    exp(sign(A)·δ_t) fell outside [1−ε, 1+ε], `tokens` their count.
    """
    if not 0.0 <= lam <= 1.0 or not 0.0 <= eps < 1.0:
        raise ValueError(f"need 0 <= lam <= 1 and 0 <= eps < 1, got lam={lam}, eps={eps}")
    if delta.shape != mask.shape or adv.shape != delta.shape[:1]:
        raise ValueError(f"expected adv [B], delta/mask [B, T]; got {tuple(adv.shape)}, {tuple(delta.shape)}, "
                         f"{tuple(mask.shape)}")
    active = mask.bool() & torch.isfinite(delta)
    sign = torch.sign(adv).unsqueeze(1).to(delta.dtype)
    raw = torch.exp(sign * torch.nan_to_num(delta.detach(), nan=0.0, posinf=0.0, neginf=0.0))
    factor = torch.where(active, (1.0 - lam) + lam * raw.clamp(1.0 - eps, 1.0 + eps), 1.0)
    token_adv = adv.unsqueeze(1) * factor.to(adv.dtype)
    counted = active & (adv != 0).unsqueeze(1)
    n = counted.sum()
    clipped = ((raw < 1.0 - eps) | (raw > 1.0 + eps)) & counted
    stats = {
        "scale_mean": torch.where(n > 0, (factor * counted).sum() / n.clamp(min=1), 1.0).detach(),
        "clip_fraction": (clipped.sum() / n.clamp(min=1)).detach().float(),
        "tokens": n.detach(),
    }
    return token_adv, stats


def lambda_schedule(step: int, total_steps: int, lam0: float, kind: str) -> float:
    """λ at `step`: "constant" keeps λ0; "linear" decays it from λ0 at step 0 to 0 at `total_steps`."""
    if kind == "constant":
        return float(lam0)
    if kind == "linear":
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0 for a linear schedule, got {total_steps}")
        return float(lam0) * max(0.0, 1.0 - step / total_steps)
    raise ValueError(f"lam_schedule must be 'constant' or 'linear', got {kind!r}")


