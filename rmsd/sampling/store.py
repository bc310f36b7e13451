"""The sample store: an append-only, content-addressed folder of teacher responses.

Layout (a Hugging Face dataset folder: `datasets.load_dataset("runs/x/samples")` reads it
with the exact schema declared in its README.md card)::

    README.md                     dataset card: features and configs (records; failures, when there are any)
    store.json                    {"format": "rmsd-sample-store", "key_version": 2}
    data/train-<n>-<time>.jsonl   records, one part file per run, never rewritten
    failures.jsonl                item/teacher/reason of requests that finally failed (latest state)
    summary.json                  counts, tokens, cost, wall time, throughput of the last run
    batches/                      in batch mode: the ledger of batch parts and their manifests (`rmsd.sampling.ledger`)

How it differs from a plain JSONL dump: every record has a key (`rmsd.sampling.keys`: the
item, the teacher, every setting that changes its answers, and the sample index — without
the index, K samples would collapse into one), so a re-run skips keys already present and
completes exactly the missing ones. `store.json` says which key scheme the records use; a
store from before it (no `store.json`, key version 1) is refused for sampling with what to
do (`rmsd sample rekey`), and read as usual by `rmsd match` and `rmsd sample merge`.

Durability: each run appends to its own new part file and flushes every record to the
operating system as it completes, so a `kill -9` of rmsd loses only requests in flight. A
power loss or kernel crash can also lose what the OS had not yet written to disk: the
records since the last fsync, which runs every `fsync_every` records or `fsync_ms`
milliseconds, whichever comes first (recipe keys `sampling.fsync_every`,
`sampling.fsync_ms`). A line cut by either is dropped when the store is next opened (data
parts and failures.jsonl alike), and readers skip it before that; a complete line that is
not a record is damage, reported with its file and line. A lock file stops two runs from
writing one store at once.

`datasets.load_dataset(store, "failures")` reads the failures of a store that has some;
the card lists that config only then (`datasets` cannot load a split with no rows), and
`read_failures(store)` works on every store.

    rmsd sample --recipe recipes/synthvid/tiny_rmsd.yaml      # writes, or resumes, a store
    rmsd sample merge runs/a/samples runs/b/samples --out runs/all/samples
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rmsd.errors import RmsdError

KEY_VERSION = 2
STORE_FILE = "store.json"
BATCH_DIR = "batches"
RECORD_FIELDS = ("key", "item_id", "teacher", "model", "sample_index", "text", "finish_reason", "logprobs",
                 "prompt_tokens", "completion_tokens", "latency_s", "error", "created_at")
_KEY_PREFIX = '{"key": "'

_RECORD_FEATURES = """  - {name: key, dtype: string}
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
"""
_FAILURE_FEATURES = """  - {name: item_id, dtype: string}
  - {name: teacher, dtype: string}
  - {name: reason, dtype: string}
  - {name: keys, sequence: string}
  - {name: attempts, dtype: int64}
  - {name: created_at, dtype: string}
"""


def dataset_card(path: Path, has_failures: bool) -> str:
    """The card: the schema is declared so a column that is null in the first part file (error, logprobs)
    does not make `datasets` infer type null and then fail on a later file."""
    path = path.resolve()  # the snippet runs from any folder, not only where `rmsd sample` ran
    info = "dataset_info:\n- config_name: default\n  features:\n" + _RECORD_FEATURES
    configs = "configs:\n- config_name: default\n  data_files:\n  - {split: train, path: data/*.jsonl}\n"
    load = f'records = datasets.load_dataset("{path}")["train"]\n'
    if has_failures:
        info += "- config_name: failures\n  features:\n" + _FAILURE_FEATURES
        configs += "- config_name: failures\n  data_files:\n  - {split: train, path: failures.jsonl}\n"
        load += f'failures = datasets.load_dataset("{path}", "failures")["train"]\n'
        note = "Requests that finally failed are in failures.jsonl (config `failures`); re-run `rmsd sample` to retry them."
    else:
        note = "No request of this store failed for good, so it has no `failures` config."
    return (f"---\n{info}{configs}---\n# rmsd sample store\n\n"
            "Teacher responses written by `rmsd sample`, one record per response, keyed by the item, the teacher,\n"
            f"every setting that changes its answers, and the sample index.\n\n```python\nimport datasets\n{load}```\n\n"
            f"{note}\n")


def write_card(path: Path) -> None:
    failures = path / "failures.jsonl"
    _write_atomic(path / "README.md", dataset_card(path, failures.is_file() and failures.stat().st_size > 0))


_SECOND: list[Any] = [None, ""]  # the last second formatted, reused: one record per ms needs no strftime


def now_iso() -> str:
    """UTC time with milliseconds, as `datetime.isoformat(timespec="milliseconds")` writes it."""
    t = time.time()
    second = int(t)
    if second != _SECOND[0]:
        _SECOND[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_SECOND[1]}.{int((t - second) * 1000):03d}+00:00"


_ENCODER = json.JSONEncoder(ensure_ascii=False)  # json.dumps(..., ensure_ascii=False) builds one per call
_STR = json.encoder.encode_basestring  # the C string encoder the JSONEncoder above uses


def _dump(row: dict[str, Any]) -> str:
    """One JSON line, key first (so `_fast_key` reads it without parsing a record full of logprobs).

    A record from the runner (no logprobs, fields of their declared types) is written out field by
    field: the same text as the JSON encoder's, in a third of its CPU time, which at a thousand
    records a second is CPU the HTTP client needs."""
    if len(row) != len(RECORD_FIELDS):
        return _ENCODER.encode(row) + "\n"
    (key, item_id, teacher, model, index, text, finish, logprobs, prompt, completion, latency, error,
     created) = row.values()
    if (logprobs is None and type(key) is str and type(item_id) is str and type(teacher) is str
            and type(model) is str and type(index) is int and type(text) is str and type(finish) is str
            and type(prompt) is int and type(completion) is int and type(latency) is float
            and (error is None or type(error) is str) and type(created) is str and tuple(row) == RECORD_FIELDS):
        return (f'{{"key": {_STR(key)}, "item_id": {_STR(item_id)}, "teacher": {_STR(teacher)}, '
                f'"model": {_STR(model)}, "sample_index": {index}, "text": {_STR(text)}, '
                f'"finish_reason": {_STR(finish)}, "logprobs": null, "prompt_tokens": {prompt}, '
                f'"completion_tokens": {completion}, "latency_s": {float.__repr__(latency)}, '
                f'"error": {"null" if error is None else _STR(error)}, "created_at": {_STR(created)}}}\n')
    return _ENCODER.encode(row) + "\n"


def _fast_key(line: str) -> str | None:
    if line.startswith(_KEY_PREFIX) and line[len(_KEY_PREFIX) + 64: len(_KEY_PREFIX) + 65] == '"':
        return line[len(_KEY_PREFIX): len(_KEY_PREFIX) + 64]
    return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _complete_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of the newline-terminated lines; an unterminated last line (cut by a kill) is skipped."""
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if line.endswith("\n"):
                yield n, line


def _damaged(file: Path, n: int, what: str) -> RmsdError:
    return RmsdError(f"{file}:{n}: {what}: the store is damaged; remove that line (or restore the file)")


def parse_record(line: str, file: Path, n: int) -> dict[str, Any]:
    """One line of a part file as a record; a line that is not one is damage, named by file and line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        raise _damaged(file, n, "not valid JSON") from None
    if not isinstance(row, dict):
        raise _damaged(file, n, f"valid JSON but not a record (a {type(row).__name__})")
    bad = [f for f, kind in (("key", str), ("item_id", str), ("teacher", str), ("sample_index", int))
           if not isinstance(row.get(f), kind) or isinstance(row.get(f), bool)]
    if "text" not in row:
        bad.append("text")
    if bad:
        raise _damaged(file, n, f"valid JSON but not a record (missing or wrong: {', '.join(bad)})")
    return row


def _parse_failure(line: str, file: Path, n: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        raise _damaged(file, n, "not valid JSON") from None
    if not (isinstance(row, dict) and isinstance(row.get("item_id"), str) and isinstance(row.get("teacher"), str)
            and isinstance(row.get("keys", []), list)):
        raise _damaged(file, n, "valid JSON but not a failure row (item_id, teacher, keys)")
    return row


def part_files(path: str | Path) -> list[Path]:
    return sorted((Path(path) / "data").glob("*.jsonl"))


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete record of a store, first occurrence of each key only."""
    seen: set[str] = set()
    for part in part_files(path):
        for n, line in _complete_lines(part):
            row = parse_record(line, part, n)
            if row["key"] not in seen:
                seen.add(row["key"])
                yield row


def stored_keys(path: str | Path) -> set[str]:
    """The keys of a store's complete records, read without opening it for writing (no lock, nothing created)."""
    keys: set[str] = set()
    for part in part_files(path):
        for n, line in _complete_lines(part):
            key = _fast_key(line)
            keys.add(key if key is not None else parse_record(line, part, n)["key"])
    return keys


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a store (see `iter_records`); [] for an empty or missing store."""
    return list(iter_records(path))


def read_failures(path: str | Path) -> list[dict[str, Any]]:
    """The failure rows of a store ([] when it has none: works on every store)."""
    file = Path(path) / "failures.jsonl"
    return [_parse_failure(line, file, n) for n, line in _complete_lines(file)] if file.is_file() else []


def key_version(path: str | Path) -> int | None:
    """The key scheme of a store's records: its store.json, else 1 (stores from before it), None if empty."""
    path = Path(path)
    marker = path / STORE_FILE
    if marker.is_file():
        try:
            return int(json.loads(marker.read_text())["key_version"])
        except (ValueError, KeyError, TypeError):
            raise RmsdError(f"{marker}: not a valid store marker (expected {{\"key_version\": N}})") from None
    return 1 if any(p.stat().st_size for p in part_files(path)) else None


def _repair(file: Path) -> int:
    """Cut an unterminated last line (half-written when the process was killed); bytes removed."""
    if not file.is_file() or file.stat().st_size == 0:
        return 0
    size = file.stat().st_size
    with file.open("rb+") as f:
        f.seek(size - 1)
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
    item/teacher failure whose keys are all present now is dropped) and rewrites the card.
    `new_key_version`: the key scheme of a new store (default: the current one); an existing
    store keeps its own (`key_version`, read from store.json).
    """

    def __init__(self, path: str | Path, fsync_every: int = 256, fsync_ms: float = 500.0,
                 new_key_version: int = KEY_VERSION):
        self.path = Path(path)
        self.fsync_every, self.fsync_ms = max(1, int(fsync_every)), max(0.0, float(fsync_ms))
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "data").mkdir(exist_ok=True)
        self._lock = self._take_lock()
        self.keys: set[str] = set()
        self.totals: dict[str, dict[str, int]] = defaultdict(lambda: {"records": 0, "prompt_tokens": 0,
                                                                       "completion_tokens": 0})
        try:
            self.repaired_bytes = sum(_repair(p) for p in [*part_files(self.path), self.path / "failures.jsonl"])
            self._load()
            self.key_version = key_version(self.path) or new_key_version
            if not (self.path / STORE_FILE).is_file():
                _write_atomic(self.path / STORE_FILE, json.dumps(
                    {"format": "rmsd-sample-store", "key_version": self.key_version}) + "\n")
        except BaseException:
            self._lock.close()
            raise
        if not (self.path / "README.md").exists():
            write_card(self.path)
        # run number first: parts sort in run order (the lock makes the number ours)
        run = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        number = len(part_files(self.path))
        self.part = self.path / "data" / f"train-{number:05d}-{run}-{secrets.token_hex(3)}.jsonl"
        self._file: int | None = None  # a raw fd of this run's part
        self._failures = None
        self._unsynced = 0
        self._last_sync = time.monotonic()
        self._syncing: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.fsyncs = 0
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
            for n, line in _complete_lines(part):
                key = _fast_key(line)
                if key is not None and key in self.keys:
                    continue  # a duplicate (e.g. two merged copies): counted once, never parsed
                self._count(parse_record(line, part, n))

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
        if len(record) != len(RECORD_FIELDS) or tuple(record) != RECORD_FIELDS:  # others are put in this order
            missing = [f for f in RECORD_FIELDS if f not in record]
            if missing:
                raise ValueError(f"record lacks {missing}")
            record = {f: record[f] for f in RECORD_FIELDS}
        if self._file is None:
            self._file = os.open(self.part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        data = _dump(record).encode("utf-8")
        while data:  # one write(2) per record: in the OS at once, no buffer of ours to lose
            data = data[os.write(self._file, data):]
        self._count(record)
        self._unsynced += 1
        return True

    def sync_soon(self) -> None:
        """Called by the runner after each write: start a background fsync once `fsync_every` records or
        `fsync_ms` are unsynced (never waits for it: a flushed record already survives a kill -9)."""
        if not self._unsynced or self._file is None or (self._syncing is not None and not self._syncing.done()):
            return
        if self._unsynced >= self.fsync_every or (time.monotonic() - self._last_sync) * 1000 >= self.fsync_ms:
            self._unsynced = 0
            self._last_sync = time.monotonic()
            self.fsyncs += 1
            self._syncing = asyncio.ensure_future(asyncio.to_thread(os.fsync, self._file))
            self._syncing.add_done_callback(lambda _: self.sync_soon())  # records written meanwhile
        elif self._timer is None:  # records written before a quiet spell are synced within fsync_ms too
            self._timer = asyncio.get_running_loop().call_later(self.fsync_ms / 1000, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.sync_soon()

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
        _write_atomic(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._file is not None:
            os.fsync(self._file)
            os.close(self._file)
        if self._failures is not None:
            self._failures.flush()
            os.fsync(self._failures.fileno())
            self._failures.close()
        self._file = self._failures = None
        failures = self.path / "failures.jsonl"
        if failures.is_file():
            self._rewrite_failures(self.open_failures())
            if failures.stat().st_size == 0:
                failures.unlink()
        write_card(self.path)
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
    """Join stores (e.g. `--shard I/N` runs) into the new folder `out` without duplicate keys; records in it.

    Atomic: the merge is written to a hidden folder beside `out` and renamed at the end, so a
    merge that fails (a damaged input, a full disk) leaves no partial store behind.
    """
    out = Path(out)
    srcs = [Path(p) for p in paths]
    for p in srcs:
        if not (p / "data").is_dir():
            raise RmsdError(f"{p}: not a sample store (no data/ folder); pass folders written by `rmsd sample`")
        if p.resolve() == out.resolve():
            raise RmsdError(f"{p}: the merge output must not be one of its inputs")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RmsdError(f"--out {out}: already exists; merge into a new folder (an earlier merge can be an input)")
    versions = {p: key_version(p) for p in srcs}
    known = {v for v in versions.values() if v is not None}
    if len(known) > 1:
        listing = ", ".join(f"{p} (key version {v})" for p, v in versions.items() if v is not None)
        raise RmsdError(f"cannot merge stores whose record keys differ: {listing}; "
                        "bring the older ones to the current keys with `rmsd sample rekey` first")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.merging-{secrets.token_hex(4)}"
    try:
        failures: list[dict[str, Any]] = []
        with SampleStore(tmp, new_key_version=known.pop() if known else KEY_VERSION) as store:
            for p in srcs:
                for row in iter_records(p):
                    store.append(row)
                failures.extend(read_failures(p))
            for row in failures:
                store.add_failure(row["item_id"], row["teacher"], row.get("reason", ""), row.get("keys") or [],
                                  row.get("attempts", 0))
            store.write_summary({"merged_from": [str(p) for p in srcs], "records": len(store),
                                 "teachers": {k: dict(v) for k, v in sorted(store.totals.items())}})
            n = len(store)
        (tmp / ".lock").unlink(missing_ok=True)
        os.replace(tmp, out)  # an empty `out` folder is replaced in the same step
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_card(out)  # the card names the final folder
    return n
