"""How every training stage builds the student's inputs: the recipe's knobs for them, and each item's
prompt encoded once per stage.

`StudentInputs` carries the settings a stage builds prompts from (frames, size bound, system
message, shared prefix); `rmsd.train.distill` fills it from the recipe. `PromptCache` holds,
for the length of a stage, what never changes between its steps: each item's chat-formatted
prompt as token ids, its clip's (or image's) processed vision tensors, and the token ids of
each teacher response. A plain trainer re-runs the video processor and the tokeniser on
every batch (TRL's collators do); here a step only looks the encodings up and pads them, and
the tensors are exactly those of `rmsd.models.processing.encode` (`encode_prompt` says why).
Memory: one clip's pixels per item (0.68 MB for 8 frames at 84 px, float32; two with the
temporal contrast, whose shuffled copy is kept too: `shuffled_prompt`), bounded by
`RMSD_PROMPT_CACHE_MB` (default 2048; least recently used items are dropped, then re-encoded).

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.media.frame_cache import env_megabytes
from rmsd.media.video import load_media, shuffled_frames
from rmsd.models.processing import EncodedPrompt, assemble_samples, encode_prompt

DEFAULT_CACHE_MB = 2048.0
CACHE_ENV = "RMSD_PROMPT_CACHE_MB"


@dataclass(frozen=True)
class StudentInputs:
    """How every training stage builds the student's prompts; each field is a recipe knob documented there:
    `dataset.num_frames`, `dataset.max_side`, `student.system_prompt`, `distill.shared_prefix`."""

    num_frames: int
    max_side: int | None
    system: str | None
    shared_prefix: bool


class PromptCache:
    """Each item's encoded prompt (ids, token types, vision tensors), made on first use and kept for the stage.

    processor: the student's processor. items: every item a stage may name, by item_id.
    num_frames / max_side / system: as `StudentInputs`.
    max_mb: bound on the vision tensors kept, least recently used dropped first (an item
        dropped is encoded again when next asked for: the same tensors, the processor's
        cost again); default `RMSD_PROMPT_CACHE_MB` or 2048. Real clips are large (64 frames
        at 448 px: ~150 MB of float32 pixels), hence a bound, and the CPU: a stage moves a
        batch to its device.
    """

    def __init__(self, processor: Any, items: Mapping[str, Item], num_frames: int = 8, max_side: int | None = None,
                 system: str | None = None, max_mb: float | None = None):
        self.processor, self.items = processor, items
        self.num_frames, self.max_side, self.system = num_frames, max_side, system
        self.max_bytes = int(_limit_mb(max_mb) * 2**20)
        self._prompts: OrderedDict[str, EncodedPrompt] = OrderedDict()
        self._bytes = 0
        self._replies: dict[str, list[int]] = {}  # response text -> token ids (small: no bound)
        self.hits = self.misses = 0

    @classmethod
    def of(cls, processor: Any, items: Mapping[str, Item], inputs: StudentInputs) -> PromptCache:
        return cls(processor, items, inputs.num_frames, inputs.max_side, inputs.system)

    def item(self, item_id: str) -> Item:
        try:
            return self.items[item_id]
        except KeyError:
            raise RmsdError(
                f"matched sample names item {item_id!r}, which is not in the dataset: "
                "match and distill with the same recipe (dataset.path, split)"
            ) from None

    def prompt(self, item_id: str) -> EncodedPrompt:
        """The item's prompt, encoded the first time it is asked for (or again after it was dropped)."""
        return self._kept(item_id, lambda: self._encode(item_id, None))

    def shuffled_prompt(self, item_id: str, seed: int) -> EncodedPrompt:
        """The item's prompt over its frames in a fixed random order (`rmsd.media.video.shuffled_frames`, keyed by
        seed and item id): the same token ids, the pixels permuted; the frames come from the frame cache."""
        return self._kept(f"{item_id}\x00shuffled:{seed}", lambda: self._encode(item_id, f"{seed}:{item_id}"))

    def _encode(self, item_id: str, shuffle_key: str | None) -> EncodedPrompt:
        item = self.item(item_id)
        frames, image = load_media(item, self.num_frames, self.max_side)
        if shuffle_key is not None:
            if frames is None:
                raise RmsdError(f"item {item_id} has no video: only a clip's frames can be shuffled")
            frames, _ = shuffled_frames(frames, shuffle_key)
        return encode_prompt(self.processor, item.prompt, frames, system=self.system, image=image)

    def _kept(self, key: str, make: Callable[[], EncodedPrompt]) -> EncodedPrompt:
        if key in self._prompts:
            self.hits += 1
            self._prompts.move_to_end(key)
            return self._prompts[key]
        self.misses += 1
        enc = make()
        size = sum(v.numel() * v.element_size() for v in enc.vision.values())
        if size <= self.max_bytes:
            self._prompts[key] = enc
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._prompts.popitem(last=False)
                self._bytes -= sum(v.numel() * v.element_size() for v in old.vision.values())
        return enc

    def samples(self, item_ids: list[str], responses: list[list[str]]) -> Any:
        """`rmsd.models.processing.encode_samples`' batch for these items and responses, from the cache."""
        return assemble_samples(self.processor, [self.prompt(i) for i in item_ids], responses, self._replies)


def _limit_mb(max_mb: float | None) -> float:
    if max_mb is None:
        return env_megabytes(CACHE_ENV, DEFAULT_CACHE_MB)
    if max_mb < 0:
        raise ValueError(f"max_mb must be >= 0, got {max_mb}")
    return max_mb
