"""A pre-trained base for the offline student: what an Instruct checkpoint brings, built on a CPU.

A real distillation starts from a pretrained, instruction-tuned VLM that already captions
videos and answers in the formats benchmarks ask for: it names an option's letter once it
knows the option's text, writes a number, a time span. The random-weight `tiny` student
(`rmsd.models.offline.tiny`) has none of this, and the finding of issue 14 is that finding the
stated value among shuffled options and naming its letter — not perception — is what
keeps it at chance on multiple choice. `build_pretrained` gives it that skill first, on
material that holds out every question kind the distillation asks (colour, direction,
order, last, count, max_visible, when, describe):

- **format drills** (text only, no video: cheap steps): a fact stated in the prompt,
  options "- .. (A)", and the reply the simulated teachers write, "<think>The cup is blue (B).
  So the answer is (B).</think><answer>(B)</answer>", over many vocabularies (colours,
  directions, shapes, animals, fruits, names, rooms); counting a listed set ("I count 3
  things: ..."); a stated time span ("[1.0, 3.5]");
- **timed captions** of synthvid videos from a split disjoint from any experiment's
  (its own seed), "Caption the video." -> one sentence per object with its times and
  motion;
- **held-out video questions** on the same videos: the shape of an object (a letter
  answer) and how long an object is visible (a number).

How it differs from a real pre-training: a few thousand steps of a plain PyTorch loop
(AdamW, batch of mixed text and video examples, loss on the reply only, through
`rmsd.models.processing.encode`, the inputs `rmsd distill` uses), and the captions read
synthvid's ground truth. The result is an ordinary from_pretrained folder (plus
`pretrain.json`: the recipe, steps, losses, seconds), which a recipe names as
`student.path`.

    rmsd build-student --out runs/student-tiny-pre --pretrain            # ~25 min on one CPU thread
    python -c "from rmsd.models.offline.pretrain import build_pretrained; build_pretrained('runs/pre')"
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rmsd.errors import RmsdError
from rmsd.items import OPTION_LETTERS, Item
from rmsd.synthvid.generator import FORMAT_HINTS, PALETTE, SHAPES, build_prompt, describe_objects, object_name

SHIPPED = Path(__file__).resolve().parents[2] / "assets" / "tiny-base"  # package data: the default recipe's result
PRETRAIN_DATA_SEED = 9001  # the caption split's synthvid seed: no experiment or benchmark uses it
CAPTION_PROMPT = "Caption the video: each object, when it appears and leaves, how it moves."
HELD_OUT_KINDS = ("colour", "direction", "order", "last", "count", "max_visible", "when", "describe")


@dataclass
class Example:
    """One training sequence: the user prompt, the clip (or None for text only), the reply."""

    prompt: str
    response: str
    video: str | None = None
    kind: str = ""


@dataclass
class PretrainConfig:
    """How the base is pre-trained (recorded in pretrain.json).

    steps: optimisation steps; batch_size: examples per step.
    mix: share of each example kind in a batch ("drill" text only; "caption", "shape",
        "duration" with a clip).
    videos: synthvid videos of the caption split (seed PRETRAIN_DATA_SEED).
    drill_general: share of letter drills over vocabularies synthvid never uses.
    lr, warmup_steps: AdamW, linear warm-up then constant, betas (0.9, 0.98), weight decay
        0.01, gradient clip 1.0 (the bench_learning settings).
    """

    steps: int = 3000
    batch_size: int = 32
    mix: dict[str, float] = field(default_factory=lambda: {"drill": 0.5, "shape": 0.25, "caption": 0.15,
                                                           "duration": 0.10})
    videos: int = 1500
    drill_general: float = 0.3
    lr: float = 1e-3
    warmup_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.mix) - set(MAKERS)
        if unknown or not self.mix or any(v < 0 for v in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise RmsdError(f"pretrain mix must give non-negative shares of {', '.join(MAKERS)}, got {self.mix}")
        if self.steps < 1 or self.batch_size < 1 or self.videos < 1:
            raise RmsdError("pretrain steps, batch_size and videos must be >= 1")


# ----------------------------------------------------------------------------- text drills
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "purple", "pink", "white", "black",
           "brown", "grey")
DIRECTIONS = ("left", "right", "up", "down")
SHAPE_WORDS = (*SHAPES, "rectangle", "star", "diamond", "hexagon", "oval")
ANIMALS = ("cat", "dog", "horse", "bird", "fish", "cow", "sheep", "lion", "tiger", "bear", "mouse", "duck")
FRUITS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "pear", "plum", "peach", "melon")
NAMES = ("Anna", "Ben", "Carl", "Dora", "Emma", "Finn", "Greta", "Hugo", "Ida", "Jonas")
ROOMS = ("kitchen", "garden", "office", "hall", "cellar", "attic", "library", "bedroom")
THINGS = ("cup", "box", "ball", "pen", "book", "lamp", "chair", "kite", "car", "hat")
PALETTE_WORDS = tuple(PALETTE)
OBJECTS = tuple(f"{c} {s}" for c in PALETTE for s in SHAPES)
_CONCLUDE = ("So the answer is {}.", "Therefore the answer is {}.", "The correct answer is {}.")


def _options(rng: random.Random, pool: tuple[str, ...], correct: str, k: int) -> tuple[list[str], str]:
    options = [correct] + rng.sample([p for p in pool if p != correct], k - 1)
    rng.shuffle(options)
    return options, OPTION_LETTERS[options.index(correct)]


def _mcq_drill(rng: random.Random, general: float) -> Example:
    """A fact in the prompt (often beside a distractor fact), options, the teachers' short reply.

    general: share drawn from vocabularies synthvid never uses (animals, fruits, names, more
    colours and shapes); the rest use synthvid's own words (its palette, directions, shapes)."""
    thing, other = rng.sample(THINGS, 2)
    colour, name, room = rng.sample(PALETTE_WORDS, 2), rng.sample(NAMES, 2), rng.sample(ROOMS, 2)
    if rng.random() < general:
        templates = (  # (value pool, target, fact about the target, distractor fact, question)
            (COLOURS, thing, "The {t} is {v}.", f"The {other} is {{d}}.", "What colour is the {t}?"),
            (SHAPE_WORDS, colour[0], "The {t} thing is a {v}.", f"The {colour[1]} thing is a {{d}}.",
             "What shape is the {t} thing?"),
            (ANIMALS, name[0], "{t} has a {v}.", f"{name[1]} has a {{d}}.", "Which animal does {t} have?"),
            (FRUITS, name[0], "{t} eats a {v}.", f"{name[1]} eats a {{d}}.", "Which fruit does {t} eat?"),
            (NAMES, room[0], "{v} is in the {t}.", f"{{d}} is in the {room[1]}.", "Who is in the {t}?"),
        )
    else:
        templates = (
            (PALETTE_WORDS, thing, "The {t} is {v}.", f"The {other} is {{d}}.", "What colour is the {t}?"),
            (DIRECTIONS, thing, "The {t} moves {v}.", f"The {other} moves {{d}}.", "Which direction does the {t} move?"),
            (SHAPES, colour[0], "The {t} thing is a {v}.", f"The {colour[1]} thing is a {{d}}.",
             "What shape is the {t} thing?"),
            (OBJECTS, rng.choice(("first", "last")), "The {v} comes {t}.", "The {d} comes in between.",
             "Which object comes {t}?"),
        )
    pool, target, fact, distractor, question = rng.choice(templates)
    k = min(rng.choice((3, 4, 4, 4, 5)), len(pool))
    value = rng.choice(pool)
    options, letter = _options(rng, pool, value, k)
    decoy = rng.choice([o for o in options if o != value])
    said = fact.format(t=target, v=value)
    facts = [said, distractor.format(d=decoy)] if rng.random() < 0.6 else [said]
    rng.shuffle(facts)
    prompt = build_prompt(" ".join(facts) + " " + question.format(t=target), options, "mcq")
    named = fact.format(t=target, v=f"{value} ({letter})")  # the value, then its letter, as the teachers write it
    reply = f"<think>{named} {rng.choice(_CONCLUDE).format(f'({letter})')}</think><answer>({letter})</answer>"
    return Example(prompt, reply, kind="drill")


def _count_drill(rng: random.Random) -> Example:
    k = rng.randint(1, 5)
    names = [f"the {c} {t}" for c, t in zip(rng.sample(COLOURS, k), rng.sample(THINGS, k), strict=True)]
    listed = ", ".join(names[:-1]) + (" and " if k > 1 else "") + names[-1]
    prompt = build_prompt(f"On the table: {listed}. How many things are on the table?", [], "numeric")
    reply = (f"<think>I count {k} thing{'s' * (k != 1)}: {', '.join(names)}. "
             f"{rng.choice(_CONCLUDE).format(k)}</think><answer>{k}</answer>")
    return Example(prompt, reply, kind="drill")


def _span_drill(rng: random.Random) -> Example:
    start = rng.randint(0, 10) / 2
    end = start + rng.randint(1, 8) / 2
    event = rng.choice(("the bell rings", "the light is on", "the music plays", "the door is open"))
    span = f"[{start:.1f}, {end:.1f}]"
    prompt = build_prompt(f"In the clip {event} from {start:.1f} s to {end:.1f} s. When does it happen?", [],
                          "grounding")
    reply = (f"<think>It happens from {start:.1f} s to {end:.1f} s. {rng.choice(_CONCLUDE).format(span)}</think>"
             f"<answer>{span}</answer>")
    return Example(prompt, reply, kind="drill")


def drill(rng: random.Random, general: float = 0.3) -> Example:
    """One text-only format drill: mostly letter lookups, some counts and spans."""
    r = rng.random()
    return _mcq_drill(rng, general) if r < 0.7 else _count_drill(rng) if r < 0.85 else _span_drill(rng)


# ----------------------------------------------------------------------------- video examples
def caption(rng: random.Random, item: Item) -> Example:
    """The timed caption of the item's scene (the describe answer's form, asked another way)."""
    prompt = CAPTION_PROMPT + "\n" + FORMAT_HINTS["open"]
    text = describe_objects(item.meta["objects"], timed=True)
    return Example(prompt, f"<think>I go through the frames in order.</think><answer>{text}</answer>", item.video,
                   "caption")


def shape(rng: random.Random, item: Item) -> Example:
    objects = item.meta["objects"]
    target = rng.choice(objects)
    options, letter = _options(rng, SHAPE_WORDS, target["shape"], 4)
    question = ("What shape is the object?" if len(objects) == 1 else f"What shape is the {target['colour']} object?")
    said = f"The {target['colour']} object is a {target['shape']} ({letter})."
    reply = f"<think>{said} {rng.choice(_CONCLUDE).format(f'({letter})')}</think><answer>({letter})</answer>"
    return Example(build_prompt(question, options, "mcq"), reply, item.video, "shape")


def duration(rng: random.Random, item: Item) -> Example:
    target = rng.choice(item.meta["objects"])
    seconds = target["disappear_s"] - target["appear_s"]
    prompt = build_prompt(f"For how many seconds is the {object_name(target)} visible?", [], "numeric")
    reply = (f"<think>The {object_name(target)} is visible from {target['appear_s']:.1f} s to "
             f"{target['disappear_s']:.1f} s. {rng.choice(_CONCLUDE).format(f'{seconds:g}')}</think>"
             f"<answer>{seconds:g}</answer>")
    return Example(prompt, reply, item.video, "duration")


MAKERS: dict[str, Callable[..., Example]] = {"drill": drill, "caption": caption, "shape": shape, "duration": duration}


def stream(config: PretrainConfig, videos: list[Item]) -> Iterator[list[Example]]:
    """Batches of examples, kinds drawn by `config.mix` (deterministic from config.seed)."""
    rng = random.Random(f"pretrain:{config.seed}")
    kinds, weights = zip(*config.mix.items(), strict=True)
    while True:
        batch = []
        for kind in rng.choices(kinds, weights, k=config.batch_size):
            batch.append(drill(rng, config.drill_general) if kind == "drill"
                         else MAKERS[kind](rng, rng.choice(videos)))
        yield batch


# ----------------------------------------------------------------------------- the loop
def train_steps(model: Any, processor: Any, batches: Iterator[list[Example]], steps: int, lr: float,
                warmup_steps: int = 20, frames_of: Callable[[str], Any] | None = None,
                on_step: Callable[[int, float], None] | None = None, max_seconds: float | None = None) -> dict:
    """Plain AdamW on reply tokens; returns {"steps", "seconds", "losses"} (one loss per step).

    frames_of: path -> Frames (default: rmsd.media.video.load_frames with 8 frames).
    on_step(step, loss): called after every step (evaluations; their time is not counted
    when it raises nothing and the caller subtracts it). max_seconds: stop early.
    """
    import torch

    from rmsd.media.video import load_frames
    from rmsd.models.processing import encode, to_model

    frames_of = frames_of or (lambda path: load_frames(path, num_frames=8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(warmup_steps, 1)))
    losses: list[float] = []
    seconds, model_was_training = 0.0, model.training
    model.train()
    for step in range(1, steps + 1):
        start = time.perf_counter()
        batch = next(batches)
        enc = encode(processor, [ex.prompt for ex in batch],
                     [frames_of(ex.video) if ex.video else None for ex in batch],
                     responses=[ex.response for ex in batch])
        loss = model(**to_model(enc, model)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.item()))
        seconds += time.perf_counter() - start
        if on_step is not None:
            on_step(step, losses[-1])
        if max_seconds is not None and seconds >= max_seconds:
            break
    model.train(model_was_training)
    return {"steps": len(losses), "seconds": seconds, "losses": losses}


# ----------------------------------------------------------------------------- the base
def pretrain_videos(cache: Path, n_videos: int) -> list[Item]:
    """Items of the caption split (one per video), generated once under `cache`."""
    from rmsd.datasets.synthvid import load_items
    from rmsd.synthvid.generator import GENERATOR_VERSION, generate

    folder = cache / f"synthvid-v{GENERATOR_VERSION}-s{PRETRAIN_DATA_SEED}-v{n_videos}"
    if not (folder / "info.json").is_file():
        generate(folder, n=2 * n_videos, seed=PRETRAIN_DATA_SEED, test_fraction=0.0)
    seen, items = set(), []
    for item in load_items(folder, "train"):
        if item.meta["video_id"] not in seen:
            seen.add(item.meta["video_id"])
            items.append(item)
    return items


def drill_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Drill and video-example texts for the tokenizer, so their words are tokens rather than bytes."""
    rng = random.Random(f"corpus:{seed}")
    out = []
    for _ in range(n):
        ex = drill(rng)
        out += [ex.prompt, ex.response]
    out += [CAPTION_PROMPT, "What shape is the object?", "For how many seconds is the object visible?"] * 20
    return out


def pretrained_base(out_dir: str | Path, size: str = "tiny", seed: int = 0, config: PretrainConfig | None = None,
                    cache: str | Path | None = None, rebuild: bool = False,
                    log: Callable[[str], None] | None = print) -> Path:
    """The pre-trained base in `out_dir`: a copy of the shipped one (`SHIPPED`, the package's
    assets/tiny-base, seconds) when there is one built with exactly this size, seed and recipe,
    else trained now (`build_pretrained`)."""
    config = config or PretrainConfig(seed=seed)
    if not rebuild and shipped_matches(size, seed, config):
        out = copy_shipped(out_dir)
        if log is not None:
            log(f"copied the shipped pre-trained base ({SHIPPED}); --rebuild trains it again")
        return out
    return build_pretrained(out_dir, size, seed, config, cache, log)


def copy_shipped(out_dir: str | Path) -> Path:
    """A copy of the shipped base (`student.build: tiny-pretrained`) in `out_dir`; seconds, no training."""
    import shutil

    if not (SHIPPED / "pretrain.json").is_file():
        raise RmsdError(f"this rmsd has no shipped pre-trained base ({SHIPPED}): build one with `rmsd build-student "
                        "--out DIR --pretrain` and name it as student.path")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise RmsdError(f"{out} is not empty and holds no model config: choose an empty or new folder")
    shutil.copytree(SHIPPED, out, dirs_exist_ok=True)
    return out


def is_shipped_copy(folder: str | Path) -> bool:
    """Whether `folder` holds the shipped base (its pretrain.json and weights are the shipped ones)."""
    folder = Path(folder)
    return all((folder / name).is_file() and (SHIPPED / name).is_file()
               and (folder / name).read_bytes() == (SHIPPED / name).read_bytes()
               for name in ("pretrain.json", "model.safetensors"))


def shipped_matches(size: str, seed: int, config: PretrainConfig) -> bool:
    """Whether the shipped base is the result of this size, seed and recipe (all steps done)."""
    record = SHIPPED / "pretrain.json"
    if not record.is_file():
        return False
    done = json.loads(record.read_text())
    return (done.get("size"), done.get("seed"), done.get("config"), done.get("steps")) == (
        size, seed, json.loads(json.dumps(asdict(config))), config.steps)


def build_pretrained(out_dir: str | Path, size: str = "tiny", seed: int = 0, config: PretrainConfig | None = None,
                     cache: str | Path | None = None, log: Callable[[str], None] | None = print) -> Path:
    """Build a `size` student, pre-train it (module docstring) and save it as a from_pretrained folder."""
    from rmsd.models.offline.tiny import build_student, default_corpus
    from rmsd.models.processing import load_student

    config = config or PretrainConfig(seed=seed)
    out = Path(out_dir)
    cache = Path(cache) if cache is not None else out.parent / "pretrain-cache"
    build_student(out, size=size, seed=seed, corpus=default_corpus() + drill_corpus())
    model, processor = load_student(out)
    videos = pretrain_videos(cache, config.videos)
    every = max(config.steps // 10, 1)
    losses: list[float] = []
    started = time.perf_counter()

    def progress(step: int, loss: float) -> None:
        losses.append(loss)
        if step % every == 0 or step == config.steps:
            if log is not None:
                log(f"pretrain step {step}/{config.steps} loss {loss:.3f}")
            _save(model, out, size, seed, config, losses, time.perf_counter() - started)  # a usable snapshot

    train_steps(model, processor, stream(config, videos), config.steps, config.lr, config.warmup_steps,
                on_step=progress)
    record = json.loads((out / "pretrain.json").read_text())
    if not math.isfinite(record["final_loss"]):
        raise RmsdError(f"pre-training diverged (loss {record['final_loss']}): lower the lr")
    return out


def _provenance(size: str, seed: int, config: PretrainConfig) -> dict:
    """What rebuilds this base and what built it: the command, library versions, threads."""
    import platform

    import torch
    import transformers

    defaults = PretrainConfig(seed=config.seed)
    flags = [f"--size {size}"] * (size != "tiny") + [f"--seed {seed}"] * (seed != 0)
    flags += [f"--pretrain-steps {config.steps}"] * (config.steps != defaults.steps)
    flags += [f"--pretrain-videos {config.videos}"] * (config.videos != defaults.videos)
    return {"command": " ".join(["rmsd build-student --out OUT --pretrain --rebuild", *flags]),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads()}


def _save(model: Any, out: Path, size: str, seed: int, config: PretrainConfig, losses: list[float],
          seconds: float) -> None:
    """The weights and pretrain.json (recipe, steps so far, losses): every snapshot is a complete base."""
    model.save_pretrained(out)
    tail = losses[-50:]
    record = {"size": size, "seed": seed, "config": asdict(config), "held_out_kinds": list(HELD_OUT_KINDS),
              **_provenance(size, seed, config),
              "caption_split_seed": PRETRAIN_DATA_SEED, "steps": len(losses), "seconds": round(seconds, 1),
              "final_loss": sum(tail) / len(tail),
              "loss_every_100": [round(sum(losses[i:i + 100]) / len(losses[i:i + 100]), 4)
                                 for i in range(0, len(losses), 100)]}
    (out / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
