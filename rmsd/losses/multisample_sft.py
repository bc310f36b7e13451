"""Multi-sample SFT loss (R-MSD stage `sft`): every kept teacher sample of an item, weighted.

    L = − (1/|I|) Σ_{i∈I} Σ_k w̄_ik · (1/|y_ik|) Σ_t log π_θ(y_ik,t | x_i, y_ik,<t),
    w̄_ik = w_ik / Σ_k' w_ik'

How it differs from plain SFT: plain SFT averages token NLL over one target per prompt;
here an item brings K samples whose match weights (`rmsd match`) are normalised *within
the item*, so an item contributes the same total weight whatever its K, and a sample's
share reflects its quality. Each sample's NLL is its own per-token mean (length does not
buy weight). K = 1 with weight 1 is exactly the single-sample baseline: per-sequence mean
NLL, then a mean over the batch.

The trainer (`rmsd.train.sft_trainer`) computes per-token log-probs with TRL's fused LM head
(never the logits of the whole vocabulary) and hands them here.

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
"""

from __future__ import annotations

import torch


def sequence_nll(logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence mean token NLL [B] and the token counts [B] (a sequence with no token has NLL 0)."""
    mask = mask.to(logps.dtype)
    counts = mask.sum(-1)
    return -(logps * mask).sum(-1) / counts.clamp(min=1.0), counts


def normalised_weights(weights: torch.Tensor, item_index: torch.Tensor) -> tuple[torch.Tensor, int]:
    """w̄ [B]: weights divided by their item's total, and the number of items whose total is > 0.

    item_index: [B] integer ids (any values; equal ids = same item). Items whose weights are all
    zero get w̄ = 0 everywhere (they contribute nothing).
    """
    _, inverse = torch.unique(item_index, return_inverse=True)
    totals = torch.zeros(int(inverse.max()) + 1 if inverse.numel() else 0, dtype=weights.dtype, device=weights.device)
    totals = totals.index_add(0, inverse, weights)
    per_row = totals[inverse]
    w_bar = torch.where(per_row > 0, weights / per_row.clamp(min=torch.finfo(weights.dtype).tiny), 0.0)
    return w_bar, int((totals > 0).sum())


def multisample_sft_loss(logps: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor,
                         item_index: torch.Tensor) -> torch.Tensor:
    """The weighted multi-sample SFT loss (module docstring), a scalar.

    logps: [B, T] log π_θ of each target token; B = all samples of the
        batch's items, in any order.
    mask: [B, T] bool/0-1, 1 on the response tokens that count.
    weights: [B] match weights ≥ 0 (any scale: only their ratio within an item matters).
    item_index: [B] integer item id of each row.
    A sample with no target token is treated as weight 0 (its NLL is undefined). The mean is
    over items with a positive total weight; with none, the loss is 0 with a zero gradient.
    """
    if not (logps.shape == mask.shape and logps.dim() == 2 and weights.shape == item_index.shape == logps.shape[:1]):
        raise ValueError(f"expected logps/mask [B, T] and weights/item_index [B]; got {tuple(logps.shape)}, "
                         f"{tuple(mask.shape)}, {tuple(weights.shape)}, {tuple(item_index.shape)}")
    weights = weights.to(logps.dtype)
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("multi-sample SFT weights must be finite and >= 0")
    nll, counts = sequence_nll(logps, mask)
    w_bar, n_items = normalised_weights(torch.where(counts > 0, weights, 0.0), item_index)
    # where(), not a product, so a zero-weight row passes no gradient even if its NLL is inf/nan
    weighted = torch.where(w_bar > 0, w_bar * nll, 0.0)
    return weighted.sum() / max(n_items, 1)
