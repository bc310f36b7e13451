"""What every LLM judge shares (the VISD judge in `rmsd.judge.llm`, MathVerse's scorer in
`rmsd.datasets.mathverse`): a JSONL verdict cache keyed by content hashes, and a
private event loop that drives their coroutines from synchronous code (trainers, `rmsd eval`).
It sits below both, at the package root, so neither imports the other's package.

How it differs from a plain `json.dump` cache or `asyncio.run`: records are appended one
line at a time as verdicts come, so a killed run keeps every verdict it paid for (a last
line cut short is skipped, asked again and removed before the next record is written; any
other unreadable line is an error naming file:line); and the event loop lives as long as
the judge, because an async HTTP client is bound to the loop it first ran on, which
`asyncio.run` would close after one batch.

    rmsd distill --recipe recipes/synthvid/tiny_visd.yaml --matched runs/synthvid-tiny-visd/matched
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

from rmsd.errors import RmsdError


def content_key(*parts: Any) -> str:
    """sha256 of the parts as JSON: the same content gives the same key in every run."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


class JsonlCache:
    """One judge's records in an append-only JSONL file (None: keep nothing on disk).

    Records carry `"judge": name`; those of another judge in the same file are skipped, so a
    cache shared by two judge models never mixes their verdicts.
    """

    def __init__(self, path: str | Path | None, judge_name: str):
        self.path = Path(path) if path is not None else None
        self.judge_name = judge_name
        self._checked_end = False

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, record) of this judge's records already on disk."""
        if self.path is None or not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):
                    continue  # a last line cut short by a killed run: that verdict is asked again
                raise self.error(n, "is not JSON") from None
            if not isinstance(rec, dict):
                raise self.error(n, "is not a JSON object")
            if rec.get("judge", self.judge_name) == self.judge_name:
                yield n, rec

    def error(self, line: int, why: str) -> RmsdError:
        return RmsdError(f"{self.path}:{line} {why}: delete the judge cache or fix that line")

    def append(self, rec: dict[str, Any]) -> None:
        """Write one record now (the file is closed, hence flushed, after each)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._checked_end:
            self._checked_end = True
            self._drop_cut_line()
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({**rec, "judge": self.judge_name}, ensure_ascii=False) + "\n")

    def _drop_cut_line(self) -> None:
        """Remove a last record cut short by a killed run (it is asked again): the next record
        would be glued to it, and a broken line in the middle of the file is an error."""
        data = self.path.read_bytes() if self.path.is_file() else b""
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


class PrivateLoop:
    """Runs coroutines from synchronous code on one event loop kept until `close()`."""

    def __init__(self, owner: str):
        self.owner = owner
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, coro: Awaitable[Any]) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            if asyncio.iscoroutine(coro):
                coro.close()  # never awaited: close it so Python does not warn about it
            raise RmsdError(f"{self.owner}.run was called inside a running event loop: await the coroutine instead")
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.close()
