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

from rmsd.models.offline.tiny_qwen3 import build_qwen3_vl_processor, qwen3_parts
from rmsd.models.offline.vocab import Preset

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
    """The Qwen3_5Config of a preset, token ids taken from `tokenizer`: Qwen3-VL's parts with a hybrid text stack."""
    from transformers import Qwen3_5Config

    text, vision, tokens = qwen3_parts(preset, tokenizer, partial_rotary_factor=1.0)
    key_heads = max(preset.text_kv_heads // 2, 1)
    text.update({"layer_types": layer_types(preset.text_layers), "linear_conv_kernel_dim": CONV_KERNEL,
                 "linear_key_head_dim": text["head_dim"], "linear_value_head_dim": text["head_dim"],
                 "linear_num_key_heads": key_heads, "linear_num_value_heads": 2 * key_heads})
    return Qwen3_5Config(text_config=text, vision_config=vision, **tokens, tie_word_embeddings=True)
