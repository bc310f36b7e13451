"""The Qwen3.5 variant of the offline student: config (`build_student(..., family="qwen3_5")`).

Same sizes per preset, tokenizer, chat template, pixel bounds and processor as the Qwen3-VL
student (`rmsd.models.offline.tiny_qwen3`: Qwen3.5 checkpoints ship `Qwen3VLProcessor`, so the
`<t seconds>` timestamps, the per-frame pixel cap and the unresampled frames are the same), so
the families differ only where the architectures do:
- text: a *hybrid* stack. `layer_types` interleave Gated-DeltaNet `linear_attention` layers
  (a recurrent state per head and a short causal convolution over q/k/v, no keys to attend
  back to) with `full_attention` layers, three to one as the published configs have
  (`full_attention_interval` 4: the tiny preset's 4 layers are linear, linear, linear, full).
  Full-attention layers gate their output (`q_proj` is twice as wide) and norm q and k;
  every RMSNorm is zero-centred (`1 + weight`);
- the linear layers' sizes follow the published ratios (value heads twice the key heads, key
  and value head dims equal, a 4-tap convolution), scaled to the preset's head dim;
- rotary: the published configs rotate a quarter of a 256-dim head (`partial_rotary_factor`
  0.25, 64 dims, `mrope_section` [11, 11, 10]); a quarter of the tiny 16-dim head would leave
  one temporal frequency, too few to tell frame order, so the tiny student rotates its whole
  head with the Qwen3-VL student's sections (`partial_rotary_factor` 1.0, interleaved M-RoPE);
- vision: Qwen3-VL's tower (learned, interpolated position embeddings) without DeepStack;
- the linear layers' time steps start as flash-linear-attention's GatedDeltaNet starts them
  (`dt_bias` = softplus⁻¹ of steps log-uniform in [0.001, 0.1], `init_linear_attention`):
  transformers' `_init_weights` sets `dt_bias` to 1 (a placeholder for loaded weights), which
  with decay rates up to 16 multiplies the recurrent state by ~exp(-20) per token, a layer
  that forgets its state within a token; the tiny student's layers then remember tens of tokens.

    rmsd build-student --out runs/student-q35 --family qwen3_5
"""

from __future__ import annotations

from rmsd.models.offline.tiny_qwen3 import NUM_POSITION_EMBEDDINGS, build_qwen3_vl_processor
from rmsd.models.offline.vocab import (
    IM_END,
    IMAGE_PAD,
    MERGE,
    PAD,
    PATCH,
    SPECIAL_TOKENS,
    TEMPORAL_PATCH,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    Preset,
)

FULL_ATTENTION_INTERVAL = 4  # every 4th layer is full attention, as in every published Qwen3.5 config
CONV_KERNEL = 4  # linear_conv_kernel_dim of the published configs

# the processor is Qwen3-VL's: Qwen3.5 checkpoints ship a Qwen3VLProcessor
build_qwen3_5_processor = build_qwen3_vl_processor


DT_MIN, DT_MAX, DT_FLOOR = 0.001, 0.1, 1e-4  # flash-linear-attention's GatedDeltaNet time-step init


def init_linear_attention(model) -> None:
    """Re-draw every Gated-DeltaNet layer's `dt_bias` as flash-linear-attention initialises it (from torch's RNG)."""
    import math

    import torch

    for module in model.modules():
        if type(module).__name__.endswith("GatedDeltaNet"):
            n = module.dt_bias.numel()
            dt = torch.exp(torch.rand(n) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)).clamp(min=DT_FLOOR)
            with torch.no_grad():
                module.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt


def layer_types(layers: int, interval: int = FULL_ATTENTION_INTERVAL) -> list[str]:
    """Qwen3.5's default schedule: linear attention, except every `interval`-th layer."""
    return ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(layers)]


def build_qwen3_5_config(preset: Preset, tokenizer) -> object:
    """The Qwen3_5Config of a preset, token ids taken from `tokenizer`."""
    from transformers import Qwen3_5Config

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    p = preset
    head_dim = p.text_hidden // p.text_heads
    if p.text_hidden % p.text_heads or head_dim != 2 * sum(p.mrope_section):
        raise ValueError(f"preset: head_dim {head_dim} must equal 2 * sum(mrope_section) {p.mrope_section}")
    key_heads = max(p.text_kv_heads // 2, 1)
    text = {
        "vocab_size": len(tokenizer), "hidden_size": p.text_hidden, "intermediate_size": p.text_intermediate,
        "num_hidden_layers": p.text_layers, "num_attention_heads": p.text_heads, "head_dim": head_dim,
        "num_key_value_heads": p.text_kv_heads, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "layer_types": layer_types(p.text_layers), "linear_conv_kernel_dim": CONV_KERNEL,
        "linear_key_head_dim": head_dim, "linear_value_head_dim": head_dim,
        "linear_num_key_heads": key_heads, "linear_num_value_heads": 2 * key_heads,
        "rope_parameters": {"rope_type": "default", "rope_theta": p.rope_theta, "partial_rotary_factor": 1.0,
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
    return Qwen3_5Config(
        text_config=text, vision_config=vision, image_token_id=ids[IMAGE_PAD], video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START], vision_end_token_id=ids[VISION_END], tie_word_embeddings=True,
    )
