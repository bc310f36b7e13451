"""bradley_terry_loss / discriminator_accuracy on hand-made scores."""

import math

import pytest
import torch

from rmsd.losses import bradley_terry_loss, discriminator_accuracy


def test_value_is_minus_log_sigmoid_of_the_margin():
    s_t, s_s = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.5])
    expected = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(0.5)))) / 2
    assert bradley_terry_loss(s_t, s_s).item() == pytest.approx(expected, rel=1e-6)


def test_gradient_raises_teacher_score_and_lowers_student_score():
    s_t = torch.tensor([0.3, -1.0], requires_grad=True)
    s_s = torch.tensor([0.1, 2.0], requires_grad=True)
    bradley_terry_loss(s_t, s_s).backward()
    assert (s_t.grad < 0).all()  # descent raises D_T
    assert (s_s.grad > 0).all()  # descent lowers D_S


def test_weights_make_a_weighted_mean_and_zero_weight_pairs_get_no_gradient():
    s_t = torch.tensor([1.0, 0.0, -2.0], requires_grad=True)
    s_s = torch.zeros(3)
    loss = bradley_terry_loss(s_t, s_s, torch.tensor([1.0, 3.0, 0.0]))
    per = torch.nn.functional.softplus(-s_t.detach())
    assert loss.item() == pytest.approx(((per[0] + 3 * per[1]) / 4).item(), rel=1e-6)
    loss.backward()
    assert s_t.grad[2] == 0
    # uniform weights of any scale equal the plain mean
    assert bradley_terry_loss(s_t, s_s, torch.full((3,), 5.0)).item() == pytest.approx(
        bradley_terry_loss(s_t, s_s).item(), rel=1e-6)


def test_numerically_stable_at_large_margins():
    s_t = torch.tensor([50.0, -50.0, 100.0], requires_grad=True)
    s_s = torch.tensor([-50.0, 50.0, -100.0])
    per = [bradley_terry_loss(s_t[i:i + 1], s_s[i:i + 1]).item() for i in range(3)]
    assert per[0] == pytest.approx(0.0, abs=1e-30) and per[2] == pytest.approx(0.0, abs=1e-30)
    assert per[1] == pytest.approx(100.0, rel=1e-6)  # softplus(100), finite (log σ(-100) would be -inf in fp32)
    bradley_terry_loss(s_t, s_s).backward()
    assert torch.isfinite(s_t.grad).all()


def test_accuracy_counts_wins_and_half_ties():
    acc = discriminator_accuracy(torch.tensor([1.0, 0.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 2.0, -1.0]))
    assert acc.item() == pytest.approx((1 + 0 + 0.5 + 1) / 4)
