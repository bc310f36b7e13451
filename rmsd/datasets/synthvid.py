"""synthvid loader: the JSONL written by `rmsd.synthvid.generator.generate` back into `Item`s.

Rows are already `Item` dicts (prompt, options, letter answers, scene ground truth in
`meta`); the only change is the video path, stored relative to the dataset folder so the
folder can move, and made absolute here. The files are plain JSONL that
`datasets.load_dataset("json", data_files=...)` also reads (same rows); this loader reads them
with `rmsd.items.read_items` because it is faster and needs no Arrow cache.

    rmsd synthvid --out data/synthvid && rmsd eval --recipe recipes/synthvid/tiny_rmsd.yaml
"""

from __future__ import annotations

import json
from pathlib import Path

from rmsd.datasets.benchmark import Benchmark
from rmsd.errors import RmsdError
from rmsd.items import Item, read_items

BREAKDOWNS = ("task_type", "difficulty", "question_kind")


def _split_file(path: Path, split: str) -> Path:
    hint = f"run `rmsd synthvid --out {path}` first"
    if path.is_file():  # a JSONL file named directly; its folder holds videos/
        return path
    if not path.is_dir():
        raise RmsdError(f"synthvid folder {path} not found: {hint}")
    file = path / f"{split}.jsonl"
    if not file.is_file():
        present = ", ".join(sorted(p.stem for p in path.glob("*.jsonl"))) or "none"
        raise RmsdError(f"synthvid split {split!r} not found in {path} (splits present: {present}): {hint}")
    return file


def load_items(path: str | Path, split: str = "train", video_root: str | Path | None = None,
               limit: int | None = None) -> list[Item]:
    """Items of one split, video paths absolute (under `video_root`, default the dataset folder)."""
    file = _split_file(Path(path), split)
    root = Path(video_root) if video_root is not None else file.parent
    items = read_items(file, limit=limit, media_required=True)
    for n, item in enumerate(items, 1):
        if item.video is None:
            raise RmsdError(f"{file}: item {n} ({item.item_id}): field video is null; every synthvid item has a "
                            "video file")
        item.video = str((root / item.video).resolve())
    missing = [it.video for it in items if not Path(it.video).is_file()]
    if missing:
        raise RmsdError(f"{len(missing)} synthvid videos missing, e.g. {missing[0]}: "
                        f"pass the folder holding videos/ as video_root or regenerate")
    return items


def breakdowns(item: Item) -> dict[str, str]:
    """The groups `rmsd eval` reports accuracy by."""
    return {"task_type": item.task_type, "difficulty": item.meta["difficulty"],
            "question_kind": item.meta["question_kind"]}


class SynthVid(Benchmark):
    """The procedural offline benchmark (docs/method.md, section 7), answers in rmsd's `<answer>` format."""

    name = "synthvid"
    default_split = "train"
    breakdown_order = {"task_type": ("mcq", "numeric", "grounding", "open"), "difficulty": ("easy", "medium", "hard")}

    @property
    def breakdown_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        return BREAKDOWNS

    def load_items(self, path: str | Path, split: str | None = None, video_root: str | Path | None = None,
                   limit: int | None = None, config: str | None = None, on_bad_row: str = "error") -> list[Item]:
        return load_items(path, split=split or self.default_split, video_root=video_root, limit=limit)

    def breakdowns(self, item: Item) -> dict[str, str]:
        return breakdowns(item)

    generates = True

    def generated(self, path: str | Path, n: int) -> bool:
        """The folder's info.json says this generator version wrote `n` items with seed 0."""
        from rmsd.synthvid.generator import GENERATOR_VERSION

        info = Path(path) / "info.json"
        if not info.is_file():
            return False
        held = json.loads(info.read_text())
        return (held.get("version"), held.get("n"), held.get("seed")) == (GENERATOR_VERSION, n, 0)

    def generate_data(self, path: str | Path, n: int) -> dict:
        from rmsd.synthvid.generator import generate

        return generate(path, n=n, seed=0)
