"""The item: one video (or image) + one question + task type + optional ground truth.

Every benchmark loader (`rmsd.datasets`) turns its own schema into `Item`s; every
later stage (sample, match, distill, eval) reads only this type. The benchmark's own
fields stay in `meta` under their public names, so breakdowns (duration, domain, subject,
problem version) and judges can read them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rmsd.errors import RmsdError

TASK_TYPES = ("mcq", "numeric", "open", "grounding")
CLOSED_TASK_TYPES = frozenset({"mcq", "numeric", "grounding"})
# the score an item of each task type gets (rmsd.datasets.benchmark.score): what tables call each column
METRIC_OF_TASK = {"mcq": "accuracy", "numeric": "accuracy", "grounding": "tIoU", "open": "ROUGE-L"}
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class Item:
    """One question about one video or image.

    item_id: unique within its benchmark.
    benchmark: registry name of the loader that made it ("synthvid", "videomme", ...).
    task_type: one of TASK_TYPES.
    question: the bare question text.
    options: option texts without their letters (["red", "blue", ...]); [] when none.
    answer: ground truth or None: an option letter (mcq), a number as text (numeric),
        free text (open), "[start, end]" seconds (grounding).
    prompt: the full user text the model sees, built by the benchmark exactly as the
        community harness builds it.
    video / image: absolute path of the media file, or None.
    meta: the benchmark's other fields under their public names (duration, domain, ...);
        for synthvid the scene ground truth (objects, colours, trajectories, times).
    origin: where a loader read it, (data file, 0-based row), for messages that must name the row
        (`rmsd.datasets.benchmark.origin_text`); not written by `to_dict`, not compared.
    """

    item_id: str
    benchmark: str
    task_type: str
    question: str
    prompt: str
    options: list[str] = field(default_factory=list)
    answer: str | None = None
    video: str | None = None
    image: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    origin: tuple[str, int] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise ValueError(f"item {self.item_id}: unknown task_type {self.task_type!r}; expected one of {TASK_TYPES}")

    @property
    def closed(self) -> bool:
        return self.task_type in CLOSED_TASK_TYPES

    @property
    def letters(self) -> list[str]:
        """Option letters in order ("A", "B", ...), one per option."""
        return list(OPTION_LETTERS[: len(self.options)])

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        del row["origin"]  # where this copy was read from is no part of the item
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Item:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row and k != "origin"})


_TEXT_FIELDS = ("item_id", "benchmark", "task_type", "question", "prompt")


def item_from_row(row: Any, where: str, media_required: bool = False) -> Item:
    """An `Item` from one row of an items file; every problem as one RmsdError naming `where`
    (the file and line), the field and what to do."""
    if not isinstance(row, dict):
        raise RmsdError(f"{where}: expected an item (a JSON object), got {type(row).__name__}")
    missing = [f for f in _TEXT_FIELDS if row.get(f) is None]
    if missing:
        raise RmsdError(f"{where}: the item lacks the field(s) {', '.join(missing)} (required: "
                        f"{', '.join(_TEXT_FIELDS)}); fix the line or regenerate the file")
    wrong = [f for f in _TEXT_FIELDS if not isinstance(row[f], str)]
    if wrong:
        raise RmsdError(f"{where}: field(s) {', '.join(wrong)} must be text")
    if row["task_type"] not in TASK_TYPES:
        raise RmsdError(f"{where}: field task_type: unknown task type {row['task_type']!r}; "
                        f"expected one of {', '.join(TASK_TYPES)}")
    for f in ("video", "image"):
        if row.get(f) is not None and not isinstance(row[f], str):
            raise RmsdError(f"{where}: field {f} must be a path (text), got {type(row[f]).__name__}")
    if media_required and row.get("video") is None and row.get("image") is None:
        raise RmsdError(f"{where}: field video is null or missing; every item of this benchmark has a video file")
    if not isinstance(row.get("options") or [], list) or not isinstance(row.get("meta") or {}, dict):
        raise RmsdError(f"{where}: field options must be a list and meta a mapping")
    return Item.from_dict(row)


def write_items(items: list[Item], path: str | Path) -> None:
    """Write items as JSONL (readable by `datasets.load_dataset("json", ...)`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for item in items:
            f.write(json.dumps(item.to_dict()) + "\n")


def read_items(path: str | Path, *, limit: int | None = None, media_required: bool = False,
               bad: Callable[[str, str, str, str], None] | None = None) -> list[Item]:
    """Items of a JSONL file written by `write_items` (the first `limit`); a bad line is one RmsdError
    naming the file and line, or, given `bad(where, field, reason, detail)`, reported there and left out."""
    items: list[Item] = []
    row = -1  # the row among non-blank lines: an item's `origin`
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if limit is not None and len(items) >= limit:
                break
            if not line.strip():
                continue
            row += 1
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                if bad is None:
                    raise RmsdError(f"{where}: not valid JSON ({e.msg})") from None
                bad(where, "(line)", "not valid JSON", e.msg)
                continue
            try:
                items.append(item_from_row(record, where, media_required))
                items[-1].origin = (str(path), row)
            except RmsdError as e:
                if bad is None:
                    raise
                bad(where, "(item)", "invalid item", str(e).removeprefix(f"{where}: "))
    return items
