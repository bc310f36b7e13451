"""Benchmark registry: the names a recipe's `dataset.benchmark` may use.

`get_benchmark(name)` returns a fresh `Benchmark` (so a judge set on one MathVerse instance
does not leak into another). synthvid's loader is `rmsd.data.benchmarks.synthvid`; its
scoring is rmsd's task-type scorer (`rmsd.data.benchmarks.base.score`, on `rmsd.scoring`): letter for mcq, number within
tolerance for numeric, temporal IoU for grounding, ROUGE-L F for open answers.

    rmsd eval --recipe recipes/synthvid/tiny_rmsd.yaml --model runs/synthvid-tiny-rmsd/student
"""

from __future__ import annotations

from rmsd.data.benchmarks.base import Benchmark
from rmsd.errors import RmsdError

BENCHMARKS = ("synthvid", "videomme", "videommmu", "mathverse")


def get_benchmark(name: str) -> Benchmark:
    """A new instance of the benchmark registered as `name`."""
    if name == "synthvid":
        from rmsd.data.benchmarks.synthvid import SynthVid

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
