"""The process-wide LRU cache of decoded frames and images (`rmsd.media.video` fills it).

Keys are (resolved path, mtime, size, what was asked: frames N / max_side, or an image), so
a rewritten file is decoded again; values are read-only arrays shared by teachers,
students and evaluation. The limit is on array bytes: `RMSD_FRAME_CACHE_MB` (default 512)
or `set_cache_limit`; 0 disables caching. Worker threads asking for one key at once wait
for a single decode instead of each decoding it.

    python -c "from rmsd.media.frame_cache import cache_info; print(cache_info())"
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from rmsd.errors import RmsdError

DEFAULT_CACHE_MB = 512.0
CACHE_ENV = "RMSD_FRAME_CACHE_MB"


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    entries: int
    bytes: int
    max_bytes: int


_LOCK = threading.Lock()
_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_INFLIGHT: dict[tuple, threading.Lock] = {}  # one decode per key when worker threads ask at once
_STATE = {"hits": 0, "misses": 0, "bytes": 0, "max_bytes": None}


def cache_info() -> CacheInfo:
    with _LOCK:
        return CacheInfo(_STATE["hits"], _STATE["misses"], len(_CACHE), _STATE["bytes"], _max_bytes())


def clear_cache() -> None:
    """Drop every cached array and reset the hit/miss counters (the size limit stays)."""
    with _LOCK:
        _CACHE.clear()
        _STATE.update(hits=0, misses=0, bytes=0)


def set_cache_limit(max_mb: float | None) -> None:
    """Bound the cache to `max_mb` megabytes of array data (0 disables it; None: back to $RMSD_FRAME_CACHE_MB or 512)."""
    if max_mb is not None and max_mb < 0:
        raise RmsdError(f"frame cache size must be >= 0 MB, got {max_mb}")
    with _LOCK:
        _STATE["max_bytes"] = None if max_mb is None else int(max_mb * 2**20)
        _evict()


def env_megabytes(name: str, default: float) -> float:
    """A memory bound in MB from the environment variable `name` (unset or empty: `default`); anything but a
    number >= 0 is a one-line error. This cache's and the training stages' prompt cache's bounds."""
    raw = os.environ.get(name, "").strip()
    try:
        mb = float(raw) if raw else default
    except ValueError:
        mb = -1.0
    if mb < 0:
        raise RmsdError(f"{name} must be a number of megabytes >= 0, got {raw!r}")
    return mb


def _max_bytes() -> int:
    if _STATE["max_bytes"] is None:
        _STATE["max_bytes"] = int(env_megabytes(CACHE_ENV, DEFAULT_CACHE_MB) * 2**20)
    return _STATE["max_bytes"]


def _nbytes(value: Any) -> int:
    return getattr(value, "array", value).nbytes  # Frames carry their array; images are arrays


def _evict() -> None:
    while _CACHE and _STATE["bytes"] > _max_bytes():
        _, old = _CACHE.popitem(last=False)
        _STATE["bytes"] -= _nbytes(old)


def cached(key: tuple, load: Callable[[], Any], enabled: bool = True) -> Any:
    """The cached value of `key`, or `load()` (stored when it fits the limit); `enabled=False` bypasses."""
    if not enabled:
        return load()
    with _LOCK:
        gate = _INFLIGHT.setdefault(key, threading.Lock())
    try:
        with gate:
            with _LOCK:
                if key in _CACHE:
                    _STATE["hits"] += 1
                    _CACHE.move_to_end(key)
                    return _CACHE[key]
                _STATE["misses"] += 1
            value = load()
            with _LOCK:
                if _nbytes(value) <= _max_bytes():
                    _CACHE[key] = value
                    _STATE["bytes"] += _nbytes(value)
                    _evict()
            return value
    finally:
        with _LOCK:
            _INFLIGHT.pop(key, None)
