"""The offline student: a Qwen2.5-VL-, Qwen3-VL- or Qwen3.5-architecture model with random weights and a local tokenizer.

`build_student(out_dir, family=...)` writes a folder that `AutoModelForImageTextToText.from_pretrained`
and `AutoProcessor.from_pretrained` load exactly like a real checkpoint of that family: model
weights and config, a generation config, a `Qwen2_5_VLProcessor` or `Qwen3VLProcessor` (image
processor, video processor, tokenizer, chat template; Qwen3.5 ships the latter too). Every later stage (sampling with the
`hf` backend, distillation, evaluation) therefore runs the same code on it as on a 3B/4B
checkpoint. `qwen2_5_vl` is the default family; `qwen3_vl` has the same sizes per preset plus
Qwen3-VL's own parts (QK-norm, interleaved M-RoPE, learned vision position embeddings,
DeepStack mergers feeding the first text layers, timestamp text between frame pairs);
`qwen3_5` the same sizes again with Qwen3.5's hybrid text stack (Gated-DeltaNet linear
attention in three of every four layers, `rmsd.models.offline.tiny_qwen3_5`).

How it differs from a real checkpoint:
- weights are random (from a seed) and small: the `tiny` preset (1.4M parameters) learns
  synthvid on a CPU in minutes (benchmarks/results/learning.md, docs/experiments.md "Does the tiny
  student learn synthvid on a CPU?");
- `initializer_range` is 0.1 in every sub-config, not 0.02: from scratch it learns far faster;
- the vocabulary is a byte-level BPE of ~600 tokens trained here with `tokenizers` on
  synthvid's text and the words of common benchmark prompts, with the answer-format tags
  and the option markers "(A)".."(F)" as single tokens (the answer letter is then the same
  token in the options and in the reply); any text still encodes (byte fallback);
- the processor keeps small frames as they are (84 x 84 stays 84 x 84: 36 video tokens for
  8 frames) instead of upscaling them to Qwen's default minimum of ~100k pixels.

    rmsd build-student --out runs/student-tiny            # the CLI wrapper
    rmsd build-student --out runs/student-q3 --family qwen3_vl
    rmsd build-student --out runs/student-q35 --family qwen3_5
    python -c "from rmsd.models.offline.tiny import build_student; build_student('runs/student-tiny')"
"""

from __future__ import annotations

from pathlib import Path

from rmsd.errors import RmsdError
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

# Words of common video/image benchmark prompts and of teacher-style reasoning, so real
# prompts tokenise into words rather than bytes. synthvid's own text is added at build time.
BENCHMARK_TEXT = """\
Select the best answer to the following multiple-choice question based on the video.
Respond with only the letter (A, B, C, or D) of the correct option.
Answer with the option's letter from the given choices directly.
Please answer the question using a single word or phrase.
Answer the question based on the image. The answer is: Final answer: Therefore the answer is
So the answer is (A). Therefore the answer is (B). The correct answer is (C). The best answer is (D).
Option (E) fits what I see. Option (F) does not. I estimate 3. It happens during [1.0, 2.5] seconds.
I go through the frames in order. Let me track each object over time. I watch how every object moves.
I count 2 objects: the red square, the blue circle. At most 3 objects are on screen at the same time.
The green triangle is visible from 0.5 s to 3.5 s. The yellow circle appears first, at 0.0 s.
The object moving left is cyan. The magenta object moves down. I summarise what happens.
Question: Options: Video: Image: Subtitles: Context: Hint: Please think step by step.
What is happening in the video? What does the person do? Why does the man do this? How many people are there?
Which of the following statements is true? What is the main topic of the lecture? Describe the scene.
Who is speaking? Where is the woman? When does it start? What will happen next? What is the value of x?
According to the question shown in the image, please directly answer the question and provide the final value.
Please first conduct reasoning, and then answer the question and provide the final value at the end.
In the figure, the angle, triangle, circle, line, area, length, radius and perimeter are given. Find the value.
first second third last before after during while then next finally because therefore however not
left right up down top bottom front back middle center inside outside near far large small big
red green blue yellow magenta cyan white black gray orange purple pink brown color colour shape size
zero one two three four five six seven eight nine ten hundred thousand 0 1 2 3 4 5 6 7 8 9 . , : ; ? ! %
person people man woman child car dog cat ball table room street building water book screen hand
"""


PRESETS = {
    # 1.4M parameters (docs/experiments.md, its first section): learns synthvid colour/direction on 2 CPU cores in minutes.
    "tiny": Preset(128, 4, 8, 8, 512, (2, 3, 3), 2, 64, 4, 256, (0, 1), 0.1),
    # ~9M: experiments that need more capacity than tiny (hard tier, open answers); minutes per epoch on CPU.
    "small": Preset(256, 6, 8, 8, 1024, (4, 6, 6), 4, 128, 4, 512, (1, 3), 0.05, vocab_size=2048),
    # ~130M: a GPU-sized student (window attention in most vision blocks, as in Qwen2.5-VL).
    "base": Preset(768, 12, 12, 4, 3072, (8, 12, 12), 8, 384, 6, 1536, (3, 7), 0.02, vocab_size=2048),
}
TOKENS_PER_SECOND = 2  # temporal rope positions per second of video, as Qwen2.5-VL ships (NOTES: 2 fps clips)
FAMILIES = ("qwen2_5_vl", "qwen3_vl", "qwen3_5")
DEFAULT_FAMILY = "qwen2_5_vl"


def build_student(out_dir: str | Path, size: str = "tiny", seed: int = 0, corpus: list[str] | None = None,
                  family: str = DEFAULT_FAMILY) -> Path:
    """Write a from_pretrained folder (model, generation config, processor, chat template) and return its path.

    size: a key of PRESETS. seed: weight initialisation. corpus: tokenizer training texts
    (default: synthvid prompts/answers/reasoning + BENCHMARK_TEXT). family: "qwen2_5_vl"
    (default), "qwen3_vl" or "qwen3_5"; the tokenizer is the same for all three.
    """
    import torch
    from transformers import GenerationConfig

    if size not in PRESETS:
        raise RmsdError(f"unknown student size {size!r}: choose one of {', '.join(PRESETS)}")
    if family not in FAMILIES:
        raise RmsdError(f"unknown student family {family!r}: choose one of {', '.join(FAMILIES)}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise RmsdError(f"{out} is not empty and holds no model config: choose an empty or new folder")
    preset = PRESETS[size]
    texts = corpus if corpus is not None else default_corpus()
    if family == "qwen3_vl":
        from rmsd.models.offline.tiny_qwen3 import build_qwen3_vl_config, build_qwen3_vl_processor

        processor = build_qwen3_vl_processor(texts, preset.vocab_size)
        config = build_qwen3_vl_config(preset, processor.tokenizer)
    elif family == "qwen3_5":
        from rmsd.models.offline.tiny_qwen3_5 import build_qwen3_5_config, build_qwen3_5_processor

        processor = build_qwen3_5_processor(texts, preset.vocab_size)
        config = build_qwen3_5_config(preset, processor.tokenizer)
    else:
        processor = build_processor(texts, preset.vocab_size)
        config = build_config(preset, processor.tokenizer)
    tokenizer = processor.tokenizer
    torch.manual_seed(seed)
    model = model_class(family)(config)
    if family == "qwen3_5":
        from rmsd.models.offline.tiny_qwen3_5 import init_linear_attention

        init_linear_attention(model)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, do_sample=False)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def model_class(family: str):
    """The transformers class of a family's conditional-generation model."""
    from transformers import (
        Qwen2_5_VLForConditionalGeneration,
        Qwen3_5ForConditionalGeneration,
        Qwen3VLForConditionalGeneration,
    )

    return {"qwen3_vl": Qwen3VLForConditionalGeneration,
            "qwen3_5": Qwen3_5ForConditionalGeneration}.get(family, Qwen2_5_VLForConditionalGeneration)


def build_config(preset: Preset, tokenizer) -> object:
    """The Qwen2_5_VLConfig of a preset, token ids taken from `tokenizer`."""
    from transformers import Qwen2_5_VLConfig

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    p = preset
    text = {
        "vocab_size": len(tokenizer), "hidden_size": p.text_hidden, "intermediate_size": p.text_intermediate,
        "num_hidden_layers": p.text_layers, "num_attention_heads": p.text_heads,
        "num_key_value_heads": p.text_kv_heads, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": p.rope_theta, "mrope_section": list(p.mrope_section)},
        "initializer_range": p.initializer_range, "tie_word_embeddings": True,
        "bos_token_id": None, "eos_token_id": ids[IM_END], "pad_token_id": ids[PAD],
    }
    vision = {
        "depth": p.vision_depth, "hidden_size": p.vision_hidden, "num_heads": p.vision_heads,
        "intermediate_size": p.vision_intermediate, "out_hidden_size": p.text_hidden, "patch_size": PATCH,
        "temporal_patch_size": TEMPORAL_PATCH, "spatial_merge_size": MERGE, "tokens_per_second": TOKENS_PER_SECOND,
        "window_size": 112, "fullatt_block_indexes": list(p.fullatt_blocks), "initializer_range": p.initializer_range,
    }
    head_dim = p.text_hidden // p.text_heads
    if p.text_hidden % p.text_heads or head_dim != 2 * sum(p.mrope_section):
        raise ValueError(f"preset: head_dim {head_dim} must equal 2 * sum(mrope_section) {p.mrope_section}")
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids[IMAGE_PAD], video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START], vision_end_token_id=ids[VISION_END], tie_word_embeddings=True,
        initializer_range=p.initializer_range,
    )


def build_processor(corpus: list[str], vocab_size: int = 1024):
    """A Qwen2_5_VLProcessor around a BPE tokenizer trained on `corpus`, sized for small frames."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    pixels = {"size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}, "patch_size": PATCH,
              "temporal_patch_size": TEMPORAL_PATCH, "merge_size": MERGE}
    image_processor = Qwen2VLImageProcessor(**pixels)
    # Frames arrive already sampled (rmsd.media.video) with their fps: no resampling here.
    video_processor = Qwen2VLVideoProcessor(**pixels, do_sample_frames=False, cap_pixels_per_frame=False)
    tokenizer = train_tokenizer(corpus, vocab_size)
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def default_corpus(n_items: int = 600) -> list[str]:
    """synthvid prompts, answers and reasoning-style sentences, plus BENCHMARK_TEXT."""
    from rmsd.synthvid.generator import build_items, describe_objects, object_name

    texts = BENCHMARK_TEXT.splitlines()
    splits = build_items(n_items, seed=12345)
    for item in splits["train"] + splits["test"]:
        objects = item.meta["objects"]
        answer = f"({item.answer})" if item.task_type == "mcq" else item.answer
        texts += [item.prompt, f"<think>{describe_objects(objects, timed=True)}</think><answer>{answer}</answer>",
                  f"The answer is {answer}. " + ", ".join(f"the {object_name(o)}" for o in objects)]
    return texts
