"""`rmsd sample`: query a task-adaptive teacher pool K times per item into a resumable store.

The runner plans every record key (item x teacher serving its task type x sample index;
`rmsd.sampling.keys`) through one `Lane` per teacher (`rmsd.sampling.work`), and hands each
lane to a sampling mode that skips the keys the store already holds and asks for the rest:
- `OnlineMode` (`rmsd.sampling.online`): one HTTP request per call, within each teacher's
  concurrency and rate limits, with retries and a circuit breaker;
- `BatchRun` (`rmsd.sampling.batch`), for teachers with `openai.mode: batch`: the same
  requests through the Batch API, submitted before the online teachers start, collected
  after them, stored as the same records (its failed lines may be asked online).
Every mode is started first (batches wait a day: they begin now), then run, then closed
once; a store whose ledger holds open batches gets the batch mode even when no teacher is
in batch mode now, so they are never asked twice. The progress bar and summary are
`rmsd.sampling.summary`'s, saved as summary.json.

`--shard I/N` keeps the items whose stable hash of item_id is I mod N, so N machines split a
run with no coordination and `rmsd sample merge` joins their stores.

    rmsd sample --recipe recipes/synthvid/tiny_rmsd.yaml [--limit 50] [--shard 0/4] [--cancel | --batch-file F]
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

from rmsd.config import SamplingConfig
from rmsd.config.pools import PoolConfig
from rmsd.credentials import Redactor
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.sampling.batch import BatchRun, batch_control
from rmsd.sampling.keys import legacy_store_error
from rmsd.sampling.ledger import Ledger
from rmsd.sampling.online import OnlineMode
from rmsd.sampling.store import KEY_VERSION, SampleStore, key_version
from rmsd.sampling.summary import print_summary, summarize
from rmsd.sampling.work import SamplingMode, make_lanes
from rmsd.teachers.build import build_teachers
from rmsd.teachers.teacher import Teacher


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
    redact = Redactor.of_pool(pool)  # one for every mode: a key the batch mode learns is starred online too
    batched = {n: lane for n, lane in lanes.items() if lane.batched}
    with_batches = bool(batched) or Ledger(store.path).exists()
    online = OnlineMode(items, {n: lane for n, lane in lanes.items() if n not in batched}, store, num_frames,
                        max_side, concurrency=concurrency, progress=progress, label=pool.name,
                        quiet_when_idle=with_batches, backoff_base_s=backoff_base_s, backoff_cap_s=backoff_cap_s,
                        redact=redact)
    modes: list[SamplingMode] = [online]
    if with_batches:  # also without batch teachers now: a store's open batches are never asked online
        modes.append(BatchRun(items, batched, store, num_frames, max_side, progress, redact, online=online))
    try:
        for mode in modes:
            await mode.start()  # first: a day's wait starts now, and a store's open batches are never re-asked
        for mode in modes:
            await mode.run()
    finally:
        for mode in modes:
            await mode.aclose()  # its clients, whatever stopped the run
    figures = {name: f for mode in modes for name, f in mode.summary().items()}
    summary = summarize(lanes, store, [k for mode in modes for k in mode.planned], time.perf_counter() - started,
                        figures or None)
    store.write_summary(summary)
    return summary


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
    version = key_version(out) if (out / "data").is_dir() else None
    if version not in (None, KEY_VERSION):  # before anything is built or written
        raise legacy_store_error(out, version)
    teachers = build_teachers(pool)  # every config error is raised here, before any request
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
