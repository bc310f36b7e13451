"""The batch ledger: the one state machine of a store's batch parts, and the file that keeps it.

A part is one request file of one teacher (`rmsd.sampling.batch_files.PartWriter` writes it,
under a tag such as `api-00003-9f2c1a`). Its life is a state machine, and every state it
enters is one line of `STORE/batches/ledger.jsonl` (append-only, fsynced per line), so a
killed run finds each part in the state it had reached and never pays for a batch twice:

    (new) ──> writing ──> submitting ──> created ──> ingested
                 │             └──────────────────────^  (cancelled before its batch existed)
                 ├──> exported    (--batch-file: for another server; results come back by import)
                 └──> discarded   (killed while writing: never uploaded, its files removed)

- `writing`: the request file and its manifest are being written here; the tag is reserved.
- `submitting`: the file is uploaded (`file_id`); its batch is being created, tagged in its
  `metadata` with the store's id and the part's tag, so a run killed now finds it again
  through `batches.list` (or creates it from the uploaded file).
- `created`: the batch exists (`batch_id`, recorded the moment it does): poll it.
- `ingested`, `exported`, `discarded`: ended; nothing is asked or paid for again.

`TRANSITIONS` is the whole table: a line that takes a part where the table does not go is a
damaged ledger, and `Ledger.add` refuses to write one. A part's state is read from its last
line, never inferred from which fields it has. Each line names the state in its `event` field
(the name the field had before the states were a table: ledgers written then read as they
are). A line without a tag is an event of the store, not of a part: `imported`, a results
file read by `rmsd sample import`.

    rmsd sample --recipe R            # with openai.mode: batch in the pool; a re-run resumes from the ledger
    rmsd sample --recipe R --cancel
"""

from __future__ import annotations

import enum
import json
import os
import secrets
from collections import defaultdict
from pathlib import Path
from typing import Any

from rmsd.errors import RmsdError
from rmsd.sampling.store import BATCH_DIR, now_iso

LEDGER_FILE = "ledger.jsonl"
IMPORTED = "imported"  # the one event of the store itself (no tag): a results file imported
BILLED = ("billed_lines", "billed_choices", "billed_prompt_tokens", "billed_completion_tokens")


class PartState(str, enum.Enum):
    """Where a batch part stands (the module docstring tells each state)."""

    WRITING = "writing"
    SUBMITTING = "submitting"
    CREATED = "created"
    INGESTED = "ingested"
    EXPORTED = "exported"
    DISCARDED = "discarded"


S = PartState
TRANSITIONS: dict[PartState | None, frozenset[PartState]] = {
    None: frozenset({S.WRITING}),
    S.WRITING: frozenset({S.SUBMITTING, S.EXPORTED, S.DISCARDED}),
    S.SUBMITTING: frozenset({S.CREATED, S.INGESTED}),
    S.CREATED: frozenset({S.INGESTED}),
    S.INGESTED: frozenset(),
    S.EXPORTED: frozenset(),
    S.DISCARDED: frozenset(),
}
OPEN = frozenset({S.SUBMITTING, S.CREATED})  # uploaded and not yet ingested: its keys are never asked again
_STATES = {s.value: s for s in PartState}


class Ledger:
    """The append-only ledger of a store's batch parts: each part's state and the fields its lines recorded."""

    def __init__(self, store: str | Path):
        self.dir = Path(store) / BATCH_DIR
        self.file = self.dir / LEDGER_FILE
        self._parts: dict[str, dict[str, Any]] | None = None  # read once, then kept up to date by enter()

    def exists(self) -> bool:
        return self.file.is_file()

    def events(self) -> list[dict[str, Any]]:
        """Every complete line, in order (a line cut by a kill is no event)."""
        if not self.file.is_file():
            return []
        out = []
        with self.file.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.endswith("\n"):
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        raise self.damaged(n, "not valid JSON") from None
        return out

    def damaged(self, line: int, what: str) -> RmsdError:
        return RmsdError(f"{self.file}:{line}: {what}: the batch ledger is damaged; restore the line (it may hold a "
                         "batch id: removing it can cost a batch twice)")

    def parts(self) -> dict[str, dict[str, Any]]:
        """{tag: the merged fields of its lines, with `state`} in the order the parts began."""
        if self._parts is None:
            parts: dict[str, dict[str, Any]] = {}
            for n, e in enumerate(self.events(), 1):
                if "tag" not in e:
                    continue
                state = _STATES.get(e.get("event"))
                part = parts.get(e["tag"])
                if state is None or state not in TRANSITIONS[part["state"] if part else None]:
                    was = part["state"].value if part else "nothing"
                    raise self.damaged(n, f"part {e['tag']} goes from {was} to {e.get('event')!r}")
                part = parts.setdefault(e["tag"], {})
                part.update({k: v for k, v in e.items() if k not in ("event", "at")})
                part["state"] = state
            self._parts = parts
        return self._parts

    def in_state(self, *states: PartState) -> dict[str, dict[str, Any]]:
        return {tag: p for tag, p in self.parts().items() if p["state"] in states}

    def add(self, event: PartState | str, tag: str | None = None, **fields: Any) -> None:
        """Record that part `tag` enters the state `event` (with the fields that state needs), if the table
        allows it; or, with no tag, the store's own event `IMPORTED`."""
        if tag is None:
            if event != IMPORTED:
                raise RmsdError(f"batch ledger: {event!r} is a state of a part and needs its tag")
            self._append({"event": IMPORTED, **fields})
            return
        state = PartState(event)
        parts = self.parts()
        now = parts[tag]["state"] if tag in parts else None
        if state not in TRANSITIONS[now]:
            raise RmsdError(f"batch part {tag}: cannot go from {now.value if now else 'nothing'} to {state.value}")
        self._append({"event": state.value, "tag": tag, **fields})
        parts.setdefault(tag, {}).update({"tag": tag, **fields, "state": state})

    def _append(self, row: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({**row, "at": now_iso()}, ensure_ascii=False) + "\n"
        fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)  # a batch id must survive anything: losing it means paying twice
        finally:
            os.close(fd)

    def store_id(self) -> str:
        """The store's identity in each batch's metadata (made once, kept with the store)."""
        path = self.dir / "store_id"
        if not path.is_file():
            self.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(8) + "\n")
        return path.read_text().strip()

    def new_tag(self, teacher: str) -> str:
        return f"{teacher}-{len(self.parts()):05d}-{secrets.token_hex(3)}"

    def manifest(self, tag: str) -> Path:
        return self.dir / f"{tag}.manifest.jsonl"

    def requests(self, tag: str) -> Path:
        return self.dir / f"{tag}.requests.jsonl"

    def results(self, tag: str, file_id: str) -> Path:
        """Where a result file of the part is downloaded (removed once stored)."""
        return self.dir / f"{tag}.{file_id}.jsonl"

    def billed(self) -> dict[str, dict[str, int]]:
        """Per teacher, the billed lines and tokens of every ingested part and imported results file."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(BILLED, 0))
        for e in self.events():
            if e["event"] in (S.INGESTED.value, IMPORTED):
                for teacher, counts in (e.get("teachers") or {}).items():
                    for k in BILLED:
                        out[teacher][k] += int(counts.get(k, 0))
        return dict(out)
