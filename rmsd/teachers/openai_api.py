"""The `openai` backend: any OpenAI-compatible chat endpoint through the official async client.

Works with OpenAI, vLLM, SGLang, `transformers serve` and Gemini's compatible endpoint.
Frames go as base64 JPEG `image_url` parts after one text line giving their timestamps (so
a teacher can answer "when" questions from stills), or the whole file as a `video_url`
data URL where the server decodes video itself.

How it differs from a plain client loop:
- K samples in ONE request (`n=K`) where the endpoint honours `n`, so the video is sent and
  billed once. One `generate` call is exactly one HTTP request: with `use_n: auto` a
  response with fewer choices than asked tells that the server ignores `n`; the call returns
  the choices it got (the runner stores them and asks again for the rest) and from then on
  the teacher asks the runner for one sample per request (`max_n_per_request`).
- With a `seed`, request seeds are `seed + first sample index`, so single-sample requests
  do not all return the same text.
- Billed usage is split over the records of a request (prompt tokens evenly, completion
  tokens by each choice's length), so summing records gives the bill, not K times it.
- Errors become `TeacherError`s the runner understands: 429 (with its Retry-After), 5xx,
  timeouts, connection errors and malformed bodies are retried; other 4xx are not.
- Cheap per request, so hundreds can be in flight from one process: the client's aiohttp
  transport where aiohttp is installed, one small connection pool per 16 requests in flight,
  and the client's low-level `post` (see `_create`).
- The key is read from the environment variable named by `api_key_env` and is redacted from
  every error message. If the variable is unset, the teacher refuses to start unless every
  base URL is a local or private-network server (loopback, RFC 1918 address, or a host name
  without a dot, e.g. a vLLM node), where the dummy key "EMPTY" is sent.

    rmsd sample --recipe recipes/videomme/qwen2_5_vl_3b_rmsd.yaml   # with teachers/video_api_pool.yaml
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import math
import mimetypes
import os
from typing import Any
from urllib.parse import urlparse

import openai

from rmsd.config.pools import OpenAIOptions, TeacherConfig
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.teachers.teacher import GenParams, Media, Response, Teacher, TeacherError, parse_retry_after

DUMMY_KEY = "EMPTY"
IMAGE_TOKENS = {"low": 85, "high": 765, "auto": 765}  # OpenAI's published per-image cost at detail low / a 512px tile
VIDEO_TOKENS_GUESS = 2000
CONNECTIONS_PER_CLIENT = 16


def _is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost" or "." not in host and ":" not in host:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def resolve_api_key(name: str, options: OpenAIOptions) -> str:
    """The key from the environment; a clear error (before any request) when it is needed and unset."""
    urls = options.base_url if isinstance(options.base_url, list) else [options.base_url]
    key = os.environ.get(options.api_key_env, "")
    if key:
        return key
    if all(_is_local(u) for u in urls):
        return DUMMY_KEY
    raise RmsdError(f"teacher {name}: environment variable {options.api_key_env} is not set: "
                    f"export {options.api_key_env}=<your key> (keys are never read from YAML)")


class OpenAITeacher(Teacher):
    """A teacher behind an OpenAI-compatible endpoint (one client per base URL, round-robin)."""

    def __init__(self, name: str, options: OpenAIOptions, timeout_s: float = 120.0, concurrency: int = 8):
        super().__init__(name)
        self.options = options
        self.urls = options.base_url if isinstance(options.base_url, list) else [options.base_url]
        if not self.urls:
            raise RmsdError(f"teacher {name}: openai.base_url is an empty list; give at least one URL")
        self._key = resolve_api_key(name, options)
        # several small connection pools per URL: httpcore scans its whole pool on every request, so
        # one pool of hundreds of connections costs more client CPU per request than the request itself
        copies = max(1, math.ceil(concurrency / CONNECTIONS_PER_CLIENT))
        self._routes = [(u, openai.AsyncOpenAI(api_key=self._key, base_url=u, max_retries=0, timeout=timeout_s,
                                               http_client=_http_client()))
                        for _ in range(copies) for u in self.urls]
        self._turn = itertools.cycle(range(len(self._routes)))
        self.timeout_s = self.own_timeout_s = timeout_s  # the client's connect/read/write timeouts (max_retries=0)
        self.media_needs = frozenset({"video"} if options.video_mode == "video_url" else {"jpeg"})
        # None: not yet known (auto); True/False once a response with n > 1 has told
        self.n_honoured: bool | None = {"auto": None, "always": True, "never": False}[options.use_n]

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> OpenAITeacher:
        return cls(cfg.name, cfg.openai, timeout_s=cfg.timeout_s, concurrency=cfg.concurrency)

    @classmethod
    def record_model(cls, cfg: TeacherConfig) -> str:
        return cfg.openai.model

    @classmethod
    def needs_of(cls, cfg: TeacherConfig) -> frozenset[str]:
        return frozenset({"video"} if cfg.openai.video_mode == "video_url" else {"jpeg"})

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAITeacher(name={self.name!r}, model={self.options.model!r}, base_url={self.urls})"

    def max_n_per_request(self) -> int | None:
        return 1 if self.n_honoured is False else None

    def answered(self, asked: int, got: int) -> None:
        """What an answer with `asked` samples asked in one request (`n`) tells of the server, online or in a
        batch line: with `use_n: auto`, fewer choices than asked means it ignores `n`, and the rest of the
        run asks one sample per request."""
        if asked > 1 and self.options.use_n == "auto":
            if got < asked:
                self.n_honoured = False
            elif self.n_honoured is None:
                self.n_honoured = True

    def estimate_tokens(self, item: Item, media: Media, n: int, params: GenParams) -> int:
        text = (len(self.render_prompt(item)) + len(self.system_prompt or "")) // 4
        visual = (VIDEO_TOKENS_GUESS if media.video_b64 and self.options.video_mode == "video_url"
                  else IMAGE_TOKENS[self.options.image_detail] * len(media.jpeg_b64))
        return text + visual + params.max_tokens * n

    # ------------------------------------------------------------------------- request
    def messages(self, item: Item, media: Media) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if self.options.video_mode == "video_url" and media.video_b64:
            mime = mimetypes.guess_type(item.video or "v.mp4")[0] or "video/mp4"
            parts.append({"type": "video_url", "video_url": {"url": f"data:{mime};base64,{media.video_b64}"}})
        elif media.jpeg_b64:
            if len(media.jpeg_b64) > 1 and len(media.timestamps) == len(media.jpeg_b64):
                times = ", ".join(f"{t:.1f}" for t in media.timestamps)
                length = f" of a {media.duration:.1f} s video" if media.duration else ""
                parts.append({"type": "text", "text": f"{len(media.jpeg_b64)} frames{length}, at t = {times} s:"})
            detail = self.options.image_detail
            parts += [{"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64}", "detail": detail}}
                      for b64 in media.jpeg_b64]
        text = self.render_prompt(item)
        user = parts + [{"type": "text", "text": text}] if parts else text
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [{"role": "user", "content": user}]

    def _kwargs(self, n: int, params: GenParams, first_index: int) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": self.options.model, "temperature": params.temperature, "top_p": params.top_p,
                              "max_tokens": params.max_tokens}
        if n > 1:
            kw["n"] = n
        if params.seed is not None:
            kw["seed"] = params.seed + first_index
        if self.options.logprobs:
            kw["logprobs"] = True
            if self.options.top_logprobs:
                kw["top_logprobs"] = self.options.top_logprobs
        return {**kw, **self.options.extra_body}

    def _body(self, messages: list[dict[str, Any]], n: int, params: GenParams, first_index: int) -> dict[str, Any]:
        return {"messages": messages, **self._kwargs(n, params, first_index)}

    def request_body(self, item: Item, media: Media, n: int, params: GenParams, start_index: int = 0) -> dict[str, Any]:
        """The JSON body `generate` would POST to /chat/completions for these samples (a batch line's `body`)."""
        return self._body(self.messages(item, media), n, params, start_index)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and len(self._key) >= 4 else text

    async def _create(self, messages: list[dict[str, Any]], n: int, params: GenParams,
                      first_index: int) -> dict[str, Any]:
        """One chat completion as its JSON body; every failure as a TeacherError."""
        url, client = self._routes[next(self._turn)]
        try:
            # the official client's documented low-level `post`, read as text: `chat.completions.create`
            # walks the messages (base64 frames included) through a type transform and builds pydantic
            # models of the answer, together ~0.6 ms of CPU per request, a third of the client's budget
            text = await client.post("/chat/completions", cast_to=str, body=self._body(messages, n, params, first_index))
        except openai.RateLimitError as e:
            raise TeacherError(self._redact(f"HTTP 429 from {url}: {e.message}"), True,
                               parse_retry_after(e.response.headers)) from None
        except openai.APIConnectionError as e:  # includes APITimeoutError
            cause = _root_cause(e)
            # the aiohttp transport reports a refused connection as a connect *timeout*: trust the root cause;
            # newer clients (anyio transports) end a timed-out request with a cancelled scope instead
            timed_out = isinstance(cause, (TimeoutError, asyncio.TimeoutError, asyncio.CancelledError))
            if timed_out or (isinstance(e, openai.APITimeoutError) and not isinstance(cause, OSError)):
                raise TeacherError(f"timeout: no answer from {url} within {self.timeout_s:g} s", True) from None
            raise TeacherError(self._redact(f"cannot reach {url}: {type(cause).__name__}: {cause}"), True) from None
        except openai.APIStatusError as e:
            retry = e.status_code >= 500 or e.status_code in (408, 409)
            raise TeacherError(self._redact(f"HTTP {e.status_code} from {url}: {e.message}"), retry,
                               parse_retry_after(e.response.headers)) from None
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise TeacherError(self._redact(f"malformed response from {url}: not JSON ({e}): {str(text)[:80]!r}"),
                               True) from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise TeacherError(f"malformed response from {url}: no choices", True)
        return data

    # ------------------------------------------------------------------------- sampling
    async def generate(self, item: Item, media: Media, n: int, params: GenParams,
                       start_index: int = 0) -> list[Response]:
        """One HTTP request for samples start_index..start_index+n-1; returns the choices received (maybe fewer)."""
        out = await self._sample(self.messages(item, media), n, params, start_index)
        self.answered(n, len(out))
        return out[:n]

    async def _sample(self, messages: list[dict[str, Any]], n: int, params: GenParams,
                      first_index: int) -> list[Response]:
        return responses_from_body(await self._create(messages, n, params, first_index))

    async def aclose(self) -> None:
        await asyncio.gather(*(c.close() for _, c in self._routes), return_exceptions=True)


def responses_from_body(data: dict[str, Any]) -> list[Response]:
    """The `Response`s of a chat completion's JSON body (online answer or batch output line alike): choices in
    index order, billed usage split over them, a withheld or empty answer flagged in `error`."""
    try:
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        messages_out = [c.get("message") or {} for c in choices]
        texts = [m.get("content") or "" for m in messages_out]
        logprobs = [_logprobs(c.get("logprobs")) for c in choices]
    except (AttributeError, TypeError, KeyError) as e:
        raise TeacherError(f"malformed response: choices of an unexpected shape ({e})", True) from None
    sizes = [len(lp) if lp is not None else max(1, len(t)) for t, lp in zip(texts, logprobs, strict=True)]
    usage = data.get("usage") or {}
    prompt = _split(int(usage.get("prompt_tokens") or 0), [1] * len(choices))
    completion = _split(int(usage.get("completion_tokens") or 0), sizes)
    out = []
    for c, m, text, lp, p, q in zip(choices, messages_out, texts, logprobs, prompt, completion, strict=True):
        error = None
        if c.get("finish_reason") == "content_filter":
            error = "content_filter: the endpoint withheld this response"
        elif m.get("content") is None:
            error = f"no text in the response (refusal: {m['refusal']})" if m.get("refusal") else "no text"
        out.append(Response(text=text, finish_reason=c.get("finish_reason") or "stop", logprobs=lp,
                            prompt_tokens=p, completion_tokens=q, error=error))
    return out


def _root_cause(e: BaseException) -> BaseException:
    seen = {id(e)}
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        e = nxt
    return e


def _http_client() -> Any:
    """The official client's aiohttp transport where aiohttp is installed (`openai[aiohttp]`, documented for
    high concurrency: about half the CPU per request of the default httpx one), else httpx; both keep every
    connection alive (aiohttp's default keeps 20 and would reconnect for the rest)."""
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=CONNECTIONS_PER_CLIENT,
                                                    max_keepalive_connections=CONNECTIONS_PER_CLIENT)
    try:
        return openai.DefaultAioHttpClient(limits=limits)
    except (ImportError, RuntimeError):  # aiohttp not installed
        return openai.DefaultAsyncHttpxClient(limits=limits)


def _logprobs(logprobs: Any) -> list[dict[str, Any]] | None:
    """A choice's token logprobs as [{token, logprob, top_logprobs: [{token, logprob}]}], or None."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    return [{"token": t["token"], "logprob": float(t["logprob"]),
             "top_logprobs": [{"token": a["token"], "logprob": float(a["logprob"])} for a in t.get("top_logprobs") or []]}
            for t in content]


def _split(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights`, in integers that sum to `total` (remainder to the first)."""
    s = sum(weights) or 1
    parts = [total * w // s for w in weights]
    parts[0] += total - sum(parts)
    return parts

