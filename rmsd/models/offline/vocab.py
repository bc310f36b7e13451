"""What both offline student families share: Qwen's special tokens, the chat template, the
locally trained tokenizer, the vision patching sizes, and the size presets' shape.

`rmsd.models.offline.tiny` builds a Qwen2.5-VL student, `rmsd.models.offline.tiny_qwen3` a Qwen3-VL one and
`rmsd.models.offline.tiny_qwen3_5` a Qwen3.5 one from these (the Qwen3.5 builder reuses the Qwen3-VL processor,
as Qwen3.5 checkpoints do).

    python -c "from rmsd.models.offline.vocab import train_tokenizer; print(len(train_tokenizer(['a b c'] * 4)))"
"""

from __future__ import annotations

from dataclasses import dataclass

from rmsd.errors import RmsdError

# Qwen's special tokens, first in the vocabulary (ids 0..6) so the config ids are fixed.
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END, VISION_START, VISION_END, VIDEO_PAD, IMAGE_PAD)


# Ordinary (not special) single tokens: decoding with skip_special_tokens keeps them, so a
# generated "<answer>(B)</answer>" survives into the scorer.
FORMAT_TOKENS = (("<think>", "</think>", "<answer>", "</answer>") + tuple(f"({c})" for c in "ABCDEF")
                 # " (B)" as one token: after " red" in the prompt's "- red (B)" the letter is the very next
                 # token, so naming it after writing " red" is a plain copy of what followed " red" there
                 + tuple(f" ({c})" for c in "ABCDEF"))


# Qwen2's pre-tokenizer split: words with one leading non-letter, single digits (numbers are
# read digit by digit), punctuation runs, newlines, spaces.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


# Qwen-shaped chat template: <|im_start|>role\n...<|im_end|>\n, media placeholders where the
# content list puts them. Unlike Qwen's template it adds no default system message (tokens
# a 1M-parameter model would only have to learn to ignore).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'video' or 'video' in part -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'image' or 'image' in part -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class Preset:
    """Sizes of one student; `text_heads` must divide `text_hidden` with head_dim = 2 * sum(mrope_section)."""

    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    mrope_section: tuple[int, int, int]
    vision_depth: int
    vision_hidden: int
    vision_heads: int
    vision_intermediate: int
    fullatt_blocks: tuple[int, ...]
    initializer_range: float
    rope_theta: float = 1_000_000.0  # text rope base (Qwen2.5-VL's)
    vocab_size: int = 1024  # a BPE target; a small corpus may stop short of it


PATCH, TEMPORAL_PATCH, MERGE = 14, 2, 2


MIN_PIXELS = 28 * 28  # one merged token: frames are never upscaled past this


MAX_PIXELS = 112 * 112  # 84 px frames (7,056 px) pass untouched; larger ones shrink to <= 16 tokens per step


def train_tokenizer(corpus: list[str], vocab_size: int = 1024):
    """A byte-level BPE (`tokenizers`) wrapped as a PreTrainedTokenizerFast with Qwen's special tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not corpus:
        raise RmsdError("tokenizer corpus is empty: pass some text or leave corpus unset for the default")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer)
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=IM_END, pad_token=PAD, bos_token=None, unk_token=None,
        extra_special_tokens=list(SPECIAL_TOKENS[1:]), padding_side="right", model_max_length=4096,
        chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
    )
    return tokenizer
