"""Model inputs and generation for Qwen2.5-VL, Qwen3-VL and Qwen3.5 students and local teachers: the one input builder.

`load_student` opens a from_pretrained folder (the tiny offline student of any family or a
real Qwen2.5-VL / Qwen3-VL / Qwen3.5 checkpoint, same code path). `encode` turns prompts + video frames (+ optional
responses) into the tensors the model takes; `generate` decodes completions. Evaluation,
distillation and the `hf` teacher all go through here, so training sees exactly the prompt
that generation and evaluation see.

How it differs from calling the processor directly:
- frames come pre-sampled (`rmsd.media.video.Frames`) and their real rate and times reach
  the processor as `video_metadata`; left alone the processor assumes 24 fps, which shrinks
  Qwen2.5-VL's `second_per_grid_ts` and collapses the temporal position encoding (motion
  questions then learned much worse in an early synthvid run), and makes Qwen3-VL write wrong `<t seconds>`
  timestamps before each frame pair (its only sense of time);
- with `responses`, each assistant turn is tokenised on its own and appended to the
  prompt's ids: the training sequence is exactly the generation prompt followed by the
  response tokens + `<|im_end|>`, and `labels` are -100 everywhere else;
- `generate` returns completions only, grouped per prompt, and overrides the checkpoint's
  sampling defaults (Qwen ships top_k=1, which would make every "sample" identical).

    python -c "from rmsd.models.processing import load_student; print(load_student('runs/student-tiny')[0])"
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rmsd.errors import RmsdError

END_OF_TURN = "<|im_end|>"
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_student(path: str | Path, device: str = "cpu", dtype: str | torch.dtype | None = None,
                 max_pixels: int | None = None, merge_adapters: bool = True) -> tuple[Any, Any]:
    """(model, processor) from a from_pretrained folder or a LoRA adapter folder; model in eval mode on `device`.

    dtype: "float32" (default), "bfloat16", "float16", "auto" (as stored) or a torch dtype.
    max_pixels: per-frame pixel budget of the image and video processors (real checkpoints
    default to ~1M pixels per frame).
    merge_adapters: an adapter folder (`rmsd.models.lora`) is loaded on its base and merged
        into a plain model (True), or kept as a `PeftModel` whose adapter trains on (False).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rmsd.models import lora

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise RmsdError(f"student {folder} not found: build one with `rmsd build-student --out {folder}` "
                        "or point to a from_pretrained checkpoint folder")
    if lora.is_adapter_folder(folder):
        model = lora.load_adapted(folder, _dtype(dtype), trainable=not merge_adapters)
        model = model.merge_and_unload() if merge_adapters else model
    elif not (folder / "config.json").is_file():
        raise RmsdError(f"student {folder} has no config.json: point to a from_pretrained checkpoint folder")
    else:
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=_dtype(dtype))
    processor = AutoProcessor.from_pretrained(folder if (folder / "tokenizer_config.json").is_file()
                                              else lora.model_folder(folder))
    if max_pixels is not None:
        set_max_pixels(processor, max_pixels)
    return model.to(device).eval(), processor


def _dtype(dtype: str | torch.dtype | None) -> str | torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise RmsdError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)} or auto")
    return DTYPES[dtype]


def set_max_pixels(processor: Any, max_pixels: int) -> None:
    """Cap the pixels per frame of the image and video processors (frames above it are shrunk).

    Qwen3-VL's video processor reads `size` as a budget for the whole clip; its per-frame
    cap is `max_video_tokens` (merged tokens per frame) with `cap_pixels_per_frame`, so that
    is what is set there, and the clip budget is left as the checkpoint ships it.
    """
    from rmsd.models.family import video_budget_per_clip

    for name in ("image_processor", "video_processor"):
        sub = getattr(processor, name, None)
        if sub is None:
            continue
        floor = sub.size.get("shortest_edge") if hasattr(sub.size, "get") else sub.size.shortest_edge
        per_clip = name == "video_processor" and video_budget_per_clip(sub)
        if floor is not None and max_pixels < floor and not per_clip:
            raise RmsdError(f"max_pixels={max_pixels} is below the processor's minimum of {floor} pixels per frame")
        if per_clip:
            factor = sub.patch_size * sub.merge_size
            if max_pixels < factor * factor:
                raise RmsdError(f"max_pixels={max_pixels} is below one merged token ({factor}x{factor} pixels)")
            sub.max_video_tokens, sub.cap_pixels_per_frame = int(max_pixels) // (factor * factor), True
        else:
            sub.size = {"shortest_edge": floor, "longest_edge": int(max_pixels)}


# ----------------------------------------------------------------------------- inputs
def prompt_text(processor: Any, prompt: str, video: bool, image: bool, system: str | None = None) -> str:
    """The chat-formatted prompt up to and including the assistant header (the model's own template)."""
    content: list[dict[str, str]] = []
    if video:
        content.append({"type": "video"})
    if image:
        content.append({"type": "image"})
    content.append({"type": "text", "text": prompt})
    messages = ([{"role": "system", "content": [{"type": "text", "text": system}]}] if system else [])
    messages.append({"role": "user", "content": content})
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def video_metadata(frames: Any) -> dict[str, Any]:
    """The processor's metadata for pre-sampled frames: every frame kept, at the frames' own rate and times.

    `fps` is the rate of the frames themselves (N / duration): Qwen2.5-VL turns it into
    `second_per_grid_ts` = temporal_patch_size / fps. `frames_indices` place each frame on
    that rate's grid at its real time, `index = timestamp * fps` (fractional: ~i + 0.5 for
    frames at segment centres), so the times the processor derives (`index / fps`; Qwen3-VL
    writes the mean of each temporal patch's two as `<t seconds>`) are the times
    `rmsd.media.video.load_frames` measured. Frames without `timestamps` are taken as
    evenly spaced from 0 s.
    """
    array = frames.array
    fps = getattr(frames, "fps", None)
    if fps is None or not fps > 0:
        raise RmsdError(f"frames of {getattr(frames, 'path', 'a video')} have no positive fps ({fps}): "
                        "load them with rmsd.media.video.load_frames")
    n, height, width = array.shape[:3]
    times = getattr(frames, "timestamps", None)
    if times is not None and len(times) != n:
        raise ValueError(f"frames of {getattr(frames, 'path', 'a video')}: {len(times)} timestamps for {n} frames")
    indices = [float(t) * float(fps) for t in times] if times is not None else list(range(n))
    duration = getattr(frames, "duration", None) or n / float(fps)
    return {"total_num_frames": n, "fps": float(fps), "frames_indices": indices,
            "width": width, "height": height, "duration": float(duration)}


def encode(
    processor: Any,
    prompts: list[str],
    frames: list[Any] | None,
    responses: list[str] | None = None,
    system: str | None = None,
    images: list[Any] | None = None,
    padding_side: str = "right",
) -> Any:
    """A padded batch: input_ids, attention_mask, mm_token_type_ids (+ the processor's vision tensors).

    frames: one `Frames` (uint8 `array` [N, H, W, 3] and `fps`) or None per prompt.
    images: one image array (or PIL image) or None per prompt.
    responses: one assistant reply per prompt; adds `labels`, -100 except on the reply and
        its closing `<|im_end|>`.
    padding_side: "right" for training, "left" for generation.
    Vision tensors: pixel_values_videos, video_grid_thw (+ second_per_grid_ts for Qwen2.5-VL)
    for videos, pixel_values, image_grid_thw for images, rows in prompt order
    (`rmsd.models.family.vision_keys` names them per family).
    """
    from transformers import BatchFeature

    n = len(prompts)
    frames = list(frames) if frames is not None else [None] * n
    images = list(images) if images is not None else [None] * n
    if len(frames) != n or len(images) != n or (responses is not None and len(responses) != n):
        raise ValueError(f"encode: {n} prompts need as many frames, images and responses; got "
                         f"{len(frames)}, {len(images)}, {None if responses is None else len(responses)}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    texts = [prompt_text(processor, p, f is not None, im is not None, system)
             for p, f, im in zip(prompts, frames, images, strict=True)]
    media: dict[str, Any] = {}
    clips = [f for f in frames if f is not None]
    if clips:
        media["videos"] = [_uint8(f.array) for f in clips]
        media["video_metadata"] = [video_metadata(f) for f in clips]
        # Real Qwen3-VL checkpoints ship do_sample_frames=True (2 fps): the frames are already the
        # ones rmsd sampled and timed, so the processor must keep every one of them.
        media["do_sample_frames"] = False
    if any(im is not None for im in images):
        media["images"] = [im for im in images if im is not None]
    batch = processor(text=texts, padding=True, padding_side="right", return_tensors="pt", **media)
    rows = _unpad(batch)
    labels = None
    if responses is not None:
        rows, labels = _append_responses(processor, rows, responses)
    tokenizer = getattr(processor, "tokenizer", processor)
    data = _pad(rows, labels, tokenizer.pad_token_id, padding_side)
    data.update({k: v for k, v in batch.items() if k not in TOKEN_KEYS})
    return BatchFeature(data=data)


def encode_samples(
    processor: Any,
    prompts: list[str],
    frames: list[Any] | None,
    responses: list[list[str]],
    system: str | None = None,
    images: list[Any] | None = None,
) -> Any:
    """`encode` for items that each bring several responses: each prompt and its media go
    through the processor ONCE, and every (item, response) pair becomes a row.

    Rows are in item order, then response order; `item_index` [rows] names each row's item;
    the vision tensors hold one clip or image per item (in item order), not one per row, so
    a model forward over the rows shares them (`rmsd.train.collate.item_vision`).
    """
    from transformers import BatchFeature

    if len(responses) != len(prompts):
        raise ValueError(f"encode_samples: {len(prompts)} prompts need as many response lists, got {len(responses)}")
    batch = encode(processor, prompts, frames, system=system, images=images)
    rows = _unpad(batch)
    item_index = [i for i, texts in enumerate(responses) for _ in texts]
    expanded, labels = _append_responses(processor, [rows[i] for i in item_index],
                                         [t for texts in responses for t in texts])
    tokenizer = getattr(processor, "tokenizer", processor)
    data = _pad(expanded, labels, tokenizer.pad_token_id, "right")
    data.update({k: v for k, v in batch.items() if k not in TOKEN_KEYS})
    data["item_index"] = torch.tensor(item_index, dtype=torch.long)
    return BatchFeature(data=data)


@dataclass(frozen=True)
class EncodedPrompt:
    """One prompt encoded on its own (`encode_prompt`): its row of any `encode` batch, unpadded."""

    ids: list[int]  # token ids up to and including the assistant header
    types: list[int]  # mm_token_type_ids of those tokens
    vision: dict[str, torch.Tensor]  # its clip's or image's tensors, one row each ({} for a text prompt)


def encode_prompt(processor: Any, prompt: str, frames: Any = None, system: str | None = None,
                  image: Any = None) -> EncodedPrompt:
    """`encode` for one prompt, kept unpadded so a trainer can encode each item once and reuse it every step.

    The processor treats every prompt and clip of a batch independently (the text is padded
    afterwards and `_unpad` strips that; pixels are rescaled and normalised element by element),
    so this row is exactly the one `encode` gives the prompt inside any batch.
    """
    batch = encode(processor, [prompt], [frames], system=system, images=[image])
    row = _unpad(batch)[0]
    return EncodedPrompt(row["ids"], row["types"], {k: v for k, v in batch.items() if k not in TOKEN_KEYS})


def assemble_samples(processor: Any, prompts: list[EncodedPrompt], responses: list[list[str]],
                     reply_ids: dict[str, list[int]] | None = None) -> Any:
    """`encode_samples`' batch from prompts encoded beforehand: the same tensors, without the processor.

    reply_ids: a memo of response text -> token ids, filled here (a stage tokenises each
    teacher response once, not once per step).
    """
    from transformers import BatchFeature

    if len(responses) != len(prompts):
        raise ValueError(f"assemble_samples: {len(prompts)} prompts need as many response lists, got {len(responses)}")
    item_index = [i for i, texts in enumerate(responses) for _ in texts]
    rows = [{"ids": prompts[i].ids, "types": prompts[i].types} for i in item_index]
    expanded, labels = _append_responses(processor, rows, [t for texts in responses for t in texts], reply_ids)
    tokenizer = getattr(processor, "tokenizer", processor)
    data = _pad(expanded, labels, tokenizer.pad_token_id, "right")
    keys = dict.fromkeys(k for p in prompts for k in p.vision)  # in first-seen order, as the processor's batch
    data.update({k: torch.cat([p.vision[k] for p in prompts if k in p.vision]) for k in keys})
    data["item_index"] = torch.tensor(item_index, dtype=torch.long)
    return BatchFeature(data=data)


def _uint8(array: Any) -> Any:
    import numpy as np

    array = np.asarray(array)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3], got shape {array.shape}")
    if array.dtype != np.uint8:
        return np.clip(array, 0, 255).astype(np.uint8)
    # Cached frames are read-only; torch.from_numpy warns on those, so hand it a private copy.
    return array if array.flags.writeable else array.copy()


def _unpad(batch: Any) -> list[dict[str, list[int]]]:
    """Per row, the unpadded token ids and mm token types of a right-padded processor batch."""
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    types = batch.get("mm_token_type_ids")
    rows = []
    for i, length in enumerate(lengths):
        ids = batch["input_ids"][i, :length].tolist()
        rows.append({"ids": ids, "types": types[i, :length].tolist() if types is not None else [0] * length})
    return rows


def _append_responses(processor: Any, rows: list[dict[str, list[int]]], responses: list[str],
                      memo: dict[str, list[int]] | None = None) -> tuple[list[dict[str, list[int]]], list[list[int]]]:
    """Rows with each response's ids + <|im_end|> appended, and their labels; `memo` keeps ids per response text."""
    tokenizer = getattr(processor, "tokenizer", processor)
    memo = {} if memo is None else memo
    new = list(dict.fromkeys(r for r in responses if r not in memo))
    if new:  # a text's ids do not depend on the other texts of the call (no padding, no special tokens)
        ids = tokenizer([r + end_of_turn(tokenizer) for r in new], add_special_tokens=False)["input_ids"]
        memo.update(zip(new, ids, strict=True))
    reply_ids = [memo[r] for r in responses]
    out, labels = [], []
    for row, reply in zip(rows, reply_ids, strict=True):
        out.append({"ids": row["ids"] + reply, "types": row["types"] + [0] * len(reply)})
        labels.append([-100] * len(row["ids"]) + reply)
    return out, labels


def end_of_turn(tokenizer: Any) -> str:
    """The token closing an assistant turn: Qwen's <|im_end|>, else the tokenizer's eos."""
    token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    return END_OF_TURN if token_id is not None and token_id != tokenizer.unk_token_id else tokenizer.eos_token


def _pad(rows: list[dict[str, list[int]]], labels: list[list[int]] | None, pad_id: int,
         side: str) -> dict[str, torch.Tensor]:
    width = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long) if labels is not None else None
    for i, row in enumerate(rows):
        length = len(row["ids"])
        span = slice(width - length, width) if side == "left" else slice(0, length)
        ids[i, span] = torch.tensor(row["ids"], dtype=torch.long)
        types[i, span] = torch.tensor(row["types"], dtype=torch.long)
        mask[i, span] = 1
        if lab is not None:
            lab[i, span] = torch.tensor(labels[i], dtype=torch.long)
    data = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": types}
    if lab is not None:
        data["labels"] = lab
    return data


def to_model(batch: Any, model: Any) -> dict[str, Any]:
    """The batch on the model's device, floating tensors (pixels) in the model's dtype."""
    param = next(model.parameters())
    return {k: (v.to(param.device, param.dtype) if v.is_floating_point() and k != "second_per_grid_ts"
                else v.to(param.device)) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


# ----------------------------------------------------------------------------- generation
def generate(
    model: Any,
    processor: Any,
    prompts: list[str],
    frames: list[Any] | None,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float | None = 1.0,
    num_return_sequences: int = 1,
    system: str | None = None,
    images: list[Any] | None = None,
    top_p: float = 1.0,
) -> list[list[str]]:
    """`num_return_sequences` decoded completions per prompt (special tokens stripped), in prompt order.

    Greedy decoding (`do_sample=False`) is deterministic, so its n completions are one
    completion repeated. Sampling uses `temperature` and `top_p` only: the checkpoint's own
    top_k / top_p defaults are switched off.
    """
    if num_return_sequences < 1 or max_new_tokens < 1:
        raise ValueError("num_return_sequences and max_new_tokens must be >= 1")
    if do_sample and (temperature is None or temperature <= 0):
        raise ValueError(f"sampling needs a temperature > 0, got {temperature}")
    tokenizer = getattr(processor, "tokenizer", processor)
    batch = to_model(encode(processor, prompts, frames, system=system, images=images, padding_side="left"), model)
    n_model = num_return_sequences if do_sample else 1
    config = _generation_config(model, tokenizer, max_new_tokens, do_sample, temperature, top_p, n_model)
    with torch.no_grad():
        out = model.generate(**batch, generation_config=config)
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    if not do_sample:
        return [[text] * num_return_sequences for text in texts]
    return [texts[i : i + n_model] for i in range(0, len(texts), n_model)]


def _generation_config(model: Any, tokenizer: Any, max_new_tokens: int, do_sample: bool,
                       temperature: float | None, top_p: float, n: int) -> Any:
    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens, config.num_return_sequences, config.do_sample = max_new_tokens, n, do_sample
    config.max_length = None
    if do_sample:
        config.temperature, config.top_p, config.top_k = float(temperature), float(top_p), 0
    else:  # greedy: sampling knobs are unused; unset them so transformers does not warn
        config.temperature, config.top_p, config.top_k = None, None, None
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer))
    return config
