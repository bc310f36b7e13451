"""Request/token-per-minute limits and retry delays for the sampling runner.

`TokenBucket` is the classic continuous-refill bucket, with two changes for LLM APIs: a
request larger than the bucket (a long video prompt against a small TPM limit) is let
through once the bucket is full and drives it negative, instead of waiting forever; and a
token estimate made before a request is corrected with the billed usage after it
(`adjust`). Waiters are served in arrival order. The clock and sleep are injectable so
tests check the rate without timing anything.

`backoff_delay` is jittered exponential backoff (a uniform draw between 10% and 100% of
`base * 2**attempt`, capped), never shorter than the server's `Retry-After`.

    rmsd sample --recipe R     # a pool's requests_per_minute / tokens_per_minute use these
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping


class TokenBucket:
    """`per_minute` units refilled continuously; holds at most `burst_s` seconds' worth."""

    def __init__(self, per_minute: float, burst_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self._clock, self._sleep = clock, sleep
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until `amount` may be spent (in arrival order), then spend it."""
        async with self._lock:
            need = min(amount, self.capacity)
            self._refill()
            while self.level < need:
                await self._sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def adjust(self, delta: float) -> None:
        """Spend `delta` more (negative: give back) once the real cost is known."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


class RateLimiter:
    """Requests- and tokens-per-minute limits of one teacher (either may be None = unlimited)."""

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None, **kw):
        self.requests = TokenBucket(requests_per_minute, **kw) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute, **kw) if tokens_per_minute else None

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.acquire(1.0)
        if self.tokens is not None:
            await self.tokens.acquire(float(estimated_tokens))

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the token bucket by the billed usage (ignored when the server reported none)."""
        if self.tokens is not None and actual_tokens > 0:
            self.tokens.adjust(float(actual_tokens - estimated_tokens))


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


def backoff_delay(attempt: int, base_s: float = 1.0, cap_s: float = 60.0, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (0-based): uniform in [0.1, 1] x min(cap, base*2**attempt), >= Retry-After."""
    ceiling = min(cap_s, base_s * (2 ** attempt))
    delay = (rng or random).uniform(0.1 * ceiling, ceiling)
    return max(delay, retry_after or 0.0)
