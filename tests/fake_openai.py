"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

A real HTTP server (Starlette + uvicorn), so the `openai` backend is exercised through the
official client, connection pool and error handling exactly as against vLLM or OpenAI.
Not a model: responses are deterministic functions of the request, in the
`<think>…</think><answer>…</answer>` format, with a billing model that makes the cost of
sending a video K times visible (`image_tokens` per image part + one token per word of text).

Knobs (`Behaviour`): latency, whether `n` is honoured (servers like `transformers serve`
ignore it and answer one choice), logprobs, a required API key (a 401 then echoes the key it
got, as careless servers do — the key-leak test relies on it), and faults, either scripted
(`faults`, consumed one per request) or drawn at random (`fault_rate`, from `fault_mix`,
seeded): "429" (with Retry-After), "500", "503", "hang" (no answer until the client gives up
and disconnects, or `hang_s`), "garbage" (a 200 whose body is not JSON), "empty" (a 200
without choices); a 500 for every request whose body contains `fail_if_contains` (a
poisoned item); and scripted `replies`, consumed one per answered request and sent as the
text of its choices (the deterministic text once they run out: LLM-judge tests script good
and malformed verdicts this way). `Stats` counts requests, requests answered with choices,
choices (paid responses), image parts, billed tokens, the arrival time of every request and
the tokens billed to each, the most requests in flight (a hung request counts until its
client disconnects); `max_in_window` / `max_tokens_in_window` read the most requests / tokens
in any sliding window from them. GET /stats and POST
/control expose both over HTTP when the server runs in its own process (the benchmarks do
that so it does not share a GIL with the client):

    python tests/fake_openai.py --port 8011 --latency 0.1      # prints its base URL, then serves
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import json
import random
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

LETTERS = "ABCD"


@dataclass
class Behaviour:
    latency_s: float = 0.0
    honour_n: bool = True
    logprobs: bool = True
    image_tokens: int = 85
    video_tokens: int = 600
    words: int = 12  # reasoning words per response (max_tokens below the length cuts it: finish_reason=length)
    require_key: str | None = None
    faults: list[str] = field(default_factory=list)
    fault_rate: float = 0.0  # share of requests (after the scripted faults) given a random fault from fault_mix
    fault_mix: list[str] = field(default_factory=lambda: ["429", "500", "503", "hang", "garbage", "empty"])
    fault_seed: int = 0
    retry_after_s: float = 0.05
    hang_s: float = 30.0
    fail_if_contains: str | None = None  # a 500 for every request whose body contains this text
    replies: list[str] = field(default_factory=list)  # texts of the next answered requests, one each


@dataclass
class Stats:
    requests: int = 0
    ok: int = 0
    answered: int = 0  # 200s with at least one choice
    choices: int = 0
    image_parts: int = 0
    video_parts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    n_asked: list[int] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each request's arrival
    billed: list[tuple[float, int]] = field(default_factory=list)  # (arrival, tokens billed) of each answer


def max_in_window(arrivals: list[float], window_s: float) -> int:
    """The most arrivals inside any window [t, t + window_s) — what a per-minute limit at a server counts."""
    times = sorted(arrivals)
    return max((bisect.bisect_left(times, t + window_s) - i for i, t in enumerate(times)), default=0)


def max_tokens_in_window(billed: list[tuple[float, int]], window_s: float) -> int:
    """The most tokens billed to requests that arrived inside any window [t, t + window_s)."""
    rows = sorted(billed)
    times = [t for t, _ in rows]
    sums = [0]
    for _, tokens in rows:
        sums.append(sums[-1] + tokens)
    return max((sums[bisect.bisect_left(times, t + window_s)] - sums[i] for i, t in enumerate(times)), default=0)


def _h(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def _count_parts(messages: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(text words, image parts, video parts) of a chat request."""
    words = images = videos = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            words += len(content.split())
            continue
        for part in content or []:
            kind = part.get("type")
            if kind == "text":
                words += len(part.get("text", "").split())
            elif kind == "image_url":
                images += 1
            elif kind == "video_url":
                videos += 1
    return words, images, videos


def _response_text(seed_key: int, words: int, images: int) -> str:
    filler = " ".join(f"w{(seed_key >> (i % 48)) % 97}" for i in range(words))
    return f"<think>I look at {images} frames. {filler}</think><answer>({LETTERS[seed_key % 4]})</answer>"


def _choice(index: int, text: str, max_tokens: int | None, top: int | None) -> tuple[dict[str, Any], int]:
    tokens = text.split(" ")
    finish = "stop"
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens, finish = tokens[:max_tokens], "length"
    choice: dict[str, Any] = {"index": index, "message": {"role": "assistant", "content": " ".join(tokens)},
                              "finish_reason": finish, "logprobs": None}
    if top is not None:
        content = []
        for i, tok in enumerate(tokens):
            lp = -((_h(tok, i) % 1000) / 1000.0)
            alts = [{"token": f"{tok}~{j}", "logprob": lp - 1.0 - j, "bytes": None} for j in range(top)]
            content.append({"token": tok, "logprob": lp, "bytes": None, "top_logprobs": alts})
        choice["logprobs"] = {"content": content, "refusal": None}
    return choice, len(tokens)


class FakeOpenAI:
    """The ASGI app and its state; `FakeOpenAIServer` runs it in a thread."""

    def __init__(self, behaviour: Behaviour | None = None):
        self.behaviour = behaviour or Behaviour()
        self.stats = Stats()
        self.stopping = False
        self._counter = 0
        self._rng = random.Random(self.behaviour.fault_seed)
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/stats", self.get_stats, methods=["GET"]),
            Route("/control", self.control, methods=["POST"]),
        ])

    def reset(self, **behaviour: Any) -> None:
        """Default behaviour with these changes, and zeroed stats."""
        self.behaviour = Behaviour(**behaviour)
        self.stats = Stats()
        self._rng = random.Random(self.behaviour.fault_seed)

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-vlm", "object": "model"}]})

    async def get_stats(self, request: Request) -> Response:
        return JSONResponse(asdict(self.stats))

    async def control(self, request: Request) -> Response:
        body = await request.json()
        self.reset(**body)
        return JSONResponse(asdict(self.behaviour))

    def _status(self, code: int) -> None:
        self.stats.statuses[str(code)] = self.stats.statuses.get(str(code), 0) + 1

    async def chat(self, request: Request) -> Response:
        s = self.stats
        s.requests += 1
        s.arrivals.append(time.monotonic())
        s.in_flight += 1
        s.max_in_flight = max(s.max_in_flight, s.in_flight)
        try:
            return await self._chat(request)
        except ClientDisconnect:
            return Response(status_code=499)
        finally:
            s.in_flight -= 1

    async def _chat(self, request: Request) -> Response:
        b = self.behaviour
        arrival = self.stats.arrivals[-1]
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        if b.require_key is not None and key != b.require_key:
            self._status(401)
            return JSONResponse({"error": {"message": f"Incorrect API key provided: {key}", "type": "auth"}},
                                status_code=401)
        fault = b.faults.pop(0) if b.faults else None
        if fault is None and b.fault_rate and self._rng.random() < b.fault_rate:
            fault = self._rng.choice(b.fault_mix)
        if b.fail_if_contains is not None and b.fail_if_contains in (await request.body()).decode():
            fault = "500"
        if b.latency_s:
            await asyncio.sleep(b.latency_s)
        if fault == "429":
            self._status(429)
            return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}}, status_code=429,
                                headers={"retry-after": str(b.retry_after_s)})
        if fault in ("500", "503"):
            self._status(int(fault))
            return JSONResponse({"error": {"message": "server error", "type": "server"}}, status_code=int(fault))
        if fault == "hang":  # the client gives up first; the answer that follows goes nowhere
            await self._hang(request, b.hang_s)
            self._status(504)
            return JSONResponse({"error": {"message": "gateway timeout"}}, status_code=504)
        if fault == "garbage":
            self._status(200)
            return Response("<html>upstream proxy error", media_type="application/json")
        body = await request.json()
        return self._complete(body, fault, arrival)

    async def _hang(self, request: Request, seconds: float) -> None:
        """Until the client disconnects (it timed out), `seconds` pass or the server stops."""
        async def disconnected() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        async def stopping() -> None:
            while not self.stopping:
                await asyncio.sleep(0.05)

        tasks = [asyncio.ensure_future(disconnected()), asyncio.ensure_future(stopping())]
        try:
            await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()

    def _complete(self, body: dict[str, Any], fault: str | None, arrival: float) -> Response:
        b, s = self.behaviour, self.stats
        words, images, videos = _count_parts(body.get("messages", []))
        n = int(body.get("n") or 1)
        s.n_asked.append(n)
        s.image_parts += images
        s.video_parts += videos
        s.models[body.get("model", "")] = s.models.get(body.get("model", ""), 0) + 1
        prompt_tokens = words + b.image_tokens * images + b.video_tokens * videos
        top = None
        if b.logprobs and body.get("logprobs"):
            top = int(body.get("top_logprobs") or 0)
        given = n if b.honour_n else 1
        seed = body.get("seed")
        if seed is None:
            self._counter += 1
        prompt_hash = _h(json.dumps(body.get("messages", [])[-1:], sort_keys=True)[:2000], body.get("model"))
        choices, completion = [], 0
        scripted = b.replies.pop(0) if b.replies and fault != "empty" else None
        for i in range(0 if fault == "empty" else given):
            seed_key = _h(prompt_hash, seed if seed is not None else self._counter, i)
            text = scripted if scripted is not None else _response_text(seed_key, b.words, images)
            choice, used = _choice(i, text, body.get("max_tokens"), top)
            choices.append(choice)
            completion += used
        s.prompt_tokens += prompt_tokens
        s.completion_tokens += completion
        s.billed.append((arrival, prompt_tokens + completion))
        s.choices += len(choices)
        s.answered += bool(choices)
        s.ok += 1
        self._status(200)
        return JSONResponse({
            "id": f"chatcmpl-{s.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake-vlm"), "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion},
        })


class FakeOpenAIServer:
    """`with FakeOpenAIServer(latency_s=0.05) as srv:` serves on a free port; `srv.url` is the base URL."""

    def __init__(self, **behaviour: Any):
        self.fake = FakeOpenAI(Behaviour(**behaviour))
        # proto IPPROTO_TCP, or asyncio skips TCP_NODELAY on accepted sockets and Nagle + delayed ACK
        # add ~40 ms to every response (uvicorn writes headers and body separately)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(self.fake.app, log_level="warning", access_log=False, timeout_graceful_shutdown=1,
                                backlog=4096)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def stats(self) -> Stats:
        return self.fake.stats

    @property
    def behaviour(self) -> Behaviour:
        return self.fake.behaviour

    def reset(self, **behaviour: Any) -> None:
        self.fake.reset(**behaviour)

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.fake.stopping = True
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description="fake OpenAI-compatible server (tests, benchmarks)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--no-n", action="store_true", help="ignore n (answer one choice), like transformers serve")
    args = ap.parse_args()
    fake = FakeOpenAI(Behaviour(latency_s=args.latency, honour_n=not args.no_n))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    print(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", flush=True)
    uvicorn.Server(uvicorn.Config(fake.app, log_level="warning", access_log=False, backlog=4096)).run(sockets=[sock])


if __name__ == "__main__":
    main()
