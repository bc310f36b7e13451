"""LLaVA-Video-178K as a training corpus: conversation rows into one `Item` per question.

Rows keep the public schema (`lmms-lab/LLaVA-Video-178K`, JSON lists per subset): `id, video,
conversations [{from: human|gpt, value}], data_source`. Every human turn with the gpt turn after
it is one item (a multi-turn conversation gives several, asked on their own: the questions of
one conversation are about the same video, not about each other's answers). A human turn that
lists lettered options — on their own lines ("A. run", "(B) walk", "C) sit", after an "Options:"
header or not) or inline on one line ("…? A. run B. walk C. sit") — is a multiple-choice item,
unless its file is a caption or open-ended one (`*_cap_*`, `*_oe_*`: prose that reads "A. … B. …"
there stays an open question);
its answer is the option whose text the gpt turn gives ("A cup" is B when B's text is "a cup"),
else the letter it starts with ("B", "B.", "(B) walk"). Any other question is an open item whose
reference answer is the gpt turn (scored by ROUGE-L). The `<image>` placeholder is dropped from
the prompt, which is otherwise the human turn as written.

An item's id is `<data file stem>/<row>/<turn>` ("0_30_s_academic_mc_v0_1_qa_processed/17/0"): the
corpus reuses a video's `id` for every question about it and across its caption, open-ended and
multiple-choice files, so ids built from it repeat; file, row and turn cannot, and stay the same
on every re-read of the same files (the sample store resumes). The row's `id` is kept in `meta`.
An id seen twice all the same (two data files of one name) is a broken row (`dataset.on_bad_row`).

Subsets are folders (`0_30_s_academic_v0_1`, …) of files named by kind: `*_cap_*` (captions),
`*_oe_*` (open-ended), `*_mc_*` (multiple choice); a parquet copy of a kind beside its JSON is not
read twice. `dataset.split` picks a kind: `caption`, `open_ended`, `multi_choice`, or `train` for
all; `dataset.config` a subset folder. Videos resolve per data file: under
`dataset.video_root/<the file's subset folder>`, then `dataset.video_root`, then the file's own
folder (each also with `data_source/` in between), so `path` may be the whole dataset with
`video_root` its root.

    rmsd sample --recipe my_llava_video_recipe.yaml
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rmsd.datasets.benchmark import (
    BadRows,
    Benchmark,
    all_data_files,
    find_media,
    located_rows,
    read_data_file,
)
from rmsd.errors import RmsdError
from rmsd.items import OPTION_LETTERS, Item

KINDS = {"caption": "cap", "open_ended": "oe", "multi_choice": "mc"}
# an option marker: "A.", "A)", "A:", "(A)" after a line start or a space, before a space
_MARKER = re.compile(r"(?:^|(?<=\s))(?:\(([A-H])\)|([A-H])[.):])(?=\s)", re.M)
_HEADER = re.compile(r"(?:^|\s)(?:options|choices)\s*:\s*$", re.I)
_PLACEHOLDER = re.compile(r"<(?:image|video)>\s*")
_LEADING = re.compile(r"\s*(?:\(([A-H])\)|([A-H])(?=[.):,]|\s|$))[.):,]?\s*(.*)", re.S)


def _line_start(text: str, pos: int) -> bool:
    return text[text.rfind("\n", 0, pos) + 1:pos].strip() == ""


def parse_question(text: str) -> tuple[str, list[str], bool]:
    """(question without options, option texts, whether an option block was started but broken).

    Options are the chain of markers A, B, C, … (each the next letter) that starts at the first "A" with a "B"
    after it; an option runs to the next marker, the last one to the end of its line. A chain that starts on its
    own line and stops short of two options, or own-line markers after the chain, is broken."""
    body = _PLACEHOLDER.sub("", text).strip()
    marks = [(m.start(), m.end(), m.group(1) or m.group(2)) for m in _MARKER.finditer(body)]
    for k, (start, _, letter) in enumerate(marks):
        if letter != "A":
            continue
        chain = [marks[k]]
        for mark in marks[k + 1:]:
            if mark[2] == OPTION_LETTERS[len(chain)]:
                chain.append(mark)
            elif mark[2] == "A":
                break
        if len(chain) < 2:
            if _line_start(body, start):
                return body, [], True
            continue
        line_end = body.find("\n", chain[-1][1])
        line_end = len(body) if line_end < 0 else line_end
        ends = [c[0] for c in chain[1:]] + [line_end]
        options = [body[c[1]:e].strip() for c, e in zip(chain, ends, strict=True)]
        later = [m for m in marks if m[0] >= line_end and _line_start(body, m[0])]
        broken = any(not o for o in options) or bool(later)
        question = _HEADER.sub("", body[:start].rstrip()).strip()
        return question, options, broken
    return body, [], False


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".").strip()


def answer_letter(answer: str, options: list[str]) -> str | None:
    """The option the gpt turn answers: one whose text it gives (checked first: "A cup" may be option B's text),
    else the letter it starts with when what follows is punctuation, nothing, or that option's text."""
    said = _norm(answer)
    for letter, option in zip(OPTION_LETTERS, options, strict=False):
        if said == _norm(option):
            return letter
    m = _LEADING.match(answer)
    if m is None:
        return None
    letter, rest = m.group(1) or m.group(2), m.group(3)
    if letter not in OPTION_LETTERS[: len(options)]:
        return None
    marked = bool(m.group(1)) or answer.lstrip()[1:2] in (".", ")", ":", ",")
    if not rest.strip() or marked or _norm(rest) == _norm(options[OPTION_LETTERS.index(letter)]):
        return letter
    return None


def _kind(file: Path) -> str | None:
    stem = file.stem.lower()
    return next((tag for tag in KINDS.values() if re.search(rf"(^|_){tag}(_|-|$)", stem)), None)


def corpus_files(root: Path, split: str, config: str | None) -> list[Path]:
    """The data files under `root` of `split`'s kind (every kind for `train`) and `config`'s subset folder; a
    parquet file is left out where a JSON file of its kind sits in the same folder (the hub stores both)."""
    tag = KINDS.get(split)
    files = [f for f in all_data_files(root)
             if (config is None or config.lower() in (p.lower() for p in f.relative_to(root).parts[:-1]))
             and (tag is None or _kind(f) == tag)]
    json_kinds = {(f.parent, _kind(f)) for f in files if f.suffix != ".parquet"}
    files = [f for f in files if f.suffix != ".parquet" or (f.parent, _kind(f)) not in json_kinds]
    if not files:
        raise RmsdError(f"llava_video: no data file of split {split!r}" + (f", config {config!r}" if config else "")
                        + f" under {root}: splits are caption, open_ended, multi_choice or train")
    return files


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
        p = Path(path).expanduser()
        if p.is_dir():
            located = [(f, i, row) for f in corpus_files(p, split, config) for i, row in enumerate(read_data_file(f))]
            data_dir: Path | None = p
        else:
            located, data_dir = located_rows(path, split, config, self.name)
        bad = BadRows(on_bad_row)
        items: list[Item] = []
        for file, index, row in located:
            if limit is not None and len(items) >= limit:
                break
            report = bad.at(file, index, path)
            stem = file.stem if file is not None else f"{config or 'hub'}_{split}"
            kind = _kind(file) if file is not None else KINDS.get(split)
            for item in self._items(row, self._roots(video_root, data_dir, file), check_media, report, kind):
                item.item_id = f"{stem}/{index}/{item.meta['turn']}"
                if bad.repeated(item.item_id, file, index, path, "id", "duplicate id", ": two data files of one name?"):
                    continue
                item.origin = (str(file), index) if file is not None else None
                items.append(item)
        self.skipped = bad.counts
        return items[:limit] if limit is not None else items

    @staticmethod
    def _roots(video_root: str | Path | None, data_dir: Path | None, file: Path | None) -> list[Path]:
        """Where one data file's videos may sit (module docstring), in order."""
        own = [file.parent] if file is not None else []
        if video_root is None:
            return list(dict.fromkeys([r for r in (data_dir, *own) if r is not None]))
        root = Path(video_root).expanduser()
        subset = (file.parent.relative_to(data_dir) if file is not None and data_dir is not None
                  and file.parent.is_relative_to(data_dir) else Path("."))
        return list(dict.fromkeys([root / subset, root, *own]))

    def _items(self, row: Any, roots: list[Path], check_media: bool, bad: Any, kind: str | None) -> list[Item]:
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
            item = self._item(row, k, str(human.get("value") or ""), str(gpt.get("value") or ""), video, bad, kind)
            if item is not None:
                items.append(item)
        return items

    def _item(self, row: dict, k: int, asked: str, answer: str, video: Path, bad: Any, kind: str | None
              ) -> Item | None:
        # a caption or open-ended file's question is open even when its prose reads "A. … B. …"; a file of no
        # known kind (a single JSON of one's own) is read by its markers
        question, options, broken = ((_PLACEHOLDER.sub("", asked).strip(), [], False) if kind in ("cap", "oe")
                                     else parse_question(asked))
        if broken:
            return bad(f"conversations[{2 * k}]", "unparseable options",
                       "option markers that are not A., B., … in order")
        meta = {"id": row["id"], "data_source": str(row.get("data_source") or ""), "turn": k}
        prompt = _PLACEHOLDER.sub("", asked).strip()
        if options:
            letter = answer_letter(answer, options)
            if letter is None:
                return bad(f"conversations[{2 * k + 1}]", "answer not an option",
                           f"{answer[:40]!r} with {len(options)} options")
            return Item(item_id="", benchmark=self.name, task_type="mcq", question=question, prompt=prompt,
                        options=options, answer=letter, video=str(video), meta={**meta, "reference": answer})
        return Item(item_id="", benchmark=self.name, task_type="open", question=question, prompt=prompt,
                    answer=answer.strip(), video=str(video), meta=meta)

    def breakdowns(self, item: Item) -> dict[str, str]:
        return {"task_type": item.task_type, "data_source": item.meta["data_source"]}
