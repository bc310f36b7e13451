"""The model card (README.md) of every checkpoint `rmsd distill` writes, and its evaluation results.

TRL's trainers write a card naming the base model by its hub id, which a student built from
a config or loaded from a local folder does not have ("fine-tuned version of [None]"). rmsd's
card says what a reader needs to reproduce the checkpoint: the base (a checkpoint folder or
hub id, or "built from config" with the command that builds it), the rmsd command and
recipe that trained it, the stage and its settings, and, once `rmsd eval` has scored it, the
results (overall and per task type, with the metric each task type uses).

    rmsd eval --recipe R --model runs/x/student_distilled/sft      # adds the results to that card
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rmsd.items import METRIC_OF_TASK

CARD = "README.md"
RESULTS_HEADING = "## Evaluation"


@dataclass(frozen=True)
class CardInfo:
    """What every stage's card of one run shares."""

    base: str  # "a checkpoint folder / hub id", or "built from config: <command>"
    recipe: str | None  # name and file of the recipe
    command: str  # the command line that ran
    data: str | None = None  # what it trained on, and how that relates to the evaluation sets


def run_info(base: str, recipe_name: str | None, recipe_file: str | None, data: str | None = None) -> CardInfo:
    recipe = None if recipe_name is None else f"{recipe_name} ({recipe_file})" if recipe_file else recipe_name
    return CardInfo(base=base, recipe=recipe, command=shlex.join(["rmsd" if "rmsd" in sys.argv[0] else sys.argv[0],
                                                                  *sys.argv[1:]]), data=data)


def write_card(folder: str | Path, info: CardInfo, stage: str, label: str, settings: dict[str, Any]) -> Path:
    """Write FOLDER/README.md for a stage checkpoint (replacing TRL's), keeping earlier evaluation results."""
    path = Path(folder) / CARD
    kept = _results_section(path.read_text()) if path.is_file() else ""
    front = yaml.safe_dump({"library_name": "transformers", "tags": ["rmsd", "video-llm", "distillation", stage],
                            "base_model": None if info.base.startswith("built from config") else info.base},
                           sort_keys=False).strip()
    body = [f"---\n{front}\n---", f"# {Path(folder).resolve().name}: rmsd stage `{stage}` ({label})", "",
            f"- Base model: {info.base}", f"- Recipe: {info.recipe or '(none: Python API)'}",
            f"- Command: `{info.command}`", *([f"- Training data: {info.data}"] if info.data else []),
            *_temporal_line(settings), "",
            "Load it like any transformers VLM checkpoint:", "",
            "```python", "from transformers import AutoModelForImageTextToText, AutoProcessor",
            f'model = AutoModelForImageTextToText.from_pretrained("{Path(folder).resolve()}")',
            f'processor = AutoProcessor.from_pretrained("{Path(folder).resolve()}")', "```", "",
            f"## Stage settings (`distill.{stage}`)", "", "```yaml", yaml.safe_dump(settings, sort_keys=False).strip(),
            "```", ""]
    path.write_text("\n".join(body) + ("\n" + kept if kept else ""))
    return path


def _temporal_line(settings: dict[str, Any]) -> list[str]:
    """A GRPO stage that used Video-R1's temporal contrast says so, with its constants."""
    temporal = settings.get("temporal") or {}
    if not temporal.get("enabled"):
        return []
    shuffled = temporal.get("shuffled_generations") or max(1, settings.get("num_generations", 2) // 2)
    return [f"- Temporal reward: Video-R1's T-GRPO contrast (bonus α = {temporal['bonus']} for correct in-order "
            f"answers when in-order accuracy ≥ μ = {temporal['ratio']} × shuffled accuracy; {shuffled} shuffled-frame "
            "rollouts per item, never trained on; figures `temporal/*` in the trainer state)"]


def add_results(folder: str | Path, scored: dict[str, tuple[dict[str, Any], str]]) -> bool:
    """Put (or replace) the evaluation section of an rmsd card: for each evaluation set, where its numbers come
    from and its table ({name: (results, where)}); False when FOLDER has no rmsd card."""
    path = Path(folder) / CARD
    if not path.is_file() or "rmsd stage" not in path.read_text():
        return False
    text = path.read_text()
    old = _results_section(text)
    parts = [RESULTS_HEADING, ""]
    for name, (results, where) in scored.items():
        parts += ([f"### {name}", ""] if len(scored) > 1 else []) + [where, "", results_table(results), ""]
    path.write_text((text.replace(old, "") if old else text).rstrip() + "\n\n" + "\n".join(parts))
    return True


def results_table(results: dict[str, Any]) -> str:
    counts = results.get("counts", {}).get("task_type", {})
    rows = ["| task type | metric | items | score |", "|---|---|---:|---:|"]
    for task, score in sorted(results.get("breakdowns", {}).get("task_type", {}).items()):
        rows.append(f"| {task} | {METRIC_OF_TASK.get(task, 'score')} | {counts.get(task, '')} | {score:.3f} |")
    rows.append(f"| **overall** | mean of item scores | {results.get('n', '')} | {results['overall']:.3f} |")
    return "\n".join(rows)


def _results_section(text: str) -> str:
    at = text.find(RESULTS_HEADING)
    return text[at:] if at >= 0 else ""
