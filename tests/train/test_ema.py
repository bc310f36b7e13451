"""EMATeacher: exact EMA arithmetic on a tiny nn.Linear, fixed mode, no gradients, checkpoints."""

import pytest
import torch
from torch import nn

from rmsd.errors import RmsdError
from rmsd.train.ema import EMATeacher


def _linear(w, b):
    layer = nn.Linear(2, 1).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([w], dtype=torch.float64))
        layer.bias.copy_(torch.tensor([b], dtype=torch.float64))
    return layer


def test_exact_arithmetic_after_one_and_two_updates():
    student = _linear([1.0, 2.0], 0.5)
    ema = EMATeacher(student, decay=0.9)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[3.0, -2.0]], dtype=torch.float64))
        student.bias.fill_(1.5)
    ema.update(student)
    # 0.9 * old + 0.1 * new
    assert ema.model.weight[0].tolist() == pytest.approx([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * -2], abs=1e-12)
    assert ema.model.bias.item() == pytest.approx(0.9 * 0.5 + 0.1 * 1.5, abs=1e-12)
    with torch.no_grad():
        student.weight.fill_(0.0)
    ema.update(student)
    assert ema.model.weight[0].tolist() == pytest.approx([0.9 * 1.2, 0.9 * 1.6], abs=1e-12)
    assert ema.model.bias.item() == pytest.approx(0.9 * 0.6 + 0.1 * 1.5, abs=1e-12)
    assert ema.num_updates == 2
    assert student.weight.tolist() == [[0.0, 0.0]]  # the student is never written


def test_fixed_mode_stays_at_the_initial_student():
    student = _linear([1.0, 2.0], 0.5)
    ema = EMATeacher(student, decay=0.5, mode="fixed")
    with torch.no_grad():
        student.weight.fill_(9.0)
    ema.update(student)
    assert ema.model.weight.tolist() == [[1.0, 2.0]] and ema.num_updates == 0


def test_teacher_has_no_gradients_and_runs_without_autograd():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    ema = EMATeacher(student)
    assert all(not p.requires_grad for p in ema.model.parameters()) and not ema.model.training
    out = ema(torch.randn(5, 3))
    assert not out.requires_grad
    student(torch.randn(8, 3)).sum().backward()  # the student's own graph is unaffected
    assert student[0].weight.grad is not None and ema.model[0].weight.grad is None
    ema.update(student)
    assert torch.equal(ema.model[1].running_mean, student[1].running_mean)  # buffers copied, not averaged


def test_checkpoint_round_trip():
    student = _linear([1.0, 2.0], 0.5)
    ema = EMATeacher(student, decay=0.8)
    with torch.no_grad():
        student.weight.fill_(4.0)
    ema.update(student)
    restored = EMATeacher(_linear([0.0, 0.0], 0.0), decay=0.8)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.model.weight, ema.model.weight) and restored.num_updates == 1


def test_bad_settings_are_user_errors():
    with pytest.raises(RmsdError, match="visd.teacher"):
        EMATeacher(nn.Linear(1, 1), mode="swa")
    with pytest.raises(RmsdError, match="ema_decay"):
        EMATeacher(nn.Linear(1, 1), decay=1.5)
