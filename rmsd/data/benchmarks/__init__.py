"""Benchmark registry: the names a recipe's `dataset.benchmark` may use.

`get_benchmark(name)` returns a fresh `Benchmark` (so a judge set on one MathVerse instance
does not leak into another). synthvid's loader is `rmsd.data.benchmarks.synthvid`; its
scoring is rmsd's task-type scorer (`rmsd.matching.extract`): letter for mcq, number within
tolerance for numeric, temporal IoU for grounding, ROUGE-L F for open answers.

    rmsd eval --recipe recipes/synthvid/tiny_rmsd.yaml --model runs/synthvid-tiny-rmsd/student
"""

from __future__ import annotations

from pathlib import Path

from rmsd.data.benchmarks.base import Benchmark
from rmsd.data.items import Item
from rmsd.errors import RmsdError

BENCHMARKS = ("synthvid", "videomme", "videommmu", "mathverse")


class SynthVid(Benchmark):
    """The procedural offline benchmark (section 7 of DESIGN.md), answers in rmsd's `<answer>` format."""

    name = "synthvid"
    default_split = "train"
    breakdown_order = {"task_type": ("mcq", "numeric", "grounding", "open"), "difficulty": ("easy", "medium", "hard")}

    @property
    def breakdown_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        from rmsd.data.benchmarks import synthvid

        return tuple(synthvid.BREAKDOWNS)

    def load_items(self, path: str | Path, split: str | None = None, video_root: str | Path | None = None,
                   limit: int | None = None, config: str | None = None) -> list[Item]:
        from rmsd.data.benchmarks import synthvid

        return synthvid.load_items(path, split=split or self.default_split, video_root=video_root, limit=limit)

    def breakdowns(self, item: Item) -> dict[str, str]:
        from rmsd.data.benchmarks import synthvid

        return synthvid.breakdowns(item)


def get_benchmark(name: str) -> Benchmark:
    """A new instance of the benchmark registered as `name`."""
    if name == "synthvid":
        return SynthVid()
    if name == "videomme":
        from rmsd.data.benchmarks.videomme import VideoMME

        return VideoMME()
    if name == "videommmu":
        from rmsd.data.benchmarks.videommmu import VideoMMMU

        return VideoMMMU()
    if name == "mathverse":
        from rmsd.data.benchmarks.mathverse import MathVerse

        return MathVerse()
    raise RmsdError(f"unknown benchmark {name!r}: use one of {', '.join(BENCHMARKS)}")
