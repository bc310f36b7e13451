"""synthvid: the procedural offline benchmark (tiny mp4 videos of moving shapes + ground truth).

Each video is a fixed dark background on which 1-4 coloured shapes (squares, circles,
triangles; ~20 px on 84 px frames) appear, move linearly left/right/up/down (or stay) and
disappear (an easy-tier object crosses 55-70% of the frame, others 30-50%: `TRAVEL`).
Every item asks one question of one of the four task types (mcq, numeric,
grounding, open) at a difficulty tier (easy: one object; medium: 2-3; hard: 3-4 with
staggered appearance), and carries the whole scene in `Item.meta` (ARCHITECTURE.md,
"synthvid scene"), so judges and the simulated teacher can recompute every answer.

How it differs from a real benchmark: the ground truth is exact and known for every item,
the videos are tiny (a CPU student learns them in minutes, see docs/experiments.md), and the dataset
is a pure function of the seed: same seed, byte-identical JSONL and mp4 files. Appear and
disappear times lie on a 0.5 s grid, so 2 fps frame sampling sees every change, objects
never overlap while both are visible, and colours within a scene are distinct.

    rmsd synthvid --out data/synthvid --n 2000 --seed 0
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rmsd.errors import RmsdError
from rmsd.items import OPTION_LETTERS, TASK_TYPES, Item

GENERATOR_VERSION = "3"  # 3: options read "- red (A)"; 2: the easy tier's objects travel 55-70% of the frame
PALETTE = {  # well separated in RGB and after yuv420p compression
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
    "yellow": (240, 220, 40), "magenta": (220, 60, 220), "cyan": (40, 220, 230),
}
BACKGROUND = (30, 30, 30)
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
TIER_MIX = {"easy": 0.40, "medium": 0.35, "hard": 0.25}
TASK_MIX = {"mcq": 0.55, "numeric": 0.15, "grounding": 0.15, "open": 0.15}
TIME_STEP = 0.5  # appear/disappear grid (s): a 2 fps sampler sees every change
GAP_PX = 2  # minimum distance between the boxes of two objects visible together
# How far a moving object travels, as a share of the frame side (capped by the room it has).
# The easy tier's objects cross most of the frame: at 84 px the student's vision reads the
# clip as 6 x 6 merged tokens of 28 px, and a 25-42 px trip (one token or so) left the tiny
# student's direction words at chance after 1,100 steps (a linear probe on the vision tokens
# reads them at 0.94: benchmarks/probe_direction.py); with 46-59 px trips it answers
# direction questions 0.96 after 1,200 steps (benchmarks/results/learning_easy.md). Medium
# and hard keep shorter trips, so several objects fit apart.
TRAVEL = {"easy": (0.55, 0.70), "medium": (0.30, 0.50), "hard": (0.30, 0.50)}
QUESTION_KINDS = {  # (tier, task type) -> question kinds that can fill it
    ("easy", "mcq"): ("colour", "direction"),
    ("medium", "mcq"): ("direction", "colour"),
    ("medium", "numeric"): ("count",),
    ("medium", "grounding"): ("when",),
    ("medium", "open"): ("describe",),
    ("hard", "mcq"): ("order", "last"),
    ("hard", "numeric"): ("max_visible", "count"),
    ("hard", "grounding"): ("when",),
    ("hard", "open"): ("describe",),
}
FORMAT_HINTS = {
    "mcq": "Reply <think>...</think><answer>(X)</answer>, X the option letter.",
    "numeric": "Reply <think>...</think><answer>N</answer>, N a number.",
    "grounding": "Reply <think>...</think><answer>[start, end]</answer> in seconds.",
    "open": "Reply <think>...</think><answer>...</answer> with a short description.",
}
_MOTION = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "none": (0, 0)}


# ----------------------------------------------------------------------------- scene geometry
def object_name(obj: dict[str, Any]) -> str:
    return f"{obj['colour']} {obj['shape']}"


def visible(obj: dict[str, Any], t: float) -> bool:
    """Visible on [appear_s, disappear_s): the frame at disappear_s no longer shows it."""
    return obj["appear_s"] - 1e-9 <= t < obj["disappear_s"] - 1e-9


def position(obj: dict[str, Any], t: float) -> tuple[float, float]:
    """Centre (x, y) in px at time t: linear from `start` at appear_s to `end` at disappear_s."""
    span = obj["disappear_s"] - obj["appear_s"]
    a = min(max((t - obj["appear_s"]) / span, 0.0), 1.0)
    (x0, y0), (x1, y1) = obj["start"], obj["end"]
    return x0 + a * (x1 - x0), y0 + a * (y1 - y0)


def scene_at(meta: dict[str, Any], t: float) -> list[dict[str, Any]]:
    """The objects visible at time t (s), each with its centre `x`, `y` in px (ground truth)."""
    out = []
    for obj in meta["objects"]:
        if visible(obj, t):
            x, y = position(obj, t)
            out.append({"id": obj["id"], "colour": obj["colour"], "shape": obj["shape"], "size": obj["size"],
                        "x": x, "y": y})
    return out


def frame_times(meta: dict[str, Any]) -> list[float]:
    return [i / meta["fps"] for i in range(meta["num_frames"])]


def max_visible(meta: dict[str, Any]) -> int:
    """The largest number of objects visible in one frame."""
    return max(len(scene_at(meta, t)) for t in frame_times(meta))


def format_span(start: float, end: float) -> str:
    return f"[{start:.1f}, {end:.1f}]"


def describe_objects(objects: list[dict[str, Any]], timed: bool) -> str:
    """The canonical description: one sentence per object, in order of appearance (then id)."""
    sentences = []
    for obj in sorted(objects, key=lambda o: (o["appear_s"], o["id"])):
        motion = "stays still" if obj["direction"] == "none" else f"moves {obj['direction']}"
        if timed:
            sentences.append(f"The {object_name(obj)} appears at {obj['appear_s']:.1f} s and {motion} "
                             f"until {obj['disappear_s']:.1f} s.")
        else:
            sentences.append(f"The {object_name(obj)} {motion}.")
    return " ".join(sentences)


def _grid(lo: float, hi: float) -> list[float]:
    return [k * TIME_STEP for k in range(round(lo / TIME_STEP), round(hi / TIME_STEP) + 1)]


def _timeline(rng: random.Random, tier: str, duration: float) -> list[tuple[float, float]]:
    """(appear_s, disappear_s) per object, sorted by appearance; the tier sets count and staggering."""
    if tier == "easy":
        return [(rng.choice(_grid(0, TIME_STEP)), rng.choice(_grid(duration - TIME_STEP, duration)))]
    if tier == "medium":
        k, latest, min_len = rng.choice((2, 3)), 0.375 * duration, 0.5 * duration
        appears = sorted(rng.choice(_grid(0, latest)) for _ in range(k))
    else:  # staggered: distinct appearance times, so "first" and "last" are well defined
        k, latest, min_len = rng.choice((3, 4)), 0.625 * duration, 0.375 * duration
        appears = sorted(rng.sample(_grid(0, latest), k))
    return [(a, rng.choice(_grid(a + min_len, duration))) for a in appears]


def _separated(a: dict[str, Any], b: dict[str, Any], times: list[float]) -> bool:
    """True when the boxes of a and b keep GAP_PX apart at every frame both are visible."""
    reach = (a["size"] + b["size"]) / 2 + GAP_PX
    for t in times:
        if visible(a, t) and visible(b, t):
            (ax, ay), (bx, by) = position(a, t), position(b, t)
            if abs(ax - bx) < reach and abs(ay - by) < reach:
                return False
    return True


def _trajectory(rng: random.Random, size: int, frame: int, tier: str) -> tuple[list[int], list[int], str]:
    """Start and end centres inside the frame (the whole shape always visible) and the direction."""
    lo, hi = size // 2 + GAP_PX, frame - size // 2 - GAP_PX
    direction = "none" if rng.random() < 0.15 else rng.choice(DIRECTIONS)
    dx, dy = _MOTION[direction]
    near, far = (min(round(f * frame), hi - lo) for f in TRAVEL[tier])
    dist = rng.randint(near, far) if direction != "none" else 0
    along = rng.randint(lo, hi - dist)  # coordinate along the motion axis, before orienting
    across = rng.randint(lo, hi)
    first, last = (along, along + dist) if dx + dy >= 0 else (along + dist, along)
    if dx != 0 or direction == "none":
        return [first, across], [last, across], direction
    return [across, first], [across, last], direction


def sample_scene(rng: random.Random, tier: str, video_id: str, frame: int, fps: int,
                 duration: float) -> dict[str, Any] | None:
    """One scene of the tier, or None when the objects could not be placed apart (caller retries)."""
    size = round(frame * 20 / 84)
    num_frames = round(duration * fps)
    times = [i / fps for i in range(num_frames)]
    colours = rng.sample(list(PALETTE), 4)
    objects: list[dict[str, Any]] = []
    for i, (appear, disappear) in enumerate(_timeline(rng, tier, duration)):
        for _ in range(50):
            start, end, direction = _trajectory(rng, size, frame, tier)
            obj = {"id": i, "colour": colours[i], "shape": rng.choice(SHAPES), "size": size,
                   "appear_s": appear, "disappear_s": disappear, "start": start, "end": end, "direction": direction}
            if all(_separated(obj, other, times) for other in objects):
                objects.append(obj)
                break
        else:
            return None
    return {"video_id": video_id, "duration": float(duration), "fps": fps, "width": frame, "height": frame,
            "num_frames": num_frames, "objects": objects}


# ----------------------------------------------------------------------------- questions
def _mcq(rng: random.Random, correct: str, distractors: list[str]) -> tuple[list[str], str]:
    """Four shuffled options (correct + first distinct distractors) and the correct letter."""
    options = [correct] + [d for d in dict.fromkeys(distractors) if d != correct][:3]
    rng.shuffle(options)
    return options, OPTION_LETTERS[options.index(correct)]


def _colour_distractors(rng: random.Random, scene: dict[str, Any]) -> list[str]:
    in_scene = [o["colour"] for o in scene["objects"]]
    return in_scene + rng.sample([c for c in PALETTE if c not in in_scene], len(PALETTE) - len(in_scene))


def _q_colour(scene, rng, tier):
    objs = scene["objects"]
    if tier == "easy":
        target, text = objs[0], "What colour is the object?"
    else:  # described by its motion, which must single it out
        moving = [o for o in objs if o["direction"] != "none"
                  and sum(p["direction"] == o["direction"] for p in objs) == 1]
        if not moving:
            return None
        target = rng.choice(moving)
        text = f"What colour is the object that moves {target['direction']}?"
    options, answer = _mcq(rng, target["colour"], _colour_distractors(rng, scene))
    return "mcq", text, options, answer, target["id"]


def _q_direction(scene, rng, tier):
    moving = [o for o in scene["objects"] if o["direction"] != "none"]
    if not moving:
        return None
    target = rng.choice(moving)
    text = ("Which direction does the object move?" if tier == "easy"
            else f"Which direction does the {target['colour']} object move?")
    options, answer = _mcq(rng, target["direction"], rng.sample(DIRECTIONS, len(DIRECTIONS)))
    return "mcq", text, options, answer, target["id"]


def _q_order(scene, rng, tier, last=False):
    objs = scene["objects"]
    pick = max if last else min
    target = pick(objs, key=lambda o: o["appear_s"])
    if sum(o["appear_s"] == target["appear_s"] for o in objs) > 1:
        return None
    absent = [f"{c} {rng.choice(SHAPES)}" for c in PALETTE if c not in {o["colour"] for o in objs}]
    options, answer = _mcq(rng, object_name(target), [object_name(o) for o in objs] + rng.sample(absent, len(absent)))
    return "mcq", f"Which object appears {'last' if last else 'first'}?", options, answer, target["id"]


def _q_count(scene, rng, tier):
    return "numeric", "How many objects appear in the video?", [], str(len(scene["objects"])), None


def _q_max_visible(scene, rng, tier):
    return "numeric", "At most, how many objects are visible at the same time?", [], str(max_visible(scene)), None


def _q_when(scene, rng, tier):
    objs = scene["objects"]
    target = max(objs, key=lambda o: o["appear_s"]) if tier == "hard" else rng.choice(objs)
    span = format_span(target["appear_s"], target["disappear_s"])
    return "grounding", f"When is the {object_name(target)} visible?", [], span, target["id"]


def _q_describe(scene, rng, tier):
    timed = tier == "hard"
    text = "Describe when each object appears and how it moves." if timed else "Describe the motion of the objects."
    return "open", text, [], describe_objects(scene["objects"], timed=timed), None


# kind -> builder(scene, rng, tier) returning (task_type, question, options, answer, target id), or None
# when the scene cannot answer it unambiguously (the caller then draws another scene)
BUILDERS = {
    "colour": _q_colour, "direction": _q_direction, "order": _q_order,
    "last": lambda s, r, t: _q_order(s, r, t, last=True), "count": _q_count,
    "max_visible": _q_max_visible, "when": _q_when, "describe": _q_describe,
}


def build_prompt(question: str, options: list[str], task_type: str) -> str:
    """The question, "- red (A)" option lines, then the answer-format instruction.

    The letter follows its option (version 3; "(A) red" before): a reply that names the value
    and then its letter ("The object is red (A).") copies the token that followed " red" in the
    prompt — the lookup a small student learns quickly — instead of finding the token *before* it.
    """
    lines = [question] + [f"- {opt} ({OPTION_LETTERS[i]})" for i, opt in enumerate(options)]
    return "\n".join(lines + [FORMAT_HINTS[task_type]])


# ----------------------------------------------------------------------------- dataset plan
def _normalised(mix: dict[str, float] | None, default: dict[str, float], what: str) -> dict[str, float]:
    mix = dict(default if mix is None else mix)
    if set(mix) - set(default) or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise RmsdError(f"{what} must map {', '.join(default)} to non-negative shares, got {mix}")
    total = sum(mix.values())
    return {k: mix.get(k, 0.0) / total for k in default}


def _plan_slots(n: int, tier_mix: dict[str, float], task_mix: dict[str, float]) -> list[tuple[str, str]]:
    """(tier, task type) per item, counts by largest remainder so even n=40 holds every cell.

    Easy items are mcq only, so medium/hard items take the remaining mcq share; the overall
    task mix is met whenever mcq's share is at least the easy share."""
    rest = {t: max(task_mix[t] - tier_mix["easy"], 0.0) if t == "mcq" else task_mix[t] for t in TASK_TYPES}
    if sum(rest.values()) <= 0:  # an all-mcq mix
        rest = {"mcq": 1.0}
    rest_total = sum(rest.values())
    cells = {("easy", "mcq"): tier_mix["easy"]}
    cells.update({(tier, t): tier_mix[tier] * p / rest_total for tier in ("medium", "hard") for t, p in rest.items()})
    exact = {cell: p * n for cell, p in cells.items()}
    counts = {cell: int(x) for cell, x in exact.items()}
    by_remainder = sorted(exact, key=lambda c: exact[c] - counts[c], reverse=True)
    for cell in by_remainder[: n - sum(counts.values())]:
        counts[cell] += 1
    return [cell for cell, c in counts.items() for _ in range(c)]


def _pack_videos(rng: random.Random, slots: list[tuple[str, str]], per_video: int) -> list[tuple[str, list[str]]]:
    """Group slots of one tier into videos of up to `per_video` questions of distinct kinds."""
    videos: list[tuple[str, list[str]]] = []
    for tier in TIER_MIX:
        tasks = [t for tr, t in slots if tr == tier]
        rng.shuffle(tasks)
        kinds: list[str] = []
        for task in tasks:
            free = [k for k in QUESTION_KINDS[(tier, task)] if k not in kinds]
            if not free or len(kinds) == per_video:
                videos.append((tier, kinds))
                kinds, free = [], list(QUESTION_KINDS[(tier, task)])
            kinds.append(rng.choice(free))
        if kinds:
            videos.append((tier, kinds))
    rng.shuffle(videos)
    return videos


def _video_items(rng: random.Random, video_id: str, tier: str, kinds: list[str], frame: int, fps: int,
                 duration: float) -> list[Item]:
    """Resample the scene until every requested question is answerable, then build the items."""
    for _ in range(1000):
        scene = sample_scene(rng, tier, video_id, frame, fps, duration)
        questions = [BUILDERS[k](scene, rng, tier) for k in kinds] if scene else [None]
        if all(q is not None for q in questions):
            break
    else:  # pragma: no cover - the constraints are satisfiable by construction
        raise RuntimeError(f"synthvid could not build a {tier} scene for {kinds}")
    items = []
    for j, (kind, (task, text, options, answer, target)) in enumerate(zip(kinds, questions, strict=True)):
        meta = {**{k: scene[k] for k in ("video_id", "duration", "fps", "width", "height", "num_frames")},
                "difficulty": tier, "question_kind": kind, "target": target, "objects": scene["objects"]}
        items.append(Item(item_id=f"{video_id}_q{j}", benchmark="synthvid", task_type=task, question=text,
                          prompt=build_prompt(text, options, task), options=options, answer=answer,
                          video=f"videos/{video_id}.mp4", image=None, meta=meta))
    return items


def build_items(n: int, seed: int = 0, test_fraction: float = 0.2, frame_size: int = 84, fps: int = 8,
                duration: float = 4.0, questions_per_video: int = 2, tier_mix: dict[str, float] | None = None,
                task_mix: dict[str, float] | None = None) -> dict[str, list[Item]]:
    """The items of both splits, in memory (no files): {"train": [...], "test": [...]}.

    Videos are split, not items, stratified by tier, so no video is in both splits; no scene is drawn twice, so
    no video's content is either."""
    _validate(n, test_fraction, frame_size, fps, duration, questions_per_video)
    rng = random.Random(f"synthvid:{seed}")
    slots = _plan_slots(n, _normalised(tier_mix, TIER_MIX, "tier_mix"), _normalised(task_mix, TASK_MIX, "task_mix"))
    videos = _pack_videos(rng, slots, questions_per_video)
    test_ids = set()
    for tier in TIER_MIX:
        indices = [i for i, (tr, _) in enumerate(videos) if tr == tier]
        test_ids.update(rng.sample(indices, round(test_fraction * len(indices))))
    splits: dict[str, list[Item]] = {"train": [], "test": []}
    drawn: set[str] = set()
    for i, (tier, kinds) in enumerate(videos):
        # A one-object scene lies on a coarse grid (4 colours, 2 shapes, 4 directions, 0.5 s times), so in a few
        # thousand videos one can come up twice: the same video under two ids, once in each split. A repeated
        # scene is drawn again; sets without a repeat (every one used before this rule) are unchanged.
        while True:
            items = _video_items(rng, f"s{seed}_v{i:05d}", tier, kinds, frame_size, fps, duration)
            scene = json.dumps(items[0].meta["objects"], sort_keys=True)
            if scene not in drawn:
                break
        drawn.add(scene)
        splits["test" if i in test_ids else "train"].extend(items)
    return splits


def _validate(n, test_fraction, frame_size, fps, duration, questions_per_video) -> None:
    if n < 1:
        raise RmsdError(f"synthvid needs n >= 1 items, got {n}")
    if not 0.0 <= test_fraction < 1.0:
        raise RmsdError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if frame_size < 28 or frame_size % 2:
        raise RmsdError(f"frame_size must be an even number >= 28 (H.264 yuv420p), got {frame_size}")
    if not 2 <= fps <= 60:
        raise RmsdError(f"fps must be in [2, 60], got {fps}")
    if not 4.0 <= duration <= 60.0 or abs(duration / TIME_STEP - round(duration / TIME_STEP)) > 1e-9:
        raise RmsdError(f"duration must be a multiple of {TIME_STEP} s in [4, 60], got {duration}")
    if questions_per_video < 1:
        raise RmsdError(f"questions_per_video must be >= 1, got {questions_per_video}")


# ----------------------------------------------------------------------------- rendering
def _mask(shape: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "circle":
        return (xx - size / 2) ** 2 + (yy - size / 2) ** 2 <= (size / 2) ** 2
    return np.abs(xx - size / 2) <= yy / 2  # triangle, apex up, base on the bottom row


def render_frames(meta: dict[str, Any]) -> np.ndarray:
    """All frames of a scene as uint8 [num_frames, height, width, 3]."""
    frames = np.empty((meta["num_frames"], meta["height"], meta["width"], 3), np.uint8)
    frames[:] = BACKGROUND
    for i, t in enumerate(frame_times(meta)):
        for obj in scene_at(meta, t):
            size = obj["size"]
            x0, y0 = round(obj["x"] - size / 2), round(obj["y"] - size / 2)
            region = frames[i, y0 : y0 + size, x0 : x0 + size]
            region[_mask(obj["shape"], size)] = PALETTE[obj["colour"]]
    return frames


def encode_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    """H.264 yuv420p, one thread, fixed GOP, no B-frames, bit-exact muxing: deterministic bytes."""
    import av

    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps, options={
            "crf": "12", "preset": "veryfast", "threads": "1",
            "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.gop_size = fps  # one keyframe per second: cheap seeking
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _prepare(out: Path) -> None:
    """Refuse to write into a folder holding something other than an earlier synthvid run."""
    if out.exists() and any(out.iterdir()) and not (out / "info.json").exists():
        raise RmsdError(f"{out} is not empty and holds no synthvid info.json: choose an empty or new folder")
    shutil.rmtree(out / "videos", ignore_errors=True)
    (out / "videos").mkdir(parents=True, exist_ok=True)


def generate(out_dir: str | Path, n: int, seed: int = 0, test_fraction: float = 0.2, frame_size: int = 84,
             fps: int = 8, duration: float = 4.0, questions_per_video: int = 2,
             tier_mix: dict[str, float] | None = None, task_mix: dict[str, float] | None = None) -> dict[str, Any]:
    """Write videos/<video_id>.mp4, train.jsonl, test.jsonl and info.json under out_dir; return the info.

    An earlier synthvid folder at out_dir is replaced; any other non-empty folder is refused."""
    out = Path(out_dir)
    splits = build_items(n, seed, test_fraction, frame_size, fps, duration, questions_per_video, tier_mix, task_mix)
    _prepare(out)
    for split, items in splits.items():
        done = set()
        for item in items:
            if item.meta["video_id"] not in done:
                encode_mp4(render_frames(item.meta), out / item.video, fps)
                done.add(item.meta["video_id"])
        with (out / f"{split}.jsonl").open("w") as f:
            f.writelines(json.dumps(item.to_dict()) + "\n" for item in items)
    info = _info(splits, seed=seed, n=n, test_fraction=test_fraction, frame_size=frame_size, fps=fps,
                 duration=duration, questions_per_video=questions_per_video)
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _info(splits: dict[str, list[Item]], **params: Any) -> dict[str, Any]:
    def tally(items: list[Item], key) -> dict[str, int]:
        return dict(sorted(Counter(key(it) for it in items).items()))

    counts: dict[str, Any] = {"total": sum(len(v) for v in splits.values())}
    counts.update({split: len(items) for split, items in splits.items()})
    breakdown = {split: {"videos": len({it.meta["video_id"] for it in items}),
                         "task_type": tally(items, lambda it: it.task_type),
                         "difficulty": tally(items, lambda it: it.meta["difficulty"]),
                         "question_kind": tally(items, lambda it: it.meta["question_kind"])}
                 for split, items in splits.items()}
    return {"generator": "rmsd.synthvid.generator", "version": GENERATOR_VERSION, **params,
            "counts": counts, "breakdown": breakdown}
