"""What a stage read, recorded beside what it wrote: `rmsd run` skips a stage whose inputs are unchanged.

A stage's inputs are a JSON record: the recipe keys it reads (by their dotted names, the
knobs in `NOT_INPUTS` left out), the identity of the data and files it reads, and the
identity of the stage before it. `rmsd match` writes them to `OUT/fingerprint.json`, each
training stage to `OUT/<stage>/fingerprint.json` when it starts (its checkpoints belong to
them) and into `stage.json` when it ends, and `rmsd eval` to each set's results folder. A
stage whose recorded inputs equal the ones asked for is up to date; any difference re-runs
it and, since every later stage records the one before it, every later stage — never an
earlier one. `differences` names what changed, key by key.

How it differs from make's timestamps: a stage is compared on what it read, not on when its
inputs were written, so a file rewritten with the same content, or a knob set back, costs
nothing; and a training stage's upstream part is the matched set's record and the previous
stage's inputs, not their bytes. Identities: the items (every field a stage can see), media
files by size and modification time (a corpus of videos is too large to read on every
check), a model folder's files (config, tokenizer, weights) by content up to `HASH_LIMIT`,
larger ones by size and modification time; an evaluated checkpoint by its files and the
inputs that trained it.

    rmsd run --recipe recipes/synthvid/tiny_rmsd.yaml      # a second call: every stage up to date
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rmsd.config import Recipe
from rmsd.items import Item

FILE = "fingerprint.json"
HASH_LIMIT = 64 * 1024**2  # files up to this size are identified by content, larger ones by size and mtime
# knobs that change where a stage writes or how often it logs or saves, not what it computes
NOT_INPUTS = frozenset({"out", "build_out", "path", "report_to", "logging_steps", "save_steps"})
# files of a model folder that are not the model: cards gain results, markers record runs
NOT_MODEL = frozenset({"README.md", FILE, "stage.json", "pretrain.json"})


def digest(value: Any) -> str:
    """sha256 of a value's canonical JSON (keys sorted): equal values, equal digests."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_identity(path: Path) -> list[Any]:
    """A file's content hash (up to HASH_LIMIT), else its size and modification time."""
    st = path.stat()
    if st.st_size <= HASH_LIMIT:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return [st.st_size, h.hexdigest()]
    return [st.st_size, st.st_mtime_ns]


def folder_identity(folder: Path) -> str:
    """The model files of a from_pretrained or adapter folder (top level; cards and run markers left out)."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name not in NOT_MODEL)
    return digest({p.name: file_identity(p) for p in files})


def items_identity(items: Iterable[Item]) -> str:
    """Every field of every item, in order (ids, prompts, options, answers, meta); media by file name, so a
    project folder moved elsewhere keeps its identities."""
    rows = []
    for it in items:
        row = it.to_dict()  # without where a loader read it (`Item.origin`): the item, not its copy
        row["video"], row["image"] = (Path(p).name if p else p for p in (it.video, it.image))
        rows.append(row)
    return digest(rows)


def media_identity(items: Iterable[Item]) -> str:
    """The items' video and image files, in order, by size and modification time (None: missing)."""
    stats: dict[str, Any] = {}
    for it in items:
        for path in (it.video, it.image):
            if path and path not in stats:
                try:
                    st = os.stat(path)
                    stats[path] = [st.st_size, st.st_mtime_ns]
                except OSError:
                    stats[path] = None
    return digest(list(stats.values()))


def model_identity(folder: Path) -> str:
    """A checkpoint as an evaluation sees it: its files (weights by content up to HASH_LIMIT, else by size and
    mtime) and the inputs that trained it (its stage.json), so a stage trained again is scored again."""
    stage = Path(folder) / "stage.json"
    inputs = json.loads(stage.read_text()).get("inputs") if stage.is_file() else None
    return digest({"files": folder_identity(Path(folder)), "trained_with": inputs})


def recipe_keys(recipe: Recipe, *names: str) -> dict[str, Any]:
    """{dotted name: value} of recipe keys or sections, `NOT_INPUTS` left out at every depth."""
    data = recipe.model_dump(mode="json")
    out = {}
    for name in names:
        value: Any = data
        for part in name.split("."):
            value = value[part]
        out[name] = _without(value)
    return out


def recipe_section(section: Any) -> Any:
    """A recipe section (a pydantic model or its dump) as inputs record it: `NOT_INPUTS` left out."""
    return _without(section.model_dump(mode="json") if hasattr(section, "model_dump") else section)


def _without(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without(v) for k, v in value.items() if k not in NOT_INPUTS}
    return value


def pool_identity(recipe: Recipe) -> Any:
    """The pool's whole content (a judge or teacher reads any of it)."""
    return recipe.load_pool().model_dump(mode="json")


# ----------------------------------------------------------------------------- the stages' inputs
STUDENT_KEYS = ("student", "dataset.num_frames", "dataset.max_side")


def match_inputs(recipe: Recipe, record_keys: Iterable[str], items: list[Item]) -> dict[str, Any]:
    """`rmsd match`: the store's records it weighs (their keys: a record never changes under its key), the items
    (answers, options), and the matching section."""
    return {"stage": "match", "samples": digest(sorted(record_keys)), "items": items_identity(items),
            "recipe": recipe_keys(recipe, "matching", "dataset.benchmark")}


def training_inputs(recipe: Recipe, stage: str, matched: str, student: str, items: str, media: str,
                    previous: str | None) -> dict[str, Any]:
    """A training stage: the matched set's identity, the model it starts from (the previous stage's inputs, or the
    student's files), the items and their media, and its recipe keys."""
    keys = recipe_keys(recipe, *STUDENT_KEYS, f"distill.{stage}", "distill.shared_prefix")
    adv = recipe.distill.adversarial
    if stage == "adversarial" and adv.visd.enabled and adv.visd.judge == "llm":
        keys["pool"] = pool_identity(recipe)
    return {"stage": stage, "matched": matched, "student": student, "previous": previous, "items": items,
            "media": media, "recipe": keys}


def eval_inputs(recipe: Recipe, set_config: Any, model: str, items: list[Item]) -> dict[str, Any]:
    """One evaluation set: the model's identity, the set's items and media, and the eval and frame settings."""
    keys = recipe_keys(recipe, *STUDENT_KEYS, "eval")
    keys["eval"].pop("benchmarks", None)
    keys["set"] = _without(set_config.model_dump(mode="json"))
    if recipe.eval.judge_teacher is not None:
        keys["pool"] = pool_identity(recipe)
    return {"stage": "eval", "model": model, "items": items_identity(items), "media": media_identity(items),
            "recipe": keys}


# ----------------------------------------------------------------------------- records
def read(folder: Path) -> dict[str, Any] | None:
    """A folder's fingerprint.json ({"recipe", "inputs", "digest"}), or None."""
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "inputs" in data else None


def write(folder: Path, recipe: str, inputs: dict[str, Any]) -> None:
    """Record `inputs` beside a stage's output (atomically: a kill leaves the old record or the new one)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (FILE + ".tmp")
    tmp.write_text(json.dumps({"recipe": recipe, "digest": digest(inputs), "inputs": inputs}, indent=2) + "\n")
    os.replace(tmp, folder / FILE)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """What changed from `old` to `new` inputs, one phrase per key: "distill.sft.lr 0.001 -> 0.0005"."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(new) + [k for k in old if k not in new]:
            name = key if prefix in ("", "recipe") else f"{prefix}.{key}"
            if old.get(key, _MISSING) != new.get(key, _MISSING):
                out += differences(old.get(key, _MISSING), new.get(key, _MISSING), name)
        return out
    if _is_digest(old) or _is_digest(new) or isinstance(old, dict) or isinstance(new, dict):
        return [f"{LABELS.get(prefix, prefix or 'its inputs')} changed"]
    return [f"{prefix} {_show(old)} -> {_show(new)}"]


_MISSING = "(not set)"
LABELS = {"samples": "the samples it reads", "items": "the items", "media": "the media files", "matched": "the matched set",
          "student": "the student's files", "previous": "the stage before it", "model": "the model it scores"}


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def why_stale(recorded: dict[str, Any] | None, inputs: dict[str, Any], limit: int = 4) -> str | None:
    """None when `recorded` inputs equal `inputs`; else one line naming what differs."""
    if recorded == inputs:
        return None
    if recorded is None:
        return "no record of its inputs"
    changed = differences(recorded, inputs)
    more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
    return ", ".join(changed[:limit]) + more
