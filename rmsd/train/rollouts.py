"""Video rollouts for GRPO: prompts encoded once per item, and log-prob forwards that carry the clip.

TRL 1.16's GRPOTrainer passes a video prompt to generation but builds its log-prob
forwards from image tensors only, so the video is silently dropped from the loss. The
adversarial trainer (`rmsd.train.adversarial_trainer`) therefore encodes each item's
prompt and frames itself, once per stage for all its rollouts (`encode_prompts`), carries one vision
dict per rollout row (rows of one item share the same dict object), and scores
(prompt + completion) rows with these functions: an item's G rows share one prompt pass
(`rmsd.models.shared_prefix`) or, on the naive path, one vision-tower pass.

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rmsd.models import shared_prefix
from rmsd.train.collate import vision_kwargs
from rmsd.train.stage_inputs import PromptCache

PromptRow = tuple[list[int], dict[str, torch.Tensor]]  # prompt token ids, vision tensors


def encode_prompts(prompts: PromptCache, item_ids: list[str], device: Any) -> list[PromptRow]:
    """(prompt token ids, vision tensors on `device`) per row; each item is encoded once per stage (`prompts`
    keeps it), and the rows of one item share one vision dict object."""
    moved: dict[str, PromptRow] = {}
    for item_id in dict.fromkeys(item_ids):
        enc = prompts.prompt(item_id)
        moved[item_id] = (enc.ids, {k: v.to(device) for k, v in enc.vision.items()})
    return [moved[i] for i in item_ids]


def token_types_of(config: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """mm_token_type_ids of any input ids for a model config (`rmsd.models.family.token_types`)."""
    from functools import partial

    from rmsd.models.family import token_types

    return partial(token_types, config=config)


def scored_forward(model: Any, unwrapped: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                   rows: list[dict[str, torch.Tensor]], types: torch.Tensor, shared: bool,
                   aux_loss: bool = False) -> dict[str, Any]:
    """Fused-head outputs (`log_probs`, `entropy`, `aux_loss`) of (prompt + completion) rows.

    rows: one vision dict per row, the same object for the rows of one item. With `shared`
    (and a model `shared_prefix.enable`d), an item's rows share one prompt pass; otherwise
    each row is a whole sequence and only the clip is encoded once. MoE router losses
    (`aux_loss`) take the naive path: they are defined over whole sequences.
    """
    split = None
    if shared and not aux_loss and shared_prefix.enabled(model):
        first_target = (labels != -100).int().argmax(dim=1) - 1
        split = shared_prefix.plan_split(ids, mask, first_target, [id(r) for r in rows], types)
    if split is not None:
        return shared_prefix.shared_forward(model, ids, mask, labels, split, rows, types)
    model_inputs = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": types,
                    **vision_kwargs(unwrapped, rows, [id(r) for r in rows])}
    if aux_loss:
        model_inputs["output_router_logits"] = True
    out = model(**model_inputs, labels=labels, fused_lm_head=True)
    return {"log_probs": out.log_probs, "entropy": out.entropy, "aux_loss": out.aux_loss}
