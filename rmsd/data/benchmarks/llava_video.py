"""LLaVA-Video-178K as a training corpus: conversation rows into one `Item` per question.

Rows keep the public schema (`lmms-lab/LLaVA-Video-178K`, JSON lists per subset): `id, video,
conversations [{from: human|gpt, value}], data_source`. Every human turn with the gpt turn after
it is one item (a multi-turn conversation gives several, asked on their own: the questions of
one conversation are about the same video, not about each other's answers). A human turn that
lists lettered options ("A. …" on their own lines, from A on) is a multiple-choice item whose
answer is the letter the gpt turn starts with; any other question is an open item whose
reference answer is the gpt turn (scored by ROUGE-L). The `<image>` placeholder is dropped
from the prompt, which is otherwise the human turn as written.

Subsets are folders (`0_30_s_academic_v0_1`, …) of files named by kind: `*_cap_*` (captions),
`*_oe_*` (open-ended), `*_mc_*` (multiple choice). `dataset.split` picks a kind: `caption`,
`open_ended`, `multi_choice`, or `train` for all; `dataset.config` a subset folder. Videos
resolve under `dataset.video_root` (as `video`, or `data_source/video`), default the data folder.

    rmsd sample --recipe my_llava_video_recipe.yaml
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rmsd.data.benchmarks.base import BadRows, Benchmark, find_media, located_rows
from rmsd.data.items import OPTION_LETTERS, Item

KINDS = {"caption": "cap", "open_ended": "oe", "multi_choice": "mc"}
_OPTION_LINE = re.compile(r"^\s*\(?([A-H])[.):]\s+(.+?)\s*$")
_LETTER = re.compile(r"^\s*\(?([A-H])\b")
_PLACEHOLDER = re.compile(r"<(?:image|video)>\s*")


def parse_question(text: str) -> tuple[str, list[str], bool]:
    """(question without options, option texts, whether an option block was started but broken)."""
    lines = _PLACEHOLDER.sub("", text).strip().splitlines()
    starts = [i for i, line in enumerate(lines) if (m := _OPTION_LINE.match(line)) and m.group(1) == "A"]
    if not starts:
        return "\n".join(lines).strip(), [], False
    first, options = starts[0], []
    for line in lines[first:]:
        m = _OPTION_LINE.match(line)
        if m is None or m.group(1) != OPTION_LETTERS[len(options)]:
            break
        options.append(m.group(2))
    broken = len(options) < 2 or any(_OPTION_LINE.match(line) for line in lines[first + len(options):])
    return "\n".join(lines[:first]).strip(), options, broken


def _select(split: str, config: str | None):
    tag = KINDS.get(split)

    def keep(file: Path) -> bool:
        parts = [p.lower() for p in file.parts]
        if config is not None and config.lower() not in parts:
            return False
        return tag is None or re.search(rf"(^|_){tag}(_|$)", file.stem.lower()) is not None
    return keep


class LLaVAVideo(Benchmark):
    """LLaVA-Video-178K: captions, open-ended and multiple-choice questions about videos."""

    name = "llava_video"
    default_split = "train"
    breakdown_keys = ("task_type", "data_source")
    corpus = True

    def load_items(self, path: str | Path, split: str | None = None, video_root: str | Path | None = None,
                   limit: int | None = None, config: str | None = None, on_bad_row: str = "error",
                   check_media: bool = True) -> list[Item]:
        split = split or self.default_split
        located, data_dir = located_rows(path, split, config, self.name, select=_select(split, config))
        bad = BadRows(on_bad_row)
        items: list[Item] = []
        for file, index, row in located:
            if limit is not None and len(items) >= limit:
                break
            roots = [Path(video_root)] if video_root is not None else [r for r in (data_dir, file and file.parent) if r]
            items += self._items(row, roots, check_media, bad.at(file, index, path))
        self.skipped = bad.counts
        return items[:limit] if limit is not None else items

    def _items(self, row: Any, roots: list[Path], check_media: bool, bad: Any) -> list[Item]:
        if not isinstance(row, dict) or not isinstance(row.get("conversations"), list) or row.get("id") is None:
            bad("conversations", "not a conversation row", "expected id, video, conversations [{from, value}]")
            return []
        if not row.get("video"):
            bad("video", "missing media", "the row names no video")
            return []
        source = str(row.get("data_source") or "")
        video = (find_media(roots + [r / source for r in roots if source], [str(row["video"])]) if check_media
                 else Path(roots[0] if roots else ".") / str(row["video"]))
        if video is None:
            bad("video", "missing media", f"{row['video']} not found under {', '.join(map(str, roots))} "
                                          "(set dataset.video_root)")
            return []
        turns = row["conversations"]
        pairs = [(turns[i], turns[i + 1]) for i in range(len(turns) - 1)
                 if isinstance(turns[i], dict) and turns[i].get("from") == "human"
                 and isinstance(turns[i + 1], dict) and turns[i + 1].get("from") == "gpt"]
        if not pairs:
            bad("conversations", "no question", "no human turn followed by a gpt turn")
            return []
        items = []
        for k, (human, gpt) in enumerate(pairs):
            item = self._item(row, k, str(human.get("value") or ""), str(gpt.get("value") or ""), video, bad)
            if item is not None:
                items.append(item)
        return items

    def _item(self, row: dict, k: int, asked: str, answer: str, video: Path, bad: Any) -> Item | None:
        question, options, broken = parse_question(asked)
        if broken:
            return bad(f"conversations[{2 * k}]", "unparseable options",
                       "option lines that are not A., B., … in order")
        meta = {"id": row["id"], "data_source": str(row.get("data_source") or ""), "turn": k}
        prompt = _PLACEHOLDER.sub("", asked).strip()
        item_id = f"{row['id']}/{k}"
        if options:
            letter = _LETTER.match(answer)
            if letter is None or letter.group(1) not in OPTION_LETTERS[: len(options)]:
                return bad(f"conversations[{2 * k + 1}]", "answer not an option",
                           f"{answer[:40]!r} with {len(options)} options")
            return Item(item_id=item_id, benchmark=self.name, task_type="mcq", question=question, prompt=prompt,
                        options=options, answer=letter.group(1), video=str(video), meta={**meta, "reference": answer})
        return Item(item_id=item_id, benchmark=self.name, task_type="open", question=question, prompt=prompt,
                    answer=answer.strip(), video=str(video), meta=meta)

    def breakdowns(self, item: Item) -> dict[str, str]:
        return {"task_type": item.task_type, "data_source": item.meta["data_source"]}
