"""Stage `adversarial` of `rmsd distill`: GRPO against a discriminator, on video (R-MSD after GAD).

The student generates G rollouts per item; a discriminator D (`rmsd.train.discriminator`)
trained to tell teacher samples from student rollouts scores each rollout, and that score
(plus optional verifiable rewards, `rmsd.train.rewards`: answer format, correctness against
the item's ground truth) is the GRPO reward. Advantages are TRL's group-normalised ones,
`A_i = (r_i − mean_g) / (std_g + 1e-4)`, and the update is TRL's clipped-ratio loss,
optionally with a KL penalty to a reference (GAD, arXiv 2511.10643, section 3).

How it differs from `trl.GRPOTrainer`:
- **Video reaches the loss** (TRL 1.16 drops it; `rmsd.train.rollouts`): each item's prompt
  and frames are encoded once, and their vision tensors ride with every rollout row (key
  `vision`) into generation, the old/reference log-probs and the loss forward, where an
  item's G rollouts share one prompt pass (`rmsd.models.shared_prefix`).
- **The discriminator is stepped explicitly**, here, after TRL computed the rewards from the
  pre-step D (its reward function only scores; `Adversary.update`).
- **A per-token advantage seam.** After the rollout advantages A [B] are computed,
  `token_advantages(rollout, rows)` turns them into [B, T]; the default broadcasts A, which
  leaves TRL's update exactly unchanged. With a VISD `StructuredSignal` (`rmsd.train.visd`)
  the signal computes them through a narrow `RolloutScorer`, and its EMA teacher follows
  every optimizer step.
- **Curriculum.** With a `Curriculum` (`rmsd.train.curriculum`), items are drawn easy → hard
  in TRL's repeat layout; with the pass-rate source, every rollout's correctness updates it.
- **Discriminator warm-up.** For `disc_warmup_steps` steps rollouts are generated and D is
  trained, but the student takes no step (its gradients stay None), and nothing only the
  student's update needs is computed: no VISD judge (paid with an LLM judge), no EMA teacher.
- **Temporal contrast** (`temporal.enabled`, Video-R1's T-GRPO; `rmsd.train.temporal`): each item
  is also answered G′ times from its frames shuffled (TRL's own generation, never trained on),
  and the correct ordered rollouts of an item that scored at least μ times better in order get
  +α on their correctness reward before TRL normalises the group (`_calculate_rewards`).
- D, the EMA teacher and the curriculum are saved in every checkpoint and restored on resume.
- **LoRA students** (`student.lora`, `rmsd.models.lora`): the model arrives as a peft model;
  the discriminator can be an adapter on its base (`discriminator: lora`), and the reference
  of a fresh adapter is the base with the adapters disabled (`_lora_reference`).

This class is one of rmsd's two seams with TRL's internals (the other is
`rmsd.train.sft_trainer`): what it relies on beyond TRL's public API is declared here, the
private GRPOTrainer methods it overrides in `TRL_OVERRIDES` and calls in `TRL_CALLED`, the
trainer attributes it reads or writes in `TRL_ATTRIBUTES`, the TRL methods that call the log-prob forward in
`TRL_LOGPS_CALLERS` and the name of TRL's reference adapter (`ref`);
tests/train/test_trl_args.py pins each against the installed TRL and fails naming what moved.

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer

from rmsd.config import REWARDS, AdversarialStageConfig
from rmsd.datasets.benchmark import Benchmark
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.models import lora, shared_prefix
from rmsd.train.collate import merge_vision
from rmsd.train.curriculum import Curriculum, CurriculumSampler
from rmsd.train.discriminator import AdapterDiscriminator, Adversary, Discriminator, TeacherSamples
from rmsd.train.rewards import CorrectnessReward, FormatReward
from rmsd.train.rollouts import encode_prompts, scored_forward, token_types_of
from rmsd.train.stage_inputs import PromptCache, StudentInputs
from rmsd.train.temporal import TemporalReward
from rmsd.train.visd import TEACHER_DIR, RolloutScorer, StructuredSignal, completion_texts

DISC_DIR = "discriminator"
CURRICULUM_FILE = "curriculum.json"
TRL_REFERENCE_ADAPTER = "ref"  # the frozen adapter copy TRL's GRPOTrainer adds to a peft student when beta > 0
# The private TRL methods overridden here, with the parameters we rely on (TRL 1.16).
TRL_OVERRIDES = {
    "_get_train_sampler": ("self", "dataset"),
    "_generate_and_score_completions": ("self", "inputs"),
    "_tokenize_prompts": ("self", "prompts"),
    "_get_per_token_logps_and_entropies": ("self", "model", "input_ids", "attention_mask", "logits_to_keep",
                                           "batch_size", "compute_entropy", "compute_aux_loss"),
    "_compute_loss": ("self", "model", "inputs"),
    "_load_optimizer_and_scheduler": ("self", "checkpoint"),
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),
}
# The private TRL methods called (not overridden) here, with the parameters passed (TRL 1.16).
TRL_CALLED = {
    "_generate_single_turn": ("self", "prompt_ids", "images", "multimodal_fields", "num_generations"),
}
# GRPOTrainer's attributes read or written here (set in its __init__ or training_step).
TRL_ATTRIBUTES = ("_metrics", "_step", "ref_model", "generation_kwargs", "generation_config", "temperature",
                  "num_generations", "num_iterations")
# The GRPOTrainer methods that call `_get_per_token_logps_and_entropies`, each with a fixed argument
# list (image-only keywords) that cannot carry an item's video tensors: each is wrapped below so the
# rows reach the forward in `_vision_rows` (see `_get_per_token_logps_and_entropies`).
TRL_LOGPS_CALLERS = ("_generate_and_score_completions", "_compute_loss")


class AdversarialTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` with video inputs, a discriminator reward and a per-token advantage hook.

    args: a `trl.GRPOConfig` built from `stage` (`rmsd.train.trl_args.grpo_config`);
        `per_device_train_batch_size` counts rollouts (items x num_generations), as in TRL.
    stage: the recipe's adversarial section (rewards, discriminator settings).
    inputs: how prompts are built (frames, system message, shared prefix).
    items: every item the dataset rows name, by item_id.
    teacher_samples: matched teacher samples (required when the discriminator reward is on).
    benchmark: the benchmark (`extract`, `score`; required for the correctness reward).
    visd: the VISD structured signal (`StructuredSignal.from_config`, built from the student
        *before* it is passed here, so its EMA copy has no fused head yet).
    curriculum: an easy → hard order over the dataset's rows (`Curriculum.from_config`).
    The dataset has one row per item: `{"prompt": item.prompt, "item_id": ...}`.
    """

    def __init__(self, model: Any, args: Any, train_dataset: Any, processing_class: Any, items: Mapping[str, Item],
                 stage: AdversarialStageConfig, inputs: StudentInputs, teacher_samples: TeacherSamples | None = None,
                 benchmark: Benchmark | None = None, callbacks: list[Any] | None = None, visd: StructuredSignal | None = None,
                 curriculum: Curriculum | None = None):
        if isinstance(model, str):
            raise TypeError("AdversarialTrainer needs a loaded model (its discriminator copies the backbone)")
        self.items, self.stage, self.inputs = items, stage, inputs
        self.visd, self.curriculum = visd, curriculum
        self._correctness = CorrectnessReward(items, benchmark) if benchmark is not None else None
        if curriculum is not None and curriculum.source == "pass_rate" and visd is None and benchmark is None:
            raise RmsdError("curriculum source pass_rate needs the benchmark's scorer or the VISD judge")
        self._prompt_rows: list[tuple[list[int], dict[str, torch.Tensor]]] | None = None
        # The vision rows of the TRL call in progress (only inside TRL_LOGPS_CALLERS; None otherwise).
        self._vision_rows: list[dict[str, torch.Tensor]] | None = None
        rewards = stage.active_rewards()
        self.temporal = self._build_temporal(train_dataset) if stage.temporal.enabled else None
        self._shuffled: dict[str, list[float | None]] | None = None  # this generation batch's shuffled scores
        self.adversary = self._build_adversary(model, args, processing_class, teacher_samples, rewards)
        funcs = {"discriminator": self.adversary, "format": FormatReward(), "correctness": self._correctness}
        assert set(funcs) == set(REWARDS), "every reward the recipe can name has a function here"
        if "correctness" in rewards and benchmark is None:
            raise RmsdError("reward `correctness` needs the benchmark's scorer: pass benchmark=get_benchmark(name)")
        callbacks = [*(callbacks or []), *([_EMAFollows(visd)] if visd is not None else [])]
        super().__init__(model=model, reward_funcs=[funcs[name] for name in rewards], args=args,
                         train_dataset=train_dataset, processing_class=processing_class, callbacks=callbacks)
        if self.adversary is not None:
            self.adversary.attach(self.accelerator)
        self.prompt_cache = PromptCache.of(processing_class, items, inputs)  # each prompt encoded once in the stage
        self._lora_reference()
        if visd is not None and not visd.teacher.shares_student:
            from trl.trainer.utils import add_fused_lm_head

            # the teacher scores tokens like the policy: same fused head, same rollout temperature
            add_fused_lm_head(visd.teacher.model, temperature=self.temperature,
                              cast_lm_head_to_fp32=args.cast_lm_head_to_fp32)
            visd.teacher.to(self.accelerator.device)
        if inputs.shared_prefix:
            for scorer in (self.model, self.ref_model, visd.teacher.model if visd else None):
                if scorer is not None:
                    shared_prefix.enable(scorer)
        # A sampled vision placeholder would not match any features in the loss forward.
        config = self.accelerator.unwrap_model(self.model).config
        suppress = [t for t in (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
                    if t is not None]
        self.generation_kwargs["suppress_tokens"] = suppress
        self.generation_config.suppress_tokens = suppress
        self.token_types = token_types_of(config)

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """rmsd writes each stage folder's card itself (`rmsd.train.model_card`): TRL's names no base model."""

    def _build_adversary(self, model: Any, args: Any, processor: Any, teacher_samples: TeacherSamples | None,
                         rewards: dict[str, float]) -> Adversary | None:
        if "discriminator" not in rewards:
            return None
        if teacher_samples is None or not teacher_samples.texts:
            raise RmsdError("the discriminator reward needs matched teacher samples: none were kept for these items")
        s = self.stage
        if s.discriminator == "lora":  # an adapter on the student's frozen base, which follows the student's setting
            disc = AdapterDiscriminator(model, seed=args.seed)
        else:
            disc = Discriminator.from_student(model, seed=args.seed)
            if args.activation_checkpointing:  # D follows the student's memory setting (the shared prefix allows it)
                disc.backbone.activation_checkpointing_enable(args.activation_checkpointing_kwargs)
        return Adversary(disc, processor, teacher_samples, lr=s.disc_lr,
                         weight_decay=s.disc_weight_decay, max_grad_norm=args.max_grad_norm,
                         max_response_tokens=args.max_completion_length, rollouts_per_item=s.disc_rollouts_per_item,
                         system=self.inputs.system, seed=args.seed)

    def _build_temporal(self, dataset: Any) -> TemporalReward:
        if self._correctness is None:
            raise RmsdError("distill.adversarial.temporal needs the benchmark's scorer for its correctness reward: "
                            "pass benchmark=get_benchmark(name)")
        temporal = TemporalReward(self.stage, self.items, self._correctness)
        temporal.check(list(dataset["item_id"]))
        return temporal

    def _lora_reference(self) -> None:
        """A LoRA student's reference (beta > 0) is its base with the stage's starting adapters.

        Given a peft model, TRL copies its adapter into a frozen `ref` adapter and scores the
        reference with it. Fresh adapters (peft initialises lora_B to zero) add nothing, so the
        copy is dropped and TRL scores the reference with the adapters disabled: the bare base,
        no second copy. Adapters a previous stage trained keep their frozen copy (adapter-sized).
        """
        model = self.accelerator.unwrap_model(self.model)
        if lora.is_peft(model) and TRL_REFERENCE_ADAPTER in model.peft_config and lora.is_identity(model):
            model.delete_adapter(TRL_REFERENCE_ADAPTER)

    def in_warmup(self) -> bool:
        """A discriminator-only step: D trains, the student does not."""
        return self.adversary is not None and self.state.global_step < self.stage.disc_warmup_steps

    def log_metric(self, name: str, value: float) -> None:
        """Log `value` under `name` with TRL's own metrics (averaged per logging step)."""
        self._metrics["train" if self.model.training else "eval"][name].append(float(value))

    # -- the VISD seam ------------------------------------------------------------------
    def token_advantages(self, rollout: dict[str, Any], rows: list[dict[str, Any]]) -> torch.Tensor:
        """Per-token advantages [B, T] from the rollout-level ones `rollout["advantages"]` [B].

        rollout: this process's rollouts as TRL built them (`prompt_ids`, `prompt_mask`,
            `completion_ids`, `completion_mask`, `advantages`, ...) plus `vision` (one dict
            of vision tensors per row); rows: the dataset rows they came from (`item_id`, `prompt`).
        The default broadcasts A over the completion, which is TRL's GRPO update exactly.
        """
        if self.visd is not None and not (self.model.training and self.in_warmup()):
            return self.visd.token_advantages(self.rollout_scorer(), rollout, rows)
        return rollout["advantages"].unsqueeze(1).expand_as(rollout["completion_mask"]).contiguous()

    def rollout_scorer(self) -> RolloutScorer:
        """What the VISD signal may use of this trainer."""
        return RolloutScorer(items=self.items, processor=self.processing_class,
                             config=self.accelerator.unwrap_model(self.model).config, system=self.inputs.system,
                             token_types=self.token_types, logps=self.completion_logps, policy=self.model,
                             step=self.state.global_step, log=self.log_metric)

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
        self._prompt_rows = encode_prompts(self.prompt_cache, [x["item_id"] for x in inputs], self.accelerator.device)
        self._vision_rows = [vision for _, vision in self._prompt_rows]  # for TRL's old/ref log-prob calls
        if self.adversary is not None:
            self.adversary.update_enabled = self.model.training
        try:
            if self.temporal is not None and self.model.training and not self.in_warmup():
                self._shuffled = self._shuffled_scores([x["item_id"] for x in inputs])
            rollout = super()._generate_and_score_completions(inputs)  # the rewards: pre-step D scores
        finally:
            self._prompt_rows, self._shuffled = None, None
            vision, self._vision_rows = self._vision_rows, None
        if self.adversary is not None and self.model.training:  # then D's own step, on the same pairs
            for name, value in self.adversary.update().items():
                self.log_metric(f"discriminator/{name}", value)
        rollout["vision"] = vision
        rollout["advantages"] = self.token_advantages(rollout, inputs)
        if self.curriculum is not None and self.curriculum.source == "pass_rate" and self.model.training:
            self._update_pass_rates(rollout, inputs)
        return rollout

    def _tokenize_prompts(self, prompts: list[Any]) -> tuple[list[list[int]], None, dict[str, Any]]:
        if self._prompt_rows is None or len(self._prompt_rows) != len(prompts):
            raise RuntimeError("prompts reached _tokenize_prompts without the rows encoded by this trainer")
        return self._generation_inputs(self._prompt_rows)

    def _generation_inputs(self, rows: list[tuple[list[int], dict[str, torch.Tensor]]]
                           ) -> tuple[list[list[int]], None, dict[str, Any]]:
        prompt_ids = [ids for ids, _ in rows]
        fields = merge_vision([vision for _, vision in rows])
        # A per-token list: TRL left-pads it like the prompt ids before generate().
        fields["mm_token_type_ids"] = [self.token_types(torch.tensor(ids)).tolist() for ids in prompt_ids]
        return prompt_ids, None, fields

    # -- the temporal contrast (Video-R1's T-GRPO) --------------------------------------
    def _shuffled_scores(self, item_ids: list[str]) -> dict[str, list[float | None]]:
        """Correctness of G′ rollouts per item on its shuffled frames, gathered over processes (an item whose G
        rollouts are split across processes is answered G′ times on each, and p̃ pools them)."""
        local = self.temporal.shuffled_scores(item_ids, self.prompt_cache, self.accelerator.device,
                                              self._generate_texts)
        if self.accelerator.num_processes == 1:
            return local
        from accelerate.utils import gather_object

        pooled: dict[str, list[float | None]] = {}
        for item_id, scores in gather_object(list(local.items())):
            pooled.setdefault(item_id, []).extend(scores)
        return pooled

    def _generate_texts(self, rows: list[tuple[list[int], dict[str, torch.Tensor]]]) -> list[str]:
        """One sampled completion per row, by TRL's own generation (same config, same sampling as the rollouts)."""
        prompt_ids, images, fields = self._generation_inputs(rows)
        completion_ids, _ = self._generate_single_turn(prompt_ids, images, fields, self.temporal.generations)
        return self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)

    def _calculate_rewards(self, inputs: list[dict[str, Any]], prompts: list[Any], completions: list[Any],
                           completion_ids_list: list[Any]) -> torch.Tensor:
        """TRL's rewards [B_all, n_rewards] (gathered over processes), plus the temporal bonus on the correctness
        column (as Video-R1 adds it to its accuracy reward) when this batch has shuffled scores."""
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self._shuffled is None:
            return rewards
        item_ids = [x["item_id"] for x in inputs]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            item_ids = gather_object(item_ids)
        column = list(self.stage.active_rewards()).index("correctness")
        bonus = self.temporal.bonuses(rewards[:, column].tolist(), item_ids, self._shuffled, self.num_generations,
                                      self.log_metric)
        rewards[:, column] += torch.tensor(bonus, dtype=rewards.dtype, device=rewards.device)
        return rewards

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
        logps, _, _ = self._get_per_token_logps_and_entropies(
            model, ids, mask, rollout["completion_ids"].size(1), batch_size=self.args.per_device_train_batch_size,
            vision_rows=rollout["vision"])
        return logps

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        self._vision_rows = inputs.get("vision")  # TRL's loss forward passes only its image keys (TRL_LOGPS_CALLERS)
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._vision_rows = None

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: int | None = None,
                                           compute_entropy: bool = False, compute_aux_loss: bool = False,
                                           vision_rows: list[dict[str, torch.Tensor]] | None = None,
                                           **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        """TRL's log-prob forward, with each row's vision tensors (`vision_rows`, one dict per row).

        rmsd's own callers pass `vision_rows`. TRL's callers (`TRL_LOGPS_CALLERS`) cannot: they
        pass image-only keywords (`pixel_values`, `image_grid_thw`, ... read from fixed keys, or
        built from `images`, which is None for video), and a rollout's per-row `vision` dicts are
        not among them. Those calls get the rows from `_vision_rows`, which the wrappers of those
        methods set around `super()` and clear after. Without rows the forward is TRL's own.
        """
        vision_rows = self._vision_rows if vision_rows is None else vision_rows
        if vision_rows is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                **kwargs)
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux = [], [], []
        unwrapped = self.accelerator.unwrap_model(model)
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start: start + batch_size]
            mask = attention_mask[start: start + batch_size]
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :-logits_to_keep] = -100  # only completion tokens are scored
            with self.accelerator.autocast():
                out = scored_forward(model, unwrapped, ids, mask, labels, vision_rows[start: start + batch_size],
                                     self.token_types(ids), self.inputs.shared_prefix, compute_aux_loss)
            logps.append(out["log_probs"][:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(out["entropy"][:, -logits_to_keep:])
            if compute_aux_loss:
                aux.append(out["aux_loss"])
        return (torch.cat(logps), torch.cat(entropies) if compute_entropy else None,
                torch.stack(aux).mean() if compute_aux_loss else None)

    # -- discriminator warm-up ------------------------------------------------------------
    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        if not self.in_warmup():
            return super().training_step(model, inputs, num_items_in_batch)
        # Rollouts are generated and D takes its step; the student has no backward, so its gradients
        # stay None and the optimizer step leaves it unchanged. TRL's own step counter (`_step`, which
        # schedules generation) must still advance as its training_step would.
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
