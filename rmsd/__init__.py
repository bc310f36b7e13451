"""rmsd: black-box multi-sample distillation of video LLMs (`rmsd --help`; README.md).

`rmsd.run(recipe, overrides=[...])` runs a recipe from its data to its report, as `rmsd run` does
(`rmsd.workflow.runner.run`); it is imported on first use, so `import rmsd` loads nothing heavy.
"""

from __future__ import annotations

from typing import Any


def run(recipe: Any, overrides: list[str] | None = None, **options: Any) -> Any:
    """`rmsd run` from Python: `rmsd.run("recipes/synthvid/tiny_rmsd.yaml", overrides=["distill.sft.lr=5e-4"])`."""
    from rmsd.workflow.runner import run as run_recipe

    return run_recipe(recipe, overrides, **options)
