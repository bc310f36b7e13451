"""The evaluation sets of a recipe, and the guard that keeps training items out of them.

A recipe scores its student on `eval.benchmarks` (each its own data, split and extraction), or,
without that list, on its dataset's `eval_split` — unless the dataset is a training corpus (its
registry class's `corpus`: Video-R1, LLaVA-Video, an items file), which has no evaluation split: then
there is no set, nothing is compared, and `rmsd eval` says there is nothing to score and how to add a
benchmark. Before the teachers are sampled and before the student trains, the training items are
checked against every one of those sets (`rmsd.datasets.contamination`): an item with the same media content, or the same question on
same-named media, is refused with one line, unless `dataset.allow_eval_overlap` is set — and then
the run summary, the match report, the model card and the evaluation results say so. Training
on the very split a set scores is refused whatever that knob says.

    rmsd validate recipes/paper/qwen2_5_vl_3b_rmsd.yaml     # names the problem before any data loads
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rmsd.config import DatasetConfig, EvalConfig, EvalSetConfig
from rmsd.datasets import benchmark_class, get_benchmark
from rmsd.datasets.benchmark import Benchmark, is_hub_id
from rmsd.datasets.contamination import EvalIndex, find_overlaps
from rmsd.errors import RmsdError
from rmsd.items import Item


def _data_where(path: str) -> str:
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() or not is_hub_id(path) else path


def evaluated_training_split(dataset: DatasetConfig, ev: EvalConfig) -> str | None:
    """The one-line refusal when the recipe trains on a split it also evaluates, else None (no knob allows it)."""
    for i, s in enumerate(ev.sets(dataset)):
        scored = s.split or benchmark_class(s.benchmark).default_split
        if (s.benchmark, _data_where(s.path), s.config, scored) == (dataset.benchmark, _data_where(dataset.path),
                                                                    dataset.config, dataset.split):
            where = f"eval.benchmarks[{i}]" if ev.benchmarks else "dataset.eval_split"
            return (f"dataset trains on {dataset.benchmark} split {dataset.split!r} of {dataset.path}, which {where} "
                    "also scores: train on a training corpus or another split (dataset.allow_eval_overlap does not "
                    "cover this)")
    return None


def scored_sets(dataset: DatasetConfig, ev: EvalConfig) -> list[EvalSetConfig]:
    """The sets `rmsd eval` scores; none (a training corpus without `eval.benchmarks`) is one line saying what
    to add."""
    sets = ev.sets(dataset)
    if not sets:
        raise RmsdError(f"nothing to score: dataset {dataset.benchmark} is a training corpus with no evaluation split "
                        "and eval.benchmarks is empty; add a held-out benchmark, e.g. eval: {benchmarks: [{benchmark: "
                        "videomme, path: lmms-lab/Video-MME, video_root: /data/videomme/data}]}")
    return sets


def load_set(s: EvalSetConfig, ev: EvalConfig, limit: int | None = None,
             every_item: bool = False) -> tuple[Benchmark, list[Item]]:
    """The set's benchmark and items: the first `limit`, else the set's or eval's limit; `every_item`: all of
    them, whatever a limit says (the contamination check: a limit must not hide an overlap)."""
    benchmark = get_benchmark(s.benchmark)
    items = benchmark.load_items(s.path, split=s.split, video_root=s.video_root, config=s.config,
                                 limit=None if every_item else limit or s.limit or ev.limit)
    return benchmark, items


def check_training_items(items: list[Item], dataset: DatasetConfig, ev: EvalConfig) -> dict[str, Any]:
    """Refuse training items that overlap an evaluation set (module docstring); what was checked, for the
    summaries: {"eval_sets", "overlapping_items", "allowed", "example"}."""
    sets = ev.sets(dataset)
    refusal = evaluated_training_split(dataset, ev)
    if refusal:
        raise RmsdError(refusal)
    held_out: dict[str, list[Item]] = {}
    for s in sets:
        try:
            held_out[s.name] = load_set(s, ev, every_item=True)[1]
        except RmsdError as e:
            raise RmsdError(f"contamination check: cannot load evaluation set {s.name}: {e}") from None
    overlaps = find_overlaps(items, EvalIndex(held_out))
    if overlaps and not dataset.allow_eval_overlap:
        raise RmsdError(f"{len(overlaps)} of {len(items)} training items overlap the evaluation sets "
                        f"({', '.join(held_out)}), e.g. {overlaps[0].describe()}: remove them from the training "
                        "data, or set dataset.allow_eval_overlap: true (every output then says so)")
    return {"eval_sets": list(held_out), "overlapping_items": len(overlaps), "allowed": dataset.allow_eval_overlap,
            "example": overlaps[0].describe() if overlaps else None}


def overlap_note(check: dict[str, Any]) -> str:
    """How a card or summary states the check's outcome, in one sentence."""
    if not check["eval_sets"]:
        return "no evaluation set to compare the training items with (a training corpus without eval.benchmarks)"
    sets = ", ".join(check["eval_sets"])
    if check["overlapping_items"]:
        return (f"WARNING: {check['overlapping_items']} training items overlap the evaluation sets ({sets}); "
                f"trained on them anyway because the recipe sets dataset.allow_eval_overlap (e.g. {check['example']})")
    return f"no training item overlaps the evaluation sets ({sets})"
