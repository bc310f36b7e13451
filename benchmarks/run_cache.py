"""benchmarks/reproduce.py's run cache: reuse a finished run only when it describes the same run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def cached(run: Path, recipe: Any, points: list[int]) -> dict[str, Any] | None:
    """The result of an earlier identical run (same recipe, same curve points), else None."""
    path = run / "result.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    now = recipe.model_dump(mode="json")
    same = same_config(saved.get("recipe"), now, recipe.model_dump(mode="json", exclude_defaults=True))
    return saved if same and saved.get("points") == points else None


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
