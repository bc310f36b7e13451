"""GRPO advantages, the VISD direction–magnitude decoupling, and the clipped policy loss.

1. Group-normalised advantage (GRPO, as in TRL 1.16 `GRPOTrainer`, `scale_rewards="group"`):
       A_i = (r_i − mean_g) / (std_g + 1e-4),   std_g the *sample* std (Bessel, n − 1) of the group
   NaN rewards (unscorable rollouts) are left out of mean and std and get A = 0, as in TRL.
2. VISD token advantages (closest published form: RLSD, arXiv 2604.03128):
       δ_t = sg(log π_T(y_t | x, feedback, y_<t) − log π_θ(y_t | x, y_<t))
       Â_t = A · ((1−λ) + λ · clip(exp(sign(A) · δ_t), 1−ε, 1+ε))
   How it differs from token-level distillation: the rollout's A alone sets the *direction*
   of every token's update (sign(Â_t) = sign(A)); the feedback-informed teacher only
   rescales the *magnitude*, within [1−ε, 1+ε]. With A > 0, tokens the teacher endorses
   (δ > 0) get more credit; with A < 0, tokens it rejects (δ < 0, so exp(−δ) > 1) get more
   blame. λ = 0 is plain GRPO.
3. `grpo_token_loss`: TRL's clipped-ratio loss with per-token advantages (so Â plugs in),
       ℓ_t = −min(ρ_t Â_t, clip(ρ_t, 1−ε_low, 1+ε_high) Â_t) + β · KL_t,   ρ_t = exp(logp − old_logp)
       KL_t = exp(ref − logp) − (ref − logp) − 1   (the k3 estimator, as TRL)
   normalised by the number of active tokens: TRL's default `loss_type="dapo"` divides by the
   active tokens of the whole accumulated batch (pass that count as `num_tokens`); without it,
   the tokens of this batch (TRL's "bnpo"; the same as "dapo" for one batch on one process).

    rmsd distill --recipe recipes/synthvid/tiny_visd.yaml --matched runs/synthvid-tiny-visd/matched
"""

from __future__ import annotations

import math

import torch

from rmsd.errors import RmsdError

STD_EPS = 1e-4  # TRL's constant in A = (r − mean) / (std + 1e-4)


def _nan_std(x: torch.Tensor) -> torch.Tensor:
    """Sample std of each row of x [R, N] ignoring NaNs (NaN with fewer than two values): TRL's `nanstd`."""
    mean = torch.nanmean(x, dim=1, keepdim=True)
    count = (~torch.isnan(x)).sum(dim=1, keepdim=True)
    var = torch.nansum((x - mean) ** 2, dim=1, keepdim=True) / (count - 1).clamp(min=1)
    return torch.where(count > 1, var.sqrt(), torch.full_like(var, float("nan")))


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = STD_EPS,
                     scale: str = "std") -> torch.Tensor:
    """Group-normalised advantages [G·N] from rewards [G·N] laid out group after group.

    scale: "std" divides by the group's sample std + eps (TRL `scale_rewards="group"`),
        "batch" by the std of the whole batch (TRL "batch"), "none" only centres (Dr. GRPO).
    A group of one has std 0 (TRL's convention). NaN rewards are excluded and get A = 0.
    """
    if rewards.dim() != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards [G*N] must split into groups of {group_size}; got shape {tuple(rewards.shape)}")
    if scale not in ("std", "batch", "none"):
        raise RmsdError(f"advantage scale must be 'std', 'batch' or 'none', got {scale!r}")
    grouped = rewards.view(-1, group_size)
    centred = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)).view(-1)
    if scale == "none":
        return torch.nan_to_num(centred, nan=0.0)
    if scale == "std":  # TRL: a group of one has std 0, not NaN
        std = _nan_std(grouped) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        std = std.expand_as(grouped).reshape(-1)
    else:
        std = _nan_std(rewards.view(1, -1)) if rewards.numel() > 1 else torch.zeros_like(rewards[:1]).view(1, 1)
        std = std.view(-1).expand_as(rewards)
    return torch.nan_to_num(centred / (std + eps), nan=0.0)


def decoupled_token_advantages(adv: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor, lam: float,
                               eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VISD per-token advantages Â [B, T] (module docstring, item 2) and statistics.

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


def lambda_schedule(step: int, total_steps: int, lam0: float, kind: str = "constant") -> float:
    """λ at `step`: "constant" keeps λ0; "linear" decays it from λ0 at step 0 to 0 at `total_steps`."""
    if kind == "constant":
        return float(lam0)
    if kind == "linear":
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0 for a linear schedule, got {total_steps}")
        return float(lam0) * max(0.0, 1.0 - step / total_steps)
    raise RmsdError(f"lam_schedule must be 'constant' or 'linear', got {kind!r}")


def grpo_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, token_advantages: torch.Tensor,
                    mask: torch.Tensor, clip_eps_low: float = 0.2, clip_eps_high: float | None = None,
                    ref_logps: torch.Tensor | None = None, beta: float = 0.0,
                    num_tokens: float | torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped-ratio GRPO loss with per-token advantages (module docstring, item 3), a scalar.

    logps, old_logps, token_advantages, mask: [B, T]; old_logps are the sampling policy's
        (detached; pass `logps.detach()` for a single on-policy step, as TRL does).
    clip_eps_high: None = clip_eps_low (symmetric clip; DAPO's clip-higher sets it larger).
    ref_logps, beta: the KL penalty to a reference policy; ignored when beta = 0.
    num_tokens: the normaliser; None = active tokens of this batch (see the module docstring).
    Stats (detached): `clip_low` / `clip_high` shares of active tokens clipped on each side
    (counted where the clip binds: ρ < 1−ε with Â < 0, ρ > 1+ε with Â > 0, as TRL logs
    them), `kl` the mean KL_t (0 without a reference).
    """
    if not (logps.shape == old_logps.shape == token_advantages.shape == mask.shape):
        raise ValueError("logps, old_logps, token_advantages and mask must all be [B, T]")
    high = clip_eps_low if clip_eps_high is None else clip_eps_high
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps.detach())
    clipped = ratio.clamp(1.0 - clip_eps_low, 1.0 + high)
    per_token = -torch.min(ratio * token_advantages, clipped * token_advantages)
    kl = torch.zeros_like(logps)
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs ref_logps")
        diff = ref_logps.detach() - logps
        kl = torch.exp(diff) - diff - 1.0
        per_token = per_token + beta * kl
    active = mask.sum()
    normaliser = active.clamp(min=1.0) if num_tokens is None else torch.as_tensor(num_tokens, dtype=logps.dtype)
    loss = (per_token * mask).sum() / normaliser
    denom = active.clamp(min=1.0)
    stats = {
        "clip_low": (((ratio < 1.0 - clip_eps_low) & (token_advantages < 0)) * mask).sum().detach() / denom,
        "clip_high": (((ratio > 1.0 + high) & (token_advantages > 0)) * mask).sum().detach() / denom,
        "kl": ((kl * mask).sum() / denom).detach(),
    }
    return loss, stats


def advantage_bounds(adv: float, lam: float, eps: float) -> tuple[float, float]:
    """The interval |Â_t| always lies in: |A|·((1−λ) + λ(1−ε)) .. |A|·((1−λ) + λ(1+ε))."""
    a = math.fabs(adv)
    return a * ((1 - lam) + lam * (1 - eps)), a * ((1 - lam) + lam * (1 + eps))
