"""Memory of a student from its config alone: parameter counts on the `meta` device, bytes, activations.

`architecture(folder)` builds the model of a from_pretrained folder's config.json on
torch's `meta` device (shapes, no storage: a 4B model costs nothing) and counts its
parameters by part: vision tower, text backbone (what the discriminator copies), LM head.
`lora_parameters` counts the adapter a peft LoRA of given rank and target modules would add
(`rmsd.models.lora` puts them on the text backbone's linears, and with `vision` on every linear
of the vision tower), `lora_activation_bytes` what its dropout keeps for the backward pass.
`activation_bytes` estimates what one forward keeps for the backward pass. `step_bytes` puts
them together for one training step (`Step`: the batch, its clips, replies, adapters, shared
prefix, discriminator and generation) in one call, as `rmsd plan` asks for each stage.

How the estimates are made (and where they stop being exact):
- weights, gradients and AdamW states are exact: numel x element size, as torch allocates
  them (torch.optim.AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype);
- activations count the tensors a decoder layer saves for backward per token (RMSNorm
  inputs and outputs, q/k/v and their rotated copies, the attention output, the MLP's
  gate/up/activation/product), times layers and tokens; attention is taken as a fused
  kernel (SDPA / flash: no L x L matrix kept) and the LM head as TRL's fused head (no
  `[tokens, vocab]` logits kept), as rmsd's trainers run them. With gradient checkpointing
  only each layer's input is kept, plus the layer being recomputed: its activations and the
  gradients flowing back through them;
  The vision tower is counted the same way per patch, before the 2x2 merge;
- TRL's fused LM head never holds `[tokens, vocab]` logits, but its backward holds a logits
  tile and fp32 gradients of the head (`head_workspace_bytes`);
- the inputs: the processor's flattened patches (`pixel_bytes`) are on the device during the
  step; the token tensors are negligible beside them;
- hybrid students (Qwen3.5): a Gated-DeltaNet `linear_attention` layer keeps no keys and
  values. What it saves for backward per token is its own list (`linear_layer_activation_elements`:
  the q/k/v projection before and after its causal convolution, the normalised q and k
  repeated to the value heads, gates, decay and step, the gated RMSNorm); what it holds for
  generation is a fixed-size state per sequence, not a cache that grows with the tokens
  (`recurrent_cache_bytes`: the recurrent state, value heads x key dim x value dim in float32
  as the kernels keep it, and the convolution's last `kernel` inputs); and what the shared
  prefix hands each continuation is that state, not the prompt's keys (`prefix_handover_bytes`).
  The counts are the flash-linear-attention kernels' inputs and outputs; the torch reference
  kernels (a CPU without `flash-linear-attention`) keep more (chunk x chunk matrices per head):
  on the CPU the tiny and small Qwen3.5 students peaked at 1.7x and 1.4x their plan, against
  1.1x and 1.0x for the same Qwen3-VL students (`python benchmarks/bench_plan.py --families
  qwen3_5 qwen3_vl --presets tiny small --no-write`, 2026-12-06).

    python -c "from rmsd.models.memory import architecture; print(architecture('runs/student-tiny'))"
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmsd.config import LORA_TARGETS
from rmsd.errors import RmsdError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Architecture:
    """Parameter counts and the shapes that size activations, read from a config on the meta device."""

    family: str
    params: int  # unique parameters (tied embeddings once)
    vision_params: int
    text_params: int  # the text backbone: embeddings, decoder layers, final norm (the discriminator's copy)
    head_params: int  # an untied LM head (0 when tied to the embeddings)
    hidden: int
    vocab: int
    layers: int
    q_dim: int  # heads x head_dim
    kv_dim: int  # kv heads x head_dim
    intermediate: int
    qk_norm: bool  # Qwen3: RMSNorm on q and k (two more saved tensors per layer)
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    vision_gated: bool  # Qwen2.5-VL's vision MLP is SwiGLU (gate, up, act, product); Qwen3-VL's is fc1-gelu-fc2
    patch: int
    temporal_patch: int
    merge: int
    # (module name, in, out) of every text-backbone nn.Linear, for LoRA counts
    lora_shapes: tuple[tuple[str, int, int], ...] = field(repr=False, default=())
    # (module name, in, out) of every vision-tower nn.Linear (blocks, mergers), for `vision: adapted`
    vision_lora_shapes: tuple[tuple[str, int, int], ...] = field(repr=False, default=())
    # hybrid stacks (Qwen3.5): how many of `layers` are Gated-DeltaNet linear attention, and their sizes
    linear_layers: int = 0
    linear_key_dim: int = 0  # key heads x key head dim (q and k each)
    linear_value_dim: int = 0  # value heads x value head dim
    linear_heads: int = 0  # value heads: one recurrent state each
    linear_state: int = 0  # elements of one layer's recurrent state per sequence (value heads x dk x dv)
    conv_kernel: int = 0  # the causal convolution's taps over [q | k | v]
    attention_gate: bool = False  # Qwen3.5's full attention gates its output (q_proj twice as wide)

    @property
    def attention_layers(self) -> int:
        """Layers with keys and values (all of them, but for a hybrid stack's linear-attention layers)."""
        return self.layers - self.linear_layers


def load_config(folder: str | Path) -> dict[str, Any]:
    """config.json of a from_pretrained folder (weights need not be there)."""
    file = Path(folder).expanduser() / "config.json"
    if not file.is_file():
        raise RmsdError(f"{Path(folder)}: no config.json there; point to a checkpoint or config-only folder")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise RmsdError(f"{file}: not valid JSON ({e.msg})") from None


def architecture(folder: str | Path) -> Architecture:
    """Counts and shapes of the model a folder's config.json describes, built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from rmsd.models.family import family_of

    family = family_of(load_config(folder)).name
    config = AutoConfig.from_pretrained(Path(folder).expanduser())
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    text, vision = config.get_text_config(), config.vision_config
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    tied = head is None or head.weight is decoder.get_input_embeddings().weight
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    linears = tuple((name, m.in_features, m.out_features) for name, m in decoder.named_modules()
                    if isinstance(m, torch.nn.Linear))
    linear = _linear_attention(text)
    return Architecture(
        family=family, params=_count(model), vision_params=_count(model.model.visual), text_params=_count(decoder),
        head_params=0 if tied else head.weight.numel(), hidden=text.hidden_size, vocab=text.vocab_size,
        layers=text.num_hidden_layers,
        q_dim=text.num_attention_heads * head_dim, kv_dim=text.num_key_value_heads * head_dim,
        intermediate=text.intermediate_size, qk_norm=family in ("qwen3_vl", "qwen3_5"), vision_depth=vision.depth,
        vision_hidden=vision.hidden_size, vision_intermediate=vision.intermediate_size,
        vision_gated=family == "qwen2_5_vl", patch=vision.patch_size, temporal_patch=vision.temporal_patch_size,
        merge=vision.spatial_merge_size, lora_shapes=linears,
        vision_lora_shapes=tuple((name, m.in_features, m.out_features) for name, m in model.model.visual.named_modules()
                                 if isinstance(m, torch.nn.Linear)),
        attention_gate=family == "qwen3_5", **linear,
    )


def _linear_attention(text: Any) -> dict[str, int]:
    """The Gated-DeltaNet sizes of a hybrid text config (empty for a stack of full-attention layers only)."""
    count = list(getattr(text, "layer_types", None) or []).count("linear_attention")
    if not count:
        return {}
    heads, dk, dv = text.linear_num_value_heads, text.linear_key_head_dim, text.linear_value_head_dim
    return {"linear_layers": count, "linear_key_dim": text.linear_num_key_heads * dk, "linear_value_dim": heads * dv,
            "linear_heads": heads, "linear_state": heads * dk * dv, "conv_kernel": text.linear_conv_kernel_dim}


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())  # parameters() yields a tied tensor once


def _adapted(arch: Architecture, target_modules: tuple[str, ...], vision: bool) -> list[tuple[str, int, int]]:
    targets = set(target_modules)
    text = [shape for shape in arch.lora_shapes if shape[0].rsplit(".", 1)[-1] in targets]
    return text + (list(arch.vision_lora_shapes) if vision else [])


def lora_parameters(arch: Architecture, r: int, target_modules: tuple[str, ...] = LORA_TARGETS,
                    vision: bool = False) -> int:
    """Parameters of LoRA adapters of rank r on the text backbone's linears named in `target_modules` (and with
    `vision` on every linear of the vision tower): r x (in + out) each."""
    return sum(r * (n_in + n_out) for _, n_in, n_out in _adapted(arch, target_modules, vision))


def lora_activation_bytes(arch: Architecture, text_tokens: int, vision_patches: int, r: int,
                          target_modules: tuple[str, ...], vision: bool, dropout: bool, dtype_bytes: int,
                          checkpointing: bool = False) -> int:
    """What LoRA adds to a forward's saved tensors: each adapted layer's A output (r per token), and with dropout
    a dropped copy of its input and the dropout's boolean mask (the undropped input is saved anyway).

    Counted per layer like `activation_bytes`: every layer without checkpointing, one recomputed
    layer (and its gradients) with it."""
    def per_token(shapes: list[tuple[str, int, int]]) -> int:
        return sum(r * dtype_bytes + (n_in * (dtype_bytes + 1) if dropout else 0) for _, n_in, _ in shapes)

    shapes = _adapted(arch, target_modules, vision)
    text = per_token([s for s in shapes if s in arch.lora_shapes]) * text_tokens
    seen = per_token([s for s in shapes if s in arch.vision_lora_shapes]) * vision_patches
    if checkpointing:  # the whole model's adapters over `layers` / `depth` layers; one layer at a time kept
        text = 2 * text // max(arch.layers, 1)
        seen = 2 * seen // max(arch.vision_depth, 1)
    return text + seen


def layer_activation_elements(arch: Architecture) -> int:
    """Elements one full-attention text decoder layer keeps for backward, per token (no checkpointing)."""
    h, q, kv, inter = arch.hidden, arch.q_dim, arch.kv_dim, arch.intermediate
    norms = 4 * h  # two RMSNorms: input and output each
    attention = q + 2 * kv + (q + kv) + q  # q/k/v projections, rotated q/k, attention output (into o_proj)
    if arch.qk_norm:
        attention += q + kv  # Qwen3's q_norm / k_norm outputs
    if arch.attention_gate:
        attention += 2 * q  # Qwen3.5's output gate and its sigmoid
    mlp = 4 * inter  # gate, up, act(gate), act(gate) * up (into down_proj)
    return norms + attention + mlp


def linear_layer_activation_elements(arch: Architecture) -> int:
    """Elements one Gated-DeltaNet (linear-attention) layer keeps for backward, per token (no checkpointing)."""
    h, k, v, heads = arch.hidden, arch.linear_key_dim, arch.linear_value_dim, arch.linear_heads
    conv = 2 * k + v  # the [q | k | v] channels
    repeated = 2 * heads * (arch.linear_state // max(v, 1))  # normalised q and k, repeated to the value heads
    mixer = 3 * conv + repeated + v + 4 * heads  # projection, convolution, its SiLU; z; a, b, decay, step
    mixer += 3 * v  # the kernel's output, the gated RMSNorm's normalised output and gate, (into out_proj)
    return 4 * h + mixer + 4 * arch.intermediate


def text_activation_elements(arch: Architecture) -> int:
    """Elements all text decoder layers keep for backward, per token: full-attention and linear-attention layers."""
    linear = linear_layer_activation_elements(arch) * arch.linear_layers if arch.linear_layers else 0
    return layer_activation_elements(arch) * arch.attention_layers + linear


def largest_layer_elements(arch: Architecture) -> int:
    """Per token, the larger of a full-attention and a linear-attention layer's saved tensors (a recomputed layer)."""
    return max(layer_activation_elements(arch), linear_layer_activation_elements(arch) if arch.linear_layers else 0)


def vision_block_elements(arch: Architecture) -> int:
    """Elements one vision block keeps for backward, per patch."""
    h, inter = arch.vision_hidden, arch.vision_intermediate
    attention = 4 * h + 3 * h + 2 * h + h  # two norms (in/out), qkv, rotated q/k, attention output
    return attention + (4 * inter if arch.vision_gated else 2 * inter)


def activation_bytes(arch: Architecture, text_tokens: int, vision_patches: int, dtype_bytes: int,
                     checkpointing: bool = False, with_vision: bool = True) -> int:
    """Bytes one forward keeps for its backward: `text_tokens` through the decoder, `vision_patches` through the tower.

    With checkpointing each layer keeps only its input (hidden per token) and one layer's
    full activations exist at a time, during its recomputation.
    """
    vision_layer = vision_block_elements(arch) * vision_patches if with_vision else 0
    if checkpointing:
        # layer inputs, plus the layer being recomputed: its activations and their gradients
        kept = arch.layers * arch.hidden * text_tokens + 2 * largest_layer_elements(arch) * text_tokens
        kept += (arch.vision_depth * arch.vision_hidden * vision_patches + 2 * vision_layer) if with_vision else 0
    else:
        kept = text_activation_elements(arch) * text_tokens + (arch.vision_depth * vision_layer if with_vision else 0)
    kept += 2 * arch.hidden * text_tokens  # final norm in/out before the fused head
    return kept * dtype_bytes


# TRL's fused LM head (trl/kernels/chunked_logprob.py) projects [4096 tokens, 32768 vocab] tiles
HEAD_TILE_TOKENS, HEAD_TILE_VOCAB = 4096, 32768


def head_workspace_bytes(arch: Architecture, tokens: int, head_trains: bool = True) -> int:
    """TRL's fused LM head during backward: an fp32 logits tile and one temporary of its size, the fp32
    gradients of the head's weight (only when it trains: not under LoRA) and of the hidden states
    (cast to the parameters' dtype afterwards)."""
    tile = min(tokens, HEAD_TILE_TOKENS) * min(arch.vocab, HEAD_TILE_VOCAB) * 4
    return 2 * tile + (4 * arch.vocab * arch.hidden if head_trains else 0) + 4 * tokens * arch.hidden


def kv_cache_bytes(arch: Architecture, tokens: int, dtype_bytes: int) -> int:
    """Keys and values of every full-attention layer for `tokens` positions (generation)."""
    return 2 * arch.attention_layers * arch.kv_dim * tokens * dtype_bytes


STATE_BYTES = 4  # the gated delta rule kernels (torch and flash-linear-attention) keep recurrent states in float32


def linear_state_bytes(arch: Architecture, dtype_bytes: int, conv_taps: int | None = None) -> int:
    """What one linear-attention layer carries for one sequence: its recurrent state (float32) and the
    convolution's last `conv_taps` inputs (default: the kernel, as transformers' cache keeps them)."""
    taps = arch.conv_kernel if conv_taps is None else conv_taps
    return arch.linear_state * STATE_BYTES + (2 * arch.linear_key_dim + arch.linear_value_dim) * taps * dtype_bytes


def recurrent_cache_bytes(arch: Architecture, sequences: int, dtype_bytes: int) -> int:
    """The linear-attention layers' generation cache: a fixed size per sequence, whatever its length."""
    return arch.linear_layers * sequences * linear_state_bytes(arch, dtype_bytes) if arch.linear_layers else 0


def generation_cache_bytes(arch: Architecture, sequences: int, tokens_per_sequence: int, dtype_bytes: int) -> int:
    """Everything generation caches: keys and values of the full-attention layers (growing with the tokens)
    and the linear-attention layers' states (one per sequence)."""
    return (kv_cache_bytes(arch, sequences * tokens_per_sequence, dtype_bytes)
            + recurrent_cache_bytes(arch, sequences, dtype_bytes))


def prefix_handover_bytes(arch: Architecture, items: int, rows: int, prompt: int, dtype_bytes: int,
                          checkpointing: bool) -> int:
    """What the shared-prefix forward (`rmsd.models.shared_prefix`) adds: each row's gathered copy of its
    prompt's keys and values (full attention) or states (linear attention), kept for the backward pass.

    Without checkpointing every layer keeps its gathered copies (the prompt's own keys and final
    states are part of the prompt's activations). With it only the layer being recomputed holds its
    gathered copies, but every layer's recorded prompt keys and states stay.
    """
    kv = 2 * arch.kv_dim * prompt * dtype_bytes  # one prompt's keys + values in one layer
    state = linear_state_bytes(arch, dtype_bytes, conv_taps=arch.conv_kernel - 1) if arch.linear_layers else 0
    if not checkpointing:
        return rows * (arch.attention_layers * kv + arch.linear_layers * state)
    return rows * max(kv, state) + items * (arch.attention_layers * kv + arch.linear_layers * state)


def pixel_bytes(arch: Architecture, clips: int, patches_per_clip: int, dtype_bytes: int) -> int:
    """The processor's flattened patches of `clips` clips on the device: 3 x temporal x patch^2 values per patch."""
    return clips * patches_per_clip * 3 * arch.temporal_patch * arch.patch * arch.patch * dtype_bytes


def visual_tokens(arch: Architecture, num_frames: int, height: int, width: int) -> tuple[int, int]:
    """(merged tokens the LM sees, patches the vision tower sees) for one clip of frames resized to height x width."""
    factor = arch.patch * arch.merge
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    steps = -(-num_frames // arch.temporal_patch)  # frames are padded to whole temporal patches
    patches = steps * (h // arch.patch) * (w // arch.patch)
    return patches // (arch.merge * arch.merge), patches


# ----------------------------------------------------------------------------- one training step
@dataclass(frozen=True)
class Adapters:
    """A LoRA on the student: rank, target modules, whether it adapts the vision tower, whether dropout is on."""

    r: int
    targets: tuple[str, ...]
    vision: bool
    dropout: bool


@dataclass(frozen=True)
class Step:
    """One training step of a stage, in the sizes the formulas need (`rmsd.plan` reads them from a recipe).

    `items` prompts, each with a clip of `frames` frames of height x width and `prompt_text` text
    tokens, and `rows` sequences over them, each with a reply of `reply` tokens (cut so that the
    whole sequence stays within `max_length`, when given); the pixels sit on the device
    `pixel_copies` times. With `disc_text` a discriminator reads `disc_text` text tokens per item;
    with `generates` the stage also generates the rows, and with `shuffled` another `shuffled` rows
    per item in a call of their own, from a shuffled copy of each clip (the temporal contrast).
    """

    items: int
    rows: int
    frames: int
    height: int
    width: int
    prompt_text: int
    reply: int
    dtype_bytes: int
    checkpointing: bool
    shared_prefix: bool
    adapters: Adapters | None = None
    max_length: int | None = None
    pixel_copies: int = 1
    disc_text: int | None = None
    generates: bool = False
    shuffled: int = 0


@dataclass(frozen=True)
class StepBytes:
    """What one step holds beyond weights, gradients and optimizer states, by what holds it."""

    visual_tokens: int  # per clip, what the LM sees
    student: int  # what the student's forward keeps for its backward (LoRA, shared-prefix hand-over, LM head)
    pixels: int  # the processor's patches on the device
    discriminator: int = 0  # what the discriminator's forward keeps
    generation: int = 0  # the generation cache of every row


def step_bytes(arch: Architecture, step: Step) -> StepBytes:
    """The memory of one training step of the student `arch`, in one call."""
    b = step.dtype_bytes
    vis, patches = visual_tokens(arch, step.frames, step.height, step.width)
    prompt = vis + step.prompt_text
    reply = step.reply if step.max_length is None else max(min(step.max_length, prompt + step.reply) - prompt, 1)
    pixels = step.pixel_copies * pixel_bytes(arch, step.items, patches, b)
    disc = 0 if step.disc_text is None else activation_bytes(
        arch, step.items * step.disc_text, 0, b, checkpointing=step.checkpointing, with_vision=False)
    generation = 0
    if step.generates:  # the shuffled call runs while the ordered clips are held: its cache, and one clip copy more
        generation = generation_cache_bytes(arch, max(step.rows, step.items * step.shuffled), prompt + reply, b)
        generation += pixel_bytes(arch, step.items, patches, b) if step.shuffled else 0
    return StepBytes(vis, _forward_bytes(arch, step, prompt, reply, patches), pixels, disc, generation)


def _forward_bytes(arch: Architecture, step: Step, prompt: int, reply: int, patches: int) -> int:
    """What one forward + backward of the rows keeps. Naive: every row is a whole sequence. Shared prefix: each
    prompt once, each row's reply (and the prompt's last token) attending to the prompt's keys and values (a
    linear-attention layer: its states), gathered per row and kept for the backward (`prefix_handover_bytes`)."""
    head_trains = step.adapters is None
    items, rows = step.items, step.rows
    if not step.shared_prefix or rows == items:
        tokens = rows * (prompt + reply)
        return _student_activations(arch, step, tokens, items * patches) + head_workspace_bytes(
            arch, tokens, head_trains=head_trains)
    tokens = items * prompt + rows * (reply + 1)
    act = _student_activations(arch, step, tokens, items * patches)
    act += prefix_handover_bytes(arch, items, rows, prompt, step.dtype_bytes, step.checkpointing)
    return act + head_workspace_bytes(arch, rows * (reply + 1), head_trains=head_trains)


def _student_activations(arch: Architecture, step: Step, tokens: int, patches: int) -> int:
    """The student's saved tensors: a frozen vision tower under LoRA builds no graph (nothing kept), adapters add
    theirs."""
    lora, b, checkpointing = step.adapters, step.dtype_bytes, step.checkpointing
    adapted = lora is not None and lora.vision
    act = activation_bytes(arch, tokens, patches, b, checkpointing, with_vision=lora is None or adapted)
    if lora is not None:
        act += lora_activation_bytes(arch, tokens, patches, lora.r, lora.targets, adapted, lora.dropout, b,
                                     checkpointing)
    return act
