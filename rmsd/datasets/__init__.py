"""The registry: every name a recipe's `dataset.benchmark` or `eval.benchmarks[].benchmark` may use.

One table, name → class. An evaluation benchmark (Video-MME, Video-MMMU, MathVerse, synthvid)
and a training corpus (Video-R1, LLaVA-Video-178K, rmsd's own items JSONL) are the same kind
of thing to the stages: a `Benchmark` that loads `Item`s and scores answers. Adding one is one
module plus one line here; what the rest of rmsd needs to know about it (its media, whether it
is a training corpus, whether an LLM judge can score it) is an attribute of its class, never a
check of its name elsewhere. Classes are imported on first use, so reading the table (as
`rmsd validate` does) loads no dataset code.

    rmsd eval --recipe recipes/synthvid/tiny_rmsd.yaml --model runs/synthvid-tiny-rmsd/student
"""

from __future__ import annotations

import difflib
import importlib

from rmsd.datasets.benchmark import Benchmark
from rmsd.errors import RmsdError

# name → "module:Class" under rmsd.datasets
REGISTRY: dict[str, str] = {
    "synthvid": "synthvid:SynthVid",
    "videomme": "videomme:VideoMME",
    "videommmu": "videommmu:VideoMMMU",
    "mathverse": "mathverse:MathVerse",
    "videor1": "videor1:VideoR1",
    "llava_video": "llava_video:LLaVAVideo",
    "items": "items_file:ItemsFile",
}
BENCHMARKS = tuple(REGISTRY)


def unknown_name(name: str) -> str:
    """The one-line complaint about a name the table does not hold, with the closest known one."""
    close = difflib.get_close_matches(name, BENCHMARKS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown benchmark {name!r}: {hint}known: {', '.join(BENCHMARKS)}"


def benchmark_class(name: str) -> type[Benchmark]:
    """The class registered as `name` (its attributes answer questions before any data loads)."""
    if name not in REGISTRY:
        raise RmsdError(unknown_name(name))
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def get_benchmark(name: str) -> Benchmark:
    """A new instance of the benchmark registered as `name` (a judge set on one instance stays there)."""
    return benchmark_class(name)()
