"""Stage `adversarial` of `rmsd distill`: GRPO against a discriminator, on video (R-MSD after GAD).

The student generates G rollouts per item; a discriminator D (`rmsd.train.discriminator`)
trained to tell teacher samples from student rollouts scores each rollout, and that score
(plus optional verifiable rewards: answer format, correctness against the item's ground
truth) is the GRPO reward. Advantages are TRL's group-normalised ones,
`A_i = (r_i − mean_g) / (std_g + 1e-4)`, and the update is TRL's clipped-ratio loss,
optionally with a KL penalty to a reference (GAD, arXiv 2511.10643, section 3).

How it differs from `trl.GRPOTrainer`:
- **Video reaches the loss.** TRL 1.16 passes a video prompt to generation but builds its
  log-prob forward from image tensors only, so video is silently dropped. Here each item's
  prompt and frames are encoded once (`rmsd.models.processing.encode`, frame cache), and
  the vision tensors ride with every rollout row (key `vision`, one dict per row, so TRL's
  shuffling and splitting keep them aligned) into generation, the old/reference log-probs
  and the loss forward. The overridden methods are the narrow ones: `_tokenize_prompts`,
  `_get_per_token_logps_and_entropies`, `_generate_and_score_completions` (a wrapper) and
  `_compute_loss` (a wrapper).
- **A per-token advantage seam.** After the rollout advantages A [B] are computed,
  `token_advantages(rollout, rows)` turns them into [B, T]; the default broadcasts A, which
  leaves TRL's update exactly unchanged. With a VISD `StructuredSignal`
  (`rmsd.train.visd`: judge → privileged EMA teacher → decoupled magnitudes) the signal
  computes them instead, and its EMA teacher follows every optimizer step.
- **Curriculum.** With a `Curriculum` (`rmsd.train.curriculum`), items are drawn easy → hard
  in TRL's repeat layout; with the pass-rate source, every rollout's correctness updates it.
- **Discriminator warm-up.** For `disc_warmup_steps` steps rollouts are generated and D is
  trained, but the student takes no step (its gradients stay None, so the optimizer skips it).
- D is saved in every checkpoint (weights, optimizer, rng) and restored on resume.

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from rmsd.data.items import Item
from rmsd.errors import RmsdError
from rmsd.models import shared_prefix
from rmsd.train.collate import VISION_KEYS, encode_pairs, load_media, merge_vision, vision_kwargs
from rmsd.train.curriculum import Curriculum, CurriculumSampler
from rmsd.train.discriminator import Adversary, Discriminator, TeacherSamples
from rmsd.train.visd import TEACHER_DIR, StructuredSignal, completion_texts

REWARDS = ("discriminator", "format", "correctness")
DISC_DIR = "discriminator"
CURRICULUM_FILE = "curriculum.json"


@dataclass
class AdversarialConfig(GRPOConfig):
    """`trl.GRPOConfig` plus the discriminator, reward and video options (inherited fields keep TRL's meaning).

    `per_device_train_batch_size` counts rollouts (items x num_generations), as in TRL.
    `reward_weights` is derived from `rewards`; do not set both.
    """

    # -- discriminator ----------------------------------------------------------------
    disc_lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate of the discriminator."})
    disc_weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the discriminator."})
    disc_warmup_steps: int = field(default=0, metadata={"help": "First steps train D alone (student frozen)."})
    disc_rollouts_per_item: int | None = field(default=None, metadata={
        "help": "Rollouts of each item D trains on per step (the rest are only scored); None: all G."})
    # -- rewards ----------------------------------------------------------------------
    rewards: dict[str, float] = field(
        default_factory=lambda: {"discriminator": 1.0},
        metadata={"help": "reward = sum of weight * component; components: discriminator, format, correctness."},
    )
    # -- video ------------------------------------------------------------------------
    num_frames: int = field(default=8, metadata={"help": "Frames sampled uniformly from each video."})
    max_side: int | None = field(default=None, metadata={"help": "Downscale frames so the longer side is at most this."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message before each prompt."})
    shared_prefix: bool = field(default=True, metadata={
        "help": "Run an item's prompt (and video) once for its G rollouts in the loss and log-prob forwards "
                "(rmsd.models.shared_prefix); False: one full sequence per rollout, for checking."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rewards) - set(REWARDS))
        if unknown or not self.rewards:
            raise ValueError(f"rewards must name some of {REWARDS}; got {sorted(self.rewards)}")
        if self.disc_warmup_steps < 0 or self.disc_lr <= 0:
            raise ValueError("disc_warmup_steps must be >= 0 and disc_lr > 0")
        if self.disc_rollouts_per_item is not None and self.disc_rollouts_per_item < 1:
            raise ValueError(f"disc_rollouts_per_item must be >= 1 or None, got {self.disc_rollouts_per_item}")
        self.reward_weights = [float(w) for w in self.rewards.values()]
        super().__post_init__()


# ----------------------------------------------------------------------------- rewards
class FormatReward:
    """1 when a rollout follows `<think>…</think><answer>…</answer>`, else 0."""

    __name__ = "format"

    def __call__(self, completions: list[str], **_: Any) -> list[float]:
        from rmsd.matching.extract import format_ok

        return [float(format_ok(c)) for c in completions]


class CorrectnessReward:
    """The benchmark's own score of the strictly extracted answer against the item's ground truth."""

    __name__ = "correctness"

    def __init__(self, items: Mapping[str, Item], benchmark: Any):
        self.items = items
        self.benchmark = benchmark

    def __call__(self, completions: list[str], item_id: list[str], **_: Any) -> list[float | None]:
        out: list[float | None] = []
        for text, iid in zip(completions, item_id, strict=True):
            item = self.items[iid]
            # No ground truth: None, which TRL leaves out of the group baseline (advantage 0).
            out.append(None if item.answer is None else
                       float(self.benchmark.score(self.benchmark.extract(text, item, mode="strict"), item)))
        return out


# ----------------------------------------------------------------------------- trainer
class AdversarialTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` with video inputs, a discriminator reward and a per-token advantage hook.

    items: every item the dataset rows name, by item_id.
    teacher_samples: matched teacher samples (required when `rewards` has "discriminator").
    benchmark: the benchmark module (`extract`, `score`; required for "correctness").
    visd: the VISD structured signal (`StructuredSignal.from_config`, built from the student
        *before* it is passed here, so its EMA copy has no fused head yet).
    curriculum: an easy → hard order over the dataset's rows (`Curriculum.from_config`).
    The dataset has one row per item: `{"prompt": item.prompt, "item_id": ...}`.
    """

    def __init__(self, model: Any, args: AdversarialConfig, train_dataset: Any, processing_class: Any,
                 items: Mapping[str, Item], teacher_samples: TeacherSamples | None = None, benchmark: Any = None,
                 callbacks: list[Any] | None = None, visd: StructuredSignal | None = None,
                 curriculum: Curriculum | None = None):
        if isinstance(model, str):
            raise TypeError("AdversarialTrainer needs a loaded model (its discriminator copies the backbone)")
        self.items = items
        self.visd, self.curriculum = visd, curriculum
        self._correctness = CorrectnessReward(items, benchmark) if benchmark is not None else None
        if curriculum is not None and curriculum.source == "pass_rate" and visd is None and benchmark is None:
            raise RmsdError("curriculum source pass_rate needs the benchmark's scorer or the VISD judge")
        self._prompt_rows: list[tuple[list[int], dict[str, torch.Tensor]]] | None = None
        self._vision_rows: list[dict[str, torch.Tensor]] | None = None
        self.adversary = self._build_adversary(model, args, processing_class, teacher_samples)
        funcs = {"discriminator": self.adversary, "format": FormatReward()}
        if "correctness" in args.rewards:
            if benchmark is None:
                raise RmsdError("reward `correctness` needs the benchmark's scorer: pass benchmark=get_benchmark(name)")
            funcs["correctness"] = CorrectnessReward(items, benchmark)
        callbacks = [*(callbacks or []), *([_EMAFollows(visd)] if visd is not None else [])]
        super().__init__(model=model, reward_funcs=[funcs[name] for name in args.rewards], args=args,
                         train_dataset=train_dataset, processing_class=processing_class, callbacks=callbacks)
        if self.adversary is not None:
            self.adversary.attach(self.accelerator)
        if visd is not None:
            from trl.trainer.utils import add_fused_lm_head

            # the teacher scores tokens like the policy: same fused head, same rollout temperature
            add_fused_lm_head(visd.teacher.model, temperature=self.temperature,
                              cast_lm_head_to_fp32=args.cast_lm_head_to_fp32)
            visd.teacher.to(self.accelerator.device)
        if args.shared_prefix:
            for scorer in (self.model, getattr(self, "ref_model", None), visd.teacher.model if visd else None):
                if scorer is not None:
                    shared_prefix.enable(scorer)
        # A sampled vision placeholder would not match any features in the loss forward.
        config = self.accelerator.unwrap_model(self.model).config
        suppress = [t for t in (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
                    if t is not None]
        self.generation_kwargs["suppress_tokens"] = suppress
        self.generation_config.suppress_tokens = suppress
        self._token_types = {getattr(config, "image_token_id", -1): 1, getattr(config, "video_token_id", -1): 2}

    @staticmethod
    def _build_adversary(model: Any, args: AdversarialConfig, processor: Any,
                         teacher_samples: TeacherSamples | None) -> Adversary | None:
        if "discriminator" not in args.rewards:
            return None
        if teacher_samples is None or not teacher_samples.texts:
            raise RmsdError("the discriminator reward needs matched teacher samples: none were kept for these items")
        disc = Discriminator.from_student(model, seed=args.seed)
        return Adversary(disc, processor, teacher_samples, lr=args.disc_lr, weight_decay=args.disc_weight_decay,
                         max_grad_norm=args.max_grad_norm, max_response_tokens=args.max_completion_length,
                         rollouts_per_item=args.disc_rollouts_per_item, system=args.system_prompt, seed=args.seed)

    # -- the VISD seam ------------------------------------------------------------------
    def token_advantages(self, rollout: dict[str, Any], rows: list[dict[str, Any]]) -> torch.Tensor:
        """Per-token advantages [B, T] from the rollout-level ones `rollout["advantages"]` [B].

        rollout: this process's rollouts as TRL built them (`prompt_ids`, `prompt_mask`,
            `completion_ids`, `completion_mask`, `advantages`, ...) plus `vision` (one dict
            of vision tensors per row); rows: the dataset rows they came from (`item_id`, `prompt`).
        The default broadcasts A over the completion, which is TRL's GRPO update exactly.
        """
        if self.visd is not None:
            return self.visd.token_advantages(self, rollout, rows)
        return rollout["advantages"].unsqueeze(1).expand_as(rollout["completion_mask"]).contiguous()

    # -- curriculum -----------------------------------------------------------------------
    def _get_train_sampler(self, dataset: Any = None) -> Any:
        if self.curriculum is None:
            return super()._get_train_sampler(dataset)
        return CurriculumSampler(self.curriculum, batch_size=self.args.generation_batch_size // self.num_generations,
                                 mini_repeat_count=self.num_generations,
                                 repeat_count=self.num_iterations * self.args.steps_per_generation)

    def _update_pass_rates(self, rollout: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Feed every rollout's correctness to a pass-rate curriculum, the same on every process."""
        if self.visd is not None and len(self.visd.last_verdicts) == len(rows):
            scores = [v.scores["answer_correctness"] if v.ok else None for v in self.visd.last_verdicts]
        else:
            texts = completion_texts(self.processing_class, rollout["completion_ids"], rollout["completion_mask"])
            scores = self._correctness(texts, [r["item_id"] for r in rows])
        results = [(r["item_id"], s) for r, s in zip(rows, scores, strict=True) if s is not None]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            results = gather_object(results)
        for item_id, score in results:
            self.curriculum.update(item_id, score)

    # -- rollouts: encode the prompts once, carry their vision tensors -------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._prompt_rows = self._encode_prompts(inputs)
        self._vision_rows = [vision for _, vision in self._prompt_rows]
        if self.adversary is not None:
            self.adversary.update_enabled = self.model.training
        try:
            rollout = super()._generate_and_score_completions(inputs)
        finally:
            self._prompt_rows = None
            vision, self._vision_rows = self._vision_rows, None
        rollout["vision"] = vision
        rollout["advantages"] = self.token_advantages(rollout, inputs)
        if self.curriculum is not None and self.curriculum.source == "pass_rate" and self.model.training:
            self._update_pass_rates(rollout, inputs)
        return rollout

    def _encode_prompts(self, inputs: list[dict[str, Any]]) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
        """(prompt token ids, vision tensors) per row; each item is encoded once for its G rows."""
        cache: dict[str, tuple[list[int], dict[str, torch.Tensor]]] = {}
        rows = []
        for x in inputs:
            item_id = x["item_id"]
            if item_id not in cache:
                item = self.items[item_id]
                media = load_media(item, self.args.num_frames, self.args.max_side)
                enc = encode_pairs(self.processing_class, [item], [media], system=self.args.system_prompt,
                                   padding_side="left")
                vision = {k: enc[k].to(self.accelerator.device) for k in VISION_KEYS if k in enc}
                cache[item_id] = (enc["input_ids"][0].tolist(), vision)
            rows.append(cache[item_id])
        return rows

    def _tokenize_prompts(self, prompts: list[Any]) -> tuple[list[list[int]], None, dict[str, Any]]:
        if self._prompt_rows is None or len(self._prompt_rows) != len(prompts):
            raise RuntimeError("prompts reached _tokenize_prompts without the rows encoded by this trainer")
        prompt_ids = [ids for ids, _ in self._prompt_rows]
        fields = merge_vision([vision for _, vision in self._prompt_rows])
        # A per-token list: TRL left-pads it like the prompt ids before generate().
        fields["mm_token_type_ids"] = [self.token_types(torch.tensor(ids)).tolist() for ids in prompt_ids]
        return prompt_ids, None, fields

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Qwen's mm_token_type_ids: 1 on image placeholders, 2 on video placeholders, else 0."""
        types = torch.zeros_like(input_ids)
        for token_id, kind in self._token_types.items():
            types[input_ids == token_id] = kind
        return types

    # -- log-prob forwards with the vision tensors --------------------------------------
    @torch.no_grad()
    def completion_logps(self, model: Any, rollout: dict[str, Any], prompt_ids: torch.Tensor | None = None,
                         prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        """log p(y_t | prompt, y_<t) [B, T] of the rollout's completion tokens under `model`, with its vision inputs.

        For per-token signals (VISD's teacher reads the same clip behind a different
        prompt): pass that prompt's left-padded `prompt_ids`/`prompt_mask`, else the
        rollout's own. `model` must carry TRL's fused LM head
        (`trl.trainer.utils.add_fused_lm_head`, with the rollout temperature), as the policy
        and the reference model do; padding positions come back as 0.
        """
        prompt_ids = rollout["prompt_ids"] if prompt_ids is None else prompt_ids
        prompt_mask = rollout["prompt_mask"] if prompt_mask is None else prompt_mask
        ids = torch.cat([prompt_ids, rollout["completion_ids"]], dim=1)
        mask = torch.cat([prompt_mask, rollout["completion_mask"]], dim=1)
        previous, self._vision_rows = self._vision_rows, rollout["vision"]
        try:
            logps, _, _ = self._get_per_token_logps_and_entropies(
                model, ids, mask, rollout["completion_ids"].size(1), batch_size=self.args.per_device_train_batch_size)
        finally:
            self._vision_rows = previous
        return logps

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        self._vision_rows = inputs.get("vision")
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._vision_rows = None

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: int | None = None,
                                           compute_entropy: bool = False, compute_aux_loss: bool = False,
                                           **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        vision_rows = self._vision_rows
        if vision_rows is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **kwargs)
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start: start + batch_size]
            mask = attention_mask[start: start + batch_size]
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100  # only completion tokens are scored
            rows = vision_rows[start: start + batch_size]
            out = self._scored_forward(model, ids, mask, labels, rows, compute_aux_loss)
            logps.append(out["log_probs"][:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(out["entropy"][:, -logits_to_keep:])
            if compute_aux_loss:
                aux.append(out["aux_loss"])
        return (torch.cat(logps), torch.cat(entropies) if compute_entropy else None,
                torch.stack(aux).mean() if compute_aux_loss else None)

    def _scored_forward(self, model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                        rows: list[dict[str, torch.Tensor]], compute_aux_loss: bool) -> dict[str, Any]:
        """Fused-head outputs of (prompt + completion) rows: an item's G rows share one prompt pass
        (`rmsd.models.shared_prefix`; the rows of an item carry the same vision dict), else one pass per row."""
        types = self.token_types(ids)
        split = None
        if self.args.shared_prefix and not compute_aux_loss and shared_prefix.enabled(model):
            first_target = (labels != -100).int().argmax(dim=1) - 1
            split = shared_prefix.plan_split(ids, mask, first_target, [id(r) for r in rows], types)
        if split is not None:
            with self.accelerator.autocast():
                return shared_prefix.shared_forward(model, ids, mask, labels, split, rows, types)
        # The G rollouts of an item share one vision dict: its clip is encoded once.
        model_inputs = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": types,
                        **vision_kwargs(self.accelerator.unwrap_model(model), rows, [id(r) for r in rows])}
        if compute_aux_loss:
            model_inputs["output_router_logits"] = True
        with self.accelerator.autocast():
            out = model(**model_inputs, labels=labels, fused_lm_head=True)
        return {"log_probs": out.log_probs, "entropy": out.entropy, "aux_loss": out.aux_loss}

    # -- discriminator warm-up ------------------------------------------------------------
    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        if self.adversary is None or self.state.global_step >= self.args.disc_warmup_steps:
            return super().training_step(model, inputs, num_items_in_batch)
        # Rollouts are generated and D takes its step inside the reward; the student has no
        # backward, so its gradients stay None and the optimizer step leaves it unchanged.
        model.train()
        self._prepare_inputs(inputs)
        self._step += 1
        return torch.zeros((), device=self.accelerator.device)

    # -- checkpoints: D travels with the student ----------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if not self.args.should_save:
            return
        directory = Path(output_dir or self.args.output_dir)
        if self.adversary is not None:
            # Checkpoints (internal calls) also keep D's optimizer and rng, the resume point.
            self.adversary.save(directory / DISC_DIR, with_state=_internal_call)
        if self.visd is not None and _internal_call:
            self.visd.save(directory / TEACHER_DIR)  # the EMA teacher is part of the resume point
        if self.curriculum is not None and _internal_call:
            (directory / CURRICULUM_FILE).write_text(json.dumps(self.curriculum.state_dict()))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        if self.adversary is not None and not self.adversary.load(os.path.join(checkpoint, DISC_DIR)):
            raise RmsdError(f"checkpoint {checkpoint} has no discriminator: it was not written by this stage")
        if self.visd is not None and not self.visd.load(os.path.join(checkpoint, TEACHER_DIR)):
            raise RmsdError(f"checkpoint {checkpoint} has no VISD teacher: it was written without visd enabled")
        state = Path(checkpoint) / CURRICULUM_FILE
        if self.curriculum is not None and state.is_file():
            self.curriculum.load_state_dict(json.loads(state.read_text()))


class _EMAFollows(TrainerCallback):
    """Moves the VISD teacher toward the student after every optimizer step."""

    def __init__(self, visd: StructuredSignal):
        self.visd = visd

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
        if model is not None:
            self.visd.on_optimizer_step(getattr(model, "module", model))

