"""Stage `sft` of `rmsd distill`: multi-sample, quality-weighted SFT of a video student (R-MSD).

Every kept teacher sample of an item is a target, weighted by its match weight normalised
per item (docs/method.md, section 4):

    L = - sum_k wbar_k * (1/|y_k|) * sum_t log p(y_k,t | x, y_k,<t),   wbar_k = w_k / sum_j w_j

averaged over the batch's items (`weighting: matched_conf`: a mean weighted by each item's
pool confidence, `rmsd.losses.item_confidence`).

The maths is `rmsd.losses.multisample_sft_loss`; this trainer only feeds it per-token
log-probabilities. How it differs from `trl.SFTTrainer`: a dataset row is an *item* with
its K samples, not one sequence; the collator (`rmsd.train.collate`) builds Qwen video
inputs that TRL's image-only collator cannot; and the loss averages each sample over its
own tokens before weighting, so a long response does not outweigh a short one (plain SFT
averages over all tokens of the batch). `samples_per_item=1` is the single-sample
baseline: the first format-valid sample of each item, unweighted.

The log-probabilities come from TRL's fused LM head (`model(..., fused_lm_head=True)`),
which never materialises the `[sequences, tokens, vocab]` logits.

This class is one of rmsd's two seams with TRL's internals (the other is
`rmsd.train.adversarial_trainer`): the SFTTrainer methods it overrides are in `TRL_OVERRIDES`,
the trainer attributes it writes (TRL's metric store and token count, Trainer's loss-kwargs
switch) in `TRL_ATTRIBUTES`, and the fused head's output fields it reads in `TRL_FUSED_OUTPUTS`;
tests/train/test_trl_args.py pins each against the installed TRL and fails naming what moved.

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import torch
from trl import SFTTrainer

from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.losses.multisample_sft import item_confidence, multisample_sft_loss
from rmsd.models import shared_prefix
from rmsd.train.collate import VISION_KEYS, MultiSampleCollator, item_vision, vision_kwargs
from rmsd.train.stage_inputs import StudentInputs

# The SFTTrainer methods overridden here, with the parameters we rely on (TRL 1.16).
TRL_OVERRIDES = {
    "compute_loss": ("self", "model", "inputs", "return_outputs", "num_items_in_batch"),
    "create_model_card": ("self",),
}
# SFTTrainer's attributes written here (set in its __init__ or in transformers.Trainer's).
TRL_ATTRIBUTES = ("_metrics", "_total_train_tokens", "model_accepts_loss_kwargs")
# The fields of TRL's FusedCausalLMOutput read here and by the shared-prefix forward.
TRL_FUSED_OUTPUTS = ("log_probs", "entropy", "is_top1", "label_mask")


def sft_rows(matched: list[dict[str, Any]], samples_per_item: int | None, weighting: str,
             single_from: str = "valid") -> list[dict[str, Any]]:
    """Dataset rows `{"item_id", "texts", "weights"}` from matched samples (one row per item).

    samples_per_item, weighting, single_from: the recipe's distill.sft keys of these names (documented there);
    with weighting matched_conf a multi-sample row also carries `item_weight`, the item's c_i
    (`rmsd.losses.item_confidence` over every sample of the item in `matched`, kept or not).

    Samples are taken in a fixed order (sample_index, then teacher), so the baseline's
    "first" sample does not depend on the order the sampler finished in. Items without a
    usable sample are left out.
    """
    by_item: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in matched:
        by_item[row["item_id"]].append(row)
    rows = []
    for item_id, samples in by_item.items():
        samples = sorted(samples, key=lambda r: (r.get("sample_index", 0), str(r.get("teacher", ""))))
        if samples_per_item == 1:
            usable = [r for r in samples if r.get("format_ok") and r.get("text")]
            if single_from == "kept":  # matching's verdict decides (with ground truth: a correct sample)
                usable = [r for r in usable if r.get("kept") and float(r.get("weight", 0.0)) > 0.0]
            chosen = usable[:1]
            weights = [1.0] * len(chosen)
        else:
            for r in samples:
                w = r.get("weight", 0.0)
                if not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                    raise RmsdError(f"matched sample of item {item_id} has weight {w!r}: weights are numbers >= 0; "
                                    "re-run `rmsd match`")
            chosen = [r for r in samples if r.get("kept") and float(r.get("weight", 0.0)) > 0.0]
            chosen = chosen[:samples_per_item] if samples_per_item is not None else chosen
            weights = [float(r["weight"]) if weighting != "uniform" else 1.0 for r in chosen]
        if chosen:
            rows.append({"item_id": item_id, "texts": [r["text"] for r in chosen], "weights": weights})
            if weighting == "matched_conf" and samples_per_item != 1:  # c_i: every sample the pool gave the item
                rows[-1]["item_weight"] = item_confidence(weights, len(samples))
    return rows


class MultiSampleSFTTrainer(SFTTrainer):
    """`trl.SFTTrainer` whose loss is the per-item weighted multi-sample SFT loss on video inputs.

    args: a `trl.SFTConfig` built from the recipe (`rmsd.train.trl_args.sft_config`);
        `per_device_train_batch_size` counts *items*, each with all its selected samples, and
        `max_length` bounds every (prompt + response) sequence (only response ends are cut).
    items: every item the dataset rows name, by item_id (prompt, video path, ...).
    inputs: how prompts are built (frames, system message, shared prefix).
    Other arguments are SFTTrainer's; `data_collator` defaults to `MultiSampleCollator`.
    """

    def __init__(self, model: Any, args: Any, train_dataset: Any, processing_class: Any,
                 items: Mapping[str, Item], inputs: StudentInputs, data_collator: Any = None, **kwargs: Any):
        self.inputs = inputs
        collator = data_collator or MultiSampleCollator(
            processing_class, items, num_frames=inputs.num_frames, max_side=inputs.max_side,
            max_length=args.max_length, system=inputs.system,
        )
        super().__init__(model=model, args=args, data_collator=collator, train_dataset=train_dataset,
                         processing_class=processing_class, **kwargs)
        # The loss is a mean over items, not a sum over tokens: let Trainer divide it by the
        # accumulation steps rather than by a token count it would pass as num_items_in_batch.
        self.model_accepts_loss_kwargs = False
        if inputs.shared_prefix:
            shared_prefix.enable(self.model)

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """rmsd writes each stage folder's card itself (`rmsd.train.model_card`): TRL's names no base model."""

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        weights = inputs.pop("weights")
        item_index = inputs.pop("item_index")
        item_weights = inputs.pop("item_weights", None)  # weighting matched_conf only
        rows = item_vision({**inputs, "item_index": item_index})  # one clip per item, shared by its samples
        for key in VISION_KEYS:
            inputs.pop(key, None)
        outputs = self._forward(model, inputs, rows, item_index)
        # Fused head: log_probs[:, t] scores token t+1, zero where its label is -100.
        loss = multisample_sft_loss(outputs.log_probs, outputs.label_mask, weights, item_index, item_weights)
        self._log_batch(outputs, inputs, item_index)
        return (loss, outputs) if return_outputs else loss

    def _forward(self, model: Any, inputs: dict[str, Any], rows: list[dict[str, torch.Tensor]],
                 item_index: torch.Tensor) -> Any:
        """The fused head's per-token outputs: shared-prefix (one prompt pass per item) or one sequence per sample."""
        split = None
        if self.inputs.shared_prefix:
            first_target = (inputs["labels"] != -100).int().argmax(dim=1) - 1
            split = shared_prefix.plan_split(inputs["input_ids"], inputs["attention_mask"], first_target,
                                             item_index.tolist(), inputs["mm_token_type_ids"])
        if split is not None:
            out = shared_prefix.shared_forward(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                                               split, rows, inputs["mm_token_type_ids"])
            processed = sum(split.length) + sum(s - split.cut(m) for m, s in enumerate(split.stop))
            return SimpleNamespace(entropy=out.get("entropy"), is_top1=out.get("is_top1"), tokens_processed=processed,
                                   log_probs=out["log_probs"], label_mask=out["label_mask"])
        # The naive path: every sample a whole sequence; an item's clip still goes through the vision tower once.
        inputs = {**inputs, **vision_kwargs(self.accelerator.unwrap_model(model), rows, item_index.tolist())}
        out = model(**inputs, use_cache=False, fused_lm_head=True)
        out.tokens_processed = int(inputs["attention_mask"].sum())
        return out

    def _log_batch(self, outputs: Any, inputs: dict[str, Any], item_index: torch.Tensor) -> None:
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        n_tok = gather(outputs.label_mask.sum()).sum()
        if outputs.is_top1 is not None:
            correct = gather(outputs.is_top1.sum()).sum()
            self._metrics[mode]["mean_token_accuracy"].append((correct / n_tok.clamp(min=1)).item())
        if outputs.entropy is not None:
            entropy = gather(outputs.entropy.detach().sum()).sum()
            self._metrics[mode]["entropy"].append((entropy / n_tok.clamp(min=1)).item())
        items = int(item_index.max()) + 1 if item_index.numel() else 0
        self._metrics[mode]["samples_per_item"].append(item_index.numel() / max(items, 1))
        if mode == "train":
            self._total_train_tokens += int(gather(inputs["attention_mask"].sum()).sum())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            # what the model actually ran: with the shared prefix, each item's prompt once (equal-compute comparisons)
            processed = gather(torch.tensor(outputs.tokens_processed, device=item_index.device)).sum()
            self._tokens_processed = getattr(self, "_tokens_processed", 0) + int(processed)
            self._metrics[mode]["tokens_processed"] = [self._tokens_processed]
