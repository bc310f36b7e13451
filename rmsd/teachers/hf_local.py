"""The `hf` backend: a local transformers VLM (`AutoModelForImageTextToText`) as a teacher.

How it differs from calling `generate` per request: concurrent requests from the runner are
gathered into batches of up to `batch_size` items (same K and params), each run as ONE
`generate(..., do_sample=True, num_return_sequences=K)` call, in a worker thread so the
event loop keeps serving the API teachers of the pool meanwhile. The model is loaded on
first use (in the thread too); a missing checkpoint folder is a config error at build time.
Frames come decoded once per item by the runner (`media_needs = {"frames"}`) and go to the
model through `rmsd.models.processing`, which passes their real fps and times to the
processor (Qwen2.5-VL: `second_per_grid_ts`; Qwen3-VL: the `<t seconds>` text before each
frame pair), so any Qwen2.5-VL or Qwen3-VL checkpoint folder works as a teacher.

Caveats: local sampling is random — `params.seed` seeds each batch, so a batch is
reproducible only with the same composition; completion tokens are counted by re-tokenising
the decoded text (capped at `max_tokens`), and `finish_reason` is "length" when that count
reaches `max_tokens` (the text alone cannot say whether EOS came exactly there).

    rmsd sample --recipe R    # with a pool teacher `backend: hf`, `hf: {model_path: /models/Qwen3-VL-8B-Instruct}`
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmsd.config.pools import HFOptions, TeacherConfig
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.teachers.teacher import GenParams, Media, Response, Teacher


@dataclass
class _Request:
    prompt: str  # rendered when asked, so `ask` (a copy with other prompts) shares the queue safely
    system: str | None
    frames: Any  # a video's Frames, or None
    image: Any  # an image item's array, or None
    n: int
    params: GenParams
    future: asyncio.Future


@dataclass
class _Shared:
    """State shared by a teacher and its copies (`Teacher.ask` works on a shallow copy)."""

    model: Any = None
    processor: Any = None
    pending: list[_Request] = field(default_factory=list)  # mutated in place, never rebound
    worker: asyncio.Task | None = None
    batches: list[int] = field(default_factory=list)  # items per model call, for tests and logs
    running: bool = False  # a model call is in progress (in the worker thread)


class HFTeacher(Teacher):
    """A local VLM; concurrent `generate` calls are batched into one model call each."""

    media_needs = frozenset({"frames"})

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> HFTeacher:
        return cls(cfg.name, cfg.hf)

    @classmethod
    def record_model(cls, cfg: TeacherConfig) -> str:
        return str(Path(cfg.hf.model_path).expanduser())

    def __init__(self, name: str, options: HFOptions):
        super().__init__(name)
        self.options = options
        self.path = Path(options.model_path).expanduser()
        if not (self.path / "config.json").is_file():
            raise RmsdError(f"teacher {name}: hf.model_path {self.path}: no config.json there; "
                            "point it at a from_pretrained folder")
        self._state = _Shared()

    def __repr__(self) -> str:
        return f"HFTeacher(name={self.name!r}, model_path={str(self.path)!r}, device={self.options.device!r})"

    @property
    def batches(self) -> list[int]:
        return self._state.batches

    @property
    def running(self) -> bool:
        return self._state.running

    def _load(self) -> None:
        from rmsd.models.processing import load_student

        st = self._state
        st.model, st.processor = load_student(self.path, device=self.options.device, dtype=self.options.dtype,
                                              max_pixels=self.options.max_pixels)

    async def generate(self, item: Item, media: Media, n: int, params: GenParams,
                       start_index: int = 0) -> list[Response]:
        st = self._state
        future = asyncio.get_running_loop().create_future()
        video = media.frames if item.video else None
        image = media.frames if item.image and not item.video else None
        st.pending.append(_Request(self.render_prompt(item), self.system_prompt, video, image, n, params, future))
        if st.worker is None or st.worker.done():
            st.worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Run pending requests batch by batch until none is left."""
        st = self._state
        await asyncio.sleep(0)  # let requests issued in the same tick join the first batch
        if st.model is None:
            try:
                await asyncio.to_thread(self._load)
            except Exception as e:
                self._fail_all(RmsdError(f"teacher {self.name}: cannot load {self.path}: {e}"))
                return
        while st.pending:
            batch = self._next_batch()
            if not batch:
                continue
            try:
                texts = await asyncio.to_thread(self._run_batch, batch)
            except Exception as e:  # the runner decides whether to retry
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)
                continue
            for r, samples in zip(batch, texts, strict=True):
                if not r.future.done():
                    r.future.set_result([self._response(t, r.params) for t in samples])

    def _next_batch(self) -> list[_Request]:
        """Up to batch_size live requests sharing the first one's n, params and system prompt (one generate call)."""
        pending = self._state.pending
        pending[:] = [r for r in pending if not r.future.done()]  # timed-out callers are gone
        if not pending:
            return []
        head = pending[0]
        batch = [r for r in pending if (r.n, r.params, r.system) == (head.n, head.params, head.system)]
        batch = batch[: self.options.batch_size]
        taken = {id(r) for r in batch}
        pending[:] = [r for r in pending if id(r) not in taken]
        return batch

    def _run_batch(self, batch: list[_Request]) -> list[list[str]]:
        import torch

        from rmsd.models.processing import generate

        st, head = self._state, batch[0]
        if head.params.seed is not None:
            torch.manual_seed(head.params.seed)
        st.batches.append(len(batch))
        sample = head.params.temperature > 0
        st.running = True
        try:
            with torch.inference_mode():
                return generate(st.model, st.processor, [r.prompt for r in batch], [r.frames for r in batch],
                                images=[r.image for r in batch], max_new_tokens=head.params.max_tokens,
                                do_sample=sample, temperature=head.params.temperature if sample else None,
                                top_p=head.params.top_p, num_return_sequences=head.n, system=head.system)
        finally:
            st.running = False

    def _response(self, text: str, params: GenParams) -> Response:
        # re-tokenising decoded text can exceed what was generated (bytes split across tokens): cap it
        tokens = min(len(self._state.processor.tokenizer(text, add_special_tokens=False)["input_ids"]), params.max_tokens)
        return Response(text=text, finish_reason="length" if tokens >= params.max_tokens else "stop",
                        completion_tokens=tokens)

    def _fail_all(self, error: Exception) -> None:
        for r in self._state.pending:
            if not r.future.done():
                r.future.set_exception(error)
        self._state.pending.clear()

    async def aclose(self) -> None:
        st = self._state
        if st.worker is not None and not st.worker.done():
            st.worker.cancel()
        st.model = st.processor = None
