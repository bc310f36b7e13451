"""Batch request and result files: what batch sampling writes, splits at the limits, and reads back.

A batch request line is the online request itself, wrapped: `{"custom_id", "method": "POST",
"url": "/v1/chat/completions", "body"}`, where `body` is exactly what `OpenAITeacher.generate`
would POST (`n` and the per-request seed included) and `custom_id` is the record key of the
line's first sample plus that sample's index (`<key>-<start>`). Lines are split into parts at
the provider's limits (`openai.batch_max_requests`, `openai.batch_max_bytes`). Beside each part,
a manifest (`STORE/batches/<tag>.manifest.jsonl`) maps every custom_id to its item, teacher,
model and the keys of the samples it asks for, so results are stored without the recipe:
results produced elsewhere (`vllm run-batch -i requests.jsonl -o results.jsonl`) are read back
with `rmsd sample import`.

A result line is OpenAI's (and vLLM's) `{"custom_id", "response": {"status_code", "body"},
"error"}`. A 200 with choices becomes records identical to the online path's (the same
`responses_from_body`, the same keys and fields; `latency_s` is 0: a batch has no per-request
latency); anything else is a failed line, counted by reason. Lines for unknown ids are ignored
and counted.

Each part's state (`writing`, then `submitting`, `created`, `ingested`; or `exported`) is kept
in the store's batch ledger, `rmsd.sampling.ledger`, the one place the states are named.

    rmsd sample --recipe R --batch-file requests.jsonl      # then: vllm run-batch -i requests.jsonl -o out.jsonl
    rmsd sample import --samples runs/x/samples out.jsonl
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmsd.errors import RmsdError
from rmsd.sampling.ledger import IMPORTED, Ledger, PartState
from rmsd.sampling.store import SampleStore, now_iso
from rmsd.sampling.work import record_of
from rmsd.teachers.openai_api import responses_from_body
from rmsd.teachers.teacher import TeacherError

ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})  # a provider batch's end statuses


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """custom_id -> {item_id, teacher, model, start, keys} (complete lines only)."""
    out = {}
    if path.is_file():
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):
                    row = json.loads(line)
                    out[row["custom_id"]] = row
    return out


# ----------------------------------------------------------------------------- request lines
def custom_id(key: str, start: int) -> str:
    return f"{key}-{start}"


def request_line(cid: str, body: dict[str, Any]) -> bytes:
    return (json.dumps({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body}, ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode("utf-8")


@dataclass
class Part:
    """One request file being written (its manifest beside it)."""

    tag: str
    path: Path
    teacher: str
    lines: int = 0
    bytes: int = 0
    keys: list[str] = field(default_factory=list)


class PartWriter:
    """Request lines into part files of at most `max_requests` lines and `max_bytes` bytes; `add` returns the
    part it closed to make room (ready to upload), `close` the last one."""

    def __init__(self, ledger: Ledger, teacher: str, max_requests: int, max_bytes: int, path: Path | None = None):
        self.ledger, self.teacher = ledger, teacher
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.fixed_path = path  # --batch-file: one file, no split
        self.part: Part | None = None
        self._out = self._manifest = None

    def _open(self) -> None:
        tag = self.ledger.new_tag(self.teacher)
        self.ledger.dir.mkdir(parents=True, exist_ok=True)
        path = self.fixed_path or self.ledger.requests(tag)
        self.part = Part(tag, path, self.teacher)
        self._out = path.open("wb")
        self._manifest = self.ledger.manifest(tag).open("w", encoding="utf-8")
        self.ledger.add(PartState.WRITING, tag=tag, teacher=self.teacher)  # reserves the tag number

    def add(self, line: bytes, entry: dict[str, Any]) -> Part | None:
        closed = None
        part = self.part
        if part is not None and self.fixed_path is None and (
                part.lines + 1 > self.max_requests or part.bytes + len(line) > self.max_bytes):
            closed = self.close()
        if self.part is None:
            self._open()
        part = self.part
        self._out.write(line)
        self._manifest.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
        part.lines += 1
        part.bytes += len(line)
        part.keys.extend(entry["keys"])
        return closed

    def close(self) -> Part | None:
        part, self.part = self.part, None
        if part is not None:
            for f in (self._out, self._manifest):
                f.flush()
                os.fsync(f.fileno())
                f.close()
        return part


# ----------------------------------------------------------------------------- result lines
def response_of(row: dict[str, Any]) -> tuple[Any, Any]:
    """(status code, body) of a result line; a `response` that is the chat completion itself (as some
    `vllm run-batch` versions are documented to write) counts as a 200."""
    response = row.get("response") or {}
    if isinstance(response, dict) and "body" not in response and "choices" in response:
        return 200, response
    return (response.get("status_code"), response.get("body")) if isinstance(response, dict) else (None, None)


def line_failure(row: dict[str, Any]) -> str | None:
    """Why a result line gave no samples (None: it did): expired, http_<status>, error:<code>, no_choices."""
    error = row.get("error")
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        return "expired" if code == "batch_expired" else f"error:{code or 'unknown'}"
    status, body = response_of(row)
    if status != 200:
        code = (body.get("error") or {}).get("code") if isinstance(body, dict) and isinstance(
            body.get("error"), dict) else None
        return "expired" if code == "batch_expired" else f"http_{status}"
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
        return "no_choices"
    return None


class Ingest:
    """Result lines into a store: counts per teacher (records stored, billed lines/choices/tokens, failed lines by
    reason), the ids seen, and the failure reason of every key a line failed to deliver."""

    def __init__(self, store: SampleStore, manifest: dict[str, dict[str, Any]]):
        self.store, self.manifest = store, manifest
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.seen: set[str] = set()
        self.unknown = self.malformed = 0
        self.reasons: dict[str, str] = {}  # key -> why its line failed
        self.short: dict[str, tuple[int, int]] = {}  # teacher -> (n asked, choices got) of a line answered short

    def lines(self, lines: Iterable[bytes | str]) -> None:
        created = now_iso()
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                cid = row.get("custom_id")
            except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
                self.malformed += 1
                continue
            entry = self.manifest.get(cid) if isinstance(cid, str) else None
            if entry is None or cid in self.seen:
                self.unknown += 1  # not ours (another store's, a hand-edited file) or a repeat: never stored
                continue
            self.seen.add(cid)
            self.line(entry, row, created)

    def line(self, entry: dict[str, Any], row: dict[str, Any], created: str) -> None:
        c = self.counts[entry["teacher"]]
        reason = line_failure(row)
        responses = []
        body = response_of(row)[1]
        if reason is None:
            try:
                responses = responses_from_body(body)
            except TeacherError:
                reason = "malformed"
        if reason is not None:
            self.fail(entry, entry["keys"], reason)
            return
        usage = body.get("usage") or {}
        c["billed_lines"] += 1
        c["billed_choices"] += len(responses)
        c["billed_prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
        c["billed_completion_tokens"] += int(usage.get("completion_tokens") or 0)
        keys = entry["keys"]
        for i, (key, r) in enumerate(zip(keys, responses, strict=False)):
            rec = record_of(key, entry["item_id"], entry["teacher"], entry["model"], entry["start"] + i, r, 0.0,
                            created)
            if self.store.append(rec):
                c["records"] += 1
                c["prompt_tokens"] += rec["prompt_tokens"]
                c["completion_tokens"] += rec["completion_tokens"]
                c["truncated"] += r.finish_reason == "length"
                c["flagged"] += r.error is not None
        if len(responses) < len(keys):
            self.short.setdefault(entry["teacher"], (len(keys), len(responses)))
            self.fail(entry, keys[len(responses):], "partial_n")

    def fail(self, entry: dict[str, Any], keys: list[str], reason: str) -> None:
        self.counts[entry["teacher"]][f"failed:{reason}"] += 1
        for k in keys:
            self.reasons[k] = reason

    def unseen(self, reason: str) -> None:
        """Every manifest line no result line answered (a failed, expired or cancelled batch) fails for `reason`."""
        for cid, entry in self.manifest.items():
            if cid not in self.seen:
                self.fail(entry, entry["keys"], reason)

    def teachers(self) -> dict[str, dict[str, int]]:
        return {t: dict(c) for t, c in self.counts.items()}


def file_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from f


def add_failures(store: SampleStore, manifest: dict[str, dict[str, Any]], reasons: dict[str, str],
                 attempts: int) -> int:
    """Failures (per item and teacher, reason of the last line) for the keys of `reasons` still missing."""
    rows: dict[tuple[str, str], list[str]] = defaultdict(list)
    why: dict[tuple[str, str], str] = {}
    for entry in manifest.values():
        for key in entry["keys"]:
            if key in reasons and key not in store:
                pair = (entry["item_id"], entry["teacher"])
                rows[pair].append(key)
                why[pair] = f"batch: {reasons[key]}"
    for (item_id, teacher), keys in rows.items():
        store.add_failure(item_id, teacher, why[(item_id, teacher)], keys, attempts)
    return sum(len(k) for k in rows.values())


def all_manifests(ledger: Ledger) -> dict[str, dict[str, Any]]:
    """Every manifest the ledger names (submitted and exported parts), later ones first to win."""
    out: dict[str, dict[str, Any]] = {}
    for tag in ledger.parts():
        out.update(read_manifest(ledger.manifest(tag)))
    return out


def import_results(samples: str | Path, results: str | Path) -> dict[str, Any]:
    """`rmsd sample import`: store the result lines of `results` (OpenAI or `vllm run-batch` output) whose ids a
    manifest of the store knows; failed lines become failures (a re-run of `rmsd sample` asks them again)."""
    samples, results = Path(samples), Path(results)
    if not results.is_file():
        raise RmsdError(f"{results}: no such results file; pass the output of `vllm run-batch -o` or a batch")
    ledger = Ledger(samples)
    if not ledger.exists():
        raise RmsdError(f"{samples}: has no batch requests to match results to; write them first with "
                        "rmsd sample --recipe R --out STORE --batch-file requests.jsonl")
    with SampleStore(samples) as store:
        manifest = all_manifests(ledger)
        ingest = Ingest(store, manifest)
        ingest.lines(file_lines(results))
        failed = add_failures(store, manifest, ingest.reasons, attempts=1)
        ledger.add(IMPORTED, file=str(results), teachers=ingest.teachers(), unknown=ingest.unknown,
                   malformed=ingest.malformed)
    stored = sum(c.get("records", 0) for c in ingest.counts.values())
    reasons = Counter({k.split(":", 1)[1]: v for c in ingest.counts.values() for k, v in c.items()
                       if k.startswith("failed:")})
    return {"records": stored, "unknown": ingest.unknown, "malformed": ingest.malformed,
            "failed_samples": failed, "failed_lines": dict(reasons), "teachers": ingest.teachers()}
