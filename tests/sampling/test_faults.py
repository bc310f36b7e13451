"""A hostile server: `rmsd sample` against a real HTTP server on 127.0.0.1 that ignores `n` and
answers 30% of requests with 429 / 500 / 503 / a hang past the client timeout / a 200 whose
body is not JSON / a 200 without choices. What is checked is what costs money: every sample
stored once, every paid response stored, no more requests than the samples need, and the
limits held as the server counts them (requests per sliding window, requests in flight).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from fake_openai import FakeOpenAIServer, max_in_window, max_tokens_in_window

from rmsd.config.pools import PoolConfig
from rmsd.items import Item
from rmsd.sampling.sample import run_sampling
from rmsd.sampling.store import SampleStore, read_records
from rmsd.teachers.build import build_teachers

ALL_FAULTS = ["429", "500", "503", "hang", "garbage", "empty"]
WINDOW_S = 2.0  # the "minute" of the limits, shortened so the test spans several windows in seconds
PER_WINDOW = 12  # requests the limit allows in any window


def run(path: Path, url: str, n_items: int, k: int, concurrency: int) -> dict:
    pool = PoolConfig.model_validate({"name": "hostile", "teachers": [{
        "name": "api", "backend": "openai", "samples": k, "concurrency": concurrency, "max_retries": 10,
        "timeout_s": 0.5, "requests_per_minute": PER_WINDOW * 60 / WINDOW_S,
        "openai": {"model": "fake-vlm", "base_url": url}}]})
    its = [Item(item_id=f"q{i}", benchmark="t", task_type="open", question=f"question {i}?",
                prompt=f"question {i}?") for i in range(n_items)]

    async def go() -> dict:
        teachers = build_teachers(pool)
        try:
            with SampleStore(path) as store:
                return await run_sampling(its, pool, teachers, store, concurrency=16, progress=False,
                                          backoff_base_s=0.02, backoff_cap_s=0.1, rate_window_s=WINDOW_S)
        finally:
            await asyncio.gather(*(t.aclose() for t in teachers.values()))

    return asyncio.run(go())


@pytest.mark.parametrize("honour_n", [False, True], ids=["ignores-n", "honours-n"])
def test_a_hostile_server_costs_no_sample_twice_and_the_limits_hold_at_the_server(tmp_path, honour_n):
    n_items, k, concurrency = 8, 3, 4
    with FakeOpenAIServer(honour_n=honour_n, latency_s=0.01, faults=list(ALL_FAULTS), fault_rate=0.3,
                          fault_seed=1, retry_after_s=0.05, hang_s=10.0) as srv:
        summary = run(tmp_path, srv.url, n_items, k, concurrency)
        stats = srv.stats
    keys = [r["key"] for r in read_records(tmp_path)]
    needed = n_items * k
    assert summary["missing"] == 0 and summary["failures"] == 0 and len(keys) == needed
    assert max(Counter(keys).values()) == 1  # 0 duplicates
    assert stats.choices == needed  # every paid response was stored: none thrown away, none asked twice
    # successful requests: one per sample when n is ignored (target <= 1.05x), one per item when it is honoured
    assert stats.answered == (needed if not honour_n else n_items)
    assert all(stats.statuses.get(code, 0) for code in ("429", "500", "503", "504"))  # every fault was met
    assert summary["retries"] == stats.requests - stats.answered > 0  # each fault cost one retry, nothing more
    assert max_in_window(stats.arrivals, WINDOW_S) <= PER_WINDOW  # the rate, counted where the server counts it
    assert stats.max_in_flight <= concurrency  # one slot per HTTP request, hung ones included
    if not honour_n:
        assert summary["short"] >= 1 and set(stats.n_asked) <= {1, k}  # detected, then single-sample requests
        assert stats.requests > 2 * PER_WINDOW  # the limit was binding over several windows


def test_a_tokens_per_minute_limit_holds_over_billed_tokens_at_the_server(tmp_path):
    """Estimates are spent when a request is sent and settled with the billed usage: the tokens the
    server bills to requests arriving in any window stay within the limit, and the limit binds."""
    per_window = 200
    pool = PoolConfig.model_validate({"name": "tpm", "teachers": [{
        "name": "api", "backend": "openai", "samples": 1, "concurrency": 4, "params": {"max_tokens": 16},
        "tokens_per_minute": per_window * 60 / WINDOW_S, "openai": {"model": "fake-vlm", "base_url": "x"}}]})
    its = [Item(item_id=f"q{i}", benchmark="t", task_type="open", question="q?", prompt=f"question {i}?")
           for i in range(30)]
    with FakeOpenAIServer(latency_s=0.01) as srv:
        pool.teachers[0].openai.base_url = srv.url

        async def go() -> dict:
            teachers = build_teachers(pool)
            try:
                with SampleStore(tmp_path) as store:
                    return await run_sampling(its, pool, teachers, store, progress=False, rate_window_s=WINDOW_S)
            finally:
                await asyncio.gather(*(t.aclose() for t in teachers.values()))

        summary = asyncio.run(go())
        billed = list(srv.stats.billed)
    assert summary["new_records"] == 30
    total = sum(tokens for _, tokens in billed)
    assert total > 2 * per_window  # more than two windows' worth: the limit had to hold the run back
    assert max_tokens_in_window(billed, WINDOW_S) <= per_window
