"""Online sampling: one `Teacher.generate` call per HTTP request, as many in flight as the limits allow.

The runner (`rmsd.sampling.sample`) hands this mode the lanes of the teachers not in batch
mode, and the batch mode hands it the failed lines it asks online
(`openai.batch_fallback: online`). For each item:
- frames are decoded and JPEG-encoded once, in a worker thread, only for what its teachers
  need (`Teacher.media_needs`), shared by every teacher and sample, and released when the
  item is done (a window of items in flight bounds memory);
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
  the run completes.

    rmsd sample --recipe recipes/synthvid/tiny_rmsd.yaml [--limit 50]
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from rmsd.credentials import Redactor
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.sampling.ratelimit import backoff_delay
from rmsd.sampling.store import SampleStore, now_iso
from rmsd.sampling.summary import Progress
from rmsd.sampling.work import (
    MEDIA_THREADS,
    Job,
    Lane,
    SamplingMode,
    Work,
    build_media,
    chunks,
    media_error,
    plan,
    record_of,
)
from rmsd.teachers.teacher import Media, Response, TeacherError

CIRCUIT_BREAK_AFTER = 5


@dataclass
class _Failure:
    reason: str
    retryable: bool
    retry_after: float | None = None
    skipped: bool = False  # not sent: the teacher's circuit breaker is open


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


class OnlineMode(SamplingMode):
    """The online teachers of a run: every request sent as it may be, within the limits of its lane and pool."""

    def __init__(self, items: list[Item], lanes: dict[str, Lane], store: SampleStore, num_frames: int,
                 max_side: int | None, *, concurrency: int = 64, progress: bool = True, label: str = "sample",
                 quiet_when_idle: bool = False, backoff_base_s: float = 1.0, backoff_cap_s: float = 60.0,
                 redact: Redactor | None = None):
        super().__init__(items, lanes, store)
        self.num_frames, self.max_side = num_frames, max_side
        self.concurrency = concurrency
        self.show, self.label, self.quiet_when_idle = progress, label, quiet_when_idle
        self.progress = Progress(0, False, label)
        self.media_slots = asyncio.Semaphore(MEDIA_THREADS)
        self.backoff = (backoff_base_s, backoff_cap_s)
        self.redact = redact or Redactor()
        self.rng = random.Random()

    async def run(self) -> None:
        work, self.planned = plan(self.items, self.lanes, self.store)
        await self.sample(work, f"{len(work)} items")

    async def sample(self, work: Work, label: str | None = None) -> None:
        """Ask every request of `work` (a bar of its own: the run's items, or the batch lines asked online)."""
        todo = sum(len(job.indices) for _, jobs in work for job in jobs)
        self.slots = asyncio.Semaphore(self.concurrency)
        shown = f"{self.label}: {label}" if label else self.label
        with Progress(todo, self.show and (todo > 0 or not self.quiet_when_idle), shown) as bar:
            self.progress = bar
            await self.all(work)

    async def all(self, work: Work) -> None:
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
                for job in (j for j in jobs if j.lane.teacher.media_needs):
                    self.fail(job, job.indices, media_error(item, e), attempts=0, breaker=False)
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
