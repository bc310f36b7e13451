"""The discriminator of R-MSD's adversarial stage: D_φ(x, y) -> a scalar, and its training side.

After GAD ("Black-Box On-Policy Distillation of LLMs", arXiv 2511.10643): D is a copy of
the student's language backbone with a scalar head read at the last response token. It is
trained with the Bradley–Terry loss `-log σ(D(x, y_teacher) − D(x, y_student))` on pairs of
a teacher sample and a student rollout for the same item, and its score of a rollout is the
student's reward. R-MSD's quality-aware part: the teacher side of each pair is drawn from
the item's matched samples *in proportion to their match weights*, so a low-quality teacher
sample is rarely the positive D learns to prefer.

How it differs from GAD: D reads the prompt's text, not the video (it is the language
backbone only), so it judges the response against the question, the options and the
teacher style; grounding in the video comes from the student's verifiable rewards.
Teacher samples are cut to the student's completion budget, so D cannot win on length
or on the truncation of student rollouts alone. One teacher sample per item meets its G
rollouts (as in GAD), and one forward serves both the rewards and D's step, reading each
prompt once through a shared key/value prefix; `rollouts_per_item` (recipe key
`disc_rollouts_per_item`) trains D on m of the G rollouts and only scores the rest
(benchmarks/results/distill.md: 1.34x -> 1.26x a stock GRPO step with m = 1 of G = 4).
Under several processes every process keeps a replica of D; their gradients are averaged before each step, so replicas agree.

With a LoRA student, `distill.adversarial.discriminator: lora` makes D an adapter of its own and
the head on the student's frozen base (`AdapterDiscriminator`): no second backbone, and D's
forward and backward switch the base to D's adapter (the student's off), so neither side's step
can move the other's adapter or the base. The full copy of a LoRA student has its adapters merged in.

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rmsd.errors import RmsdError
from rmsd.losses.bradley_terry import bradley_terry_loss, discriminator_accuracy
from rmsd.models import lora, shared_prefix

WEIGHTS_FILE = "discriminator.safetensors"
STATE_FILE = "discriminator_state.pt"
DISC_ADAPTER = "discriminator"  # the adapter's name on the student's base (peft saves it in a subfolder of that name)


def _scalar_head(hidden_size: int, seed: int, dtype: torch.dtype) -> nn.Linear:
    head = nn.Linear(hidden_size, 1)
    # Seeded init: every process builds the same head, so replicas start identical.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) / hidden_size**0.5)
        head.bias.zero_()
    return head.to(dtype=dtype)


class Discriminator(nn.Module):
    """D_φ(x, y): a causal text backbone and a linear scalar head at one position per sequence."""

    mode = "full"

    def __init__(self, backbone: nn.Module, hidden_size: int, seed: int = 0):
        super().__init__()
        self.backbone = backbone
        self.head = _scalar_head(hidden_size, seed, next(backbone.parameters()).dtype)

    @classmethod
    def from_student(cls, student: nn.Module, seed: int = 0) -> Discriminator:
        """A copy of the student's language backbone (no vision tower, no LM head) plus a fresh head.

        A LoRA student's copy has its adapters merged in: D trains every weight of its own backbone."""
        decoder = student.get_decoder()
        backbone = lora.merged_copy(decoder) if lora.is_peft(student) else copy.deepcopy(decoder)
        shared_prefix.enable(backbone)  # the prompt runs once per item, gradient checkpointing or not
        return cls(backbone, student.config.get_text_config().hidden_size, seed=seed).to(student.device)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What D's optimizer steps."""
        return list(self.parameters())

    def active(self) -> contextlib.AbstractContextManager:
        """Around D's forwards and backwards: nothing to switch for a backbone of its own."""
        return contextlib.nullcontext()

    def weights(self) -> dict[str, torch.Tensor]:
        """Everything D trains, by name (its checkpoint)."""
        return dict(self.state_dict())

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, score_index: torch.Tensor,
                prefix_ids: torch.Tensor | None = None, prefix_mask: torch.Tensor | None = None,
                row_prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [B] read at `score_index` (the last response token of each row).

        Without `prefix_ids`, each row is a whole (right-padded) sequence. With them, the rows
        continue shared prompts (`rmsd.models.shared_prefix`): `prefix_ids` [P, Lp]
        (left-padded) are read once, recording every layer's keys and values, and
        `input_ids` [B, Lr] (right-padded) hold only the responses, each attending to its
        prompt's keys (`row_prefix` [B] names it). An item's G rollouts and its teacher sample
        then pay for its prompt once; gradients from every row flow into the one prompt pass.
        """
        with self.active():
            return self._forward(input_ids, attention_mask, score_index, prefix_ids, prefix_mask, row_prefix)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, score_index: torch.Tensor,
                 prefix_ids: torch.Tensor | None, prefix_mask: torch.Tensor | None,
                 row_prefix: torch.Tensor | None) -> torch.Tensor:
        if prefix_ids is None:
            return self._score(self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state,
                               score_index)
        # positions from each prompt's first real token; a reply continues its prompt's count
        prefix_pos = (prefix_mask.cumsum(dim=1) - 1).clamp(min=0)
        record = shared_prefix.record_prefix(self.backbone, input_ids=prefix_ids, attention_mask=prefix_mask,
                                             position_ids=prefix_pos, use_cache=False)
        reply_pos = prefix_mask.sum(dim=1)[row_prefix].unsqueeze(1) + torch.arange(input_ids.size(1),
                                                                                  device=input_ids.device)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=reply_pos,
                               use_cache=False, **shared_prefix.continuation_kwargs(record, row_prefix, prefix_mask))
        return self._score(hidden.last_hidden_state, score_index)

    def _score(self, hidden: torch.Tensor, score_index: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(hidden.size(0), device=hidden.device)
        return self.head(hidden[rows, score_index]).squeeze(-1).float()


class AdapterDiscriminator(Discriminator):
    """D as a LoRA adapter and a scalar head on the student's own frozen base (`discriminator: lora`).

    No second backbone: D's forward runs the student's text backbone with D's adapter active and
    the student's off (`rmsd.models.lora.use_adapter`), and so does its backward. D's adapter has
    the student's rank, alpha and text-backbone targets, no dropout, and starts as a copy of the
    student's text adapter, so D starts from the student's backbone as the full copy does. Only
    the adapter and the head are D's: its optimizer, checkpoint and device moves leave the student alone.
    """

    mode = "lora"

    def __init__(self, student: nn.Module, seed: int = 0):
        nn.Module.__init__(self)
        if not lora.is_peft(student):
            raise RmsdError("distill.adversarial.discriminator: lora needs a LoRA student (student.lora)")
        self._student = (student,)  # a tuple, not a submodule: the shared base is the student's to save and move
        lora.add_adapter_copy(student, DISC_ADAPTER, text_only=True)
        shared_prefix.enable(student)  # the prompt runs once per item
        self.head = _scalar_head(student.config.get_text_config().hidden_size, seed,
                                 next(student.get_decoder().parameters()).dtype).to(student.device)

    @property
    def backbone(self) -> nn.Module:
        return self._student[0].get_decoder()

    def adapter(self) -> dict[str, nn.Parameter]:
        return lora.adapter_parameters(self._student[0], DISC_ADAPTER)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*self.adapter().values(), *self.head.parameters()]

    def active(self) -> contextlib.AbstractContextManager:
        return lora.use_adapter(self._student[0], DISC_ADAPTER)

    def weights(self) -> dict[str, torch.Tensor]:
        return {**{f"head.{k}": v for k, v in self.head.state_dict().items()},
                **{f"adapter.{k}": v for k, v in self.adapter().items()}}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        adapter = self.adapter()
        expected = {f"adapter.{k}" for k in adapter} | {f"head.{k}" for k in self.head.state_dict()}
        if set(weights) != expected:
            raise RmsdError("the checkpoint's discriminator adapter does not fit this student's (other LoRA targets "
                            "or rank): resume with the recipe it was written with")
        self.head.load_state_dict({k.removeprefix("head."): v for k, v in weights.items() if k.startswith("head.")})
        with torch.no_grad():
            for k, p in adapter.items():
                p.copy_(weights[f"adapter.{k}"])


@dataclass
class TeacherSamples:
    """Kept teacher samples per item and their match weights, drawn in proportion to the weights."""

    texts: dict[str, list[str]]
    weights: dict[str, list[float]]

    @classmethod
    def from_matched(cls, matched: list[dict[str, Any]]) -> TeacherSamples:
        texts: dict[str, list[str]] = defaultdict(list)
        weights: dict[str, list[float]] = defaultdict(list)
        for row in matched:
            w = float(row.get("weight") or 0.0)
            if row.get("kept") and w > 0.0 and row.get("text"):
                texts[row["item_id"]].append(row["text"])
                weights[row["item_id"]].append(w)
        return cls(dict(texts), dict(weights))

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.texts

    def draw(self, item_ids: list[str], rng: random.Random) -> list[str]:
        return [rng.choices(self.texts[i], weights=self.weights[i])[0] for i in item_ids]


@dataclass
class Adversary:
    """D's side of the game: scores student rollouts (the reward) and takes one Bradley–Terry step per batch.

    Called by TRL as a reward function (`__call__` has the reward signature), it scores the
    rollouts with the current D; while training (`update_enabled`), the same forward sets up
    D's loss on (drawn teacher sample, rollout) pairs of the same items, and the trainer
    calls `update()` after the rewards are computed. lr, weight_decay, rollouts_per_item:
    the recipe's disc_lr, disc_weight_decay, disc_rollouts_per_item (documented there).
    """

    disc: Discriminator
    processor: Any
    teacher: TeacherSamples
    lr: float
    weight_decay: float
    max_grad_norm: float
    max_response_tokens: int | None
    rollouts_per_item: int | None
    system: str | None
    seed: int
    update_enabled: bool = True
    accelerator: Any = None
    optimizer: torch.optim.Optimizer = field(init=False)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._pending: tuple[torch.Tensor, dict[str, float]] | None = None
        self.optimizer = torch.optim.AdamW(self.disc.trainable_parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.rng = random.Random(self.seed)
        self.__name__ = "discriminator"  # the reward's name in TRL's logs (rewards/discriminator/mean)

    def attach(self, accelerator: Any) -> None:
        """Place D on the trainer's device; a per-process rng keeps the teacher draws independent."""
        self.accelerator = accelerator
        self.disc.to(accelerator.device)
        self.rng = random.Random(self.seed * 1000 + accelerator.process_index)

    # -- inputs -------------------------------------------------------------------------
    def inputs(self, prompts: list[str], responses: list[str]) -> dict[str, torch.Tensor]:
        """D's inputs for text-only (prompt, response) chats, scored at each last response token.

        When prompts repeat (an item's rollouts), the prompt and response tokens of
        `encode`'s sequences are split apart so that each distinct prompt is read once
        (see `Discriminator.forward`); otherwise the whole sequences go in as they are.
        """
        from rmsd.models.processing import encode

        batch = encode(self.processor, prompts, [None] * len(prompts), responses=responses, system=self.system)
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
        device = self.disc.head.weight.device
        prompt_len = (labels.eq(-100) & mask.bool()).cumprod(dim=1).sum(dim=1).tolist()  # leading non-target tokens
        length = mask.sum(dim=1).tolist()
        distinct = list(dict.fromkeys(prompts))
        if len(distinct) == len(prompts):
            score_index = torch.tensor(length) - 1  # encode ends each row with its reply's <|im_end|>
            return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "score_index": score_index.to(device)}
        first = {p: prompts.index(p) for p in distinct}
        pad = getattr(self.processor, "tokenizer", self.processor).pad_token_id
        prefix = _pad([ids[first[p], : prompt_len[first[p]]] for p in distinct], pad, left=True)
        reply = _pad([ids[n, prompt_len[n]: length[n]] for n in range(len(prompts))], pad, left=False)
        return {"input_ids": reply[0].to(device), "attention_mask": reply[1].to(device),
                "score_index": (torch.tensor(length) - torch.tensor(prompt_len) - 1).to(device),
                "prefix_ids": prefix[0].to(device), "prefix_mask": prefix[1].to(device),
                "row_prefix": torch.tensor([distinct.index(p) for p in prompts], device=device)}

    def _cut(self, texts: list[str]) -> list[str]:
        """Teacher responses cut to the student's token budget (the student's rollouts are)."""
        if self.max_response_tokens is None:
            return texts
        tok = getattr(self.processor, "tokenizer", self.processor)
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        return [t if len(i) <= self.max_response_tokens else tok.decode(i[: self.max_response_tokens])
                for t, i in zip(texts, ids, strict=True)]

    # -- reward and update --------------------------------------------------------------
    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        was_training = self.disc.training
        self.disc.eval()
        scores = self.disc(**self.inputs(prompts, responses))
        self.disc.train(was_training)
        return scores

    def prepare(self, prompts: list[str], student: list[str], item_ids: list[str]) -> torch.Tensor:
        """Score the rollouts [B·G] with the current D, and set up D's loss on (teacher, rollout) pairs.

        As in GAD, one teacher sample is drawn per item and paired with its rollouts, so one
        forward covers B teacher samples and the rollouts and gives both the rewards (the
        pre-step scores, returned) and D's Bradley–Terry loss, kept for `update`. With
        `rollouts_per_item` = m < G, D's loss uses m of each item's G rollouts (drawn at
        random) and the others are only scored, under no_grad: the backward pass then covers
        B·(m+1) rows instead of B·(G+1), for a gradient that estimates the same mean over pairs.
        """
        firsts: dict[str, int] = {}  # item -> its first row (for the prompt)
        for n, item_id in enumerate(item_ids):
            if item_id in self.teacher:
                firsts.setdefault(item_id, n)
        paired = list(firsts)
        teacher = self._cut(self.teacher.draw(paired, self.rng))
        trained = self._trained_rows(item_ids, firsts)
        trained_set = set(trained)
        scored = [n for n in range(len(prompts)) if n not in trained_set]
        self.disc.train()
        scores = self.disc(**self.inputs([prompts[firsts[i]] for i in paired] + [prompts[n] for n in trained],
                                         teacher + [student[n] for n in trained]))
        s_teacher_item, s_trained = scores[: len(paired)], scores[len(paired):]
        s_student = torch.empty(len(prompts), device=scores.device)
        s_student[trained] = s_trained.detach()
        if scored:
            with torch.no_grad():
                s_student[scored] = self.disc(**self.inputs([prompts[n] for n in scored], [student[n] for n in scored]))
        column = {i: k for k, i in enumerate(paired)}
        s_teacher = s_teacher_item[[column[item_ids[n]] for n in trained]]
        # No pair on this process still takes part in the gradient average (a zero gradient).
        loss = bradley_terry_loss(s_teacher, s_trained) if trained else scores.sum() * 0.0
        metrics = {} if not trained else {
            "accuracy": float(discriminator_accuracy(s_teacher.detach(), s_trained.detach())),
            "score_teacher": s_teacher_item.mean().item(), "score_student": s_student.mean().item()}
        self._pending = (loss, metrics)
        return s_student

    def update(self) -> dict[str, float]:
        """D's optimizer step on the loss the last `prepare` set up (nothing when none is pending); its metrics."""
        if self._pending is None:
            return {}
        loss, metrics = self._pending
        self._pending = None
        with self.disc.active():  # a checkpointed layer recomputes with D's adapter, as its forward ran
            loss.backward()
        self._sync_gradients()
        torch.nn.utils.clip_grad_norm_(self.disc.trainable_parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.item(), **metrics} if metrics else {}

    def step(self, prompts: list[str], student: list[str], item_ids: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        """`prepare` then `update`: the pre-step scores [B·G] and the step's metrics."""
        scores = self.prepare(prompts, student, item_ids)
        return scores, self.update()

    def _trained_rows(self, item_ids: list[str], firsts: dict[str, int]) -> list[int]:
        """The rollout rows D trains on: all of a paired item's rows, or `rollouts_per_item` drawn from them."""
        rows: dict[str, list[int]] = defaultdict(list)
        for n, item_id in enumerate(item_ids):
            if item_id in firsts:
                rows[item_id].append(n)
        m = self.rollouts_per_item
        picked = [n for group in rows.values()
                  for n in (group if m is None or m >= len(group) else sorted(self.rng.sample(group, m)))]
        return sorted(picked)

    def _sync_gradients(self) -> None:
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return
        grads = [p.grad for p in self.disc.trainable_parameters() if p.grad is not None]
        flat = self.accelerator.reduce(torch.cat([g.flatten() for g in grads]), reduction="mean")
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()

    def __call__(self, prompts: list[str], completions: list[str], item_id: list[str], **_: Any) -> list[float]:
        """The reward: D's scores of the rollouts. It trains nothing; while training, it also sets up the
        loss that the trainer's explicit `update()` steps on, from this same forward."""
        if not self.update_enabled:
            return self.score(prompts, completions).tolist()
        return self.prepare(prompts, completions, item_id).tolist()

    # -- checkpoints ----------------------------------------------------------------------
    def save(self, directory: str | Path, with_state: bool = True) -> None:
        """D's weights (safetensors) and, for a resume point, its optimizer and rng state; atomic writes."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().contiguous().cpu() for k, v in self.disc.weights().items()}
        _atomic(directory / WEIGHTS_FILE, lambda p: save_file(weights, str(p), metadata={"mode": self.disc.mode}))
        if with_state:
            state = {"optimizer": self.optimizer.state_dict(), "rng": self.rng.getstate()}
            _atomic(directory / STATE_FILE, lambda p: torch.save(state, p))

    def load(self, directory: str | Path) -> bool:
        """Restore D (and its optimizer/rng when saved); False when `directory` holds no discriminator."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / WEIGHTS_FILE).is_file():
            return False
        with safe_open(str(directory / WEIGHTS_FILE), "pt") as f:
            mode = (f.metadata() or {}).get("mode", "full")
        if mode != self.disc.mode:
            raise RmsdError(f"{directory} holds a {mode} discriminator but distill.adversarial.discriminator is "
                            f"{self.disc.mode}: resume with the recipe the checkpoint was written with")
        device = self.disc.head.weight.device
        self.disc.load_weights(load_file(str(directory / WEIGHTS_FILE), device=str(device)))
        if (directory / STATE_FILE).is_file():
            state = torch.load(directory / STATE_FILE, map_location=device, weights_only=False)
            self.optimizer.load_state_dict(state["optimizer"])
            self.rng.setstate(state["rng"])
        return True


def _pad(rows: list[torch.Tensor], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of 1-D token rows padded to one width, on the left or the right."""
    width = max(r.numel() for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - row.numel(), width) if left else slice(0, row.numel())
        ids[i, span], mask[i, span] = row, 1
    return ids, mask


def _atomic(path: Path, write: Any) -> None:
    """Write through a temporary file and rename, so a killed run never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
