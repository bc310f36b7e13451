"""The `Teacher` interface: one item in, `n` sampled responses out.

Backends (`openai_api.py`, `hf_local.py`, `simulated.py`) and user teachers subclass
`Teacher`. The sampling runner prepares `Media` once per item (frames decoded once,
JPEG-encoded once) and hands the same object to every teacher and every sample, so a
video is never decoded twice for one item. A teacher says what it needs of the video in
`media_needs` (the runner decodes nothing for a teacher that needs nothing).

A pool entry becomes a teacher through its class (`from_config`), which also answers, without
building one, what its records name as their `model` (`record_model`) and what it will ask of a
video (`needs_of`): the registry of backends (`rmsd.config.pools.BACKENDS`) names the class,
and nothing else looks at a backend's name. The pool (`rmsd.teachers.build`) sets `system_prompt` and `prompt_template` on every teacher;
`render_prompt(item)` gives the user text. `ask(prompt)` is a text-only call for LLM judges.
A backend raises `TeacherError(retryable=...)` to tell the runner whether to retry; any
other exception is retried too (except `RmsdError`, a user mistake).

The contract of `generate`, for custom teachers: one call is one request (the runner gives
each call its own concurrency slot and rate-limit budget), and it may return FEWER than the
`n` responses asked for — the first ones, samples start_index, start_index+1, ... The runner
stores what came back at once and asks again for the missing indices only; a teacher that
learns it can only give one sample per request says so in `max_n_per_request`, and the
runner then splits pending work into single-sample requests. Returning nothing is a failure
(retried); returning more than `n` keeps the first `n`.

What enters a record key is decided by the runner (`rmsd.sampling.keys`): the teacher's
settings in the pool (a custom teacher's `options` included, except the names it lists in
`options_not_in_key`) and, when `media_needs` asks for pixels, the frame count and size.
"""

from __future__ import annotations

import abc
import copy
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rmsd.config.pools import TeacherConfig
from rmsd.errors import RmsdError
from rmsd.items import Item

MEDIA_KINDS = frozenset({"frames", "jpeg", "video"})


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

    frames: a `rmsd.media.video.Frames` (uint8 array, fps, timestamps) or None.
    jpeg_b64: the same frames (or the image) as base64 JPEG strings, for API teachers.
    video_b64: the video file itself, base64, for servers that take a `video_url`.
    Each field is filled only when a teacher of the pool needs it (`Teacher.media_needs`).
    """

    frames: Any = None
    jpeg_b64: list[str] = field(default_factory=list)
    video_b64: str | None = None
    timestamps: list[float] = field(default_factory=list)  # seconds of each frame
    duration: float | None = None  # seconds of the video


@dataclass
class Response:
    text: str
    finish_reason: str = "stop"
    logprobs: list[dict[str, Any]] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # a response the backend flags as unusable (e.g. content filter); not retried


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` / `retry-after` (seconds or an HTTP date); None if absent."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lower:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        if "retry-after" in lower:
            value = lower["retry-after"].strip()
            try:
                return max(0.0, float(value))
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None
    return None


class TeacherError(Exception):
    """A failed request; `retryable` tells the runner whether to try again, after `retry_after` seconds at least."""

    def __init__(self, reason: str, retryable: bool = True, retry_after: float | None = None):
        super().__init__(reason)
        self.retryable, self.retry_after = retryable, retry_after


class Teacher(abc.ABC):
    """A sampler of responses. `name` identifies it in records and keys."""

    media_needs: frozenset[str] = frozenset({"frames", "jpeg"})  # subset of MEDIA_KINDS
    options_not_in_key: frozenset[str] = frozenset()  # pool `options` that cannot change answers (a URL, a timeout)
    own_timeout_s: float | None = None  # set by a teacher whose client gives up by itself (no runner timer then)
    system_prompt: str | None = None
    prompt_template: str = "{prompt}"

    def __init__(self, name: str):
        self.name = name

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> Teacher:
        """The teacher of one pool entry; a custom class gets the entry's `options` as keyword arguments."""
        try:
            return cls(name=cfg.name, **cfg.options)
        except TypeError as e:
            raise RmsdError(f"teacher {cfg.name}: {cls.__name__} rejected its options {sorted(cfg.options)}: "
                            f"{e}") from None

    @classmethod
    def record_model(cls, cfg: TeacherConfig) -> str:
        """The `model` field of its records: what answered (an API model, a checkpoint, a simulator, a class)."""
        return cfg.backend

    @classmethod
    def needs_of(cls, cfg: TeacherConfig) -> frozenset[str]:
        """What the teacher `from_config(cfg)` makes will ask of a video (its `media_needs`), without building it."""
        return frozenset(cls.media_needs)

    def render_prompt(self, item: Item) -> str:
        """The user text: the pool's template around the benchmark's prompt (other braces left alone)."""
        return self.prompt_template.replace("{prompt}", item.prompt)

    def max_n_per_request(self) -> int | None:
        """Most samples one `generate` call should be asked for (None: any n); the runner reads it each
        time it sends a request, so a teacher may lower it once it learns its server ignores `n`."""
        return None

    def estimate_tokens(self, item: Item, media: Media, n: int, params: GenParams) -> int:
        """Tokens a call will bill, guessed before it (for tokens-per-minute limits)."""
        text = len(self.render_prompt(item)) + len(self.system_prompt or "")
        return text // 4 + 85 * len(media.jpeg_b64) + params.max_tokens * n

    async def ask(self, prompt: str, system: str | None = None, params: GenParams | None = None) -> str:
        """One text-only answer to `prompt` (LLM judges): the pool's system prompt and template are not applied."""
        item = Item(item_id="ask", benchmark="ask", task_type="open", question=prompt, prompt=prompt)
        bare = copy.copy(self)  # shares clients/models; concurrent generate() calls keep the pool's prompts
        bare.system_prompt, bare.prompt_template = system, "{prompt}"
        responses = await bare.generate(item, Media(), 1, params or GenParams(temperature=0.0))
        return responses[0].text

    @abc.abstractmethod
    async def generate(
        self, item: Item, media: Media, n: int, params: GenParams, start_index: int = 0
    ) -> list[Response]:
        """Return up to `n` responses for `item`: samples start_index, start_index+1, ... in order.

        Fewer than `n` is allowed (the runner asks again for the rest); none is a failure.
        Deterministic backends must give sample i the same text whichever batch asked for
        it (a resumed run asks only for the missing indices). Raise to let the runner retry.
        """

    async def aclose(self) -> None:
        """Release clients, servers or models."""
