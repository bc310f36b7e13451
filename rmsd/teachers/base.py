"""The `Teacher` interface: one item in, `n` sampled responses out.

Backends (`openai_api.py`, `hf_local.py`, `simulated.py`) and user teachers subclass
`Teacher`. The sampling runner prepares `Media` once per item (frames decoded once,
JPEG-encoded once) and hands the same object to every teacher and every sample, so a
video is never decoded twice for one item.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from rmsd.data.items import Item


@dataclass
class GenParams:
    """Generation parameters; part of every record's key (changing one re-samples)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None

    def key_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed}


@dataclass
class Media:
    """What a teacher needs of an item's video or image, prepared once per item.

    frames: a `rmsd.data.video.Frames` (uint8 array, fps, timestamps) or None.
    jpeg_b64: the same frames (or the image) as base64 JPEG strings, for API teachers.
    """

    frames: Any = None
    jpeg_b64: list[str] = field(default_factory=list)


@dataclass
class Response:
    text: str
    finish_reason: str = "stop"
    logprobs: list[dict[str, Any]] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Teacher(abc.ABC):
    """A sampler of responses. `name` identifies it in records and keys."""

    def __init__(self, name: str):
        self.name = name

    @abc.abstractmethod
    async def generate(
        self, item: Item, media: Media, n: int, params: GenParams, start_index: int = 0
    ) -> list[Response]:
        """Return exactly `n` responses for `item`: samples start_index .. start_index+n-1.

        Deterministic backends must give sample i the same text whichever batch asked for
        it (a resumed run asks only for the missing indices). Raise to let the runner retry.
        """

    async def aclose(self) -> None:
        """Release clients, servers or models."""
