"""Score a student the way the community harness scores the benchmark (`rmsd eval`).

Greedy decoding with the benchmark's own prompt (`Item.prompt`), batched; the benchmark's
extractor (`harness` mode by default, so numbers stay comparable with published ones) and
metric; overall accuracy plus the breakdowns the benchmark reports. Writes
`predictions.jsonl` (one row per item) and `results.json`, and prints a table. The same
path loads the tiny offline student of either family (`rmsd build-student --family`) and any
Qwen2.5-VL or Qwen3-VL `AutoModelForImageTextToText` checkpoint; frames reach the processor
with their measured times (`rmsd.models.processing.video_metadata`).

    rmsd eval --recipe recipes/synthvid/tiny_rmsd.yaml --model runs/synthvid-tiny-rmsd/student
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rmsd.data.items import Item


def _media(item: Item, num_frames: int, max_side: int | None) -> tuple[Any, Any]:
    """(frames, image) for one item; exactly one is set for video/image benchmarks."""
    from rmsd.data.video import load_frames, load_image

    if item.video:
        return load_frames(item.video, num_frames=num_frames, max_side=max_side), None
    if item.image:
        return None, load_image(item.image, max_side=max_side)
    return None, None


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
) -> list[str]:
    """Greedy completions for `items`, in order."""
    from rmsd.models.processing import generate

    texts: list[str] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        media = [_media(it, num_frames, max_side) for it in batch]
        frames = [m[0] for m in media]
        images = [m[1] for m in media] if any(m[1] is not None for m in media) else None
        outs = generate(model, processor, [it.prompt for it in batch], frames, images=images,
                        max_new_tokens=max_new_tokens, do_sample=False)
        texts.extend(o[0] for o in outs)
        if progress is not None:
            progress(len(batch))
    return texts


def score_predictions(items: list[Item], texts: list[str], benchmark: Any, extraction: str) -> list[dict[str, Any]]:
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
            "score": float(benchmark.score(pred, item)),
            **benchmark.breakdowns(item),
        })
    return rows


def evaluate(
    model_path: str | Path,
    items: list[Item],
    benchmark: Any,
    out_dir: str | Path,
    *,
    extraction: str = "harness",
    batch_size: int = 16,
    max_new_tokens: int = 64,
    num_frames: int = 8,
    max_side: int | None = None,
    device: str = "cpu",
    max_pixels: int | None = None,
    show: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint, predict every item greedily, score, write predictions + results."""
    from rmsd.models.processing import load_student

    benchmark.check_mode(extraction)  # a bad mode fails now, not after decoding the whole split
    model, processor = load_student(model_path, device=device, max_pixels=max_pixels)
    t0 = time.perf_counter()
    texts = predict(model, processor, items, batch_size=batch_size, max_new_tokens=max_new_tokens,
                    num_frames=num_frames, max_side=max_side)
    rows = score_predictions(items, texts, benchmark, extraction)
    results = {
        "model": str(model_path),
        "benchmark": benchmark.name,
        "extraction": extraction,
        "n_items": len(rows),
        "seconds": round(time.perf_counter() - t0, 2),
        **benchmark.aggregate(rows),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if show:
        print_results(results)
    return results


def print_results(results: dict[str, Any]) -> None:
    """A rich table: overall, then every breakdown the benchmark reports."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{results['benchmark']} — {results['model']} ({results['n_items']} items, {results['extraction']})")
    table.add_column("group")
    table.add_column("value")
    table.add_column("accuracy", justify="right")
    table.add_row("overall", "", f"{results['overall']:.3f}")
    for group, values in results.get("breakdowns", {}).items():
        for value, acc in values.items():
            table.add_row(group, str(value), f"{acc:.3f}")
    Console().print(table)
