"""The contamination check: which training items overlap an evaluation set.

A training item overlaps an evaluation item when it shows **the same media content** (the same
video or image bytes, under any name or folder: a fingerprint of the file, not its name), or
asks **the same question about media of the same name** (the question normalised for case,
spacing and punctuation; a re-encoded copy of an evaluation video keeps its name, not its bytes).
What to do about an overlap is the caller's (`rmsd.eval.sets.check_training_items` refuses it
unless `dataset.allow_eval_overlap` says otherwise); this module only finds them.

Fast at corpus scale: the evaluation side (thousands of items) is indexed once; a training item
costs a dictionary look-up for its question, and one `stat` of its media file (once per file),
read further only when an evaluation file has the same size. A size match is read as a sampled
fingerprint (head, middle, tail), and only a fingerprint match is confirmed by hashing both
whole files, so the verdict is exact while the common case reads no bytes.

    python benchmarks/bench_corpus.py        # 260,000 Video-R1 rows against 3,000 evaluation items
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rmsd.items import Item

SAMPLE_BYTES = 1 << 16  # bytes read at each of the fingerprint's three places
_NON_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class Overlap:
    """One training item that overlaps one evaluation item, and why."""

    train_id: str
    eval_set: str
    eval_id: str
    reason: str  # "same media content" or "same question on media of the same name"

    def describe(self) -> str:
        return f"training item {self.train_id} and {self.eval_set} item {self.eval_id}: {self.reason}"


def normalise_question(text: str) -> str:
    """Lower case, punctuation and runs of spaces as one space: "What colour?" == "what  colour"."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def media_of(item: Item) -> str | None:
    return item.video or item.image


def media_name(path: str) -> str:
    """The file name without folder or extension, lower case (os.path: pathlib is 10x slower at corpus scale)."""
    return os.path.splitext(os.path.basename(path))[0].lower()


def sampled_fingerprint(path: str, size: int) -> str:
    """A hash of the size and three samples of the file (whole files up to three samples long)."""
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        for at in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}):
            f.seek(at)
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def full_hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:  # a corpus checked without its media (or a missing file): only the question route applies
        return None


class EvalIndex:
    """The evaluation items of every set, indexed by question-on-media-name and by media size."""

    def __init__(self, sets: Mapping[str, Iterable[Item]]):
        self.questions: dict[tuple[str, str], tuple[str, str]] = {}
        self.by_size: dict[int, list[tuple[str, str, str]]] = {}  # size -> [(path, set, item id)]
        self._sampled: dict[str, str] = {}
        self._full: dict[str, str] = {}
        seen: set[str] = set()
        for label, items in sets.items():
            for item in items:
                media = media_of(item)
                if media is None:
                    continue
                self.questions.setdefault((normalise_question(item.question), media_name(media)),
                                          (label, item.item_id))
                if media not in seen:
                    seen.add(media)
                    size = _size(media)
                    if size is not None:
                        self.by_size.setdefault(size, []).append((media, label, item.item_id))

    def _sampled_of(self, path: str, size: int) -> str:
        if path not in self._sampled:
            self._sampled[path] = sampled_fingerprint(path, size)
        return self._sampled[path]

    def _full_of(self, path: str) -> str:
        if path not in self._full:
            self._full[path] = full_hash(path)
        return self._full[path]

    def same_content(self, path: str, size: int) -> tuple[str, str] | None:
        """(set, item id) of an evaluation file with the same bytes as `path`, else None."""
        for other, label, item_id in self.by_size.get(size, ()):
            if os.path.realpath(other) == os.path.realpath(path):
                return label, item_id
            if (self._sampled_of(path, size) == self._sampled_of(other, size)
                    and self._full_of(path) == self._full_of(other)):
                return label, item_id
        return None


def find_overlaps(train: Iterable[Item], index: EvalIndex) -> list[Overlap]:
    """Every training item that overlaps an evaluation item of `index` (the first match each)."""
    overlaps: list[Overlap] = []
    by_file: dict[str, tuple[str, str] | None] = {}  # media path -> its content match (one stat per file)
    for item in train:
        media = media_of(item)
        if media is None:
            continue
        hit = index.questions.get((normalise_question(item.question), media_name(media)))
        if hit is not None:
            overlaps.append(Overlap(item.item_id, hit[0], hit[1], "same question on media of the same name"))
            continue
        if media not in by_file:
            size = _size(media) if index.by_size else None
            by_file[media] = index.same_content(media, size) if size is not None and size in index.by_size else None
        if by_file[media] is not None:
            label, eval_id = by_file[media]
            overlaps.append(Overlap(item.item_id, label, eval_id, "same media content"))
    return overlaps
