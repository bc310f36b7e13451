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

    rmsd distill --recipe recipes/synthvid/tiny_visd.yaml --matched runs/synthvid-tiny-visd/matched
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from rmsd.errors import RmsdError

MODES = ("ema", "fixed")


class EMATeacher:
    """A frozen copy of `model` that trails it by EMA.

    decay: τ ∈ [0, 1]; 0.99 follows the student with a horizon of ~100 steps, 1.0 never moves.
    mode: "ema" (update moves it) or "fixed" (update is a no-op).
    Pass the *unwrapped* model (`accelerator.unwrap_model(model)`) to `__init__` and `update`:
    parameters are matched by name.
    """

    def __init__(self, model: nn.Module, decay: float = 0.99, mode: str = "ema"):
        if mode not in MODES:
            raise RmsdError(f"visd.teacher must be one of {MODES}, got {mode!r}")
        if not 0.0 <= decay <= 1.0:
            raise RmsdError(f"visd.ema_decay must be in [0, 1], got {decay}")
        self.decay, self.mode, self.num_updates = float(decay), mode, 0
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

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
        for name, t in teacher.items():
            s = student[name].detach()
            # mul + add, not lerp: the exact τθ_T + (1−τ)θ the method states
            t.mul_(self.decay).add_(s.to(device=t.device, dtype=t.dtype), alpha=1.0 - self.decay)
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
        """Restore the teacher's weights and update count; decay and mode stay as the current recipe sets them."""
        self.num_updates = int(state["num_updates"])
        self.model.load_state_dict(state["model"])
