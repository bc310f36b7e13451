"""The sampling runner against a real HTTP server on 127.0.0.1: limits, retries, resume, failures, media."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from pathlib import Path

import pytest
from fake_openai import FakeOpenAIServer, max_in_window

from rmsd.config.pools import PoolConfig
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.sampling import online
from rmsd.sampling.ratelimit import (
    JITTER_MARGIN_S,
    RateLimiter,
    SlidingWindow,
    TokenBucket,
    backoff_delay,
)
from rmsd.sampling.sample import parse_shard, run_sampling, shard_items
from rmsd.sampling.store import SampleStore, part_files, read_failures, read_records
from rmsd.sampling.work import chunks
from rmsd.teachers.build import build_teachers
from rmsd.teachers.teacher import Media, Response, Teacher, parse_retry_after

TASKS = ("mcq", "open", "numeric", "grounding")


def items(n: int, video: str | None = None) -> list[Item]:
    return [Item(item_id=f"q{i}", benchmark="t", task_type=TASKS[i % 4], question=f"question {i}?",
                 prompt=f"question {i}?", options=["a", "b"] if i % 4 == 0 else [], video=video) for i in range(n)]


def api(name: str, url: str, samples: int = 2, **kw) -> dict:
    openai = {"model": f"model-{name}", "base_url": url, **kw.pop("openai", {})}
    return {"name": name, "backend": "openai", "samples": samples, "openai": openai, "max_retries": 3, **kw}


def sample(its: list[Item], path: Path, *teachers: dict, concurrency: int = 16, **pool_kw) -> dict:
    pool = PoolConfig.model_validate({"name": "p", "teachers": list(teachers), **pool_kw})

    async def go() -> dict:
        built = build_teachers(pool)
        try:
            with SampleStore(path) as store:
                return await run_sampling(its, pool, built, store, concurrency=concurrency, progress=False,
                                          backoff_base_s=0.01, backoff_cap_s=0.05)
        finally:
            for t in built.values():
                await t.aclose()

    return asyncio.run(go())


def keys(path: Path) -> list[str]:
    return [r["key"] for r in read_records(path)]


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


# ----------------------------------------------------------------------------- building blocks
def test_limits_hold_over_every_sliding_window_on_a_fake_clock():
    now = [0.0]

    async def sleep(dt: float) -> None:
        now[0] += dt

    async def go() -> tuple[list[float], list[float]]:
        # 120 requests/min over a 6 s "minute": at most 12 requests in any 6 s, at ~2/s (the bucket's refill)
        limiter = RateLimiter(120, None, window_s=6.0, clock=lambda: now[0], sleep=sleep)
        sent = []
        for _ in range(60):
            await limiter.acquire(0)
            sent.append(now[0])
        # tokens: 600/min over 6 s = 60 per window; estimates of 25 settled at 10 give the difference back
        tokens = RateLimiter(None, 600, window_s=6.0, clock=lambda: now[0], sleep=sleep)
        token_times = []
        for _ in range(12):
            spent = await tokens.acquire(25)
            token_times.append(now[0])
            tokens.settle(spent, 10)
        return sent, token_times

    sent, token_times = asyncio.run(go())
    assert max_in_window(sent, 6.0) == 12  # reached, never exceeded
    assert sent[-1] == pytest.approx(4 * (6.0 + JITTER_MARGIN_S))  # 12 per window, with a margin for jitter
    bucket = TokenBucket(60, burst_s=5, clock=lambda: now[0])
    assert bucket.delay(1) == 0 and bucket.delay(50) == pytest.approx(0.0)  # larger than the bucket: waits for full
    bucket.take(5)
    assert bucket.delay(1) == pytest.approx(1.0)
    window = SlidingWindow(10, 6.0, clock=lambda: now[0])
    entry = window.take(25)  # larger than the whole limit: let through because the window was empty
    assert window.delay(1) == pytest.approx(6.0 + JITTER_MARGIN_S)
    window.adjust(entry, 5)  # billed less than estimated: the rest comes back
    assert window.delay(5) == 0 and window.delay(6) > 0
    # settled at 10: each request holds 10 of the 60 once answered, so 4 start per window (estimate 25 fits on 30
    # used); unsettled estimates of 25 would allow only 2 per window
    start = token_times[0]
    w = 6.0 + JITTER_MARGIN_S
    assert [t - start for t in token_times] == pytest.approx([0] * 4 + [w] * 4 + [2 * w] * 4)


def test_retry_after_and_backoff():
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert parse_retry_after({}) is None and parse_retry_after({"retry-after": "soon"}) is None
    rng = random.Random(0)
    delays = [backoff_delay(a, base_s=1, cap_s=8, rng=rng) for a in range(6) for _ in range(50)]
    assert all(0.1 <= d <= 8 for d in delays) and max(delays[:50]) <= 1 and len(set(delays)) > 200  # jittered
    assert backoff_delay(0, base_s=0.01, retry_after=3.0, rng=rng) == 3.0  # never sooner than the server asks


def test_shards_partition_items_stably():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(RmsdError, match="--shard"):
            parse_shard(bad)
    its = items(40)
    parts = [shard_items(its, (i, 3)) for i in range(3)]
    ids = [it.item_id for p in parts for it in p]
    assert sorted(ids) == sorted(it.item_id for it in its) and len(set(ids)) == 40 and all(parts)
    assert [it.item_id for it in shard_items(list(reversed(its)), (1, 3))] == [it.item_id for it in reversed(parts[1])]
    assert chunks([0, 1, 2, 3, 5, 6], None) == [[0, 1, 2, 3], [5, 6]]
    assert chunks([3, 0, 1], 2) == [[0, 1], [3]]


# ----------------------------------------------------------------------------- against the fake server
def test_faults_are_retried_and_every_key_is_written_once(server, tmp_path):
    server.reset(latency_s=0.01, faults=["429", "500", "hang", "garbage", "empty"], retry_after_s=0.02, hang_s=2.0)
    summary = sample(items(12), tmp_path, api("a", server.url, samples=3, timeout_s=0.3), concurrency=1)
    ks = keys(tmp_path)
    assert len(ks) == len(set(ks)) == 36 and summary["missing"] == 0 and summary["failures"] == 0
    assert summary["retries"] == 5 and summary["requests"] == 12 + 5
    assert server.stats.statuses["429"] == 1 and server.stats.statuses["500"] == 1


def test_resume_completes_exactly_the_missing_keys(server, tmp_path):
    full, partial = tmp_path / "full", tmp_path / "partial"
    teachers = [api("a", server.url, samples=4), api("b", server.url, samples=2, openai={"use_n": "never"})]
    sample(items(10), full, *teachers)
    rows = read_records(full)
    kept = [r for i, r in enumerate(rows) if i % 3]  # a store that lost every third record
    with SampleStore(partial) as s:
        for r in kept:
            s.append(r)
    server.reset()
    summary = sample(items(10), partial, *teachers)
    assert summary["new_records"] == len(rows) - len(kept) == server.stats.choices
    assert sorted(keys(partial)) == sorted(keys(full)) and len(set(keys(partial))) == len(rows)
    assert len(part_files(partial)) == 2
    server.reset()
    again = sample(items(10), partial, *teachers)
    assert again["new_records"] == 0 and server.stats.requests == 0  # nothing left: no request at all


def test_task_adaptive_pool_and_concurrency_limits(server, tmp_path):
    server.reset(latency_s=0.05)
    summary = sample(items(16), tmp_path, api("all", server.url, samples=1, concurrency=3),
                     api("open-only", server.url, samples=2, task_types=["open"], concurrency=3))
    recs = read_records(tmp_path)
    assert {r["item_id"] for r in recs if r["teacher"] == "open-only"} == {f"q{i}" for i in range(1, 16, 4)}
    assert summary["planned"] == 16 + 4 * 2 == len(recs)
    assert server.stats.max_in_flight <= 6  # 3 per teacher
    server.reset(latency_s=0.05)
    sample(items(16), tmp_path / "g", api("x", server.url, samples=1, concurrency=8),
           api("y", server.url, samples=1, concurrency=8), concurrency=2)
    assert server.stats.max_in_flight == 2  # the global limit over the pool


def test_final_failures_are_logged_then_cleared_by_a_later_success(server, tmp_path):
    server.reset(fail_if_contains="question 2?")
    t = api("a", server.url, samples=2, max_retries=2)
    summary = sample(items(4), tmp_path, t, api("b", server.url, samples=1, task_types=["numeric", "open"]))
    assert summary["failures"] == 2 and summary["failed_samples"] == 3 and summary["missing"] == 3
    assert len(keys(tmp_path)) == 3 * 2 + 1 + 0  # the other items complete
    fails = sorted(read_failures(tmp_path), key=lambda f: f["teacher"])
    assert [(f["item_id"], f["teacher"], len(f["keys"]), f["attempts"]) for f in fails] == [
        ("q2", "a", 2, 3), ("q2", "b", 1, 4)]  # max_retries 2 and 3
    assert all("HTTP 500" in f["reason"] for f in fails)
    server.reset(fail_if_contains=None)
    summary = sample(items(4), tmp_path, t, api("b", server.url, samples=1, task_types=["numeric", "open"]))
    assert summary["failures"] == 0 and summary["missing"] == 0 and read_failures(tmp_path) == []
    assert summary["new_records"] == 3 and len(keys(tmp_path)) == 10


def test_an_unreachable_teacher_fails_alone_and_is_stopped_early(server, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    summary = sample(items(30), tmp_path, api("live", server.url), api("dead", dead, max_retries=1, concurrency=2))
    assert summary["teachers"]["live"]["records"] == 60 and summary["teachers"]["dead"]["records"] == 0
    fails = read_failures(tmp_path)
    assert {f["teacher"] for f in fails} == {"dead"} and len({f["item_id"] for f in fails}) == 30
    reasons = " ".join(f["reason"] for f in fails)
    assert "cannot reach" in reasons and "stopped after 5 requests in a row failed" in reasons
    assert summary["teachers"]["dead"]["requests"] < 30 * 2  # the circuit breaker spared most retries


def test_media_is_built_once_per_item_and_the_video_sent_once_with_n(server, tmp_path, monkeypatch):
    built = []

    def fake_media(item, needs, num_frames, max_side):
        built.append((item.item_id, needs))
        return Media(jpeg_b64=["AAAA"] * 8, timestamps=[i / 2 for i in range(8)], duration=4.0)

    monkeypatch.setattr(online, "build_media", fake_media)
    its = items(6, video="/videos/x.mp4")
    with_n = sample(its, tmp_path / "n", api("a", server.url, samples=4), api("b", server.url, samples=4))
    assert sorted(i for i, _ in built) == sorted(it.item_id for it in its)  # once per item, two teachers x K=4
    assert all(needs == frozenset({"jpeg"}) for _, needs in built)
    assert server.stats.image_parts == 6 * 2 * 8 and server.stats.requests == 12
    server.reset()
    without = sample(its, tmp_path / "1", api("a", server.url, samples=4, openai={"use_n": "never"}))
    assert server.stats.image_parts == 6 * 4 * 8  # K times the video without n
    per_item = with_n["teachers"]["a"]["prompt_tokens"], without["teachers"]["a"]["prompt_tokens"]
    assert per_item[1] == pytest.approx(4 * per_item[0], rel=0.05)


def test_missing_and_corrupt_videos_fail_their_item_only(server, tmp_path):
    from rmsd.datasets.synthvid import load_items
    from rmsd.synthvid.generator import generate

    generate(tmp_path / "data", n=8, seed=2, frame_size=56)
    its = load_items(tmp_path / "data", split="train")[:4]
    its[0].video = str(tmp_path / "gone.mp4")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20)
    its[1].video = str(tmp_path / "corrupt.mp4")
    summary = sample(its, tmp_path / "store", api("a", server.url), {"name": "sim", "backend": "simulated",
                                                                     "samples": 1, "simulated": {}})
    fails = {f["item_id"]: f for f in read_failures(tmp_path / "store")}
    assert set(fails) == {its[0].item_id, its[1].item_id} and all(f["teacher"] == "a" for f in fails.values())
    assert "gone.mp4" in fails[its[0].item_id]["reason"] and "corrupt.mp4" in fails[its[1].item_id]["reason"]
    assert summary["teachers"]["a"]["records"] == 2 * 2  # the two readable items
    assert summary["teachers"]["sim"]["records"] == 4  # a teacher that never looks at the video is unaffected
    assert server.stats.image_parts == 2 * 8  # 8 frames per readable item, sent once for K=2


# ----------------------------------------------------------------------------- custom teachers
class Scripted(Teacher):
    """Answers, or misbehaves, as told; records the (start_index, n) of every call."""

    media_needs = frozenset()

    def __init__(self, name: str, mode: str = "ok"):
        super().__init__(name)
        self.mode, self.seen = mode, []

    async def generate(self, item, media, n, params, start_index=0):
        self.seen.append((start_index, n))
        if self.mode == "empty":
            return []
        if self.mode == "one":  # like a server that ignores n: the first sample only
            return [Response(text=f"{item.item_id}:{start_index}")]
        if self.mode == "user-error":
            raise RmsdError("this teacher cannot answer open questions")
        if self.mode == "slow":
            await asyncio.sleep(5)
        return [Response(text=f"{item.item_id}:{start_index + i}", finish_reason="length") for i in range(n)]


@pytest.mark.parametrize("mode, reason, attempts", [
    ("empty", "teacher returned 0 responses for n=2", 3), ("user-error", "cannot answer open", 1),
    ("slow", "timeout: no response within 0.2 s", 3),
])
def test_misbehaving_custom_teachers_end_in_failures(tmp_path, mode, reason, attempts):
    pool = PoolConfig.model_validate({"name": "p", "teachers": [
        {"name": "bad", "backend": "x.y:Z", "samples": 2, "max_retries": 2, "timeout_s": 0.2},
        {"name": "good", "backend": "x.y:Z", "samples": 2}]})
    teachers = {"bad": Scripted("bad", mode), "good": Scripted("good")}

    async def go():
        with SampleStore(tmp_path) as store:
            return await run_sampling(items(2), pool, teachers, store, progress=False, backoff_base_s=0.01)

    summary = asyncio.run(go())
    fails = read_failures(tmp_path)
    assert {f["teacher"] for f in fails} == {"bad"} and all(reason in f["reason"] for f in fails)
    assert all(f["attempts"] == attempts for f in fails)
    assert summary["teachers"]["good"]["records"] == 4 and summary["teachers"]["good"]["truncated"] == 4
    assert [r["text"] for r in read_records(tmp_path)] == ["q0:0", "q0:1", "q1:0", "q1:1"]


def test_config_errors_stop_before_any_request(server, tmp_path):
    pool = PoolConfig.model_validate({"name": "p", "teachers": [api("a", server.url)]})
    with SampleStore(tmp_path) as store:
        with pytest.raises(RmsdError, match="no Teacher object for pool teacher"):
            asyncio.run(run_sampling(items(2), pool, {}, store, progress=False))
        dupes = items(2) + items(1)
        with pytest.raises(RmsdError, match="appears twice"):
            asyncio.run(run_sampling(dupes, pool, {"a": Scripted("a")}, store, progress=False))
    assert server.stats.requests == 0 and read_records(tmp_path) == []
    assert json.loads(json.dumps(read_failures(tmp_path))) == []


def test_a_repeated_item_id_names_the_file_and_rows_it_came_from(server, tmp_path):
    from rmsd.items import read_items, write_items

    file = tmp_path / "items.jsonl"
    write_items(items(3) + items(2)[1:], file)  # q1 twice: lines 2 and 4
    pool = PoolConfig.model_validate({"name": "p", "teachers": [api("a", server.url)]})
    with SampleStore(tmp_path / "store") as store, pytest.raises(RmsdError) as err:
        asyncio.run(run_sampling(read_items(file), pool, {"a": Scripted("a")}, store, progress=False))
    assert str(err.value).startswith(f"item id 'q1' appears twice in the dataset (rows {file}:2 and {file}:4): ")
    assert server.stats.requests == 0


def test_a_custom_teacher_that_returns_fewer_samples_is_asked_only_for_the_rest(tmp_path):
    pool = PoolConfig.model_validate({"name": "p", "teachers": [{"name": "one", "backend": "x.y:Z", "samples": 4}]})
    teacher = Scripted("one", "one")

    async def go():
        with SampleStore(tmp_path) as store:
            return await run_sampling(items(2), pool, {"one": teacher}, store, progress=False)

    summary = asyncio.run(go())
    assert summary["failures"] == 0 and summary["missing"] == 0 and summary["new_records"] == 8
    assert sorted(r["text"] for r in read_records(tmp_path)) == sorted(f"q{i}:{j}" for i in range(2) for j in range(4))
    # each call stored its one sample at once; the next asked from the first missing index on
    assert sorted(teacher.seen) == sorted([(0, 4), (1, 3), (2, 2), (3, 1)] * 2)
    assert summary["requests"] == 8 and summary["short"] == 6
