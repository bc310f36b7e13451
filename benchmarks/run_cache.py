"""benchmarks/reproduce.py's run cache: reuse a finished run only when it describes the same run.

Two places hold finished runs: the run's own folder (`result.json`, under runs/, which a new session's
work tree may not have) and the committed results (the regime's `reproduce.json`, e.g.
`benchmarks/results/synthvid-v3/reproduce.json`, which `reproduce.py --commit` commits after every run). A run found in either is not trained again, so an
experiment longer than a session goes on where the last commit left it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def cached(run: Path, recipe: Any, points: list[int], matched: str | None = None) -> dict[str, Any] | None:
    """The result of an earlier identical run (same recipe, same curve points, and where both record it the same
    matched set: `rmsd.pipeline.matched_identity`, which changes when the set is made again from other samples
    or settings into the same folder), else None."""
    path = run / "result.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if matched is not None and saved.get("matched", matched) != matched:
        return None
    now = recipe.model_dump(mode="json")
    same = same_config(saved.get("recipe"), now, recipe.model_dump(mode="json", exclude_defaults=True))
    return saved if same and saved.get("points") == points else None


def committed(results: Path, regime_hash: str, method: str, seed: int, recipe: Any,
              points: list[int]) -> dict[str, Any] | None:
    """The same run as recorded in a committed reproduce.json of the same regime, else None."""
    if not results.is_file():
        return None
    return committed_in(json.loads(results.read_text()), regime_hash, method, seed, recipe, points)


def committed_in(saved: dict[str, Any], regime_hash: str, method: str, seed: int, recipe: Any,
                 points: list[int]) -> dict[str, Any] | None:
    """The same run among `saved["runs"]` when `saved` records the same regime hash, else None."""
    if saved.get("regime_hash") != regime_hash:
        return None
    now = recipe.model_dump(mode="json")
    changed = recipe.model_dump(mode="json", exclude_defaults=True)
    for run in saved.get("runs", []):
        if (run.get("method"), run.get("seed")) == (method, seed) and "error" not in run \
                and run.get("points") == points and same_config(run.get("recipe"), now, changed):
            return run
    return None


def same_config(saved: Any, now: Any, changed: Any) -> bool:
    """Whether a saved recipe dump describes the same run as `now`.

    A key the saved dump lacks is a config field added after that run; it matches when the
    current recipe leaves it at its default (`changed`: the dump without defaults), since a
    new field's default keeps the old behaviour. Anything else must be equal."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return saved == now
    changed = changed if isinstance(changed, dict) else {}
    for key in now.keys() | saved.keys():
        if key not in saved:
            if key in changed:
                return False
        elif key not in now or not same_config(saved[key], now[key], changed.get(key)):
            return False
    return True
