"""Whether a training stage's folder answers the inputs asked for: finished, resumable, or stale.

A stage writes `OUT/<stage>/fingerprint.json` (its inputs, `rmsd.fingerprint`) before its first
checkpoint and `stage.json` (with the same inputs) when it ends. With resume, a finished stage
is returned only when its stage.json records the inputs asked for, and a killed one continues
only from checkpoints its fingerprint.json says were made with them; anything else is stale and
named (`rmsd.fingerprint.differences`). Kept apart from `rmsd.train.distill` so `rmsd run` can
tell a stage is up to date without importing a trainer.

    rmsd distill --recipe R --matched DIR --resume --set distill.sft.max_steps=16   # trains again, says why
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from rmsd.errors import RmsdError
from rmsd.fingerprint import differences, recipe_section, why_stale
from rmsd.models.lora import is_adapter_folder

STAGE_FILE = "stage.json"
KEPT = ("judge_cache.jsonl",)  # what a stage folder trained again keeps: LLM judge verdicts, paid for
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def resume_point(out: Path, resume: bool, inputs: dict[str, Any]) -> tuple[str | None, str | None]:
    """(None: fresh start | a checkpoint path to resume from | "finished", why the folder's run is stale or None).

    Finished and resumable only with the same inputs: a finished stage's stage.json, its checkpoints'
    fingerprint.json (written before the first checkpoint). A stage.json from before inputs were recorded is
    compared on its stage config alone; checkpoints without a fingerprint.json are not resumed."""
    finished = (out / STAGE_FILE).is_file() and ((out / "config.json").is_file() or is_adapter_folder(out))
    checkpoints = sorted((int(m.group(1)), p) for p in out.glob("checkpoint-*") if (m := _CHECKPOINT.match(p.name)))
    if not resume:
        if finished or checkpoints:
            raise RmsdError(f"{out} holds a previous run: pass --resume to continue it, or choose another --out")
        return None, None
    if finished:
        stale = _finished_stale(json.loads((out / STAGE_FILE).read_text()), inputs)
        return ("finished", None) if stale is None else (None, f"{out} was trained with other inputs: {stale}")
    # The trainer state is the last file a checkpoint writes: without it the save was cut short.
    complete = [p for _, p in checkpoints if (p / "trainer_state.json").is_file()]
    if not complete:
        return None, None
    recorded = _recorded_inputs(out)
    stale = why_stale(recorded, inputs) if recorded is not None else "its checkpoints record no inputs"
    return (str(complete[-1]), None) if stale is None else (None, f"{out}'s checkpoints were made with other "
                                                                  f"inputs: {stale}")


def _recorded_inputs(out: Path) -> dict[str, Any] | None:
    from rmsd.fingerprint import read

    record = read(out)
    return record["inputs"] if record is not None else None


def _finished_stale(recorded: dict[str, Any], inputs: dict[str, Any]) -> str | None:
    """Why a finished stage's stage.json does not answer `inputs` (None: it does)."""
    if "inputs" in recorded:
        return why_stale(recorded["inputs"], inputs)
    stage = recorded.get("stage", inputs.get("stage"))
    asked = (inputs.get("recipe") or {}).get(f"distill.{stage}")
    old = recipe_section(recorded.get("config") or {})
    if asked is None or old == asked:
        return None  # recorded before rmsd kept inputs: its config is all it can be compared on
    return ", ".join(differences(old, asked, f"distill.{stage}")[:4])


def clear_stage(out: Path) -> None:
    """Remove a stale stage's folder, keeping its LLM judge's verdict cache (keyed by content, paid for: valid for
    any configuration); a linked folder (e.g. a shared prefix) is unlinked, not emptied."""
    if out.is_symlink():
        out.unlink()
        return
    if not out.exists():
        return
    aside = {name: out.parent / f".{out.name}.{name}" for name in KEPT if (out / name).is_file()}
    for name, where in aside.items():  # moved, not copied: a kill now leaves it beside the folder, whole
        os.replace(out / name, where)
    shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, where in aside.items():
        os.replace(where, out / name)
