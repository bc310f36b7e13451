"""Export a matched dataset to the conversational formats other trainers read.

`rmsd match` writes one row per teacher sample with its weight; `rmsd distill` trains on it
with a per-item weighted loss. This module writes the same targets (the kept samples with
weight > 0, in `rmsd distill`'s order) for a user who trains with another framework:

- `trl`: TRL's conversational language-modeling rows, `{"messages": [...], "videos"|"images": [paths]}`,
  content as typed blocks with a `{"type": "video"}` / `{"type": "image"}` placeholder per
  media file, as TRL's vision-language SFT reads them (https://huggingface.co/docs/trl/dataset_formats,
  https://huggingface.co/docs/trl/sft_trainer). TRL's stock collator loads `images`; for
  `videos` pass a collator (TRL's `examples/scripts/sft_video_llm.py` shows one).
- `swift`: ms-swift's standard format, `{"messages": [{"role", "content"}], "videos"|"images": [...]}`,
  with one `<video>` / `<image>` tag per file in the user text
  (https://swift.readthedocs.io/en/latest/Customization/Custom-dataset.html, "Multimodal").
- `sharegpt`: ShareGPT rows, `{"conversations": [{"from": "human"|"gpt", "value"}], "system", "videos"|"images"}`,
  with the same tags, as LLaMA-Factory documents the format
  (https://github.com/hiyouga/LLaMA-Factory/blob/main/data/README.md, "Sharegpt Format").
- `llamafactory`: the `sharegpt` rows plus the `dataset_info.json` entry that names them, so
  the folder is a LLaMA-Factory `dataset_dir` (`dataset: rmsd_matched`).

How it differs from a plain dump: none of these formats documents a per-sample loss weight,
so the weight becomes repeated rows. rmsd's loss normalises weights within an item
(`w̄_k = w_k / Σ w`, each item weighs 1); an item is given about R rows
(`--rows-per-item`, default: the largest number of kept samples of any item) and sample k
`max(1, round_half_up(R · w̄_k))` of them, so better samples appear more often, every kept
sample appears, and an item with many kept samples does not outweigh one with few. With
R = 1 every kept sample appears once (weights ignored). `weights.jsonl` lists each exported
sample's weight, share and rows; `export.json` the counts and the rule.

    rmsd match export --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched \
        --format trl --out runs/synthvid-tiny-rmsd/export-trl
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.matching.dataset import matched_file, read_matched

FORMATS = ("trl", "swift", "llamafactory", "sharegpt")
DATA_FILE = "train.jsonl"
WEIGHTS_FILE = "weights.jsonl"
MANIFEST_FILE = "export.json"
LLAMAFACTORY_DATASET = "rmsd_matched"  # the name a LLaMA-Factory config passes as `dataset:`
PLACEHOLDERS = {"videos": "<video>", "images": "<image>"}  # ms-swift and LLaMA-Factory use the same tags
REPEAT_RULE = ("rows of sample k = max(1, round_half_up(R * w_k / sum of its item's kept weights)); "
               "R = rows_per_item")


@dataclass
class Target:
    """One kept teacher sample of an item: what the student is taught to answer."""

    item: Item
    text: str
    weight: float
    teacher: str
    sample_index: int


# ----------------------------------------------------------------------------- reading
def read_matched_rows(matched: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    """(file, rows) of `rmsd match`'s output (`rmsd.matching.dataset.read_matched`)."""
    return matched_file(matched), read_matched(matched)


def select_targets(rows: list[dict[str, Any]], items: list[Item]) -> list[list[Target]]:
    """The kept samples with weight > 0, grouped by item, each group in `rmsd distill`'s order
    (sample_index, then teacher). Items without such a sample are left out."""
    item_of = {it.item_id: it for it in items}
    by_item: dict[str, list[Target]] = defaultdict(list)
    unknown: list[str] = []
    for row in rows:
        w = row.get("weight")
        if not isinstance(w, int | float) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise RmsdError(f"matched sample of item {row.get('item_id')} has weight {w!r}: weights are numbers >= 0; "
                            "re-run `rmsd match`")
        if not (row.get("kept") is True and w > 0 and (row.get("text") or "").strip()):
            continue
        item = item_of.get(row["item_id"])
        if item is None:
            unknown.append(str(row["item_id"]))
            continue
        by_item[item.item_id].append(Target(item, row["text"], float(w), str(row["teacher"]),
                                            int(row.get("sample_index") or 0)))
    if unknown:
        raise RmsdError(f"{len(unknown)} kept samples belong to items the recipe's dataset does not have "
                        f"(e.g. {unknown[0]!r}): pass the recipe (and --set overrides) that `rmsd match` used")
    return [sorted(group, key=lambda t: (t.sample_index, t.teacher)) for group in by_item.values()]


def repeats(weights: list[float], rows_per_item: int) -> list[int]:
    """Rows per sample of one item (the rule in the module docstring; equal weights, equal rows)."""
    total = sum(weights)
    return [max(1, math.floor(rows_per_item * w / total + 0.5)) for w in weights]


# ----------------------------------------------------------------------------- rows
def _media(item: Item) -> dict[str, list[str]]:
    """{"videos": [path]} and/or {"images": [path]}: the item's media, video first as rmsd's student sees it."""
    media = {}
    if item.video:
        media["videos"] = [item.video]
    if item.image:
        media["images"] = [item.image]
    return media


def _tagged_prompt(item: Item, media: dict[str, list[str]]) -> str:
    """The user text with one `<video>` / `<image>` tag per media file in front (ms-swift, LLaMA-Factory)."""
    for tag in PLACEHOLDERS.values():
        if tag in item.prompt:
            raise RmsdError(f"item {item.item_id}: its prompt already contains {tag!r}, which ms-swift and "
                            "LLaMA-Factory read as a media tag; export it with --format trl")
    return "".join(PLACEHOLDERS[kind] * len(paths) for kind, paths in media.items()) + item.prompt


def trl_row(target: Target, system: str | None) -> dict[str, Any]:
    media = _media(target.item)
    blocks = [{"type": kind[:-1]} for kind, paths in media.items() for _ in paths]  # "videos" -> "video"
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    messages += [{"role": "user", "content": [*blocks, {"type": "text", "text": target.item.prompt}]},
                 {"role": "assistant", "content": [{"type": "text", "text": target.text}]}]
    return {"messages": messages, **media}


def swift_row(target: Target, system: str | None) -> dict[str, Any]:
    media = _media(target.item)
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": _tagged_prompt(target.item, media)},
                 {"role": "assistant", "content": target.text}]
    return {"messages": messages, **media}


def sharegpt_row(target: Target, system: str | None) -> dict[str, Any]:
    media = _media(target.item)
    conversations = [{"from": "human", "value": _tagged_prompt(target.item, media)},
                     {"from": "gpt", "value": target.text}]
    return {"conversations": conversations, "system": system or "", **media}


ROW_BUILDERS: dict[str, Callable[[Target, str | None], dict[str, Any]]] = {
    "trl": trl_row, "swift": swift_row, "sharegpt": sharegpt_row, "llamafactory": sharegpt_row}


def llamafactory_info(media_kinds: list[str]) -> dict[str, Any]:
    """The dataset_info.json entry for the exported rows (LLaMA-Factory's data/README.md, ShareGPT)."""
    columns = {"messages": "conversations", "system": "system", **{kind: kind for kind in media_kinds}}
    return {LLAMAFACTORY_DATASET: {"file_name": DATA_FILE, "formatting": "sharegpt", "columns": columns}}


# ----------------------------------------------------------------------------- writing
def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise RmsdError(f"--format {fmt!r} is unknown: use one of {', '.join(FORMATS)}")


def export_matched(items: list[Item], matched: str | Path, fmt: str, out: str | Path, system: str | None = None,
                   rows_per_item: int | None = None) -> dict[str, Any]:
    """Write OUT/train.jsonl (+ dataset_info.json for llamafactory), weights.jsonl and export.json.

    items: the recipe's items (prompt and media path of every item the matched rows name).
    system: the system message of every row (None or "": none).
    rows_per_item: R of the repeat rule (default: the largest number of kept samples of an item).
    Returns the manifest written to export.json.
    """
    check_format(fmt)
    if rows_per_item is not None and rows_per_item < 1:
        raise RmsdError(f"--rows-per-item {rows_per_item}: use a whole number >= 1")
    file, rows = read_matched_rows(matched)
    groups = select_targets(rows, items)
    if not groups:
        raise RmsdError(f"{file}: no kept sample with weight > 0, nothing to export; check `rmsd match`'s report")
    r = rows_per_item or max(len(g) for g in groups)
    # every row must carry the same keys, so `datasets` reads one schema: a dataset of videos
    # and images gives every row both lists (empty where an item has none)
    kinds = [k for k in ("videos", "images") if any(k in _media(t.item) for g in groups for t in g)]
    build = ROW_BUILDERS[fmt]
    if fmt != "trl":  # a prompt that already holds a media tag fails here, before anything is written
        for group in groups:
            _tagged_prompt(group[0].item, _media(group[0].item))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_rows = 0
    with _atomic(out / DATA_FILE) as data, _atomic(out / WEIGHTS_FILE) as weights:
        for group in groups:
            total = sum(t.weight for t in group)
            for target, n in zip(group, repeats([t.weight for t in group], r), strict=True):
                row = build(target, system or None)
                row.update({k: row.get(k, []) for k in kinds})
                line = json.dumps(row, ensure_ascii=False) + "\n"
                data.write(line * n)
                weights.write(json.dumps({
                    "item_id": target.item.item_id, "teacher": target.teacher, "sample_index": target.sample_index,
                    "weight": target.weight, "share": target.weight / total,
                    "first_row": n_rows, "rows": n}) + "\n")
                n_rows += n
    if fmt == "llamafactory":
        _write_json(out / "dataset_info.json", llamafactory_info(kinds))
    manifest = {"format": fmt, "matched": str(file), "out": str(out), "rows": n_rows,
                "samples": sum(len(g) for g in groups), "items": len(groups),
                "items_without_kept_sample": len(items) - len(groups), "rows_per_item": r, "rule": REPEAT_RULE,
                "system": system or None, "media": kinds}
    _write_json(out / MANIFEST_FILE, manifest)
    return manifest


@contextmanager
def _atomic(path: Path) -> Iterator[TextIO]:
    """A text file written to NAME.partial and renamed on success: a killed export never leaves half a file."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w") as f:
            yield f
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


def _write_json(path: Path, value: Any) -> None:
    with _atomic(path) as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")
