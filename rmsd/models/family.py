"""What differs between the student families rmsd trains (Qwen2.5-VL, Qwen3-VL, Qwen3.5), as small functions.

Every stage builds its inputs with `rmsd.models.processing.encode` and runs the model's own
forward, so most code never needs to know the family. These are the places that do, when
code takes a batch apart or builds one by hand (the shared-prefix forward, the VISD
privileged prompt, a vision encoding shared by an item's K samples or G rollouts):

- **vision keys**: Qwen2.5-VL's video batch carries `second_per_grid_ts` (seconds per
  temporal patch, its temporal rope step); Qwen3-VL's does not (`vision_keys`).
- **encoder outputs**: `get_video_features` returns per-clip `pooler_output`; Qwen3-VL's
  also carries per-clip `deepstack_features` (one list per DeepStack layer) that must follow
  the same rows (`encoder_fields`, `select_encoder_outputs`).
- **placeholders**: Qwen2.5-VL writes one `<|vision_start|>pads<|vision_end|>` per clip;
  Qwen3-VL writes `<t seconds><|vision_start|>pads<|vision_end|>` per temporal patch inside
  the template's outer pair, so the timestamp text is part of the clip's span
  (`vision_span`, `copy_vision_span`, `frame_times`).
- **rope positions**: all compute 3-D positions with `model.model.get_rope_index` from
  `mm_token_type_ids` and the grids; Qwen2.5-VL also takes `second_per_grid_ts`. A
  continuation of a prompt continues at `max(position) + 1` in all (`rope_index`).
- **Qwen3.5** is Qwen3-VL on the vision and prompt side: its checkpoints ship Qwen3-VL's
  processor (the same `<t seconds><|vision_start|>pads<|vision_end|>` per temporal patch, the
  template's video placeholder unchanged) and its `get_rope_index` is Qwen3-VL's line for line
  (timestamps split the video grid into one-step grids; a frame's tokens take the text
  position reached, plus row and column), so `timestamps_in_text` and `rope_keys` are Qwen3-VL's.
  What differs: no DeepStack (encoder outputs are `pooler_output` alone) and the hybrid text
  stack (`linear_attention` layers: `hybrid`), whose recurrent states the shared-prefix
  forward hands over (`rmsd.models.shared_prefix`). The text model takes 4-row position ids
  (text, t, h, w) as well as 3-row ones; rmsd passes 3 rows, as for Qwen3-VL.

    python -c "from rmsd.models.family import family_of; print(family_of('runs/student-tiny').name)"
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rmsd.errors import RmsdError

TIMESTAMP = re.compile(r"<(\d+(?:\.\d+)?) seconds>")


@dataclass(frozen=True)
class Family:
    """One student architecture: its `model_type` and the batch/encoder fields it uses."""

    name: str
    vision_keys: tuple[str, ...]  # encode()'s per-clip / per-image tensors, rows in prompt order
    rope_keys: tuple[str, ...]  # batch tensors get_rope_index reads besides ids, types, grids and mask
    encoder_fields: tuple[str, ...]  # per-clip fields of get_video_features / get_image_features
    timestamps_in_text: bool  # the processor writes `<t seconds>` before each temporal patch
    hybrid: bool = False  # linear-attention (recurrent) layers between the full-attention ones


FAMILIES = {
    "qwen2_5_vl": Family(
        name="qwen2_5_vl",
        vision_keys=("pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "pixel_values", "image_grid_thw"),
        rope_keys=("second_per_grid_ts",), encoder_fields=("pooler_output",), timestamps_in_text=False),
    "qwen3_vl": Family(
        name="qwen3_vl",
        vision_keys=("pixel_values_videos", "video_grid_thw", "pixel_values", "image_grid_thw"),
        rope_keys=(), encoder_fields=("pooler_output", "deepstack_features"), timestamps_in_text=True),
    "qwen3_5": Family(
        name="qwen3_5",
        vision_keys=("pixel_values_videos", "video_grid_thw", "pixel_values", "image_grid_thw"),
        rope_keys=(), encoder_fields=("pooler_output",), timestamps_in_text=True, hybrid=True),
}


def family_of(source: Any) -> Family:
    """The family of a model, a config, a config dict, or a from_pretrained folder (its config.json)."""
    if isinstance(source, (str, Path)):
        file = Path(source).expanduser() / "config.json"
        if not file.is_file():
            raise RmsdError(f"{Path(source)}: no config.json there; point to a from_pretrained folder")
        model_type = json.loads(file.read_text()).get("model_type")
    elif isinstance(source, dict):
        model_type = source.get("model_type")
    else:
        model_type = getattr(getattr(source, "config", source), "model_type", None)
    if model_type not in FAMILIES:
        raise RmsdError(f"student architecture {model_type!r} is not supported: rmsd trains "
                        f"{', '.join(FAMILIES)} students")
    return FAMILIES[model_type]


def vision_keys(source: Any) -> tuple[str, ...]:
    """The vision tensors a batch of this family carries (those absent for a text-only batch are simply missing)."""
    return family_of(source).vision_keys


# ----------------------------------------------------------------------------- token ids
def placeholder_ids(config: Any) -> dict[str, int]:
    """{"image": id, "video": id}: the tokens the vision features replace (mm_token_type_ids 1 and 2)."""
    config = getattr(config, "config", config)
    return {"image": config.image_token_id, "video": config.video_token_id}


def token_types(input_ids: torch.Tensor, config: Any) -> torch.Tensor:
    """mm_token_type_ids for any ids: 1 on image placeholders, 2 on video placeholders, 0 elsewhere."""
    ids = placeholder_ids(config)
    types = torch.zeros_like(input_ids)
    types[input_ids == ids["image"]] = 1
    types[input_ids == ids["video"]] = 2
    return types


def vision_span(ids: list[int], config: Any) -> tuple[int, int] | None:
    """[start, end) of a prompt's vision block: the first `<|vision_start|>` to the last `<|vision_end|>`.

    For Qwen3-VL the block holds every temporal patch's timestamp text and frame tokens; for
    Qwen2.5-VL it is the start token, the placeholders and the end token. None without one.
    """
    config = getattr(config, "config", config)
    start, end = config.vision_start_token_id, config.vision_end_token_id
    if start not in ids:
        return None
    last = len(ids) - 1 - ids[::-1].index(end)
    return ids.index(start), last + 1


def copy_vision_span(ids: list[int], source: list[int], config: Any) -> list[int]:
    """`ids` with its vision block replaced by `source`'s (a prompt whose placeholders the processor expanded).

    A prompt tokenised from the chat template alone has one unexpanded placeholder; copying the
    whole block, not only the placeholder runs, keeps Qwen3-VL's timestamps and per-frame
    start/end tokens, so the copy's rope positions and features match the source's.
    """
    span, src = vision_span(ids, config), vision_span(source, config)
    if span is None or src is None:
        if span is None and src is None:
            return list(ids)
        raise ValueError("copy_vision_span: only one of the two prompts has a vision block")
    return ids[: span[0]] + source[src[0]: src[1]] + ids[span[1]:]


def frame_times(text: str) -> list[float]:
    """The `<t seconds>` timestamps Qwen3-VL's processor (Qwen3.5's too) wrote into a decoded prompt, in order."""
    return [float(t) for t in TIMESTAMP.findall(text)]


# ----------------------------------------------------------------------------- positions
def rope_index(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(position_ids [3, B, L], rope_deltas [B, 1]) of a batch, as the model's forward computes them.

    A continuation of these sequences (a response after a shared prompt) starts at position
    `max(position_ids[:, b]) + 1`; rope_deltas is that start minus the sequence length.
    """
    inner = getattr(model, "model", model)
    family = family_of(model)
    extra = {k: batch[k] for k in family.rope_keys if k in batch}
    return inner.get_rope_index(batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                                image_grid_thw=batch.get("image_grid_thw"), video_grid_thw=batch.get("video_grid_thw"),
                                attention_mask=batch.get("attention_mask"), **extra)


# ----------------------------------------------------------------------------- encoder outputs
def select_encoder_outputs(features: Any, order: list[int], family: Family) -> Any:
    """`features` (get_video_features / get_image_features of D distinct clips) re-indexed to `order`.

    order[n] names the distinct clip of row n: rows sharing a clip share one encoding (its
    gradients flow back through it once per row, as with separate copies). Every per-clip
    field of the family moves together: Qwen3-VL's DeepStack features must follow the rows
    of `pooler_output`, or the DeepStack layers would add the wrong clip's (or too few)
    features at the visual positions.
    """
    for name in family.encoder_fields:
        value = getattr(features, name)
        if name == "deepstack_features":  # one per-clip list per DeepStack layer
            setattr(features, name, [[layer[i] for i in order] for layer in value])
        else:
            setattr(features, name, [value[i] for i in order])
    return features


def video_budget_per_clip(video_processor: Any) -> bool:
    """True for Qwen3-VL's video processor (Qwen3.5 ships it too), whose `size` bounds a whole clip's pixels."""
    return type(video_processor).__name__.startswith("Qwen3VL")
