"""What a `rmsd sample` run has to do, and the interface of the modes that do it.

The runner (`rmsd.sampling.sample`) gives each pool teacher a `Lane` (its limits, counters
and record keys), plans the `Job`s still missing from the store (per item, a lane and the
sample indices to ask), and hands each lane to a `SamplingMode`: online
(`rmsd.sampling.online`, one HTTP request per call) or batch (`rmsd.sampling.batch`, the
Batch API). Both modes build an item's media the same way (`build_media`), cut indices into
requests the same way (`chunks`) and store answers as the same records (`record_of`); a
store may mix both, and either resumes the other's.

    rmsd sample --recipe recipes/synthvid/tiny_rmsd.yaml
"""

from __future__ import annotations

import abc
import asyncio
import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmsd.config.pools import PoolConfig, TeacherConfig
from rmsd.datasets.benchmark import repeated_id
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.media.video import encode_jpeg_b64, load_frames, load_image
from rmsd.sampling.keys import KeyMaker
from rmsd.sampling.ratelimit import RateLimiter
from rmsd.sampling.store import SampleStore
from rmsd.teachers.build import gen_params
from rmsd.teachers.teacher import GenParams, Media, Response, Teacher

MEDIA_THREADS = 4  # worker threads decoding and encoding media


@dataclass
class Lane:
    """One teacher's share of a run: its limits, counters and keys."""

    cfg: TeacherConfig
    teacher: Teacher
    params: GenParams
    sem: asyncio.Semaphore
    limiter: RateLimiter
    keys: KeyMaker
    model: str
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("records", "failed", "requests", "retries", "short", "prompt_tokens", "completion_tokens", "truncated",
         "flagged"), 0))
    failures_in_a_row: int = 0
    down_reason: str | None = None

    @property
    def batched(self) -> bool:
        """Sampled through the Batch API (`openai.mode: batch`)."""
        return self.cfg.openai is not None and self.cfg.openai.mode == "batch"


@dataclass(slots=True)  # one per item and teacher: no __dict__ each, less for the GC to walk
class Job:
    item: Item
    lane: Lane
    indices: list[int]  # missing sample indices
    keys: dict[int, str]


Work = list[tuple[Item, list[Job]]]


def make_lanes(pool: PoolConfig, teachers: dict[str, Teacher], num_frames: int = 8, max_side: int | None = None,
               rate_window_s: float = 60.0) -> dict[str, Lane]:
    missing = [t.name for t in pool.teachers if t.name not in teachers]
    if missing:
        raise RmsdError(f"no Teacher object for pool teacher(s) {', '.join(missing)}")
    lanes = {}
    for cfg in pool.teachers:
        teacher = teachers[cfg.name]
        keys = KeyMaker(cfg, pool, frozenset(teacher.media_needs), num_frames, max_side,
                        frozenset(teacher.options_not_in_key))
        lanes[cfg.name] = Lane(
            cfg=cfg, teacher=teacher, params=gen_params(cfg), sem=asyncio.Semaphore(cfg.concurrency),
            limiter=RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute, window_s=rate_window_s),
            keys=keys, model=type(teacher).record_model(cfg))  # the built teacher's class answers
    return lanes


def plan(items: list[Item], lanes: dict[str, Lane], store: SampleStore) -> tuple[Work, list[str]]:
    """Per item, the jobs (teacher, missing indices) still to do; and every key planned."""
    work, planned, seen = [], [], {}
    for item in items:
        if item.item_id in seen:
            raise RmsdError(repeated_id(seen[item.item_id], item))
        seen[item.item_id] = item
        jobs = []
        for lane in lanes.values():
            if item.task_type not in lane.cfg.task_types:
                continue  # task-adaptive pool: this teacher does not serve this task type
            keys = lane.keys.keys(item)
            planned.extend(keys.values())
            missing = [i for i, k in keys.items() if k not in store]
            if missing:
                jobs.append(Job(item, lane, missing, keys))
        if jobs:
            work.append((item, jobs))
    return work, planned


def chunks(indices: list[int], max_n: int | None) -> list[list[int]]:
    """Contiguous runs of `indices`, each at most `max_n` long (a request asks for start..start+n-1)."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][-1] == i - 1 and (max_n is None or len(out[-1]) < max_n):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def build_media(item: Item, needs: frozenset[str], num_frames: int, max_side: int | None) -> Media:
    """Decode/encode once what the pool's teachers need of the item's video or image (a worker thread runs it)."""
    media = Media()
    if item.video:
        path = Path(item.video)
        if needs & {"frames", "jpeg"}:
            frames = load_frames(path, num_frames, max_side)
            media.timestamps = [float(t) for t in frames.timestamps]
            media.duration = float(frames.duration) if frames.duration is not None else None
            media.frames = frames if "frames" in needs else None
            media.jpeg_b64 = encode_jpeg_b64(frames.array) if "jpeg" in needs else []
        if "video" in needs:
            if not path.is_file():
                raise RmsdError(f"{path}: video file not found")
            media.video_b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    elif item.image:
        image = load_image(item.image, max_side)  # [H, W, 3]
        media.frames = image if "frames" in needs else None
        media.jpeg_b64 = encode_jpeg_b64(image) if needs & {"jpeg", "video"} else []  # an image has no video_url
    return media


def media_error(item: Item, error: Exception) -> str:
    """Why an item's samples fail when its media cannot be read (online and batch alike)."""
    return f"media: {error if isinstance(error, RmsdError) else f'cannot read media of {item.item_id}: {error}'}"


def _logprobs(lp: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The store's logprob schema (token, logprob, top_logprobs[token, logprob]), whatever a backend returned."""
    if lp is None:
        return None
    return [{"token": str(t.get("token", "")), "logprob": float(t.get("logprob", 0.0)),
             "top_logprobs": [{"token": str(a.get("token", "")), "logprob": float(a.get("logprob", 0.0))}
                              for a in t.get("top_logprobs") or []]} for t in lp]


def record_of(key: str, item_id: str, teacher: str, model: str, index: int, r: Response, latency: float,
              created: str) -> dict[str, Any]:
    """One store record (`RECORD_FIELDS`, in order) from a `Response`: online and batch results alike."""
    return {"key": key, "item_id": item_id, "teacher": teacher, "model": model, "sample_index": index, "text": r.text,
            "finish_reason": r.finish_reason, "logprobs": _logprobs(r.logprobs), "prompt_tokens": int(r.prompt_tokens),
            "completion_tokens": int(r.completion_tokens), "latency_s": round(latency, 4), "error": r.error,
            "created_at": created}


class SamplingMode(abc.ABC):
    """One way of asking the teachers of the lanes the runner hands it.

    The runner calls `start` on every mode first (what waits longest starts first: batches
    are submitted before online requests begin), then `run` on each, reads `planned` and
    `summary`, and calls `aclose` once, whatever stopped the run. A mode may ask another to
    `sample` work it gives up on (failed batch lines asked online)."""

    def __init__(self, items: list[Item], lanes: dict[str, Lane], store: SampleStore):
        self.items, self.lanes, self.store = items, lanes, store
        self.planned: list[str] = []  # every key of its lanes' items, once `run` (or `start`) has planned them

    async def start(self) -> None:
        """Begin what takes long to come back (nothing, for a mode that answers at once)."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Sample every missing key of its lanes into the store, or record why it failed."""

    @abc.abstractmethod
    async def sample(self, work: Work, label: str | None = None) -> None:
        """Sample exactly `work` (`label`: what its progress shows)."""

    def summary(self) -> dict[str, dict[str, Any]]:
        """This run's figures of the mode per teacher, beyond the lanes' own counters."""
        return {}

    async def aclose(self) -> None:
        """Release what the mode opened (clients, progress bars)."""
