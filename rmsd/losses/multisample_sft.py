"""Multi-sample SFT loss (R-MSD stage `sft`): every kept teacher sample of an item, weighted.

    L = − (1/|I|) Σ_{i∈I} Σ_k w̄_ik · (1/|y_ik|) Σ_t log π_θ(y_ik,t | x_i, y_ik,<t),
    w̄_ik = w_ik / Σ_k' w_ik'

How it differs from plain SFT: plain SFT averages token NLL over one target per prompt;
here an item brings K samples whose match weights (`rmsd match`) are normalised *within
the item*, so an item contributes the same total weight whatever its K, and a sample's
share reflects its quality. Each sample's NLL is its own per-token mean (length does not
buy weight). K = 1 with weight 1 is exactly the single-sample baseline: per-sequence mean
NLL, then a mean over the batch.

With item weights c_i (`weighting: matched_conf`) the mean over items becomes a weighted one,

    L_conf = − Σ_i c_i Σ_k w̄_ik · (1/|y_ik|) Σ_t log π_θ(…) / Σ_i c_i,   c_i = Σ_k w_ik / n_i

(`item_confidence`: the match weight the item's kept samples carry, over the n_i samples the
pool gave the item). Since c_i w̄_ik = w_ik / n_i, this is the sample weights w_ik / n_i
normalised over the batch instead of per item: an item the pool barely agrees on (few
samples kept, low posteriors) weighs less than one it agrees on. Per-item normalisation
cannot express that: after the consensus filter an item's kept closed-ended samples share
one answer and so one weight, and w̄_ik = 1/k whatever that weight is.

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


def item_confidence(kept_weights: list[float], pool_samples: int) -> float:
    """c_i of `weighting: matched_conf`: the kept samples' match weights summed, over the samples the pool
    gave the item (kept or not), in [0, 1] when weights are posteriors."""
    if pool_samples < len(kept_weights) or pool_samples < 1:
        raise ValueError(f"{len(kept_weights)} kept samples out of {pool_samples}: the pool gave at least as many")
    return float(sum(kept_weights)) / pool_samples


def multisample_sft_loss(logps: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor,
                         item_index: torch.Tensor, item_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The weighted multi-sample SFT loss (module docstring), a scalar.

    logps: [B, T] log π_θ of each target token; B = all samples of the
        batch's items, in any order.
    mask: [B, T] bool/0-1, 1 on the response tokens that count.
    weights: [B] match weights ≥ 0 (any scale: only their ratio within an item matters).
    item_index: [B] integer item id of each row.
    item_weights: [B] c_i ≥ 0 of each row's item (equal on an item's rows; any common scale:
        only their ratio across items matters), or None for the plain mean over items.
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
    if item_weights is not None:
        w_bar, n_items = _times_item_weights(w_bar, item_index, item_weights.to(logps.dtype))
    # where(), not a product, so a zero-weight row passes no gradient even if its NLL is inf/nan
    weighted = torch.where(w_bar > 0, w_bar * nll, 0.0)
    return weighted.sum() / (n_items if n_items > 0 else 1)  # Σ c_i may be below 1: never max(·, 1)


def _times_item_weights(w_bar: torch.Tensor, item_index: torch.Tensor,
                        item_weights: torch.Tensor) -> tuple[torch.Tensor, float]:
    """w̄_ik · c_i and Σ_i c_i over the items that still carry weight (the weighted mean's denominator)."""
    if item_weights.shape != w_bar.shape:
        raise ValueError(f"item_weights must be [B] like the weights, got {tuple(item_weights.shape)}")
    if not torch.isfinite(item_weights).all() or (item_weights < 0).any():
        raise ValueError("multi-sample SFT item weights must be finite and >= 0")
    _, inverse = torch.unique(item_index, return_inverse=True)
    n = int(inverse.max()) + 1 if inverse.numel() else 0
    per_item = torch.zeros(n, dtype=w_bar.dtype, device=w_bar.device).index_reduce(0, inverse, item_weights, "amax",
                                                                                   include_self=False)
    if not torch.equal(per_item[inverse], item_weights):
        raise ValueError("item_weights differ between the rows of one item")
    scaled = w_bar * item_weights
    carried = torch.zeros(n, dtype=w_bar.dtype, device=w_bar.device).index_add(0, inverse, scaled)
    return scaled, float(per_item[carried > 0].sum())
