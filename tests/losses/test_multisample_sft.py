"""multisample_sft_loss / token_logps on hand-made tensors."""

import math

import pytest
import torch
from oracles import token_logps

from rmsd.losses import item_confidence, multisample_sft_loss, normalised_weights


def _logps(rows):
    """[B, T] log-probs and mask from lists of per-token probabilities (ragged)."""
    width = max(len(r) for r in rows)
    logps = torch.zeros(len(rows), width, dtype=torch.float64)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        logps[i, : len(r)] = torch.log(torch.tensor(r, dtype=torch.float64))
        mask[i, : len(r)] = True
    return logps, mask


def test_hand_computed_value():
    # item 0: two samples, weights 3 and 1 -> 0.75 / 0.25; item 1: one sample
    logps, mask = _logps([[0.5, 0.25], [0.5], [0.125, 0.5, 0.5]])
    loss = multisample_sft_loss(logps, mask, torch.tensor([3.0, 1.0, 7.0]), torch.tensor([0, 0, 1]))
    nll_a = -(math.log(0.5) + math.log(0.25)) / 2
    nll_b = -math.log(0.5)
    nll_c = -(math.log(0.125) + 2 * math.log(0.5)) / 3
    assert loss.item() == pytest.approx(((0.75 * nll_a + 0.25 * nll_b) + nll_c) / 2)


def test_weights_normalise_per_item():
    w_bar, n_items = normalised_weights(torch.tensor([2.0, 2.0, 1.0, 0.0, 0.0]), torch.tensor([5, 5, 9, 4, 4]))
    assert w_bar.tolist() == [0.5, 0.5, 1.0, 0.0, 0.0]
    assert n_items == 2  # item 4 has all-zero weight: not counted


def test_single_sample_equals_plain_mean_token_nll():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    labels = torch.randint(0, 11, (3, 5))
    labels[0, :2] = -100
    labels[2, 4] = -100
    logps, mask = token_logps(logits, labels)
    loss = multisample_sft_loss(logps, mask, torch.ones(3), torch.arange(3))
    per_seq = []
    for b in range(3):
        keep = labels[b] != -100
        per_seq.append(torch.nn.functional.cross_entropy(logits[b][keep], labels[b][keep]))
    assert loss.item() == pytest.approx(torch.stack(per_seq).mean().item(), rel=1e-6)


def test_zero_weight_sample_has_zero_gradient_and_all_zero_item_contributes_nothing():
    logps = torch.log(torch.tensor([[0.5, 0.5], [0.1, 0.2], [0.3, 0.3]])).requires_grad_()
    mask = torch.ones(3, 2, dtype=torch.bool)
    loss = multisample_sft_loss(logps, mask, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0, 0, 1]))
    loss.backward()
    assert logps.grad[1].abs().sum() == 0 and logps.grad[2].abs().sum() == 0
    assert logps.grad[0].abs().sum() > 0
    assert loss.item() == pytest.approx(-math.log(0.5))  # mean over the one item with weight


def test_scaling_an_items_weights_leaves_loss_unchanged():
    torch.manual_seed(1)
    logps = -torch.rand(4, 6)
    mask = torch.rand(4, 6) > 0.3
    mask[:, 0] = True
    items = torch.tensor([0, 0, 1, 1])
    base = multisample_sft_loss(logps, mask, torch.tensor([0.2, 0.8, 0.5, 0.1]), items)
    scaled = multisample_sft_loss(logps, mask, torch.tensor([2.0, 8.0, 0.5, 0.1]), items)
    assert scaled.item() == pytest.approx(base.item(), rel=1e-6)


def test_no_weight_at_all_gives_zero_loss_with_graph():
    logps = (-torch.rand(2, 3)).requires_grad_()
    loss = multisample_sft_loss(logps, torch.ones(2, 3), torch.zeros(2), torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() == 0.0 and logps.grad.abs().sum() == 0


def test_negative_weight_is_a_user_error():
    with pytest.raises(ValueError, match="weight"):
        multisample_sft_loss(-torch.rand(2, 3), torch.ones(2, 3), torch.tensor([1.0, -1.0]), torch.tensor([0, 0]))


def test_token_logps_matches_log_softmax_in_chunks():
    torch.manual_seed(2)
    logits = torch.randn(5, 4, 7, dtype=torch.bfloat16)
    labels = torch.randint(0, 7, (5, 4))
    labels[3] = -100
    logps, mask = token_logps(logits, labels, chunk_rows=2)
    ref = logits.float().log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert logps.dtype == torch.float32
    assert torch.allclose(logps[mask], ref[mask], atol=1e-6)
    assert (logps[3] == 0).all() and not mask[3].any()


def test_item_weights_hand_computed_value():
    """weighting: matched_conf. Item 0: two kept samples of weight 0.9 out of the 6 the pool gave
    (c = 1.8 / 6 = 0.3); item 1: one kept sample of weight 0.6 out of 6 (c = 0.1)."""
    logps, mask = _logps([[0.5, 0.25], [0.5], [0.125, 0.5, 0.5]])
    c0, c1 = item_confidence([0.9, 0.9], 6), item_confidence([0.6], 6)
    assert (c0, c1) == pytest.approx((0.3, 0.1))
    weights, items = torch.tensor([0.9, 0.9, 0.6]), torch.tensor([0, 0, 1])
    loss = multisample_sft_loss(logps, mask, weights, items, item_weights=torch.tensor([c0, c0, c1]))
    nll_a = -(math.log(0.5) + math.log(0.25)) / 2
    nll_b = -math.log(0.5)
    nll_c = -(math.log(0.125) + 2 * math.log(0.5)) / 3
    by_hand = (0.3 * (0.5 * nll_a + 0.5 * nll_b) + 0.1 * nll_c) / (0.3 + 0.1)
    assert loss.item() == pytest.approx(by_hand)
    # the same as the sample weights w / n normalised over the batch: 0.15, 0.15, 0.1 over 0.4
    assert loss.item() == pytest.approx((0.15 * nll_a + 0.15 * nll_b + 0.1 * nll_c) / 0.4)
    # per-item normalisation alone cannot see the confidence: every kept sample of an item shares its weight
    plain = multisample_sft_loss(logps, mask, weights, items)
    assert plain.item() == pytest.approx(((0.5 * nll_a + 0.5 * nll_b) + nll_c) / 2)
    assert plain.item() == multisample_sft_loss(logps, mask, torch.ones(3), items).item()


def test_unit_item_weights_are_the_plain_loss_and_must_agree_within_an_item():
    torch.manual_seed(2)
    logps = -torch.rand(4, 6)
    mask = torch.ones(4, 6, dtype=torch.bool)
    weights, items = torch.tensor([0.2, 0.8, 0.5, 0.1]), torch.tensor([0, 0, 1, 1])
    plain = multisample_sft_loss(logps, mask, weights, items)
    assert torch.equal(multisample_sft_loss(logps, mask, weights, items, item_weights=torch.ones(4)), plain)
    # an item of weight 0 drops out of the mean, as an item whose samples all weigh 0
    only_first = multisample_sft_loss(logps, mask, weights, items, item_weights=torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert only_first.item() == pytest.approx(multisample_sft_loss(logps[:2], mask[:2], weights[:2], items[:2]).item())
    with pytest.raises(ValueError, match="one item"):
        multisample_sft_loss(logps, mask, weights, items, item_weights=torch.tensor([0.5, 0.4, 1.0, 1.0]))
    with pytest.raises(ValueError, match="kept samples"):
        item_confidence([1.0, 1.0], 1)
