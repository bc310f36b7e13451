"""`rmsd sample`: query a task-adaptive teacher pool K times per item into a resumable store.

The runner plans every record key (item x teacher serving its task type x sample index;
`rmsd.sampling.keys`), drops the keys the store already holds, and runs the rest on one
asyncio loop:
- frames are decoded and JPEG-encoded once per item, in a worker thread, only for what the
  pool's teachers need (`Teacher.media_needs`), shared by every teacher and sample, and
  released when the item is done (a window of items in flight bounds memory);
- one `Teacher.generate` call is one HTTP request, and each takes its own concurrency slot
  (teacher and pool) and its own requests- and tokens-per-minute budget, spent at the
  moment it is sent (`rmsd.sampling.ratelimit`: counted over any sliding minute, retries
  included), so the endpoint never sees more than the configured concurrency and rate;
- K samples per request where the teacher allows (`max_n_per_request`, read at send
  time); a response with fewer samples than asked (a server that ignores `n`) is stored at
  once and only the missing indices are asked again, as single-sample requests once the
  teacher knows it ignores `n` — nothing received is thrown away or asked twice;
- retries with jittered exponential backoff honouring Retry-After on anything but a user
  error or a non-retryable HTTP status, a per-request timeout, and a circuit breaker: after
  CIRCUIT_BREAK_AFTER requests in a row fail for good, the teacher's remaining work is
  recorded as failed at once instead of retrying against a dead server for hours (a re-run
  retries it);
- records appended as they complete; a failure (item, teacher, reason, keys) logged for
  each request that finally failed, including a missing or corrupt video, while the rest of
  the run completes;
- a rich progress bar and a summary (`rmsd.sampling.summary`) saved as summary.json.

Teachers with `openai.mode: batch` send the same requests through the Batch API instead
(`rmsd.sampling.batch`): submitted before the online teachers start, collected after them,
stored as the same records.

`--shard I/N` keeps the items whose stable hash of item_id is I mod N, so N machines split a
run with no coordination and `rmsd sample merge` joins their stores.

    rmsd sample --recipe recipes/synthvid/tiny_rmsd.yaml [--limit 50] [--shard 0/4] [--cancel | --batch-file F]
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmsd.config import SamplingConfig
from rmsd.credentials import Redactor
from rmsd.data.benchmarks.base import repeated_id
from rmsd.data.items import Item
from rmsd.errors import RmsdError
from rmsd.pool_config import PoolConfig, TeacherConfig
from rmsd.sampling.keys import KeyMaker, legacy_store_error
from rmsd.sampling.ratelimit import RateLimiter, backoff_delay
from rmsd.sampling.store import KEY_VERSION, SampleStore, key_version, now_iso
from rmsd.sampling.summary import Progress, print_summary, summarize
from rmsd.teachers.base import GenParams, Media, Response, Teacher, TeacherError
from rmsd.teachers.pool import gen_params, model_name

CIRCUIT_BREAK_AFTER = 5
MEDIA_THREADS = 4


# ----------------------------------------------------------------------------- sharding
def parse_shard(text: str) -> tuple[int, int]:
    """`"I/N"` -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise RmsdError(f"--shard {text!r}: expected I/N, e.g. 0/4 (0-based shard I of N)") from None
    if n < 1 or not 0 <= i < n:
        raise RmsdError(f"--shard {text}: need 0 <= I < N, e.g. 0/4 .. 3/4")
    return i, n


def shard_of(item_id: str, n: int) -> int:
    """Stable across machines and Python runs (unlike hash())."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") % n


def shard_items(items: list[Item], shard: tuple[int, int]) -> list[Item]:
    i, n = shard
    return [it for it in items if shard_of(it.item_id, n) == i]


# ----------------------------------------------------------------------------- plan
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


@dataclass
class _Failure:
    reason: str
    retryable: bool
    retry_after: float | None = None
    skipped: bool = False  # not sent: the teacher's circuit breaker is open


@dataclass(slots=True)  # one per item and teacher: no __dict__ each, less for the GC to walk
class Job:
    item: Item
    lane: Lane
    indices: list[int]  # missing sample indices
    keys: dict[int, str]


def make_lanes(pool: PoolConfig, teachers: dict[str, Teacher], num_frames: int = 8, max_side: int | None = None,
               rate_window_s: float = 60.0) -> dict[str, Lane]:
    missing = [t.name for t in pool.teachers if t.name not in teachers]
    if missing:
        raise RmsdError(f"no Teacher object for pool teacher(s) {', '.join(missing)}")
    lanes = {}
    for cfg in pool.teachers:
        teacher = teachers[cfg.name]
        keys = KeyMaker(cfg, pool, frozenset(teacher.media_needs), num_frames, max_side,
                        frozenset(getattr(teacher, "options_not_in_key", frozenset())))
        lanes[cfg.name] = Lane(
            cfg=cfg, teacher=teacher, params=gen_params(cfg), sem=asyncio.Semaphore(cfg.concurrency),
            limiter=RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute, window_s=rate_window_s),
            keys=keys, model=model_name(cfg))
    return lanes


def plan(items: list[Item], lanes: dict[str, Lane], store: SampleStore) -> tuple[list[tuple[Item, list[Job]]], list[str]]:
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


# ----------------------------------------------------------------------------- run
def _all(coros: Any) -> Any:
    """An awaitable of coroutines run concurrently; a single one is itself (no task, no extra frame: most
    items have one job and one request)."""
    coros = list(coros)
    return coros[0] if len(coros) == 1 else asyncio.gather(*coros)


async def _timeout(coro: Any, seconds: float) -> Any:
    if hasattr(asyncio, "timeout"):  # Python 3.11+: no extra task per request, unlike wait_for
        async with asyncio.timeout(seconds):
            return await coro
    return await asyncio.wait_for(coro, seconds)


class _Run:
    def __init__(self, store: SampleStore, concurrency: int, num_frames: int, max_side: int | None,
                 progress: Progress, backoff_base_s: float, backoff_cap_s: float, redact: Redactor):
        self.store, self.progress = store, progress
        self.num_frames, self.max_side = num_frames, max_side
        self.concurrency = concurrency
        self.slots = asyncio.Semaphore(concurrency)
        self.media_slots = asyncio.Semaphore(MEDIA_THREADS)
        self.backoff = (backoff_base_s, backoff_cap_s)
        self.redact = redact
        self.rng = random.Random()

    async def all(self, work: list[tuple[Item, list[Job]]]) -> None:
        # items in flight (their media held in memory), topped up in batches: one wake-up of this loop
        # per batch rather than per item, which at hundreds of requests in flight is CPU the client needs
        most = max(2 * self.concurrency, 8)
        refill_at = most - max(1, most // 8)
        tasks: set[asyncio.Task] = set()
        crashed: list[BaseException] = []
        room = asyncio.Event()

        def finished(task: asyncio.Task) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                crashed.append(task.exception())
            if len(tasks) <= refill_at or crashed:
                room.set()

        try:
            for item, jobs in work:
                while len(tasks) >= most and not crashed:
                    room.clear()
                    await room.wait()
                if crashed:  # a bug, not a failed request: stop feeding work and raise it
                    break
                task = asyncio.create_task(self.item(item, jobs))
                task.add_done_callback(finished)
                tasks.add(task)
            await asyncio.gather(*list(tasks))
            if crashed:
                raise crashed[0]
        finally:
            for t in list(tasks):
                t.cancel()

    async def item(self, item: Item, jobs: list[Job]) -> None:
        needs = frozenset().union(*(j.lane.teacher.media_needs for j in jobs if j.lane.down_reason is None))
        media = Media()
        if needs and (item.video or item.image):
            try:
                async with self.media_slots:
                    media = await asyncio.to_thread(build_media, item, needs, self.num_frames, self.max_side)
            except Exception as e:  # a missing/corrupt video fails this item, for the teachers that look at it
                reason = str(e) if isinstance(e, RmsdError) else f"cannot read media of {item.item_id}: {e}"
                for job in (j for j in jobs if j.lane.teacher.media_needs):
                    self.fail(job, job.indices, f"media: {reason}", attempts=0, breaker=False)
                jobs = [j for j in jobs if not j.lane.teacher.media_needs]
        await _all(self.indices(job, job.indices, media) for job in jobs)

    async def indices(self, job: Job, indices: list[int], media: Media) -> None:
        """Sample `indices` of a job: requests of as many samples as the teacher takes now, concurrently."""
        await _all(self.request(job, part, media) for part in chunks(indices, job.lane.teacher.max_n_per_request()))

    async def request(self, job: Job, part: list[int], media: Media) -> None:
        """One request for `part` (retried until it succeeds or fails for good); what it left missing is
        planned again: the samples a short answer lacked, and those a smaller max_n did not ask for."""
        lane, attempt = job.lane, 0
        while True:
            outcome, asked = await self.attempt(job, part, media)
            if not isinstance(outcome, _Failure):
                lane.failures_in_a_row = 0
                responses, latency = outcome
                self.write(job, part[:len(responses)], responses, latency)
                if len(responses) < asked:
                    lane.stats["short"] += 1
                rest = part[len(responses):]
                break
            if outcome.skipped:
                return self.fail(job, part, outcome.reason, attempt, breaker=False)
            if not outcome.retryable or attempt >= lane.cfg.max_retries:
                self.fail(job, part[:asked], outcome.reason, attempt + 1)
                rest = part[asked:]
                break
            lane.stats["retries"] += 1
            await asyncio.sleep(backoff_delay(attempt, *self.backoff, retry_after=outcome.retry_after, rng=self.rng))
            attempt += 1
        if rest:
            await self.indices(job, rest, media)

    async def attempt(self, job: Job, part: list[int], media: Media) -> tuple[tuple[list[Response], float] | _Failure, int]:
        """One HTTP request for the first samples of `part`: ((responses, latency in s) or why it failed, n asked)."""
        lane = job.lane
        async with lane.sem:
            if lane.down_reason is not None:  # checked once a slot is ours: many requests wait here
                return _Failure(f"skipped: {lane.down_reason}; re-run to retry", False, skipped=True), len(part)
            max_n = lane.teacher.max_n_per_request()  # read now: the teacher may have learnt it ignores n
            n = len(part) if max_n is None else max(1, min(len(part), max_n))
            limited = lane.limiter.requests is not None or lane.limiter.tokens is not None
            estimate = lane.teacher.estimate_tokens(job.item, media, n, lane.params) if limited else 0
            spent = None
            while True:
                if limited:
                    await lane.limiter.ready(estimate)
                async with self.slots:  # taken after waiting on the limits: a rate-limited teacher holds no pool slot
                    if limited:
                        spent = lane.limiter.take(estimate)  # spent when sent: the limits count send times
                        if spent is None:
                            continue  # another request took the budget while this one waited for a slot
                    lane.stats["requests"] += 1
                    started = time.perf_counter()
                    outcome = await self.send(job, part[0], n, media)
                    if isinstance(outcome, _Failure) and outcome.reason.startswith("timeout"):
                        await asyncio.sleep(0)  # let the abandoned connection close before its slot is reused
                    break
        if isinstance(outcome, _Failure):
            return outcome, n
        if spent is not None:
            lane.limiter.settle(spent, sum(r.prompt_tokens + r.completion_tokens for r in outcome))
        return (outcome[:n], time.perf_counter() - started), n

    async def send(self, job: Job, start: int, n: int, media: Media) -> list[Response] | _Failure:
        lane = job.lane
        call = lane.teacher.generate(job.item, media, n, lane.params, start_index=start)
        own = lane.teacher.own_timeout_s
        try:
            # a teacher whose client times out by itself needs no second timer (13 us of CPU per request)
            out = await (call if own is not None and own <= lane.cfg.timeout_s else _timeout(call, lane.cfg.timeout_s))
        except TeacherError as e:
            return _Failure(self.redact(str(e)), e.retryable, e.retry_after)
        except (asyncio.TimeoutError, TimeoutError):
            return _Failure(f"timeout: no response within {lane.cfg.timeout_s:g} s", True)
        except RmsdError as e:
            return _Failure(self.redact(str(e)), False)
        except Exception as e:  # malformed output of a backend: worth another try
            return _Failure(self.redact(f"{type(e).__name__}: {e}")[:500], True)
        if not isinstance(out, list) or not out or not all(isinstance(r, Response) for r in out):
            got = f"{len(out)} responses" if isinstance(out, list) else type(out).__name__
            return _Failure(f"teacher returned {got} for n={n} (expected a list of 1..{n} Response)", True)
        return out

    def write(self, job: Job, part: list[int], responses: list[Response], latency: float) -> None:
        lane, created = job.lane, now_iso()
        for index, r in zip(part, responses, strict=True):
            self.store.append(record_of(job.keys[index], job.item.item_id, lane.cfg.name, lane.model, index, r,
                                        latency, created))
            s = lane.stats
            s["records"] += 1
            s["prompt_tokens"] += int(r.prompt_tokens)
            s["completion_tokens"] += int(r.completion_tokens)
            s["truncated"] += r.finish_reason == "length"  # kept as is, marked by finish_reason
            s["flagged"] += r.error is not None
        self.progress.advance(len(part), tokens=sum(r.prompt_tokens + r.completion_tokens for r in responses))
        self.store.sync_soon()

    def fail(self, job: Job, part: list[int], reason: str, attempts: int, breaker: bool = True) -> None:
        lane = job.lane
        self.store.add_failure(job.item.item_id, lane.cfg.name, reason, [job.keys[i] for i in part], attempts)
        lane.stats["failed"] += len(part)
        self.progress.advance(len(part), errors=len(part))
        if breaker:
            lane.failures_in_a_row += 1
            if lane.failures_in_a_row >= CIRCUIT_BREAK_AFTER and lane.down_reason is None:
                lane.down_reason = (f"teacher {lane.cfg.name} stopped after {CIRCUIT_BREAK_AFTER} requests in a row "
                                    f"failed (last: {reason})")


# ----------------------------------------------------------------------------- media
def build_media(item: Item, needs: frozenset[str], num_frames: int, max_side: int | None) -> Media:
    """Decode/encode once what the pool's teachers need of the item's video or image (a worker thread runs it)."""
    from rmsd.data.video import encode_jpeg_b64, load_frames, load_image

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


# ----------------------------------------------------------------------------- entry points
async def run_sampling(items: list[Item], pool: PoolConfig, teachers: dict[str, Teacher], store: SampleStore,
                       num_frames: int = 8, max_side: int | None = None, concurrency: int = 64, progress: bool = True,
                       *, backoff_base_s: float = 1.0, backoff_cap_s: float = 60.0,
                       rate_window_s: float = 60.0) -> dict[str, Any]:
    """Sample every missing key of `items` into `store`; returns (and saves) the summary.

    Teachers in batch mode (`openai.mode: batch`) submit their requests first
    (`rmsd.sampling.batch`), the online teachers run while the batches wait, then the batches
    are collected. `rate_window_s`: the minute of the per-minute limits (tests and benchmarks
    shorten it; the limits scale with it)."""
    if store.key_version != KEY_VERSION:
        raise legacy_store_error(store.path, store.key_version)
    started = time.perf_counter()
    lanes = make_lanes(pool, teachers, num_frames, max_side, rate_window_s)
    redact = Redactor.of_pool(pool)  # one for both runs: a key the batch run learns is starred online too
    online = {n: lane for n, lane in lanes.items() if not _batch_mode(lane)}
    batches = None
    if len(online) < len(lanes) or (store.path / "batches" / "ledger.jsonl").is_file():
        from rmsd.sampling.batch import BatchRun

        batches = BatchRun(items, {n: lane for n, lane in lanes.items() if n not in online}, store, num_frames,
                           max_side, progress, redact)
    try:
        if batches is not None:
            await batches.submit()  # first: a day's wait starts now, and a store's open batches are never re-asked
        work, planned = plan(items, online, store)

        async def sample_online(work: list[tuple[Item, list[Job]]], label: str) -> None:
            todo = sum(len(job.indices) for _, jobs in work for job in jobs)
            with Progress(todo, progress and (todo > 0 or batches is None), label) as bar:
                await _Run(store, concurrency, num_frames, max_side, bar, backoff_base_s, backoff_cap_s,
                           redact).all(work)

        await sample_online(work, f"{pool.name}: {len(work)} items")
        if batches is not None:
            planned += batches.planned
            await batches.finish(lambda work: sample_online(work, f"{pool.name}: batch lines asked online"))
    finally:
        if batches is not None:
            await batches.aclose()  # its clients, whatever stopped the run
    summary = summarize(lanes, store, planned, time.perf_counter() - started,
                        batches.summary() if batches is not None else None)
    store.write_summary(summary)
    return summary


def _batch_mode(lane: Lane) -> bool:
    return lane.cfg.openai is not None and lane.cfg.openai.mode == "batch"


async def _then_close(coro: Any, teachers: dict[str, Teacher]) -> Any:
    try:
        return await coro
    finally:  # clients belong to this event loop: close them in it
        await asyncio.gather(*(t.aclose() for t in teachers.values()), return_exceptions=True)


def sample_into(out: Path, items: list[Item], pool: PoolConfig, sampling: SamplingConfig, num_frames: int,
                max_side: int | None, progress: bool = True, about: dict[str, Any] | None = None, *,
                cancel: bool = False, batch_file: Path | None = None) -> dict[str, Any]:
    """Sample `items` through `pool` into the store at `out` (created or resumed); the summary.

    sampling: the recipe's sampling section (concurrency, fsync cadence). A store written
    under an older key scheme is refused before any teacher is built or anything written.
    `cancel` / `batch_file`: `rmsd sample --cancel` / `--batch-file` instead of sampling
    (`batch_control`); the summary is then {"cancelled": n} / {"exported": lines, "file": path}.
    """
    from rmsd.teachers.pool import build_teachers

    version = key_version(out) if (out / "data").is_dir() else None
    if version not in (None, KEY_VERSION):  # before anything is built or written
        raise legacy_store_error(out, version)
    teachers = build_teachers(pool)  # every config error is raised here, before any request
    if cancel or batch_file is not None:
        from rmsd.sampling.batch import batch_control
    with SampleStore(out, fsync_every=sampling.fsync_every, fsync_ms=sampling.fsync_ms) as store:
        if cancel or batch_file is not None:
            n = asyncio.run(_then_close(batch_control(items, pool, teachers, store, num_frames, max_side, cancel=cancel,
                                                      batch_file=batch_file, progress=progress), teachers))
            return {"cancelled": n} if cancel else {"exported": n, "file": str(batch_file)}
        summary = asyncio.run(_then_close(run_sampling(items, pool, teachers, store, num_frames=num_frames,
                                                       max_side=max_side, concurrency=sampling.concurrency,
                                                       progress=progress), teachers))
        summary.update(about or {})  # who asked: the recipe, the pool, the shard
        store.write_summary(summary)
    if progress:
        print_summary(summary)
    return summary
