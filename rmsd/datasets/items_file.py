"""rmsd's own items JSONL as a training corpus: any corpus converted once, then read as it is.

A file written by `rmsd.items.write_items` (one `Item` per line: item_id, benchmark,
task_type, question, prompt, options, answer, video, image, meta) is the way to bring a corpus
rmsd has no loader for: convert it to items in a few lines of Python, write them, and name the
file (or a folder holding `{split}.jsonl`) as `dataset.path` with `dataset.benchmark: items`.
Relative media paths resolve under `dataset.video_root`, default the file's folder. Scoring is
by task type (letter, number, temporal IoU, ROUGE-L), as for synthvid.

    python -c "from rmsd.items import write_items; ..."   # then dataset: {benchmark: items, path: my.jsonl}
"""

from __future__ import annotations

from pathlib import Path

from rmsd.datasets.benchmark import BadRows, Benchmark
from rmsd.errors import RmsdError
from rmsd.items import Item, read_items


def items_path(path: str | Path, split: str) -> Path:
    """The JSONL file: `path` itself, or `path/{split}.jsonl`."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir() and (p / f"{split}.jsonl").is_file():
        return p / f"{split}.jsonl"
    present = ", ".join(sorted(f.name for f in p.glob("*.jsonl"))) if p.is_dir() else "no such folder"
    raise RmsdError(f"items: no items file at {p} for split {split!r} ({present}): name a JSONL file written by "
                    "rmsd.items.write_items, or a folder holding {split}.jsonl")


class ItemsFile(Benchmark):
    """Items JSONL (any task type, video or image items)."""

    name = "items"
    default_split = "train"
    breakdown_keys = ("task_type", "benchmark")
    media = "mixed"
    corpus = True

    def load_items(self, path: str | Path, split: str | None = None, video_root: str | Path | None = None,
                   limit: int | None = None, config: str | None = None, on_bad_row: str = "error") -> list[Item]:
        file = items_path(path, split or self.default_split)
        root = Path(video_root) if video_root is not None else file.parent
        bad = BadRows(on_bad_row)
        items: list[Item] = []
        for item in read_items(file, limit=limit, media_required=True, bad=bad):
            origin, row = item.origin  # read_items gives every item its row
            if bad.repeated(item.item_id, Path(origin), row, file, "item_id", "duplicate item_id"):
                continue
            for field in ("video", "image"):
                media = getattr(item, field)
                if media is not None:
                    setattr(item, field, str((root / media).resolve()))
            missing = [m for m in (item.video, item.image) if m is not None and not Path(m).is_file()]
            if missing:
                bad(f"{file} ({item.item_id})", "video" if item.video else "image", "missing media",
                    f"{missing[0]} (set dataset.video_root)")
                continue
            items.append(item)
        self.skipped = bad.counts
        return items

    def breakdowns(self, item: Item) -> dict[str, str]:
        return {"task_type": item.task_type, "benchmark": item.benchmark}
