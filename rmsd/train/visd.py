"""The VISD structured signal: judge feedback → privileged EMA teacher → token-level credit.

For every student rollout of the adversarial stage:
1. a judge (`rmsd.judge.rules` on synthvid, `rmsd.judge.llm` elsewhere) scores it on answer
   correctness, logical consistency and spatio-temporal grounding and writes feedback;
2. the privileged teacher — an EMA copy of the student (`rmsd.train.ema`) — reads the item
   *plus that feedback* (and the reference answer when known) and scores the rollout's own
   tokens: one extra forward pass, no gradients, over the video tensors the rollout already
   carries (only the text of the prompt changes, so its vision placeholders are copied from
   the rollout's prompt and no frame is decoded or processed again);
3. δ_t = log π_T(y_t | x, feedback) − log π_θ(y_t | x) modulates the magnitude of the
   rollout-level advantage per token (`rmsd.losses.decoupled_token_advantages`); A's sign
   alone sets the direction, and λ = 0 gives back TRL's update bit for bit.

How it differs from RLSD (arXiv 2604.03128), the closest published form: the feedback is
the multi-dimensional judge's text rather than a reference solution alone, and the signal
composes with the discriminator reward of R-MSD (it only reshapes advantages, whatever the
rewards are). It is a component the `AdversarialTrainer` holds (composition, not a
subclass): the trainer calls `token_advantages` after TRL computed the rollout advantages,
handing it a `RolloutScorer` (what it may use of the trainer: items, processor, a log-prob
function, the step, a metric logger), and `on_optimizer_step` after each student update.

    rmsd distill --recipe recipes/synthvid/experiment_visd.yaml --matched runs/reproduce/matched
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rmsd.items import Item
from rmsd.judge.verdict import DIMENSIONS, Judge, Verdict, check_template, feedback_prompt
from rmsd.losses.advantages import decoupled_token_advantages, lambda_schedule
from rmsd.models.family import copy_vision_span
from rmsd.train.ema import AdapterEMATeacher, EMATeacher, ema_teacher

TEACHER_DIR = "visd_teacher"


@dataclass
class RolloutScorer:
    """What the signal needs of the trainer that holds it, and nothing of TRL's internals.

    items: the items the rollouts answer, by item_id. processor: the student's processor.
    config: the student's model config (its vision token ids). system: the student's system
    message. token_types: input ids -> mm_token_type_ids.
    logps(model, rollout, prompt_ids=None, prompt_mask=None) -> [B, T]: log-probs of the
        rollout's completion tokens under `model`, with the rollout's vision tensors, behind
        the given (left-padded) prompt or the rollout's own.
    policy: the student. step: the optimizer step (for the λ schedule). log(name, value):
        report a metric.
    """

    items: Mapping[str, Item]
    processor: Any
    config: Any
    system: str | None
    token_types: Callable[[torch.Tensor], torch.Tensor]
    logps: Callable[..., torch.Tensor]
    policy: Any
    step: int
    log: Callable[[str, float], None]


class StructuredSignal:
    """Judge + privileged EMA teacher + direction–magnitude decoupling for one training run.

    judge: scores rollouts and writes their feedback.
    teacher: the EMA copy of the student, made from the *unpatched* student before the
        trainer adds its fused LM head (the trainer patches the copy itself); for a LoRA
        student an adapter on the student's base (`rmsd.train.ema.AdapterEMATeacher`).
    lam, lam_schedule, eps: λ, its schedule ("constant" | "linear" decay to 0 at
        `total_steps`), ε of the magnitude clip.
    feedback_template: the teacher's prompt ({prompt}, {feedback}, optional {reference},
        {response}); None = `rmsd.judge.verdict.DEFAULT_FEEDBACK_TEMPLATE`.
    """

    def __init__(self, judge: Judge, teacher: EMATeacher | AdapterEMATeacher, *, lam: float = 0.5, lam_schedule: str = "linear",
                 eps: float = 0.2, feedback_template: str | None = None, total_steps: int = 1):
        if feedback_template is not None:
            check_template(feedback_template)
        lambda_schedule(0, max(total_steps, 1), lam, lam_schedule)  # validates the schedule's name
        self.judge, self.teacher = judge, teacher
        self.lam, self.lam_schedule, self.eps = lam, lam_schedule, eps
        self.feedback_template, self.total_steps = feedback_template, max(int(total_steps), 1)
        self.last_verdicts: list[Verdict] = []
        self.last_prompts: list[str | None] = []

    @classmethod
    def from_config(cls, cfg: Any, judge: Judge, student: torch.nn.Module, total_steps: int) -> StructuredSignal:
        """From a `rmsd.config.VISDConfig`; `student` must not carry TRL's fused head yet."""
        teacher = ema_teacher(student, decay=cfg.ema_decay, mode=cfg.teacher)
        return cls(judge, teacher, lam=cfg.lam, lam_schedule=cfg.lam_schedule, eps=cfg.eps,
                   feedback_template=cfg.feedback_template, total_steps=total_steps)

    # -- the per-token advantages -------------------------------------------------------
    def token_advantages(self, scorer: RolloutScorer, rollout: dict[str, Any],
                         rows: list[dict[str, Any]]) -> torch.Tensor:
        """Â [B, T] for this process's rollouts; logs λ, |Â/A|, the clipped share and the judge's scores."""
        adv, mask = rollout["advantages"], rollout["completion_mask"]
        items = [scorer.items[r["item_id"]] for r in rows]
        texts = completion_texts(scorer.processor, rollout["completion_ids"], mask)
        verdicts = self.judge.judge_many(items, texts)
        prompts = [feedback_prompt(it, text, v, self.feedback_template) if v.ok else None
                   for it, text, v in zip(items, texts, verdicts, strict=True)]
        self.last_verdicts, self.last_prompts = verdicts, prompts

        prompt_ids, prompt_mask = privileged_prompts(scorer, items, prompts, rollout["prompt_ids"],
                                                     rollout["prompt_mask"])
        with self.teacher.scoring() as teacher_model:
            teacher_logps = scorer.logps(teacher_model, rollout, prompt_ids, prompt_mask)
        student_logps = rollout.get("old_per_token_logps")
        if student_logps is None:  # on-policy: TRL skipped the old log-probs, which equal the current policy's
            student_logps = scorer.logps(scorer.policy, rollout)
        delta = teacher_logps - student_logps
        unjudged = torch.tensor([not v.ok for v in verdicts], device=delta.device)
        delta = delta.masked_fill(unjudged.unsqueeze(1), float("nan"))  # reward-only credit for those rollouts

        lam = lambda_schedule(scorer.step, self.total_steps, self.lam, self.lam_schedule)
        token_adv, stats = decoupled_token_advantages(adv, delta, mask, lam, self.eps)
        self._log(scorer.log, lam, stats, verdicts)
        return token_adv

    def _log(self, log: Callable[[str, float], None], lam: float, stats: Mapping[str, torch.Tensor],
             verdicts: list[Verdict]) -> None:
        log("visd/lambda", lam)
        log("visd/advantage_scale", float(stats["scale_mean"]))
        log("visd/clip_fraction", float(stats["clip_fraction"]))
        log("visd/judge_failed", sum(not v.ok for v in verdicts) / max(len(verdicts), 1))
        judged = [v for v in verdicts if v.ok]
        for dim in DIMENSIONS:
            if judged:
                log(f"visd/judge/{dim}", sum(v.scores[dim] for v in judged) / len(judged))

    # -- the EMA and checkpoints ---------------------------------------------------------
    def on_optimizer_step(self, student: torch.nn.Module) -> None:
        self.teacher.update(student)

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.teacher.state_dict()
        weights = {k: v.detach().contiguous().cpu() for k, v in state.pop("model").items()}
        save_file(_untie(weights), str(directory / "model.safetensors"))
        (directory / "state.json").write_text(json.dumps(state))

    def load(self, directory: str | Path) -> bool:
        """Restore the teacher's weights (a LoRA student's: its adapter) and update count; False when the folder has none."""
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / "model.safetensors").is_file():
            return False
        state = json.loads((directory / "state.json").read_text())
        self.teacher.load_state_dict({**state, "model": load_file(str(directory / "model.safetensors"))})
        return True


def _untie(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage (tied embeddings): keep the first name of each tensor."""
    seen: set[int] = set()
    out = {}
    for name, tensor in weights.items():
        ptr = tensor.data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        out[name] = tensor
    return out


def completion_texts(processor: Any, completion_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """The rollouts' text, padding and special tokens dropped (what the judge reads)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    return tokenizer.batch_decode([ids[m.bool()].tolist() for ids, m in zip(completion_ids, mask, strict=True)],
                                  skip_special_tokens=True)


def privileged_prompts(scorer: RolloutScorer, items: list[Item], prompts: list[str | None], student_ids: torch.Tensor,
                       student_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded token ids [B, P'] of the teacher's prompts, with the rollout's vision placeholders.

    A rollout without a privileged prompt (its verdict failed) keeps the student's own prompt:
    its δ is masked out anyway, and the forward stays one batch.
    """
    from rmsd.models.processing import prompt_text

    processor = scorer.processor
    tokenizer = getattr(processor, "tokenizer", processor)
    rows = []
    for n, (item, prompt) in enumerate(zip(items, prompts, strict=True)):
        own = student_ids[n][student_mask[n].bool()].tolist()
        if prompt is None:
            rows.append(own)
            continue
        text = prompt_text(processor, prompt, video=bool(item.video), image=bool(item.image) and not item.video,
                           system=scorer.system)
        # the rollout's whole vision block (Qwen3-VL: timestamps and per-frame markers too), as its features expect
        rows.append(copy_vision_span(tokenizer(text, add_special_tokens=False)["input_ids"], own, scorer.config))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=student_ids.dtype)
    mask = torch.zeros((len(rows), width), dtype=student_mask.dtype)
    for n, r in enumerate(rows):
        ids[n, width - len(r):] = torch.tensor(r, dtype=student_ids.dtype)
        mask[n, width - len(r):] = 1
    return ids.to(student_ids.device), mask.to(student_mask.device)
