"""EMATeacher: exact EMA arithmetic on a tiny nn.Linear, fixed mode, no gradients, checkpoints; and the LoRA
student's AdapterEMATeacher: the same arithmetic over adapter tensors only, on the student's own base."""

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


def test_a_lora_students_teacher_is_an_ema_of_its_adapters_on_the_same_base(tmp_path):
    from rmsd.config import StudentConfig
    from rmsd.models import lora
    from rmsd.models.offline.tiny import build_student
    from rmsd.train.distill import load_for_training
    from rmsd.train.ema import TEACHER_ADAPTER, AdapterEMATeacher, ema_teacher

    torch.set_num_threads(1)
    path = build_student(tmp_path / "student")
    student, _ = load_for_training(path, StudentConfig(path=str(path), lora={"r": 2, "alpha": 4.0}))
    base = {n: p.detach().clone() for n, p in student.named_parameters() if ".lora_" not in n}
    teacher = ema_teacher(student, decay=0.75)
    assert isinstance(teacher, AdapterEMATeacher) and teacher.model is student  # no copy of the model
    mine, theirs = lora.adapter_parameters(student, lora.STUDENT), teacher.state_dict()["model"]
    assert len(theirs) == len(mine) and all(f".{TEACHER_ADAPTER}." in n for n in theirs)
    start = {n: p.detach().clone() for n, p in theirs.items()}
    with torch.no_grad():
        for p in mine.values():
            p.add_(1.0)
    teacher.update(student)
    for n, t in teacher.state_dict()["model"].items():
        s = mine[n.replace(f".{TEACHER_ADAPTER}.", f".{lora.STUDENT}.")]
        torch.testing.assert_close(t, 0.75 * start[n] + 0.25 * s, rtol=0, atol=1e-7)
    assert teacher.num_updates == 1
    assert all(torch.equal(p, base[n]) for n, p in student.named_parameters() if ".lora_" not in n)

    x = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        own = student(**x).logits
    taught = teacher(**x).logits
    assert not taught.requires_grad and (taught - own).abs().max() > 0  # its adapter, not the student's
    assert student.active_adapter == lora.STUDENT  # scoring switched back
    assert {n for n, p in student.named_parameters() if p.requires_grad} == set(mine)

    saved = {n: t.detach().clone() for n, t in teacher.state_dict()["model"].items()}
    teacher.update(student)  # moves on; loading the saved state must put it back exactly
    teacher.load_state_dict({"num_updates": 1, "model": saved})
    assert teacher.num_updates == 1 and all(torch.equal(t, saved[n]) for n, t in teacher.state_dict()["model"].items())
    with pytest.raises(RmsdError, match="does not fit"):
        teacher.load_state_dict({"num_updates": 1, "model": {"x": torch.zeros(1)}})
