"""`rmsd sample` through the Batch API (`openai.mode: batch`): the same requests at half the price, within a day.

For each teacher in batch mode the run writes the missing requests as batch lines
(`rmsd.sampling.batch_files`), uploads each part (`files.create(purpose="batch")`), creates a
batch on `/v1/chat/completions` and records its id in the store's ledger the moment it exists
(`rmsd.sampling.ledger`: each part's life is one state machine, and a resumed run takes every
part from the state its ledger holds: `writing` discarded, `submitting` found or created,
`created` polled).
It then polls with backoff (one line per change off a terminal, a bar per batch on one),
downloads the output and error files, and stores each answer as a record identical to the
online path's: a store may mix both modes, and either mode resumes the other's store.

How it differs from a submit-and-forget script:
- never paying twice: keys in an open batch are never planned again; a killed run resumes
  polling the batches it recorded; a run killed between creating a batch and recording it finds
  the batch again through `batches.list` (each batch carries the store's id and its part tag in
  `metadata`) before it submits anything; a part uploaded but never created is created from the
  uploaded file, not rewritten;
- failed lines (error file, `expired`, a `failed` batch, no choices, `n` honoured only partly)
  are asked again in a new batch, at most `max_retries` rounds, or online with
  `openai.batch_fallback: online`; once a server answers fewer choices than `n`, the rest are
  asked one sample per line; every reason is counted in the summary;
- `rmsd sample --cancel` cancels the store's open batches and stores what they had finished.

Batch control calls (upload, create, poll, download) go to the teacher's first `base_url`
through the official client, which retries them itself (they are few; the sampling requests
are the batch's lines). The key comes from `api_key_env` and is redacted from every message.

    rmsd sample --recipe R --set ...          # with openai.mode: batch in the pool
    rmsd sample --recipe R --cancel
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai

from rmsd.config.pools import PoolConfig
from rmsd.credentials import Redactor
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.sampling.batch_files import (
    ENDPOINT,
    TERMINAL,
    Ingest,
    Part,
    PartWriter,
    custom_id,
    file_lines,
    read_manifest,
    request_line,
)
from rmsd.sampling.ledger import OPEN, Ledger, PartState
from rmsd.sampling.store import SampleStore
from rmsd.sampling.summary import BatchProgress
from rmsd.sampling.work import (
    MEDIA_THREADS,
    Job,
    Lane,
    SamplingMode,
    Work,
    build_media,
    chunks,
    make_lanes,
    media_error,
    plan,
)
from rmsd.teachers.openai_api import DUMMY_KEY, OpenAITeacher, resolve_api_key
from rmsd.teachers.teacher import Media, Teacher

UNANSWERED = {"failed": "failed_batch", "expired": "expired", "cancelled": "cancelled"}
POLL_ERRORS_BEFORE_GIVING_UP = 20


def _media(item: Item, needs: frozenset[str], num_frames: int, max_side: int | None) -> Media | Exception:
    """An item's media, or why it cannot be read (returned: the lines of that item fail, the rest go on)."""
    if not (needs and (item.video or item.image)):
        return Media()
    try:
        return build_media(item, needs, num_frames, max_side)
    except Exception as e:
        return e


class BatchRun(SamplingMode):
    """The batch-mode teachers of one `rmsd sample` run: `start` (submit), then `run` (collect and re-ask), or
    `cancel`, or `export`. `online`: the mode that asks failed lines with `openai.batch_fallback: online`."""

    def __init__(self, items: list[Item], lanes: dict[str, Lane], store: SampleStore, num_frames: int,
                 max_side: int | None, progress: bool = True, redact: Redactor | None = None, *,
                 online: SamplingMode | None = None):
        super().__init__(items, lanes, store)
        self.num_frames, self.max_side = num_frames, max_side
        self.online = online
        self.ledger = Ledger(store.path)
        self.progress = BatchProgress(progress)
        self.redact = redact or Redactor()
        self.stats: dict[str, Counter] = {name: Counter() for name in lanes}
        self.rounds = dict.fromkeys(lanes, 0)
        self.finished: set[str] = set()  # lanes out of batch rounds: fell back online or out of budget
        self.given_up: set[str] = set()  # keys failed for good this run (media, oversized)
        self.reasons: dict[str, str] = {}  # key -> why its last line failed
        self.pending: set[str] = set()  # keys in open parts (their ledger state is in OPEN)
        self.open: dict[str, dict[str, Any]] = {}  # tag -> {tag, teacher, batch_id}: the parts `created`, polled
        self.clients: dict[str, openai.AsyncOpenAI] = {}
        self.media_wait_s = 0.0  # time writing waited for frames (decode + JPEG), for the benchmark
        self.store_id = self.ledger.store_id()
        self.planned = plan(items, lanes, store)[1]

    # ------------------------------------------------------------------------- plumbing
    def client(self, name: str) -> openai.AsyncOpenAI:
        if name not in self.clients:
            opts = self.lanes[name].cfg.openai
            key = resolve_api_key(name, opts)
            if key != DUMMY_KEY:
                self.redact.add(key)
            url = opts.base_url[0] if isinstance(opts.base_url, list) else opts.base_url
            self.clients[name] = openai.AsyncOpenAI(api_key=key, base_url=url, max_retries=3, timeout=600.0)
        return self.clients[name]

    async def call(self, name: str, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await fn()
        except openai.APIError as e:
            raise RmsdError(self.redact(f"teacher {name}: {what} failed at {self.client(name).base_url}: {e}; "
                                        f"re-run the same command to resume (batches are recorded in "
                                        f"{self.ledger.file})")) from None

    def api(self, name: str) -> OpenAITeacher:
        """The lane's teacher, which writes the request lines (only OpenAI-compatible teachers have batches)."""
        teacher = self.lanes[name].teacher
        if not isinstance(teacher, OpenAITeacher):
            raise RmsdError(f"teacher {name}: batch mode needs an OpenAI-compatible teacher, not "
                            f"{type(teacher).__name__}")
        return teacher

    async def aclose(self) -> None:
        self.progress.close()
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)

    # ------------------------------------------------------------------------- planning
    def plan(self) -> Work:
        """The missing samples of the batch lanes still in play, minus those in open batches or given up."""
        lanes = {n: lane for n, lane in self.lanes.items() if n not in self.finished}
        out = []
        for item, jobs in plan(self.items, lanes, self.store)[0]:
            kept = []
            for job in jobs:
                job.indices = [i for i in job.indices if job.keys[i] not in self.pending
                               and job.keys[i] not in self.given_up]
                if job.indices:
                    kept.append(job)
            if kept:
                out.append((item, kept))
        return out

    def with_media(self, work: Work) -> Iterator[tuple[Item, list[Job], Media | Exception]]:
        """Each item of `work` with its media, built ahead in worker threads (decoding is what writing lines
        waits for) and once for consecutive items on the same clip (several questions per video)."""
        ahead: deque[tuple[Item, list[Job], Future]] = deque()
        last: tuple[Any, Future] | None = None
        with ThreadPoolExecutor(MEDIA_THREADS) as threads:
            for item, jobs in work:
                needs = frozenset().union(*(j.lane.teacher.media_needs for j in jobs))
                key = (item.video, item.image, needs)
                if last is None or last[0] != key:
                    last = (key, threads.submit(_media, item, needs, self.num_frames, self.max_side))
                ahead.append((item, jobs, last[1]))
                while len(ahead) > 8 * MEDIA_THREADS:
                    yield self._ready(ahead.popleft())
            while ahead:
                yield self._ready(ahead.popleft())

    def _ready(self, entry: tuple[Item, list[Job], Future]) -> tuple[Item, list[Job], Media | Exception]:
        started = time.perf_counter()
        media = entry[2].result()
        self.media_wait_s += time.perf_counter() - started
        return entry[0], entry[1], media

    def lines(self, item: Item, job: Job, media: Media | Exception) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """The request lines of one job (as the online runner would send them) with their manifest entries."""
        lane = job.lane
        teacher = self.api(lane.cfg.name)
        if isinstance(media, Exception):  # a missing/corrupt video fails this item's samples, as online
            self.give_up(item, job, job.indices, media_error(item, media))
            return
        for part in chunks(job.indices, teacher.max_n_per_request()):
            start = part[0]
            body = teacher.request_body(item, media, len(part), lane.params, start)
            cid = custom_id(job.keys[start], start)
            yield request_line(cid, body), {"custom_id": cid, "item_id": item.item_id, "teacher": lane.cfg.name,
                                            "model": lane.model, "start": start, "keys": [job.keys[i] for i in part]}

    def give_up(self, item: Item, job: Job, indices: list[int], reason: str) -> None:
        keys = [job.keys[i] for i in indices]
        self.store.add_failure(item.item_id, job.lane.cfg.name, reason, keys, 0)
        self.given_up.update(keys)
        self.stats[job.lane.cfg.name]["given_up"] += len(keys)

    # ------------------------------------------------------------------------- submitting
    async def start(self) -> None:
        await self.submit()

    async def submit(self) -> None:
        """Recover what a killed run left, then submit every missing request of the batch lanes."""
        await self.recover()
        await self.sample(self.plan())

    async def sample(self, work: Work, label: str | None = None) -> None:
        """Submit `work` as batches (waited for and collected by `run`)."""
        by_lane: dict[str, list[tuple[Item, Job]]] = defaultdict(list)
        for item, jobs in work:
            for job in jobs:
                by_lane[job.lane.cfg.name].append((item, job))
        for name, jobs in by_lane.items():
            o = self.lanes[name].cfg.openai
            writer = PartWriter(self.ledger, name, o.batch_max_requests, o.batch_max_bytes)
            try:
                for item, (job,), media in self.with_media([(item, [job]) for item, job in jobs]):
                    for line, entry in self.lines(item, job, media):
                        if len(line) > o.batch_max_bytes:
                            self.give_up(item, job, [entry["start"] + i for i in range(len(entry["keys"]))],
                                         f"batch: a request of {len(line):,} bytes exceeds openai.batch_max_bytes")
                            continue
                        closed = writer.add(line, entry)
                        if closed is not None:
                            await self.send(name, closed)
                last = writer.close()
            finally:
                writer.close()  # after an error the part is never uploaded: the next run's recover removes it
            if last is not None:
                await self.send(name, last)

    async def send(self, name: str, part: Part) -> None:
        """Upload a part, record it, create its batch and record that: a kill anywhere here costs nothing twice."""
        client = self.client(name)
        with part.path.open("rb") as f:
            uploaded = await self.call(name, "uploading a batch file",
                                       lambda: client.files.create(file=(part.path.name, f), purpose="batch"))
        self.ledger.add(PartState.SUBMITTING, tag=part.tag, teacher=name, file_id=uploaded.id, lines=part.lines,
                          bytes=part.bytes, round=self.rounds[name], since_s=int(time.time()))
        part.path.unlink()  # the provider holds it now; the manifest stays until the results are in
        self.pending.update(part.keys)
        s = self.stats[name]
        s["lines"] += part.lines
        s["bytes"] += part.bytes
        await self.create(name, part.tag, uploaded.id, part.lines)

    async def create(self, name: str, tag: str, file_id: str, lines: int) -> None:
        client, o = self.client(name), self.lanes[name].cfg.openai
        batch = await self.call(name, "creating a batch", lambda: client.batches.create(
            input_file_id=file_id, endpoint=ENDPOINT, completion_window=o.batch_window,
            metadata={"rmsd_store": self.store_id, "rmsd_part": tag}))
        self.ledger.add(PartState.CREATED, tag=tag, teacher=name, batch_id=batch.id)
        self.stats[name]["batches"] += 1
        self.open[tag] = {"tag": tag, "teacher": name, "batch_id": batch.id}
        self.progress.note(f"batch {batch.id} ({name}): {lines} requests submitted")

    async def recover(self, create_missing: bool = True) -> None:
        """Take each part an earlier run left where its ledger state says it stands: `writing` is discarded (never
        uploaded), `submitting` is found by metadata or created (`create_missing`; else it ends `ingested`, having
        never run), `created` is polled."""
        for tag in self.ledger.in_state(PartState.WRITING):  # killed before its upload was recorded
            for path in (self.ledger.manifest(tag), self.ledger.requests(tag)):
                path.unlink(missing_ok=True)
            self.ledger.add(PartState.DISCARDED, tag=tag)
        for tag, p in self.ledger.in_state(*OPEN).items():
            name = p["teacher"]
            if name not in self.lanes:
                raise RmsdError(f"{self.store.path}: teacher {name} has open batches (part {tag}) but is not in "
                                "batch mode here; run with its openai.mode: batch to collect them, or cancel them "
                                "with rmsd sample --cancel")
            self.pending.update(k for e in read_manifest(self.ledger.manifest(tag)).values() for k in e["keys"])
            if p["state"] is PartState.CREATED:
                self.open[tag] = {"tag": tag, "teacher": name, "batch_id": p["batch_id"]}
                continue
            found = await self.find(name, tag, int(p.get("since_s", 0)))
            if found is not None:
                self.ledger.add(PartState.CREATED, tag=tag, teacher=name, batch_id=found, recovered=True)
                self.open[tag] = {"tag": tag, "teacher": name, "batch_id": found}
            elif create_missing:
                await self.create(name, tag, p["file_id"], int(p.get("lines", 0)))
            else:
                self.ledger.add(PartState.INGESTED, tag=tag, teacher=name, status="never_created", teachers={})

    async def find(self, name: str, tag: str, since_s: int) -> str | None:
        """The id of this store's batch for `tag` (newest first; stops at batches older than the upload)."""
        client = self.client(name)

        async def search() -> str | None:
            async for b in client.batches.list(limit=100):
                md = b.metadata or {}
                if md.get("rmsd_store") == self.store_id and md.get("rmsd_part") == tag:
                    return b.id
                if b.created_at < since_s - 600:
                    return None
            return None

        return await self.call(name, "listing batches", search)

    # ------------------------------------------------------------------------- polling
    async def wait(self) -> None:
        """Poll the open batches until each ends, storing its results as it does."""
        base = min(self.lanes[b["teacher"]].cfg.openai.batch_poll_s for b in self.open.values()) if self.open else 0
        cap = max(self.lanes[b["teacher"]].cfg.openai.batch_poll_max_s for b in self.open.values()) if self.open else 0
        delay, errors = base, 0
        while self.open:
            changed = False
            for b in list(self.open.values()):
                try:
                    batch = await self.client(b["teacher"]).batches.retrieve(b["batch_id"])
                    errors = 0
                except openai.APIError as e:
                    errors += 1
                    if errors >= POLL_ERRORS_BEFORE_GIVING_UP:
                        raise RmsdError(self.redact(f"cannot poll batch {b['batch_id']} ({e}); re-run the same "
                                                    "command to resume polling")) from None
                    continue
                changed |= self.progress.update(b["tag"], b["teacher"], batch)
                if batch.status in TERMINAL:
                    await self.collect(b, batch)
            if self.open:
                delay = base if changed else min(delay * 1.5, max(cap, base))
                await asyncio.sleep(delay)

    async def download(self, name: str, file_id: str, tag: str) -> Any:
        path = self.ledger.results(tag, file_id)
        client = self.client(name)

        async def fetch() -> None:
            async with client.files.with_streaming_response.content(file_id) as response:
                await response.stream_to_file(path)

        await self.call(name, f"downloading file {file_id}", fetch)
        return path

    async def collect(self, b: dict[str, Any], batch: Any) -> None:
        """Store an ended batch's answers; count its failed lines by reason; note a server that ignores `n`."""
        name, tag = b["teacher"], b["tag"]
        manifest = read_manifest(self.ledger.manifest(tag))
        ingest = Ingest(self.store, manifest)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                path = await self.download(name, file_id, tag)
                ingest.lines(file_lines(path))
                path.unlink()
        ingest.unseen(UNANSWERED.get(batch.status, "missing"))
        if batch.status == "failed" and batch.errors is not None and batch.errors.data:
            self.progress.note(self.redact(f"batch {batch.id} ({name}) failed: {batch.errors.data[0].message}"))
        self.ledger.add(PartState.INGESTED, tag=tag, teacher=name, batch_id=batch.id, status=batch.status,
                          teachers=ingest.teachers(), unknown=ingest.unknown, malformed=ingest.malformed)
        for counts in ingest.counts.values():
            self.stats[name].update(counts)
        self.stats[name]["unknown_lines"] += ingest.unknown
        self.reasons.update(ingest.reasons)
        self.pending.difference_update(k for e in manifest.values() for k in e["keys"])
        self.ledger.manifest(tag).unlink(missing_ok=True)  # its results are in: nothing reads it again
        if name in ingest.short:  # a line got fewer choices than its n: with use_n auto, one sample per line now
            self.api(name).answered(*ingest.short[name])
        del self.open[tag]
        self.store.sync_soon()

    # ------------------------------------------------------------------------- rounds
    async def run(self) -> None:
        """Wait for the open batches; ask failed lines again (new batches within the retry budget, or online)."""
        while True:
            await self.wait()
            fallback, again = self.retries(self.plan())
            if fallback:
                await self.ask_online(fallback)
            if not again:
                break
            for name in {j.lane.cfg.name for _, jobs in again for j in jobs}:
                self.rounds[name] += 1
            await self.sample(again)

    def retries(self, work: Work) -> tuple[Work, Work]:
        """Missing samples after a round: (those asked online, those asked in another batch round); the rest,
        out of rounds, recorded as failures."""
        fallback, again = [], []
        for item, jobs in work:
            fb = [j for j in jobs if j.lane.cfg.openai.batch_fallback == "online"]
            rest = [j for j in jobs if j not in fb]
            budget = [j for j in rest if self.rounds[j.lane.cfg.name] < j.lane.cfg.max_retries]
            for job in rest:
                if job not in budget:
                    self.out_of_budget(item, job)
            fallback += [(item, fb)] if fb else []
            again += [(item, budget)] if budget else []
        return fallback, again

    async def ask_online(self, work: Work) -> None:
        """Failed lines of the lanes with `openai.batch_fallback: online`: those lanes leave the batch rounds."""
        if self.online is None:
            raise RmsdError("batch lines to ask online, but this run has no online mode")
        self.finished.update(j.lane.cfg.name for _, jobs in work for j in jobs)
        for _, jobs in work:
            for j in jobs:
                self.stats[j.lane.cfg.name]["fallback_online"] += len(j.indices)
        await self.online.sample(work, "batch lines asked online")

    def out_of_budget(self, item: Item, job: Job) -> None:
        name = job.lane.cfg.name
        keys = [job.keys[i] for i in job.indices]
        reason = Counter(self.reasons.get(k, "missing") for k in keys).most_common(1)[0][0]
        self.store.add_failure(item.item_id, name, f"batch: {reason} (after {self.rounds[name] + 1} batch rounds)",
                               keys, self.rounds[name] + 1)
        self.given_up.update(keys)

    async def cancel(self) -> int:
        """Cancel this store's open batches, wait until they stop, store what they had finished; how many."""
        await self.recover(create_missing=False)
        for b in list(self.open.values()):
            client = self.client(b["teacher"])
            try:
                await client.batches.cancel(b["batch_id"])
            except openai.APIStatusError as e:  # already ended: collected below like the others
                self.progress.note(self.redact(f"batch {b['batch_id']}: {e.message}"))
            self.progress.note(f"batch {b['batch_id']} ({b['teacher']}): cancel requested")
        cancelled = len(self.open)
        await self.wait()
        return cancelled

    async def export(self, path: Any) -> int:
        """`--batch-file`: every missing request of these lanes in one file (no split, nothing submitted)."""
        await self.recover(create_missing=False)
        writer = PartWriter(self.ledger, "export", 1 << 62, 1 << 62, path=path)
        lines = size = 0
        for item, jobs, media in self.with_media(self.plan()):
            for job in jobs:
                for line, entry in self.lines(item, job, media):
                    writer.add(line, entry)
                    lines, size = lines + 1, size + len(line)
        part = writer.close()
        if part is not None:
            self.ledger.add(PartState.EXPORTED, tag=part.tag, teacher="export", file=str(path), lines=lines, bytes=size)
        return lines

    def summary(self) -> dict[str, dict[str, Any]]:
        """This run's batch figures per teacher (summary.json's `batch` of each teacher)."""
        out = {}
        for name, s in self.stats.items():
            reasons = {k.split(":", 1)[1]: v for k, v in s.items() if k.startswith("failed:")}
            out[name] = {
                "batches": s["batches"], "lines": s["lines"], "bytes": s["bytes"],
                "bytes_per_request": round(s["bytes"] / s["lines"], 1) if s["lines"] else None,
                "rounds": self.rounds[name] + (1 if s["lines"] else 0), "records": s["records"],
                "prompt_tokens": s["prompt_tokens"], "completion_tokens": s["completion_tokens"],
                "truncated": s["truncated"], "flagged": s["flagged"],
                "billed_lines": s["billed_lines"], "billed_choices": s["billed_choices"],
                "billed_prompt_tokens": s["billed_prompt_tokens"],
                "billed_completion_tokens": s["billed_completion_tokens"],
                "failed_lines": reasons, "unknown_lines": s["unknown_lines"], "given_up": s["given_up"],
                "fallback_online": s["fallback_online"]}
        return out


async def batch_control(items: list[Item], pool: PoolConfig, teachers: dict[str, Teacher], store: SampleStore,
                        num_frames: int, max_side: int | None, *, cancel: bool = False,
                        batch_file: Path | None = None, progress: bool = True) -> int:
    """`--cancel` (the store's open batches cancelled and collected: how many) or `--batch-file` (the missing
    requests of the pool's openai teachers written to one file, nothing submitted: how many lines)."""
    lanes = {n: lane for n, lane in make_lanes(pool, teachers, num_frames, max_side).items()
             if lane.cfg.openai is not None}
    if not lanes:
        raise RmsdError(f"pool {pool.name} has no backend: openai teacher; batches are for OpenAI-compatible teachers")
    run = BatchRun(items, lanes, store, num_frames, max_side, progress, Redactor.of_pool(pool))
    try:
        return await (run.cancel() if cancel else run.export(batch_file))
    finally:
        await run.aclose()
