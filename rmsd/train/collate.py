"""Batches for multi-sample SFT: one Qwen-style video sequence per (item, kept teacher sample).

A dataset row is one item with its selected teacher samples and their weights
(`{"item_id", "texts", "weights"}`, built by `rmsd.train.sft_trainer.sft_rows`). The
collator expands each row into one sequence per sample: the item's prompt and frames
(processed once per item and stage, `rmsd.train.stage_inputs.PromptCache`, the real fps
handed to the processor) followed by the teacher's response, every token but the
assistant's masked out of the labels. Alongside the model inputs it returns `weights`
(the sample's match weight) and `item_index` (which row of the batch the sequence came
from), so the loss can normalise the weights per item, and with `weighting: matched_conf`
`item_weights` (its item's pool confidence).

It differs from TRL's `DataCollatorForVisionLanguageModeling`, which is image-only and
one sample per row: video tensors (`pixel_values_videos`, `video_grid_thw`,
`second_per_grid_ts`, `mm_token_type_ids`) are built here, and an item fans out into K
sequences. Inputs come from `rmsd.models.processing.encode`, the one input builder of the
project, so training sees exactly the prompt format that generation and evaluation use.

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.media.video import load_media
from rmsd.models.family import family_of, select_encoder_outputs
from rmsd.train.stage_inputs import PromptCache

# Keys of a batch that carry one value per sequence (dim 0) and one per token (dim 1).
TOKEN_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids")
# Per-video (or per-image) tensors of an encoded prompt, rows in prompt order.
VISION_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "pixel_values", "image_grid_thw")
# (pixels, grid, encoder method, mm_encoder_outputs key) per modality, as Qwen2.5-VL names them.
MODALITIES = (("pixel_values_videos", "video_grid_thw", "get_video_features", "video"),
              ("pixel_values", "image_grid_thw", "get_image_features", "image"))


def truncate(batch: dict[str, torch.Tensor], max_length: int | None, item_ids: list[str]) -> dict[str, torch.Tensor]:
    """Cut right-padded sequences to `max_length` tokens, never through the prompt's vision tokens.

    Only the end of a response may be cut: a cut video placeholder would no longer match
    its features, and a sequence left with no assistant token would train on nothing.
    """
    if max_length is None or batch["input_ids"].size(1) <= max_length:
        return batch
    tail_vision = batch["mm_token_type_ids"][:, max_length:].ne(0).any(dim=1) if "mm_token_type_ids" in batch else None
    out = {k: (v[:, :max_length] if k in TOKEN_KEYS else v) for k, v in batch.items()}
    no_target = out["labels"][:, 1:].eq(-100).all(dim=1) if "labels" in out else torch.zeros(0, dtype=torch.bool)
    for i in range(out["input_ids"].size(0)):
        if (tail_vision is not None and tail_vision[i]) or (no_target.numel() and no_target[i]):
            needed = int(batch["attention_mask"][i].sum())
            raise RmsdError(
                f"item {item_ids[i]}: its prompt does not fit in max_length={max_length} tokens "
                f"(the sequence needs {needed}): raise distill.sft.max_length or lower dataset.num_frames/max_side"
            )
    return out


@dataclass
class MultiSampleCollator:
    """Collate item rows into (item, sample) sequences with `weights` and `item_index`.

    processor: the student's processor (tokenizer + video/image processor + chat template).
    items: every item the rows may name, by item_id.
    num_frames / max_side: frames sampled per video and their size bound (dataset config).
    max_length: tokens per sequence, prompt included; longer responses are cut at the end.
    system: optional system message, as in sampling and evaluation.
    cache: encode each item's prompt and clip once and reuse it in every later batch
        (`rmsd.train.stage_inputs.PromptCache`: the same tensors); False runs the processor
        on every batch, as before the cache (kept to check and time the cache against).
    """

    processor: Any
    items: Mapping[str, Item]
    num_frames: int = 8
    max_side: int | None = None
    max_length: int | None = None
    system: str | None = None
    cache: bool = True

    def __post_init__(self) -> None:
        self.prompts = PromptCache(self.processor, self.items, self.num_frames, self.max_side, self.system)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        items = [self.prompts.item(row["item_id"]) for row in rows]
        for item, row in zip(items, rows, strict=True):
            if len(row["texts"]) != len(row["weights"]) or not row["texts"]:
                raise ValueError(f"row of item {item.item_id}: texts and weights must be non-empty and equally long")
        texts = [list(row["texts"]) for row in rows]
        if self.cache:
            batch = dict(self.prompts.samples([it.item_id for it in items], texts))
        else:
            batch = dict(self._encode(items, texts))
        batch = truncate(batch, self.max_length, [items[i].item_id for i in batch["item_index"].tolist()])
        batch["weights"] = torch.tensor([float(w) for row in rows for w in row["weights"]], dtype=torch.float32)
        if "item_weight" in rows[0]:  # weighting matched_conf: the item's c_i on each of its sequences
            batch["item_weights"] = torch.tensor([float(row["item_weight"]) for row in rows for _ in row["weights"]],
                                                 dtype=torch.float32)
        return batch

    def _encode(self, items: list[Item], texts: list[list[str]]) -> Any:
        """The batch through the processor, every item's frames and prompt processed again."""
        from rmsd.models.processing import encode_samples

        media = [load_media(item, self.num_frames, self.max_side) for item in items]  # once per item
        frames, images = [m[0] for m in media], [m[1] for m in media]
        extra = {"images": images} if any(im is not None for im in images) else {}
        return encode_samples(self.processor, [it.prompt for it in items], frames, texts, system=self.system,
                              **extra)


# ----------------------------------------------------------------------------- vision tensors
def merge_vision(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate per-row vision tensors in row order (the order the model meets the placeholders)."""
    merged: dict[str, list[torch.Tensor]] = {}
    for row in rows:
        for key, value in row.items():
            merged.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in merged.items()}


def split_vision(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Per-sequence vision dicts of a batch whose sequences hold at most one clip or image each."""
    rows: list[dict[str, torch.Tensor]] = [{} for _ in range(batch["input_ids"].size(0))]
    for pixels, grid, _, kind in MODALITIES:
        if pixels not in batch:
            continue
        owners = batch["mm_token_type_ids"].eq(2 if kind == "video" else 1).any(dim=1).nonzero().flatten().tolist()
        chunks = batch[pixels].split(batch[grid].prod(-1).tolist())
        if len(owners) != len(chunks):
            raise ValueError(f"{len(chunks)} {kind}s for {len(owners)} sequences: one per sequence at most")
        for n, (row, chunk) in enumerate(zip(owners, chunks, strict=True)):
            rows[row][pixels], rows[row][grid] = chunk, batch[grid][n: n + 1]
            if kind == "video" and "second_per_grid_ts" in batch:
                rows[row]["second_per_grid_ts"] = batch["second_per_grid_ts"][n: n + 1]
    return rows


def item_vision(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Per row, the vision dict of its item, for a batch whose vision tensors hold one clip or image per
    item (`rmsd.models.processing.encode_samples`): rows of one item share one dict object."""
    first_row: dict[int, int] = {}
    for row, item in enumerate(batch["item_index"].tolist()):
        first_row.setdefault(item, row)
    heads = list(first_row.values())  # one row per item, in item order (the order of the vision tensors)
    owned = split_vision({**{k: batch[k] for k in VISION_KEYS if k in batch},
                          "input_ids": batch["input_ids"][heads], "mm_token_type_ids": batch["mm_token_type_ids"][heads]})
    by_item = dict(zip(first_row, owned, strict=True))
    return [by_item[item] for item in batch["item_index"].tolist()]


def vision_kwargs(model: Any, rows: list[dict[str, torch.Tensor]], keys: list[Hashable]) -> dict[str, Any]:
    """Model kwargs for per-row vision tensors, running the vision tower once per distinct clip.

    Rows with equal `keys` hold the same clip (an item's G rollouts, or its K teacher
    samples). Their clip is encoded once and its features are handed to the model as
    `mm_encoder_outputs`, shared by every row; gradients from all of them flow back
    through the one encoding, exactly as with K separate copies. A model without that
    interface gets the plain concatenated pixels.
    """
    merged = merge_vision(rows)
    firsts: dict[Hashable, dict[str, torch.Tensor]] = {}
    for key, row in zip(keys, rows, strict=True):
        if row:
            firsts.setdefault(key, row)
    if len(firsts) == sum(1 for r in rows if r) or not all(hasattr(model, m[2]) for m in MODALITIES):
        return merged  # nothing shared (or no encoder interface): plain pixels
    out = {k: v for k, v in merged.items() if k not in ("pixel_values_videos", "pixel_values")}
    encoded: dict[str, Any] = {}
    for pixels, grid, method, kind in MODALITIES:
        distinct = [(key, row) for key, row in firsts.items() if pixels in row]
        if not distinct:
            continue
        if any(row[grid].size(0) != 1 for _, row in distinct):
            raise ValueError(f"vision_kwargs takes one {kind} per row")
        features = getattr(model, method)(torch.cat([r[pixels] for _, r in distinct]),
                                          torch.cat([r[grid] for _, r in distinct]), return_dict=True)
        position = {key: n for n, (key, _) in enumerate(distinct)}
        order = [position[key] for key, row in zip(keys, rows, strict=True) if pixels in row]
        # every per-clip field follows the rows (Qwen3-VL's DeepStack features too, not only pooler_output)
        encoded[kind] = select_encoder_outputs(features, order, family_of(model))
    out["mm_encoder_outputs"] = encoded
    return out
