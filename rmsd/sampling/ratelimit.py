"""Request/token-per-minute limits and retry delays for the sampling runner.

A limit is counted the way an API counts it: over any sliding minute, at most
`requests_per_minute` HTTP requests (each retry is a request) and `tokens_per_minute`
tokens. Each unit has two parts:
- `SlidingWindow`, the guarantee: a log of what was spent in the last `window_s` seconds;
  a request may start only while the log holds less than the limit. A plain token bucket
  cannot give this guarantee: a bucket that starts full lets its burst *and* a minute's
  refill through in the first minute (1.17x the limit with a 10 s burst).
- `TokenBucket`, the smoothing: continuous refill with a 10 s burst, so a limit of 6,000/min
  is spent at ~100/s rather than all at once (APIs enforce per-minute limits over shorter
  periods too).
How it differs from a semaphore-style limiter: spending is two-phase. `ready()` waits
(without reserving) until the budget would allow a request; `take()` spends at the moment
the request is sent, synchronously, so the time counted is the send time even when the
caller waited for a concurrency slot in between. A request larger than the whole limit (a
long video prompt against a small TPM limit) is let through once the window is empty, and
token estimates made before a request are corrected with the billed usage (`settle`).
The clock and sleep are injectable so tests check the rates without timing anything.

`backoff_delay` is jittered exponential backoff (a uniform draw between 10% and 100% of
`base * 2**attempt`, capped), never shorter than the server's `Retry-After`.

    rmsd sample --recipe R     # a pool's requests_per_minute / tokens_per_minute use these
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """`per_minute` units refilled continuously; holds at most `burst_s` seconds' worth."""

    def __init__(self, per_minute: float, burst_s: float = 10.0, clock: Clock = time.monotonic):
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    def delay(self, amount: float) -> float:
        """Seconds until `amount` may be spent (0: now); an amount above the capacity waits for a full bucket."""
        self._refill()
        return max(0.0, (min(amount, self.capacity) - self.level) / self.rate)

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def adjust(self, delta: float) -> None:
        """Spend `delta` more (negative: give back) once the real cost is known."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


# A server counts requests by their arrival times, which lag our send times by a network (and
# scheduling) delay that varies: a request sent the instant an old one leaves our window can
# arrive while the old one is still inside the server's. Our window is longer by 2% or 0.25 s,
# whichever is more (1.2 s of a minute).
JITTER_MARGIN, JITTER_MARGIN_S = 0.02, 0.25


class SlidingWindow:
    """At most `limit` units spent in any `window_s` seconds (held over `window_s` plus the jitter margin)."""

    def __init__(self, limit: float, window_s: float = 60.0, clock: Clock = time.monotonic):
        if limit <= 0 or window_s <= 0:
            raise ValueError("limit and window_s must be positive")
        self.limit = float(limit)
        self.window = float(window_s) + max(JITTER_MARGIN * window_s, JITTER_MARGIN_S)
        self._clock = clock
        self._log: deque[list[float]] = deque()  # [time, amount], oldest first
        self.used = 0.0

    def _expire(self, now: float) -> None:
        while self._log and self._log[0][0] <= now - self.window:
            self.used -= self._log.popleft()[1]

    def delay(self, amount: float) -> float:
        """Seconds until `amount` fits in the window (0: now); more than the limit waits for an empty window."""
        now = self._clock()
        self._expire(now)
        need = min(amount, self.limit)
        excess = self.used + need - self.limit
        if excess <= 1e-9 or not self._log:
            return 0.0
        freed = 0.0
        for stamp, spent in self._log:  # the oldest entries leave the window first
            freed += spent
            if freed >= excess - 1e-9:
                return max(stamp + self.window - now, 1e-6)
        return max(self._log[-1][0] + self.window - now, 1e-6)

    def take(self, amount: float) -> list[float]:
        now = self._clock()
        self._expire(now)
        entry = [now, float(amount)]
        self._log.append(entry)
        self.used += amount
        return entry

    def adjust(self, entry: list[float], actual: float) -> None:
        """Replace what `entry` spent by `actual`, if it is still inside the window."""
        now = self._clock()
        self._expire(now)
        if entry[0] > now - self.window:
            self.used += actual - entry[1]
            entry[1] = float(actual)


class _Limit:
    """One unit (requests or tokens): the window (the guarantee) and the bucket (the smoothing)."""

    def __init__(self, per_minute: float, window_s: float, clock: Clock):
        self.window = SlidingWindow(per_minute * window_s / 60.0, window_s, clock)
        self.bucket = TokenBucket(per_minute, clock=clock)  # the same rate per second whatever the window

    def delay(self, amount: float) -> float:
        return max(self.window.delay(amount), self.bucket.delay(amount))


@dataclass
class Spent:
    """What one request took from the limits, to correct with its billed usage."""

    tokens: float
    entry: list[float] | None


class RateLimiter:
    """Requests- and tokens-per-minute limits of one teacher (either may be None = unlimited).

    `window_s` is the minute: tests and benchmarks shorten it, and the limits scale with it
    (120 requests/min over a 5 s window allow 10 requests in any 5 s).
    """

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 window_s: float = 60.0, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        self.requests = _Limit(requests_per_minute, window_s, clock) if requests_per_minute else None
        self.tokens = _Limit(tokens_per_minute, window_s, clock) if tokens_per_minute else None
        self._sleep = sleep

    def delay(self, estimated_tokens: float) -> float:
        return max(self.requests.delay(1.0) if self.requests else 0.0,
                   self.tokens.delay(float(estimated_tokens)) if self.tokens else 0.0)

    async def ready(self, estimated_tokens: float) -> None:
        """Wait until one request of `estimated_tokens` would pass (reserves nothing: call `take` when sending)."""
        while (wait := self.delay(estimated_tokens)) > 0:
            await self._sleep(wait)

    def take(self, estimated_tokens: float) -> Spent | None:
        """Spend one request now, or None when the budget is gone (another request took it since `ready`)."""
        if self.delay(estimated_tokens) > 0:
            return None
        if self.requests is not None:
            self.requests.window.take(1.0)
            self.requests.bucket.take(1.0)
        entry = None
        if self.tokens is not None:
            entry = self.tokens.window.take(float(estimated_tokens))
            self.tokens.bucket.take(float(estimated_tokens))
        return Spent(float(estimated_tokens), entry)

    async def acquire(self, estimated_tokens: float = 0) -> Spent:
        """`ready` then `take`, for callers with nothing to wait for in between."""
        while True:
            await self.ready(estimated_tokens)
            spent = self.take(estimated_tokens)
            if spent is not None:
                return spent

    def settle(self, spent: Spent, actual_tokens: int) -> None:
        """Correct the token limits by the billed usage (ignored when the server reported none)."""
        if self.tokens is None or actual_tokens <= 0:
            return
        self.tokens.bucket.adjust(float(actual_tokens) - spent.tokens)
        if spent.entry is not None:
            self.tokens.window.adjust(spent.entry, float(actual_tokens))


def backoff_delay(attempt: int, base_s: float = 1.0, cap_s: float = 60.0, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (0-based): uniform in [0.1, 1] x min(cap, base*2**attempt), >= Retry-After."""
    ceiling = min(cap_s, base_s * (2 ** attempt))
    delay = (rng or random).uniform(0.1 * ceiling, ceiling)
    return max(delay, retry_after or 0.0)
