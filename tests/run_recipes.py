"""A tiny recipe for the `rmsd run` and resume tests: synthvid, the quickstart's simulated pool (or a pool
given), the tiny student, a few steps per stage, one thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
POOL = ROOT / "rmsd" / "assets" / "quickstart_pool.yaml"


def tiny_recipe(folder: Path, *, pool: Path | dict | None = None, adversarial: bool = False, name: str = "tiny-run",
                **sections: Any) -> Path:
    """Write `folder/recipe.yaml` (its outputs under folder/runs, the data at folder/data); returns its path."""
    if isinstance(pool, dict):
        (folder / "pool.yaml").write_text(yaml.safe_dump(pool))
        pool = folder / "pool.yaml"
    recipe = {
        "name": name,
        "dataset": {"benchmark": "synthvid", "path": str(folder / "data"), "num_frames": 4},
        "pool": str(pool or POOL),
        "sampling": {"out": str(folder / "runs" / "samples")},
        "matching": {"out": str(folder / "runs" / "matched")},
        "student": {"build": "tiny", "build_out": str(folder / "runs" / "student")},
        "distill": {"out": str(folder / "runs" / "distilled"), "report_to": [],
                    "sft": {"max_steps": 2, "batch_size": 4, "warmup_steps": 0, "save_steps": 2, "logging_steps": 1},
                    "adversarial": {"enabled": adversarial, "max_steps": 1, "batch_size": 2, "num_generations": 2,
                                    "max_completion_length": 8, "disc_warmup_steps": 0, "warmup_steps": 0,
                                    "logging_steps": 1, "save_steps": 1,
                                    "reward_weights": {"discriminator": 1.0, "format": 0.5}}},
        "eval": {"out": str(folder / "runs" / "eval"), "max_new_tokens": 8, "batch_size": 8},
    }
    for dotted, value in sections.items():  # e.g. eval__limit=2 -> eval.limit
        node = recipe
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time: equal snapshots, nothing written."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}
