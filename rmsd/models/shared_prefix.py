"""Shared-prefix forward: an item's prompt (system, video, question) runs once for all of its K samples or G rollouts.

Multi-sample training multiplies the expensive part of every sequence: on a real video
benchmark the prompt is ~8k visual tokens and a response a few hundred, and each of an
item's K teacher samples (multi-sample SFT) or G rollouts (the GRPO loss, its old and
reference log-probs, the VISD teacher) repeats that prompt. Here the rows of a batch that
share a prompt (a *group*: the rows of one item) are split into

    prefix       = the group's common tokens up to the last one before its first target,
                   vision placeholders included — run ONCE per group, vision tower too;
    continuation = each row's remaining tokens (its last prompt token, then the response,
                   or a VISD feedback text then the response) — attend to the prefix's keys.

Cost ~ (P + K·R) / (K·(P + R)) of the naive path for a prefix of P and K responses of R
tokens (Prefix Grouper, arXiv 2506.05433, shows the same for text GRPO).

Why this implementation (of the three the design allowed):
- a *packed sequence with a block mask* ([prefix | r_1 | ... | r_K] in one row) wastes the
  K·R × K·R masked block and the prefix × responses block of every attention map, and CPU /
  SDPA kernels compute a dense mask in full: at P = 2,400, R = 256, K = 4 its attention costs
  ~0.8x naive instead of ~0.4x;
- a *prefix KV cache* through transformers' `Cache` cannot be used under gradient
  checkpointing (each checkpointed layer drops its cache argument, and a recomputed layer
  would append to it again);
- so the prefix's keys and values are handed over by a small **attention function**
  registered with transformers' `AttentionInterface`: during the prefix pass it records each
  layer's (post-RoPE) keys and values and attends as usual; during the continuation pass it
  gathers the group's prefix keys/values for each row, appends the row's own, and attends
  with a [prefix padding | causal] mask. Keyword arguments reach the attention function
  through every layer, checkpointed or not, and a recomputed layer only overwrites what it
  recorded, so gradient checkpointing works. Gradients reach the prefix (and the vision
  tower) from every continuation through the gathered keys/values.
Rotary positions (Qwen2.5-VL's 3-D `get_rope_index`, with `second_per_grid_ts` and
`mm_token_type_ids`) are computed by the model's own function on the *naive* rows and
sliced, so every token has exactly the position it has in the naive forward, whatever the
padding. The gathered keys/values cost K x P x kv-width per layer (copies), far less than
the K x P tokens of activations the naive path holds.

With every group of size one (K = 1, distinct prompts) the naive forward is used as is.

**Hybrid models (Qwen3.5).** A Gated-DeltaNet `linear_attention` layer has no keys to hand
over: what a token after the prompt needs from it is the layer's recurrent state (per value
head, a key-dim x value-dim matrix) and its causal convolution's last `kernel - 1` inputs.
transformers' layer reads both from a cache (`get_conv_state`, `get_recurrent_state`),
concatenates the convolution state before its new inputs, and hands the recurrent state to
its kernel as `initial_state`. Its torch reference kernels (`torch_chunk_gated_delta_rule`,
`torch_recurrent_gated_delta_rule`, and the convolution `causal_conv1d_fn` on the
concatenated inputs) are differentiable in that state: it enters only through `.to()`,
products and sums, never an in-place update (only `causal_conv1d_update`, the one-token
decode path, copies in place, and it is never taken here). So the layer takes an initial
state with gradients natively, but only through a `Cache`, which gradient checkpointing
drops (above). Here a **forward pre-hook** on every linear-attention layer (`enable`) turns
the shared-prefix keyword into a small per-pass object with the cache methods the layer
calls: during the prefix pass it records the layer's final recurrent state and the last
`kernel - 1` convolution inputs of each prefix; during the continuation pass it returns them,
gathered per row (K copies of a group's state), so every continuation starts from its
prompt's state and gradients flow back through it into the prefix and the vision tower. The
prefixes are *left*-padded: the layer zeroes padded positions' inputs, so leading padding
leaves the state at exactly zero and the final state is the one after the last real token
(trailing padding would decay and update it). A recomputed (checkpointed) layer overwrites
what it recorded, as the attention function does.

    python benchmarks/bench_prefix.py --quick
    rmsd distill --recipe R --matched DIR --set distill.shared_prefix=false   # the naive path, for checking
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

PREFIX_KWARG = "rmsd_shared_prefix"
_NAME = "rmsd_shared_prefix+"  # + the attention implementation it wraps (sdpa, flash_attention_2, ...)


# ----------------------------------------------------------------------------- the attention function
def _register(inner: str) -> str:
    """Register `rmsd_shared_prefix+<inner>` (attention and mask functions) once; its name."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    name = _NAME + inner
    if name in AttentionInterface._global_mapping:
        return name
    if inner not in AttentionInterface._global_mapping or inner not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        raise ValueError(f"the shared-prefix forward wraps a registered attention implementation (sdpa, "
                         f"flash_attention_2, ...), not {inner!r}: load the model with attn_implementation='sdpa'")
    normal = ALL_ATTENTION_FUNCTIONS[inner]

    def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: Any, **kwargs: Any) -> Any:
        ctx = kwargs.pop(PREFIX_KWARG, None)
        if ctx is None:
            return normal(module, query, key, value, attention_mask, **kwargs)
        return ctx.attend(module, query, key, value, attention_mask, normal, **kwargs)

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[inner])
    return name


def enable(model: Any) -> None:
    """Let `model`'s language model take a shared prefix (idempotent; a plain forward is unchanged)."""
    inner = _unwrap(model)
    config = inner.config.get_text_config()
    current = config._attn_implementation or "eager"
    if not current.startswith(_NAME):
        config._attn_implementation = _register(current)
    for module in inner.modules():
        if _is_linear_attention(module) and not getattr(module, _HOOKED, False):
            module.register_forward_pre_hook(_linear_attention_hook, with_kwargs=True)
            setattr(module, _HOOKED, True)


_HOOKED = "_rmsd_shared_prefix_hook"


def _is_linear_attention(module: Any) -> bool:
    """A Gated-DeltaNet layer (Qwen3.5, Qwen3-Next): recurrent and convolution states instead of keys."""
    return type(module).__name__.endswith("GatedDeltaNet") and hasattr(module, "conv_kernel_size")


def _linear_attention_hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Hand a linear-attention layer its shared-prefix states: the pass's keyword becomes the layer's `cache`."""
    ctx = kwargs.pop(PREFIX_KWARG, None)
    if ctx is None:
        return None
    return args, {**kwargs, "cache": _LinearStates(ctx)}


@dataclass
class _LinearStates:
    """The cache methods a Gated-DeltaNet layer's forward calls, answered by a shared-prefix pass.

    `is_recording_past` is True so that even a one-token continuation takes the layer's
    full-convolution branch over [state | inputs] instead of the in-place decode update.
    """

    ctx: Any  # _Record or _Continue

    def get_conv_state(self, layer_idx: int, state_idx: int = 0) -> torch.Tensor | None:
        return self.ctx.conv_state(layer_idx)

    def get_recurrent_state(self, layer_idx: int, state_idx: int = 0) -> torch.Tensor | None:
        return self.ctx.recurrent_state(layer_idx)

    def is_recording_past(self, layer_idx: int) -> bool:
        return True

    def update_conv_state(self, inputs: torch.Tensor, layer_idx: int, state_idx: int = 0,
                          conv_kernel_size: int | None = None, **kwargs: Any) -> torch.Tensor:
        return self.ctx.conv_inputs(layer_idx, inputs, conv_kernel_size)

    def update_recurrent_state(self, state: torch.Tensor, layer_idx: int, state_idx: int = 0,
                               **kwargs: Any) -> torch.Tensor:
        self.ctx.final_state(layer_idx, state)
        return state


def enabled(model: Any) -> bool:
    return (_unwrap(model).config.get_text_config()._attn_implementation or "").startswith(_NAME)


def _unwrap(model: Any) -> Any:
    """The transformers model under DDP / accelerate / peft wrappers."""
    while hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()
    return model


@dataclass
class _Record:
    """Prefix pass: keep each layer's keys/values, or a linear layer's final states (overwritten by a
    recomputed layer), and compute as usual."""

    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    conv: dict[int, torch.Tensor] = field(default_factory=dict)  # [N, channels, kernel - 1]
    states: dict[int, torch.Tensor] = field(default_factory=dict)  # [N, value heads, key dim, value dim]

    def attend(self, module, query, key, value, attention_mask, normal, **kwargs):
        self.keys[module.layer_idx], self.values[module.layer_idx] = key, value
        return normal(module, query, key, value, attention_mask, **kwargs)

    def conv_state(self, layer: int) -> None:
        return None  # the prefix starts from nothing

    recurrent_state = conv_state

    def conv_inputs(self, layer: int, inputs: torch.Tensor, kernel: int) -> torch.Tensor:
        # inputs [N, channels, P], left-padded with zeros (the layer zeroes padded positions), so the
        # last kernel - 1 columns are the real tail; a prefix shorter than that is zero-extended
        self.conv[layer] = torch.nn.functional.pad(inputs, (kernel - 1, 0))[..., -(kernel - 1):]
        return inputs

    def final_state(self, layer: int, state: torch.Tensor) -> None:
        self.states[layer] = state


@dataclass
class _Continue:
    """Continuation pass: each row attends to its group's recorded prefix, then causally to itself."""

    prefix: _Record
    row_group: torch.Tensor  # [M] group of each row
    prefix_mask: torch.Tensor  # [N, P] bool, real prefix tokens
    _mask: torch.Tensor | None = None

    def attend(self, module, query, key, value, attention_mask, normal, **kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        layer = module.layer_idx
        key = torch.cat([self.prefix.keys[layer].index_select(0, self.row_group), key], dim=2)
        value = torch.cat([self.prefix.values[layer].index_select(0, self.row_group), value], dim=2)
        if self._mask is None:  # [M, 1, R, P + R], True = attend; every query sees the prefix, so no empty row
            r = query.size(2)
            causal = torch.ones(r, r, dtype=torch.bool, device=query.device).tril()
            seen = self.prefix_mask.index_select(0, self.row_group)[:, None, :].expand(-1, r, -1)
            self._mask = torch.cat([seen, causal.expand(query.size(0), r, r)], dim=2)[:, None]
        kwargs.pop("is_causal", None)
        return sdpa_attention_forward(module, query, key, value, self._mask, is_causal=False, **kwargs)

    def conv_state(self, layer: int) -> torch.Tensor:
        return self.prefix.conv[layer].index_select(0, self.row_group)

    def recurrent_state(self, layer: int) -> torch.Tensor:
        return self.prefix.states[layer].index_select(0, self.row_group)

    def conv_inputs(self, layer: int, inputs: torch.Tensor, kernel: int) -> torch.Tensor:
        # the layer convolves [prefix tail | row], then keeps the row's columns
        return torch.cat([self.conv_state(layer).to(inputs.dtype), inputs], dim=-1)

    def final_state(self, layer: int, state: torch.Tensor) -> None:
        pass  # a continuation's own final state is nobody's prefix


# ----------------------------------------------------------------------------- the two passes
def record_prefix(call: Any, **inputs: Any) -> _Record:
    """Run `call` (a backbone taking `**inputs`) over the prefixes; the keys/values of every layer.

    On a hybrid model the prefixes must be left-padded (`attention_mask` 0 before the tokens):
    a linear-attention layer's recorded state is the one after the last column.
    """
    record = _Record()
    call(**inputs, **{PREFIX_KWARG: record})
    return record


def continuation_kwargs(record: _Record, row_group: torch.Tensor, prefix_mask: torch.Tensor) -> dict[str, Any]:
    """Keyword arguments that make a forward over continuations attend to their group's recorded prefix.

    row_group: [M] the prefix (row of `prefix_mask`) each continuation row continues.
    prefix_mask: [N, P] bool, True on the real (non-padding) prefix tokens.
    """
    return {PREFIX_KWARG: _Continue(record, row_group, prefix_mask.bool())}


# ----------------------------------------------------------------------------- splitting a batch
@dataclass
class Split:
    """Where each group's shared prefix lies in the naive (padded) rows."""

    groups: list[int]  # [M] group of each row
    first: list[int]  # [N] the row whose prefix tokens (and vision) the group runs
    length: list[int]  # [N] prefix tokens of each group
    start: list[int]  # [M] first real column of each row
    stop: list[int]  # [M] one past each row's last real column

    def cut(self, row: int) -> int:
        """The column where row `row`'s continuation starts."""
        return self.start[row] + self.length[self.groups[row]]


def plan_split(input_ids: torch.Tensor, attention_mask: torch.Tensor, first_target: torch.Tensor,
               keys: Sequence[Hashable], mm_token_type_ids: torch.Tensor | None = None) -> Split | None:
    """The prefix/continuation split of naive rows, or None when no group has two rows.

    first_target: [M] column of each row's first token whose *prediction* counts (its first
        label's column minus one): the prefix stops before it, so the continuation's first
        token predicts the first target.
    keys: rows with equal keys share their prompt (the item): their longest common run of
        tokens from each row's first real token, up to the earliest first target, is the
        prefix. Rows may be padded differently (left-padded prompts of different lengths).
    Every vision placeholder must lie in the prefix (the clip precedes the question).
    """
    order: dict[Hashable, int] = {}
    groups = [order.setdefault(k, len(order)) for k in keys]
    if len(order) == len(groups):
        return None
    mask = attention_mask.bool()
    real = mask.any(dim=1)
    start = torch.where(real, mask.int().argmax(dim=1), 0).tolist()
    stop = torch.where(real, mask.size(1) - mask.flip(1).int().argmax(dim=1), 0).tolist()
    members: list[list[int]] = [[] for _ in order]
    for row, g in enumerate(groups):
        members[g].append(row)
    first, length = [], []
    for rows in members:
        lead, s = rows[0], start[rows[0]]
        n = min(int(first_target[r]) - start[r] for r in rows)
        for r in rows[1:]:  # the longest common run of the group's rows
            same = (input_ids[r, start[r]: start[r] + n] == input_ids[lead, s: s + n]).tolist()
            n = same.index(False) if False in same else len(same)
        if n < 1:
            raise ValueError("the rows of a group share no token before their first target")
        if mm_token_type_ids is not None and any(bool(mm_token_type_ids[r, start[r] + n:].ne(0).any()) for r in rows):
            raise ValueError("a vision placeholder lies after a group's shared prefix: it must precede the targets")
        first.append(lead)
        length.append(n)
    return Split(groups, first, length, start, stop)


# ----------------------------------------------------------------------------- the forward
def rope_positions(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   mm_token_type_ids: torch.Tensor | None, vision: dict[str, torch.Tensor]) -> torch.Tensor:
    """[3, M, L] positions the model itself gives the naive rows (3-D RoPE with vision, else 0..L-1)."""
    from rmsd.models.family import rope_index

    if any(k in vision for k in ("image_grid_thw", "video_grid_thw")):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "mm_token_type_ids": mm_token_type_ids,
                 **vision}
        return rope_index(_unwrap(model), batch)[0]
    width = input_ids.size(1)
    return torch.arange(width, device=input_ids.device).view(1, 1, -1).expand(3, input_ids.size(0), -1)


def _pad(rows: list[torch.Tensor], value: int | bool, left: bool = False) -> torch.Tensor:
    """Right- (or left-) pad 1-D (or [3, n]) tensors along their last dim into one batch."""
    width = max(r.size(-1) for r in rows)
    out = rows[0].new_full((len(rows), *rows[0].shape[:-1], width), value)
    for i, r in enumerate(rows):
        n = r.size(-1)
        if left:
            out[i, ..., width - n:] = r
        else:
            out[i, ..., :n] = r
    return out


PIXELS = ("pixel_values_videos", "pixel_values")


def _rows_vision(vision_rows: Sequence[dict[str, torch.Tensor]], which: Sequence[int],
                 pixels: bool = True) -> dict[str, torch.Tensor]:
    """The vision tensors of rows `which`, concatenated in that order (the order of their placeholders);
    without `pixels`, only the grids and times (all that RoPE positions read: no copy of every row's clip)."""
    merged: dict[str, list[torch.Tensor]] = {}
    for r in which:
        for k, v in vision_rows[r].items():
            if pixels or k not in PIXELS:
                merged.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in merged.items()}


def shared_forward(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                   split: Split, vision_rows: Sequence[dict[str, torch.Tensor]],
                   mm_token_type_ids: torch.Tensor | None = None, **model_kwargs: Any) -> dict[str, Any]:
    """Per-token outputs of the fused LM head for naive rows, with one prefix pass per group.

    input_ids / attention_mask / labels / mm_token_type_ids: the naive rows [M, L], any padding.
    vision_rows: per row, its vision tensors (one clip or image; {} for a text row); the
        group's first row's are the ones the vision tower encodes.
    model: carries TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`) and is `enable`d.
    Returns {"log_probs", "label_mask", and "entropy" / "is_top1" when the head computes them},
    each [M, L-1] in the naive layout (index t scores token t+1), zero where not a target.
    """
    if not enabled(model):
        raise RuntimeError("shared_forward needs rmsd.models.shared_prefix.enable(model) first")
    rows = range(input_ids.size(0))
    grids = _rows_vision(vision_rows, [r for r in rows if vision_rows[r]], pixels=False)
    positions = rope_positions(model, input_ids, attention_mask, mm_token_type_ids, grids)
    # each row's positions from its own first real token: rows of a group padded differently still agree,
    # and RoPE depends on position differences only (with vision the model's positions already start at 0)
    starts = torch.tensor(split.start, device=positions.device)
    positions = positions - positions[:, torch.arange(len(split.start)), starts].unsqueeze(-1)
    spans = [(f, split.start[f], split.start[f] + n) for f, n in zip(split.first, split.length, strict=True)]
    # prefixes left-padded: a linear-attention layer's final state is then the one after the last real token
    prefix_mask = _pad([torch.ones(e - s, dtype=torch.bool, device=input_ids.device) for _, s, e in spans], False,
                       left=True)
    prefix = {"input_ids": _pad([input_ids[f, s:e] for f, s, e in spans], 0, left=True),
              "position_ids": _pad([positions[:, f, s:e] for f, s, e in spans], 0, left=True).transpose(0, 1),
              "attention_mask": prefix_mask.long(), "use_cache": False,
              **_rows_vision(vision_rows, [f for f in split.first if vision_rows[f]])}
    if mm_token_type_ids is not None:
        prefix["mm_token_type_ids"] = _pad([mm_token_type_ids[f, s:e] for f, s, e in spans], 0, left=True)
    record = record_prefix(_unwrap(model).model, **prefix)
    cut = [split.cut(m) for m in rows]
    cont_ids = _pad([input_ids[m, cut[m]: split.stop[m]] for m in rows], 0)
    out = model(input_ids=cont_ids, attention_mask=torch.ones_like(cont_ids),
                position_ids=_pad([positions[:, m, cut[m]: split.stop[m]] for m in rows], 0).transpose(0, 1),
                labels=_pad([labels[m, cut[m]: split.stop[m]] for m in rows], -100), fused_lm_head=True,
                use_cache=False, **continuation_kwargs(record, torch.tensor(split.groups, device=input_ids.device),
                                                       prefix_mask), **model_kwargs)
    return _to_naive(out, cut, split.stop, input_ids.shape)


def _to_naive(out: Any, cut: list[int], stop: list[int], shape: torch.Size) -> dict[str, Any]:
    """Scatter continuation-layout per-token fields back to naive columns (index t scores token t+1)."""
    width = shape[1] - 1
    pieces = [(m, cut[m], max(stop[m] - 1 - cut[m], 0)) for m in range(shape[0])]
    result: dict[str, Any] = {}
    for name in ("log_probs", "entropy", "is_top1", "label_mask"):
        value = getattr(out, name, None)
        if value is None:
            continue
        index = torch.cat([torch.arange(c, c + k, device=value.device) + m * width for m, c, k in pieces])
        src = torch.cat([value[m, :k] for m, _, k in pieces])
        result[name] = value.new_zeros(shape[0] * width).index_put((index,), src).view(shape[0], width)
    return result
