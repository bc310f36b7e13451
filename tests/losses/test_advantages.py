"""VISD token advantages and the λ schedule; the oracles of TRL's advantages and loss checked against TRL 1.16."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from oracles import advantage_bounds, group_advantages, grpo_token_loss
from trl import GRPOTrainer
from trl.trainer.utils import nanstd

from rmsd.losses import decoupled_token_advantages, lambda_schedule


# ----------------------------------------------------------------------------- group advantages
def test_group_advantages_hand_computed_with_sample_std():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0]), group_size=3)
    mean, std = 1 / 3, math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # Bessel: n - 1 = 2
    expected = [(1 - mean) / (std + 1e-4), -mean / (std + 1e-4), -mean / (std + 1e-4)]
    assert adv[:3].tolist() == pytest.approx(expected, rel=1e-6)
    assert adv[3:].tolist() == pytest.approx([-4 / 3 / (math.sqrt(4 / 3) + 1e-4), 2 / 3 / (math.sqrt(4 / 3) + 1e-4),
                                              2 / 3 / (math.sqrt(4 / 3) + 1e-4)], rel=1e-6)


def test_group_advantages_match_trl_formula_including_nan_rewards():
    torch.manual_seed(0)
    rewards = torch.randn(4 * 8)
    rewards[5] = float("nan")  # unscorable rollout: TRL leaves it out of mean/std and zeroes its advantage
    g = rewards.view(-1, 8)
    mean = torch.nanmean(g, dim=1).repeat_interleave(8)
    std = nanstd(g, dim=1).repeat_interleave(8)
    trl = torch.nan_to_num((rewards - mean) / (std + 1e-4), nan=0.0)
    assert torch.allclose(group_advantages(rewards, 8), trl, atol=1e-6)
    assert group_advantages(rewards, 8)[5] == 0
    trl_batch = torch.nan_to_num((rewards - mean) / (nanstd(rewards) + 1e-4), nan=0.0)
    assert torch.allclose(group_advantages(rewards, 8, scale="batch"), trl_batch, atol=1e-6)
    assert torch.allclose(group_advantages(rewards, 8, scale="none"), torch.nan_to_num(rewards - mean), atol=1e-6)


def test_group_advantages_constant_group_and_group_of_one_are_zero():
    assert group_advantages(torch.tensor([0.7, 0.7, 0.7]), 3).tolist() == [0.0, 0.0, 0.0]
    assert group_advantages(torch.tensor([0.3, 0.9]), 1).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4), 2, scale="minmax")


# ----------------------------------------------------------------------------- VISD decoupling
def _case():
    torch.manual_seed(3)
    adv = torch.tensor([1.5, -0.8, 0.0, 0.4])
    delta = torch.randn(4, 6) * 2
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[3, 4:] = False
    return adv, delta, mask


def test_sign_of_every_token_advantage_is_the_rollouts():
    adv, delta, mask = _case()
    tok, _ = decoupled_token_advantages(adv, delta, mask, lam=1.0, eps=0.2)
    assert (torch.sign(tok) == torch.sign(adv).unsqueeze(1)).all()
    assert (tok[2] == 0).all()


def test_lambda_zero_is_exactly_a_broadcast():
    adv, delta, mask = _case()
    tok, stats = decoupled_token_advantages(adv, delta, mask, lam=0.0, eps=0.2)
    assert torch.equal(tok, adv.unsqueeze(1).expand(4, 6))
    assert stats["scale_mean"].item() == pytest.approx(1.0)


def test_magnitude_follows_the_teachers_verdict():
    delta = torch.tensor([[-0.1, 0.0, 0.1]])
    mask = torch.ones(1, 3)
    pos, _ = decoupled_token_advantages(torch.tensor([1.0]), delta, mask, lam=0.5, eps=0.5)
    neg, _ = decoupled_token_advantages(torch.tensor([-1.0]), delta, mask, lam=0.5, eps=0.5)
    # A > 0: endorsed tokens (delta > 0) get more credit
    assert pos[0, 0] < pos[0, 1] < pos[0, 2]
    # A < 0: rejected tokens (delta < 0) get more blame
    assert neg[0, 0].abs() > neg[0, 1].abs() > neg[0, 2].abs()
    assert pos[0, 2].item() == pytest.approx(0.5 + 0.5 * math.exp(0.1), rel=1e-6)
    assert neg[0, 0].item() == pytest.approx(-(0.5 + 0.5 * math.exp(0.1)), rel=1e-6)


def test_clipping_bounds_hold_and_clip_fraction_is_counted():
    adv, delta, mask = _case()
    lam, eps = 0.7, 0.2
    tok, stats = decoupled_token_advantages(adv, delta, mask, lam=lam, eps=eps)
    for b in range(4):
        lo, hi = advantage_bounds(adv[b].item(), lam, eps)
        assert (tok[b].abs() >= lo - 1e-6).all() and (tok[b].abs() <= hi + 1e-6).all()
    counted = mask & (adv != 0).unsqueeze(1)
    raw = torch.exp(torch.sign(adv).unsqueeze(1) * delta)
    expected = (((raw < 1 - eps) | (raw > 1 + eps)) & counted).sum() / counted.sum()
    assert stats["clip_fraction"].item() == pytest.approx(expected.item())
    assert stats["tokens"].item() == counted.sum().item()
    assert stats["scale_mean"].item() == pytest.approx((tok.abs() / adv.abs().unsqueeze(1))[counted].mean().item())


def test_delta_is_stop_gradient_and_padding_is_left_alone():
    adv = torch.tensor([1.0])
    delta = torch.tensor([[0.3, float("nan")]], requires_grad=True)
    tok, _ = decoupled_token_advantages(adv, delta, torch.tensor([[1, 0]]), lam=0.5, eps=0.2)
    assert not tok.requires_grad
    assert tok[0, 1].item() == 1.0  # masked (and NaN) position: factor 1


def test_lambda_schedule():
    assert lambda_schedule(30, 100, 0.5, "constant") == 0.5
    assert lambda_schedule(0, 100, 0.5, "linear") == 0.5
    assert lambda_schedule(25, 100, 0.5, "linear") == pytest.approx(0.375)
    assert lambda_schedule(150, 100, 0.5, "linear") == 0.0
    with pytest.raises(ValueError):
        lambda_schedule(0, 10, 0.5, "cosine")


# ----------------------------------------------------------------------------- GRPO token loss
def _rollout(seed=4):
    torch.manual_seed(seed)
    logps = (-torch.rand(3, 5) * 3).requires_grad_()
    old = logps.detach() + torch.randn(3, 5) * 0.3
    ref = logps.detach() + torch.randn(3, 5) * 0.2
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    adv = torch.tensor([1.2, -0.7, 0.3])
    return logps, old, ref, mask, adv


def test_grpo_token_loss_hand_computed():
    logps, old, ref, mask, adv = _rollout()
    tok = adv.unsqueeze(1).expand(3, 5)
    loss, stats = grpo_token_loss(logps, old, tok, mask, 0.2, 0.28, ref, beta=0.04)
    total, n = 0.0, 0
    for b in range(3):
        for t in range(5):
            if mask[b, t]:
                r = math.exp(logps[b, t].item() - old[b, t].item())
                a = adv[b].item()
                d = ref[b, t].item() - logps[b, t].item()
                total += -min(r * a, min(max(r, 0.8), 1.28) * a) + 0.04 * (math.exp(d) - d - 1)
                n += 1
    assert loss.item() == pytest.approx(total / n, rel=1e-5)
    assert 0.0 <= stats["clip_low"].item() <= 1.0 and stats["kl"].item() > 0


def _trl_loss(logps, old, ref, mask, adv, beta, eps_low, eps_high, loss_type):
    """TRL 1.16's own `GRPOTrainer._compute_loss`, run on a stand-in trainer that returns our log-probs."""
    acc = SimpleNamespace(num_processes=1, gather=lambda x: x, gather_for_metrics=lambda x: x,
                          reduce=lambda x, reduction="sum": x, sync_gradients=True)
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=beta, loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=False,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1, accelerator=acc,
        _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    inputs = {"prompt_ids": torch.zeros(3, 2, dtype=torch.long), "prompt_mask": torch.ones(3, 2),
              "completion_ids": torch.zeros(3, 5, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    return GRPOTrainer._compute_loss(fake, None, inputs), fake._metrics["train"]


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_token_loss_equals_trl_dapo_loss_with_broadcast_advantages(beta):
    logps, old, ref, mask, adv = _rollout()
    trl_loss, trl_metrics = _trl_loss(logps, old, ref, mask, adv, beta, 0.2, 0.28, "dapo")
    (trl_grad,) = torch.autograd.grad(trl_loss, logps)
    tok, _ = decoupled_token_advantages(adv, torch.randn(3, 5), mask, lam=0.0, eps=0.2)  # λ = 0: plain GRPO
    ours, stats = grpo_token_loss(logps, old, tok, mask, 0.2, 0.28, ref, beta=beta)
    (our_grad,) = torch.autograd.grad(ours, logps)
    assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-6)
    assert torch.allclose(our_grad, trl_grad, atol=1e-7)
    assert stats["clip_low"].item() == pytest.approx(trl_metrics["clip_ratio/low_mean"][0])
    assert stats["clip_high"].item() == pytest.approx(trl_metrics["clip_ratio/high_mean"][0])


def test_grpo_token_loss_accepts_trl_token_advantages_and_a_global_token_count():
    logps, old, ref, mask, adv = _rollout(5)
    tok = adv.unsqueeze(1) * (1 + 0.1 * torch.arange(5.0))  # a [B, T] advantage, as TRL also accepts
    trl_loss, _ = _trl_loss(logps, old, ref, mask, tok, 0.0, 0.2, 0.2, "dapo")
    ours, _ = grpo_token_loss(logps, old, tok, mask, 0.2)
    assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-6)
    half, _ = grpo_token_loss(logps, old, tok, mask, 0.2, num_tokens=2 * mask.sum())
    assert half.item() == pytest.approx(ours.item() / 2, rel=1e-6)
