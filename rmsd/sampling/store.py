"""The sample store: an append-only, content-addressed folder of teacher responses.

Layout (a Hugging Face dataset folder: `datasets.load_dataset("runs/x/samples")` reads it
with the exact schema declared in its README.md card)::

    README.md                     dataset card: features, configs (default = records, failures)
    data/train-<n>-<time>.jsonl   records, one part file per run, never rewritten
    failures.jsonl                item/teacher/reason of requests that finally failed (latest state)
    summary.json                  counts, tokens, cost, wall time, throughput of the last run

How it differs from a plain JSONL dump: every record has a key
`hash(item_id, teacher, model identity, generation params, system prompt, prompt template,
sample_index)` — the sample index is part of it, or K samples would collapse into one — so a
re-run skips keys already present and completes exactly the missing ones. Each run appends
to its own new part file and flushes every record to the OS as it completes (a `kill -9`
loses only requests in flight; `flush_every` sets how many records share one fsync, which
only matters if the machine itself goes down). A line cut by a kill is repaired (dropped)
when the store is next opened, and readers skip it before that. A lock file stops two runs
from writing one store at once.

    rmsd sample --recipe recipes/synthvid/tiny_rmsd.yaml      # writes, or resumes, a store
    rmsd sample merge runs/a/samples runs/b/samples --out runs/all/samples
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rmsd.errors import RmsdError

KEY_VERSION = 1
RECORD_FIELDS = ("key", "item_id", "teacher", "model", "sample_index", "text", "finish_reason", "logprobs",
                 "prompt_tokens", "completion_tokens", "latency_s", "error", "created_at")
FAILURE_FIELDS = ("item_id", "teacher", "reason", "keys", "attempts", "created_at")
_KEY_PREFIX = '{"key": "'

# The card declares the schema so a column that is null in the first part file (error,
# logprobs) does not make `datasets` infer type null and then fail on a later file.
DATASET_CARD = """---
dataset_info:
  features:
  - {name: key, dtype: string}
  - {name: item_id, dtype: string}
  - {name: teacher, dtype: string}
  - {name: model, dtype: string}
  - {name: sample_index, dtype: int64}
  - {name: text, dtype: string}
  - {name: finish_reason, dtype: string}
  - name: logprobs
    list:
    - {name: token, dtype: string}
    - {name: logprob, dtype: float64}
    - name: top_logprobs
      list:
      - {name: token, dtype: string}
      - {name: logprob, dtype: float64}
  - {name: prompt_tokens, dtype: int64}
  - {name: completion_tokens, dtype: int64}
  - {name: latency_s, dtype: float64}
  - {name: error, dtype: string}
  - {name: created_at, dtype: string}
configs:
- config_name: default
  data_files:
  - {split: train, path: data/*.jsonl}
- config_name: failures
  data_files:
  - {split: train, path: failures.jsonl}
---
# rmsd sample store

Teacher responses written by `rmsd sample`, one record per response, keyed by
`hash(item_id, teacher, model, generation params, prompt, sample_index)`.

```python
import datasets
records = datasets.load_dataset("{path}")["train"]
failures = datasets.load_dataset("{path}", "failures")["train"]
```
"""


def record_key(item_id: str, teacher: str, identity: Any, params: dict[str, Any], system_prompt: str | None,
               prompt_template: str, sample_index: int) -> str:
    """Content address of one response: the same request and sample index give the same key."""
    payload = [KEY_VERSION, item_id, teacher, identity, params, system_prompt, prompt_template, int(sample_index)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _dump(row: dict[str, Any]) -> str:
    # key first, so `_fast_key` can read it without parsing a record full of logprobs
    return json.dumps(row, ensure_ascii=False) + "\n"


def _fast_key(line: str) -> str | None:
    if line.startswith(_KEY_PREFIX) and line[len(_KEY_PREFIX) + 64: len(_KEY_PREFIX) + 65] == '"':
        return line[len(_KEY_PREFIX): len(_KEY_PREFIX) + 64]
    return None


def _complete_lines(path: Path) -> Iterator[str]:
    """The newline-terminated lines of a file; an unterminated last line (cut by a kill) is skipped."""
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):
                yield line


def part_files(path: str | Path) -> list[Path]:
    return sorted((Path(path) / "data").glob("*.jsonl"))


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete record of a store, first occurrence of each key only."""
    seen: set[str] = set()
    for part in part_files(path):
        for n, line in enumerate(_complete_lines(part), 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise RmsdError(f"{part}:{n} is not a valid record: the store is damaged; remove that line") from None
            if row["key"] not in seen:
                seen.add(row["key"])
                yield row


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a store (see `iter_records`); [] for an empty or missing store."""
    return list(iter_records(path))


def read_failures(path: str | Path) -> list[dict[str, Any]]:
    file = Path(path) / "failures.jsonl"
    return [json.loads(line) for line in _complete_lines(file)] if file.is_file() else []


def _repair(part: Path) -> int:
    """Cut an unterminated last line (a record half-written when the process was killed); bytes removed."""
    size = part.stat().st_size
    if size == 0:
        return 0
    with part.open("rb+") as f:
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        f.seek(0)
        keep = f.read().rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


class SampleStore:
    """An open store: the keys present, per-teacher totals, and this run's own part file.

    Use as a context manager; `close()` compacts failures.jsonl to its latest state (an
    item/teacher failure whose keys are all present now is dropped).
    """

    def __init__(self, path: str | Path, flush_every: int = 1):
        self.path = Path(path)
        self.flush_every = max(1, int(flush_every))
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "data").mkdir(exist_ok=True)
        self._lock = self._take_lock()
        self.keys: set[str] = set()
        self.totals: dict[str, dict[str, int]] = defaultdict(lambda: {"records": 0, "prompt_tokens": 0,
                                                                       "completion_tokens": 0})
        try:
            self.repaired_bytes = sum(_repair(p) for p in part_files(self.path))
            self._load()
        except BaseException:
            self._lock.close()
            raise
        card = self.path / "README.md"
        if not card.exists():
            card.write_text(DATASET_CARD.replace("{path}", str(self.path)))
        # run number first: parts sort in run order (the lock makes the number ours)
        run = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        number = len(part_files(self.path))
        self.part = self.path / "data" / f"train-{number:05d}-{run}-{secrets.token_hex(3)}.jsonl"
        self._file = None
        self._failures = None
        self._unsynced = 0
        self._sync_lock = asyncio.Lock()
        self.failures_this_run = 0

    def _take_lock(self) -> Any:
        lock = (self.path / ".lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RmsdError(f"{self.path}: another `rmsd sample` is writing this store; wait for it or use --out") from None
        return lock

    def _load(self) -> None:
        for part in part_files(self.path):
            for n, line in enumerate(_complete_lines(part), 1):
                key = _fast_key(line)
                if key is not None and key in self.keys:
                    continue  # a duplicate (e.g. two merged copies): counted once, never parsed
                try:
                    self._count(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise RmsdError(f"{part}:{n} is not a valid record: the store is damaged; remove that line") from None

    def _count(self, row: dict[str, Any]) -> None:
        if row["key"] in self.keys:
            return
        self.keys.add(row["key"])
        t = self.totals[row["teacher"]]
        t["records"] += 1
        t["prompt_tokens"] += int(row.get("prompt_tokens") or 0)
        t["completion_tokens"] += int(row.get("completion_tokens") or 0)

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------- writing
    def append(self, record: dict[str, Any]) -> bool:
        """Write one record (flushed to the OS at once); False if its key is already present."""
        if record["key"] in self.keys:
            return False
        missing = [f for f in RECORD_FIELDS if f not in record]
        if missing:
            raise ValueError(f"record lacks {missing}")
        if self._file is None:
            self._file = self.part.open("a", encoding="utf-8")
        self._file.write(_dump({f: record[f] for f in RECORD_FIELDS}))
        self._file.flush()
        self._count(record)
        self._unsynced += 1
        return True

    async def sync_if_due(self) -> None:
        """fsync in a worker thread once `flush_every` records are unsynced; concurrent callers share one fsync."""
        if self._unsynced < self.flush_every or self._file is None:
            return
        async with self._sync_lock:
            if self._unsynced >= self.flush_every:
                self._unsynced = 0
                await asyncio.to_thread(os.fsync, self._file.fileno())

    def add_failure(self, item_id: str, teacher: str, reason: str, keys: list[str], attempts: int) -> None:
        if self._failures is None:
            self._failures = (self.path / "failures.jsonl").open("a", encoding="utf-8")
        row = {"item_id": item_id, "teacher": teacher, "reason": reason, "keys": keys, "attempts": attempts,
               "created_at": now_iso()}
        self._failures.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._failures.flush()
        self.failures_this_run += 1

    def open_failures(self) -> list[dict[str, Any]]:
        """The latest state: per item/teacher, the keys still missing and the latest reason; solved ones dropped."""
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for row in read_failures(self.path):
            pair = (row["item_id"], row["teacher"])
            keys = (merged[pair]["keys"] if pair in merged else []) + list(row.get("keys") or [])
            merged[pair] = {**row, "keys": list(dict.fromkeys(keys))}
        open_rows = []
        for row in merged.values():
            row["keys"] = [k for k in row["keys"] if k not in self.keys]
            if row["keys"]:
                open_rows.append(row)
        return open_rows

    def write_summary(self, summary: dict[str, Any]) -> None:
        tmp = self.path / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, self.path / "summary.json")

    def close(self) -> None:
        for f in (self._file, self._failures):
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
                f.close()
        self._file = self._failures = None
        if (self.path / "failures.jsonl").is_file():
            self._rewrite_failures(self.open_failures())
        if self.part.exists() and self.part.stat().st_size == 0:
            self.part.unlink()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _rewrite_failures(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path / "failures.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / "failures.jsonl")


def merge_stores(paths: list[Path], out: Path) -> int:
    """Join stores (e.g. `--shard I/N` runs) into `out` without duplicate keys; records now in `out`."""
    out = Path(out)
    srcs = [Path(p) for p in paths]
    for p in srcs:
        if not (p / "data").is_dir():
            raise RmsdError(f"{p}: not a sample store (no data/ folder); pass folders written by `rmsd sample`")
        if p.resolve() == out.resolve():
            raise RmsdError(f"{p}: the merge output must not be one of its inputs")
    failures: list[dict[str, Any]] = []
    with SampleStore(out) as store:
        for p in srcs:
            for row in iter_records(p):
                store.append(row)
            failures.extend(read_failures(p))
        for row in failures:
            store.add_failure(row["item_id"], row["teacher"], row["reason"], row.get("keys") or [],
                              row.get("attempts", 0))
        store.write_summary({"merged_from": [str(p) for p in srcs], "records": len(store),
                             "teachers": {k: dict(v) for k, v in sorted(store.totals.items())}})
        return len(store)
