"""The Qwen3-VL variant of the offline student: config and processor (`build_student(..., family="qwen3_vl")`).

Same sizes per preset, tokenizer, chat template and pixel bounds as the Qwen2.5-VL student
(`rmsd.models.offline.tiny`), so the two families differ only where the architectures do:
- text: an explicit `head_dim`, QK-norm (built into Qwen3-VL's attention), interleaved
  M-RoPE (`mrope_interleaved`), no window attention anywhere;
- vision: learned position embeddings (`num_position_embeddings`, a square grid that is
  interpolated to each frame's patch grid) and DeepStack: the outputs of the vision blocks in
  `deepstack_visual_indexes` go through their own mergers and are added to the hidden states
  of the first text layers at the visual positions;
- time: no `second_per_grid_ts` and no temporal rope step; the processor writes each
  temporal patch's time as text (`<0.5 seconds>`) before its frame tokens, so the frames'
  real times must reach it (`rmsd.models.processing.video_metadata`).

How it differs from Qwen3-VL's own processor defaults: frames are not resampled
(`do_sample_frames=False`, rmsd.media.video already sampled them by time), and the video
pixel budget is per frame (`cap_pixels_per_frame` with `max_video_tokens`), as
`student.max_pixels` means for Qwen2.5-VL, instead of Qwen3-VL's per-clip total alone.

    rmsd build-student --out runs/student-q3 --family qwen3_vl
"""

from __future__ import annotations

import math

from rmsd.models.offline.vocab import (
    CHAT_TEMPLATE,
    IM_END,
    IMAGE_PAD,
    MAX_PIXELS,
    MERGE,
    MIN_PIXELS,
    PAD,
    PATCH,
    SPECIAL_TOKENS,
    TEMPORAL_PATCH,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    Preset,
    train_tokenizer,
)

# Learned vision position embeddings: one per patch of the largest frame the processor keeps
# (112 px / 14 = 8 patches a side); larger grids are interpolated, as in Qwen3-VL.
NUM_POSITION_EMBEDDINGS = (math.isqrt(MAX_PIXELS) // PATCH) ** 2
# The per-clip pixel ceiling of the video processor: generous, so that the per-frame cap
# (MAX_PIXELS) is what binds for any clip of up to this many frames.
MAX_FRAMES_PER_CLIP = 768


def deepstack_indexes(depth: int) -> list[int]:
    """Vision blocks whose outputs feed DeepStack: at 1/4, 1/2 and 3/4 depth (Qwen3-VL-4B: 24 -> [5, 11, 17])."""
    return sorted({max(0, depth * k // 4 - 1) for k in (1, 2, 3)})


def qwen3_parts(preset: Preset, tokenizer, **rope: float) -> tuple[dict, dict, dict]:
    """What the Qwen3-VL and Qwen3.5 configs of a preset share: (text config, vision config, the top-level
    token ids), token ids taken from `tokenizer`; `rope`: rope parameters a family adds (after the theta)."""
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    p = preset
    head_dim = p.text_hidden // p.text_heads
    if p.text_hidden % p.text_heads or head_dim != 2 * sum(p.mrope_section):
        raise ValueError(f"preset: head_dim {head_dim} must equal 2 * sum(mrope_section) {p.mrope_section}")
    text = {
        "vocab_size": len(tokenizer), "hidden_size": p.text_hidden, "intermediate_size": p.text_intermediate,
        "num_hidden_layers": p.text_layers, "num_attention_heads": p.text_heads, "head_dim": head_dim,
        "num_key_value_heads": p.text_kv_heads, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": p.rope_theta, **rope,
                            "mrope_section": list(p.mrope_section), "mrope_interleaved": True},
        "initializer_range": p.initializer_range, "tie_word_embeddings": True,
        "bos_token_id": None, "eos_token_id": ids[IM_END], "pad_token_id": ids[PAD],
    }
    vision = {
        "depth": p.vision_depth, "hidden_size": p.vision_hidden, "num_heads": p.vision_heads,
        "intermediate_size": p.vision_intermediate, "out_hidden_size": p.text_hidden, "patch_size": PATCH,
        "temporal_patch_size": TEMPORAL_PATCH, "spatial_merge_size": MERGE,
        "num_position_embeddings": NUM_POSITION_EMBEDDINGS, "initializer_range": p.initializer_range,
    }
    tokens = {"image_token_id": ids[IMAGE_PAD], "video_token_id": ids[VIDEO_PAD],
              "vision_start_token_id": ids[VISION_START], "vision_end_token_id": ids[VISION_END]}
    return text, vision, tokens


def build_qwen3_vl_config(preset: Preset, tokenizer) -> object:
    """The Qwen3VLConfig of a preset, token ids taken from `tokenizer`."""
    from transformers import Qwen3VLConfig

    text, vision, tokens = qwen3_parts(preset, tokenizer)
    vision["deepstack_visual_indexes"] = deepstack_indexes(preset.vision_depth)
    return Qwen3VLConfig(text_config=text, vision_config=vision, **tokens, tie_word_embeddings=True)


def build_qwen3_vl_processor(corpus: list[str], vocab_size: int = 1024):
    """A Qwen3VLProcessor around the rmsd BPE tokenizer, sized for small frames, frames never resampled."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}, patch_size=PATCH,
        temporal_patch_size=TEMPORAL_PATCH, merge_size=MERGE)
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS * MAX_FRAMES_PER_CLIP}, patch_size=PATCH,
        temporal_patch_size=TEMPORAL_PATCH, merge_size=MERGE, do_sample_frames=False, cap_pixels_per_frame=True,
        max_video_tokens=MAX_PIXELS // (PATCH * MERGE) ** 2)
    tokenizer = train_tokenizer(corpus, vocab_size)
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            chat_template=CHAT_TEMPLATE)
