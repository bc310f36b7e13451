"""The VISD privileged teacher: an exponential moving average of the student's weights.

    θ_T ← τ · θ_T + (1 − τ) · θ        (after each optimizer step of the student)

The teacher reads the item plus the judge's feedback and scores the student's rollout
tokens (`rmsd.losses.decoupled_token_advantages`). Being a slow copy of the student, it
shares the student's tokenizer and distribution, so δ_t = log π_T − log π_θ measures what
the feedback changes rather than a gap between two models (RLSD, arXiv 2604.03128, uses the
same self-teacher). `mode="fixed"` freezes it at the initial student instead (an ablation).

How it differs from `torch.optim.swa_utils.AveragedModel`: no step counter in the weights,
buffers are copied rather than averaged, the copy never requires gradients, and the state
round-trips through `state_dict` for trainer checkpoints. It costs one extra copy of the
model's weights on the model's device.

With a LoRA student (`student.lora`) the teacher is `AdapterEMATeacher`: an EMA of the trainable
adapter tensors only, held as a third adapter (`visd_teacher`) on the student's own frozen base
(the base is the same for student and teacher, so averaging it would change nothing); the
teacher runs as the base with that adapter active. It costs one adapter, not a model.

    rmsd distill --recipe recipes/synthvid/tiny_visd.yaml --matched runs/synthvid-tiny-visd/matched
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
from torch import nn

from rmsd.errors import RmsdError
from rmsd.models import lora

MODES = ("ema", "fixed")
TEACHER_ADAPTER = "visd_teacher"  # the adapter's name on a LoRA student's base


def ema_teacher(model: nn.Module, decay: float = 0.99, mode: str = "ema") -> EMATeacher:
    """The teacher for `model`: a full copy, or for a LoRA student (a peft model) an adapter on its base."""
    return (AdapterEMATeacher if lora.is_peft(model) else EMATeacher)(model, decay=decay, mode=mode)


def _check(mode: str, decay: float) -> None:
    if mode not in MODES:
        raise RmsdError(f"visd.teacher must be one of {MODES}, got {mode!r}")
    if not 0.0 <= decay <= 1.0:
        raise RmsdError(f"visd.ema_decay must be in [0, 1], got {decay}")


@torch.no_grad()
def _average(teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor], decay: float) -> None:
    for name, t in teacher.items():
        s = student[name].detach()
        # mul + add, not lerp: the exact τθ_T + (1−τ)θ the method states
        t.mul_(decay).add_(s.to(device=t.device, dtype=t.dtype), alpha=1.0 - decay)


class EMATeacher:
    """A frozen copy of `model` that trails it by EMA.

    decay: τ ∈ [0, 1]; 0.99 follows the student with a horizon of ~100 steps, 1.0 never moves.
    mode: "ema" (update moves it) or "fixed" (update is a no-op).
    Pass the *unwrapped* model (`accelerator.unwrap_model(model)`) to `__init__` and `update`:
    parameters are matched by name.
    """

    shares_student = False  # its own weights: the trainer gives it TRL's fused head and puts it on the device

    def __init__(self, model: nn.Module, decay: float = 0.99, mode: str = "ema"):
        _check(mode, decay)
        self.decay, self.mode, self.num_updates = float(decay), mode, 0
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    def scoring(self) -> contextlib.AbstractContextManager:
        """`with teacher.scoring() as model:` the model whose forward is the teacher's."""
        return contextlib.nullcontext(self.model)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ_T ← τ θ_T + (1 − τ) θ for every parameter; buffers are copied. No-op in "fixed" mode."""
        if self.mode == "fixed":
            return
        student = dict(model.named_parameters())
        teacher = dict(self.model.named_parameters())
        if student.keys() != teacher.keys():
            missing = sorted(student.keys() ^ teacher.keys())[:3]
            raise ValueError(f"EMA teacher and student differ in parameters (e.g. {missing}); "
                             "pass the unwrapped student model")
        _average(teacher, student, self.decay)
        buffers = dict(model.named_buffers())
        for name, b in self.model.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])
        self.num_updates += 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Forward of the teacher, without autograd."""
        with torch.no_grad():
            return self.model(*args, **kwargs)

    def to(self, *args: Any, **kwargs: Any) -> EMATeacher:
        self.model.to(*args, **kwargs)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "mode": self.mode, "num_updates": self.num_updates,
                "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the teacher's weights and update count; decay and mode stay as the current recipe sets them.
        Weights missing from `state["model"]` keep their value (a tied embedding is saved under one name)."""
        self.num_updates = int(state["num_updates"])
        current = self.model.state_dict()
        self.model.load_state_dict({k: state["model"].get(k, current[k]) for k in current})


class AdapterEMATeacher:
    """The EMA teacher of a LoRA student: an adapter of its own on the student's base, trailing the student's.

    θ_T ← τ θ_T + (1 − τ) θ over the student's trainable adapter tensors (text, and vision when
    `student.lora.vision: adapted`); the frozen base is shared. The adapter starts as a copy of the
    student's and has no dropout. `scoring()` switches the student's model to it for a forward.
    Same interface as `EMATeacher`; pass the unwrapped peft model (`accelerator.unwrap_model(model)`).
    """

    shares_student = True  # it runs on the student's own model (fused head and device are the student's)

    def __init__(self, model: nn.Module, decay: float = 0.99, mode: str = "ema"):
        _check(mode, decay)
        self.decay, self.mode, self.num_updates = float(decay), mode, 0
        self.model = getattr(model, "module", model)
        lora.add_adapter_copy(self.model, TEACHER_ADAPTER)

    def _pairs(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(teacher tensors, the student tensors they trail), both by the teacher's names."""
        teacher = lora.adapter_parameters(self.model, TEACHER_ADAPTER)
        student = lora.adapter_parameters(model, lora.STUDENT)
        own = f".{TEACHER_ADAPTER}."
        return teacher, {n: student[n.replace(own, f".{lora.STUDENT}.")] for n in teacher}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ_T ← τ θ_T + (1 − τ) θ for every adapter tensor. No-op in "fixed" mode."""
        if self.mode == "fixed":
            return
        _average(*self._pairs(getattr(model, "module", model)), self.decay)
        self.num_updates += 1

    def scoring(self) -> contextlib.AbstractContextManager:
        """`with teacher.scoring() as model:` the student's model with the teacher's adapter active (no grad)."""
        return lora.use_adapter(self.model, TEACHER_ADAPTER)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad(), self.scoring() as model:
            return model(*args, **kwargs)

    def to(self, *args: Any, **kwargs: Any) -> AdapterEMATeacher:
        return self  # its adapter lives on the student's base, where the student is

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "mode": self.mode, "num_updates": self.num_updates,
                "model": dict(lora.adapter_parameters(self.model, TEACHER_ADAPTER))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        teacher = lora.adapter_parameters(self.model, TEACHER_ADAPTER)
        if set(state["model"]) != set(teacher):
            raise RmsdError("the checkpoint's VISD teacher adapter does not fit this student's (other LoRA targets "
                            "or rank): resume with the recipe it was written with")
        self.num_updates = int(state["num_updates"])
        with torch.no_grad():
            for name, p in teacher.items():
                p.copy_(state["model"][name])
