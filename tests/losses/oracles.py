"""Reference implementations the tests hold rmsd's trainers against (not used by rmsd itself).

What TRL computes inside GRPOTrainer (group advantages, the clipped-ratio loss with per-token
advantages, the k3 KL), written out on tensors so a test can check that the trainer's update
(with or without the VISD token advantages) is exactly it; the interval a decoupled token
advantage must lie in; and log-probs of labels from full logits (what the fused LM head
returns without materialising them).
"""

from __future__ import annotations

import math

import torch

STD_EPS = 1e-4  # TRL's constant in A = (r − mean) / (std + 1e-4)
IGNORE_INDEX = -100


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
        raise ValueError(f"advantage scale must be 'std', 'batch' or 'none', got {scale!r}")
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


def token_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                chunk_rows: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(label_t) at every position, without materialising a full [B, T, V] log-softmax.

    logits: [B, T, V], `logits[:, t]` already aligned with `labels[:, t]` — the caller does the
        causal shift (`logits[:, :-1]` with `labels[:, 1:]`).
    labels: [B, T] token ids, `ignore_index` where there is no target (prompt, padding).
    chunk_rows: rows of the batch processed at once; peak extra memory is about
        chunk_rows × T × V floats (float32), instead of B × T × V for `log_softmax(...).gather`.
    Returns (logps [B, T] float32, zero where ignored; mask [B, T] bool).
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on [B, T]")
    mask = labels != ignore_index
    safe = labels.masked_fill(~mask, 0).unsqueeze(-1)
    out = []
    for start in range(0, logits.shape[0], chunk_rows):
        rows = logits[start:start + chunk_rows].float()  # bf16 logsumexp loses ~2 digits: upcast one chunk only
        picked = rows.gather(-1, safe[start:start + chunk_rows]).squeeze(-1)
        out.append(picked - torch.logsumexp(rows, dim=-1))
    logps = torch.cat(out) if out else logits.new_zeros(labels.shape, dtype=torch.float32)
    return logps.masked_fill(~mask, 0.0), mask
