"""Score a student the way the community harness scores the benchmark (`rmsd eval`).

Greedy decoding with the benchmark's own prompt (`Item.prompt`), batched; the benchmark's
extractor (`harness` mode by default, so numbers stay comparable with published ones) and
metric; overall accuracy plus the breakdowns the benchmark reports. Writes
`predictions.jsonl` (one row per item) and `results.json`, and prints a table. A set given a
`resume_key` keeps its completions batch by batch (`predictions.partial.jsonl`), so scoring it
again after a kill with the same key generates only the items it had not reached. The same
path loads the tiny offline student of either family (`rmsd build-student --family`) and any
Qwen2.5-VL or Qwen3-VL `AutoModelForImageTextToText` checkpoint; frames reach the processor
with their measured times (`rmsd.models.processing.video_metadata`).

    rmsd eval --recipe recipes/synthvid/tiny_rmsd.yaml --model runs/synthvid-tiny-rmsd/student
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmsd.datasets.benchmark import Benchmark
from rmsd.items import Item
from rmsd.media.video import load_media


def predict(
    model: Any,
    processor: Any,
    items: list[Item],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    num_frames: int = 8,
    max_side: int | None = None,
    progress: Any = None,
    on_batch: Any = None,
) -> list[str]:
    """Greedy completions for `items`, in order; `on_batch(items, texts)` after each batch (a resumable set
    keeps them)."""
    from rmsd.models.processing import generate

    texts: list[str] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        media = [load_media(it, num_frames, max_side) for it in batch]
        frames = [m[0] for m in media]
        images = [m[1] for m in media] if any(m[1] is not None for m in media) else None
        outs = generate(model, processor, [it.prompt for it in batch], frames, images=images,
                        max_new_tokens=max_new_tokens, do_sample=False)
        texts.extend(o[0] for o in outs)
        if on_batch is not None:
            on_batch(batch, [o[0] for o in outs])
        if progress is not None:
            progress(len(batch))
    return texts


def score_predictions(items: list[Item], texts: list[str], benchmark: Benchmark, extraction: str) -> list[dict[str, Any]]:
    """One row per item: the raw text, the extracted answer, the score and the breakdown keys."""
    benchmark.prefetch(items, texts, mode=extraction)  # a judge-backed benchmark scores the batch concurrently
    rows = []
    for item, text in zip(items, texts, strict=True):
        pred = benchmark.extract(text, item, mode=extraction)
        rows.append({
            "item_id": item.item_id,
            "task_type": item.task_type,
            "response": text,
            "prediction": pred,
            "answer": item.answer,
            "score": float(benchmark.score(pred, item, mode=extraction)),
            **benchmark.breakdowns(item),
        })
    return rows


@dataclass
class EvalJob:
    """One evaluation set to score: its name, benchmark (judge included), items, output folder and extraction."""

    name: str
    benchmark: Benchmark
    items: list[Item]
    out: Path
    extraction: str = "harness"
    note: str | None = None  # a sentence every output of this set carries (e.g. a contamination warning)
    resume_key: str | None = None  # what its predictions answer: kept per batch, reused by a run with the same key


PARTIAL = "predictions.partial.jsonl"


def _kept(job: EvalJob) -> dict[str, str]:
    """The completions a killed scoring of this set kept for the same `resume_key` ({item_id: text})."""
    file = job.out / PARTIAL
    if job.resume_key is None or not file.is_file():
        return {}
    lines = [line for line in file.read_text(encoding="utf-8").splitlines(keepends=True) if line.endswith("\n")]
    if not lines or json.loads(lines[0]).get("resume_key") != job.resume_key:
        return {}
    return {row["item_id"]: row["response"] for row in map(json.loads, lines[1:])}


def _predict_set(model: Any, processor: Any, job: EvalJob, **options: Any) -> list[str]:
    """A set's completions: those a killed run kept (same `resume_key`), then the rest, each batch appended to
    OUT/predictions.partial.jsonl as it comes (removed once the set's results are written)."""
    if job.resume_key is None:
        return predict(model, processor, job.items, **options)
    kept = _kept(job)
    job.out.mkdir(parents=True, exist_ok=True)
    file = job.out / PARTIAL
    # written afresh with what it keeps: a line a kill cut short is not followed by the next batch's
    file.write_text("".join(json.dumps(row) + "\n" for row in [{"resume_key": job.resume_key}, *(
        {"item_id": i, "response": t} for i, t in kept.items())]), encoding="utf-8")
    with file.open("a", encoding="utf-8") as f:
        def keep(batch: list[Item], texts: list[str]) -> None:
            f.writelines(json.dumps({"item_id": it.item_id, "response": t}) + "\n" for it, t in zip(batch, texts, strict=True))
            f.flush()

        todo = [it for it in job.items if it.item_id not in kept]
        new = dict(zip((it.item_id for it in todo), predict(model, processor, todo, on_batch=keep, **options),
                       strict=True))
    return [kept[it.item_id] if it.item_id in kept else new[it.item_id] for it in job.items]


def evaluate(
    model_path: str | Path,
    items: list[Item],
    benchmark: Benchmark,
    out_dir: str | Path,
    *,
    extraction: str = "harness",
    show: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Load a checkpoint, predict every item greedily, score, write predictions + results (one set)."""
    job = EvalJob(benchmark.name, benchmark, items, Path(out_dir), extraction)
    return evaluate_jobs(model_path, [job], show=show, **options)[job.name]


def evaluate_jobs(
    model_path: str | Path,
    jobs: list[EvalJob],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    num_frames: int = 8,
    max_side: int | None = None,
    device: str = "cpu",
    max_pixels: int | None = None,
    show: bool = True,
) -> dict[str, dict[str, Any]]:
    """Score one checkpoint (loaded once) on several sets: each set's predictions.jsonl and results.json in its
    folder; one table over all of them. Returns {set name: results}."""
    from rmsd.models.processing import load_student

    for job in jobs:  # a bad mode fails now, not after decoding a whole split
        job.benchmark.check_mode(job.extraction)
    model, processor = load_student(model_path, device=device, max_pixels=max_pixels)
    scored = {}
    for job in jobs:
        t0 = time.perf_counter()
        texts = _predict_set(model, processor, job, batch_size=batch_size, max_new_tokens=max_new_tokens,
                             num_frames=num_frames, max_side=max_side)
        rows = score_predictions(job.items, texts, job.benchmark, job.extraction)
        results = {"model": str(model_path), "benchmark": job.benchmark.name, "extraction": job.extraction,
                   "n_items": len(rows), "seconds": round(time.perf_counter() - t0, 2),
                   **job.benchmark.aggregate(rows), **({"note": job.note} if job.note else {})}
        job.out.mkdir(parents=True, exist_ok=True)
        with (job.out / "predictions.jsonl").open("w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        (job.out / "results.json").write_text(json.dumps(results, indent=2))
        (job.out / PARTIAL).unlink(missing_ok=True)
        scored[job.name] = results
    if show and len(jobs) == 1:
        print_results(scored[jobs[0].name], jobs[0].out)
    elif show:
        print_summary(scored, {job.name: job.out for job in jobs})
    return scored


def print_results(results: dict[str, Any], out: str | Path | None = None) -> None:
    """A table that fits 80 columns (overall, then every breakdown, with item counts and the metric of
    task-type rows), the model above it and where predictions and results went below it."""
    from rich.console import Console
    from rich.table import Table

    from rmsd.items import METRIC_OF_TASK

    console = Console(width=min(Console().width, 80))
    console.print(f"model: {results['model']}")
    table = Table(title=f"{results['benchmark']}: {results['n_items']} items, {results['extraction']} extraction")
    for name, justify in (("group", "left"), ("value", "left"), ("metric", "left"), ("items", "right"),
                          ("score", "right")):
        table.add_column(name, justify=justify, overflow="fold")
    table.add_row("overall", "", "mean", str(results["n_items"]), f"{results['overall']:.3f}")
    counts = results.get("counts", {})
    for group, values in results.get("breakdowns", {}).items():
        for value, score in values.items():
            metric = METRIC_OF_TASK.get(value, "score") if group == "task_type" else "mean"
            table.add_row(group, str(value), metric, str(counts.get(group, {}).get(value, "")), f"{score:.3f}")
    console.print(table)
    if results.get("note"):
        console.print(results["note"])
    if out is not None:
        console.print(f"wrote {Path(out) / 'predictions.jsonl'} and {Path(out) / 'results.json'}")


def print_summary(scored: dict[str, dict[str, Any]], outs: dict[str, Path]) -> None:
    """One table over several evaluation sets: each set's overall score, then its breakdowns (metric, items)."""
    from rich.console import Console
    from rich.table import Table

    from rmsd.items import METRIC_OF_TASK

    console = Console(width=min(Console().width, 100))
    first = next(iter(scored.values()))
    console.print(f"model: {first['model']}")
    table = Table(title=f"{len(scored)} evaluation sets, greedy decoding")
    for name, justify in (("set", "left"), ("group", "left"), ("value", "left"), ("metric", "left"),
                          ("items", "right"), ("score", "right")):
        table.add_column(name, justify=justify, overflow="fold")
    for set_name, results in scored.items():
        table.add_row(set_name, "overall", results["extraction"], "mean", str(results["n_items"]),
                      f"{results['overall']:.3f}", end_section=not results.get("breakdowns"))
        counts = results.get("counts", {})
        groups = [(g, v, sc) for g, values in results.get("breakdowns", {}).items() for v, sc in values.items()]
        for i, (group, value, score) in enumerate(groups):
            metric = METRIC_OF_TASK.get(value, "score") if group == "task_type" else "mean"
            table.add_row("", group, str(value), metric, str(counts.get(group, {}).get(value, "")), f"{score:.3f}",
                          end_section=i == len(groups) - 1)
    console.print(table)
    for set_name, results in scored.items():
        if results.get("note"):
            console.print(f"{set_name}: {results['note']}")
    console.print(f"wrote predictions.jsonl and results.json under {', '.join(str(o) for o in outs.values())}")
