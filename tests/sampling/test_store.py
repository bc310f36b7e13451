"""The sample store: content-addressed keys, append-only parts, kill repair, failures state, merge, datasets."""

from __future__ import annotations

import asyncio
import json
import os

import datasets
import pytest

from rmsd.errors import RmsdError
from rmsd.sampling import store as store_mod
from rmsd.sampling.store import SampleStore, merge_stores, part_files, read_failures, read_records, record_key

BASE = dict(item_id="q1", teacher="gpt", identity={"model": "m"}, params={"temperature": 1.0},
            system_prompt="sys", prompt_template="{prompt}", sample_index=0)


def rec(key: str, item_id: str = "q1", teacher: str = "gpt", index: int = 0, **kw) -> dict:
    row = {"key": key, "item_id": item_id, "teacher": teacher, "model": "m", "sample_index": index,
           "text": f"<think>x</think><answer>({'ABCD'[index % 4]})</answer>", "finish_reason": "stop",
           "logprobs": None, "prompt_tokens": 10, "completion_tokens": 5, "latency_s": 0.1, "error": None,
           "created_at": "2025-01-01T00:00:00+00:00"}
    row.update(kw)
    return row


def test_key_is_content_addressed_and_includes_the_sample_index():
    k = record_key(**BASE)
    assert k == record_key(**BASE) and len(k) == 64
    variants = [dict(BASE, sample_index=1), dict(BASE, teacher="other"), dict(BASE, identity={"model": "m2"}),
                dict(BASE, params={"temperature": 0.7}), dict(BASE, system_prompt=None),
                dict(BASE, prompt_template="Q: {prompt}"), dict(BASE, item_id="q2")]
    keys = {record_key(**v) for v in variants}
    assert k not in keys and len(keys) == len(variants)


def test_append_only_parts_and_resume_skips_present_keys(tmp_path):
    with SampleStore(tmp_path) as s:
        assert s.append(rec("a" * 64)) and s.append(rec("b" * 64, index=1))
        assert not s.append(rec("a" * 64))  # a key is written once
    first = part_files(tmp_path)
    assert len(first) == 1
    before = first[0].read_bytes()
    with SampleStore(tmp_path) as s:
        assert "a" * 64 in s and len(s) == 2
        assert not s.append(rec("b" * 64, index=1))
        assert s.append(rec("c" * 64, index=2))
        assert s.totals["gpt"] == {"records": 3, "prompt_tokens": 30, "completion_tokens": 15}
    parts = part_files(tmp_path)
    assert len(parts) == 2 and first[0].read_bytes() == before  # the earlier part is never rewritten
    assert [r["key"][0] for r in read_records(tmp_path)] == ["a", "b", "c"]
    with SampleStore(tmp_path):
        pass
    assert len(part_files(tmp_path)) == 2  # a run that wrote nothing leaves no empty part


def test_truncated_last_line_is_skipped_then_repaired_and_datasets_reads_the_store(tmp_path):
    with SampleStore(tmp_path) as s:
        s.append(rec("a" * 64))  # logprobs and error null in the first part
    with SampleStore(tmp_path) as s:
        lp = [{"token": "x", "logprob": -0.5, "top_logprobs": [{"token": "y", "logprob": -1.5}]}]
        s.append(rec("b" * 64, index=1, logprobs=lp, error="content_filter", finish_reason="content_filter"))
    part = part_files(tmp_path)[-1]
    with part.open("a") as f:  # what kill -9 in the middle of a write leaves behind
        f.write(json.dumps(rec("c" * 64, index=2))[:70])
    assert [r["key"][0] for r in read_records(tmp_path)] == ["a", "b"]
    with SampleStore(tmp_path) as s:
        assert s.repaired_bytes == 70 and len(s) == 2
    assert part.read_text().endswith("\n")
    ds = datasets.load_dataset(str(tmp_path), cache_dir=str(tmp_path.parent / "hf_cache"))["train"]
    assert sorted(ds["key"]) == ["a" * 64, "b" * 64]
    row = ds.filter(lambda r: r["key"] == "b" * 64)[0]
    assert row["logprobs"][0]["top_logprobs"][0]["token"] == "y" and row["error"] == "content_filter"


def test_failures_keep_the_latest_state(tmp_path):
    with SampleStore(tmp_path) as s:
        s.add_failure("q1", "gpt", "HTTP 500", ["a" * 64, "b" * 64], attempts=3)
        s.add_failure("q2", "gpt", "timeout", ["c" * 64], attempts=3)
        assert len(s.open_failures()) == 2
    with SampleStore(tmp_path) as s:
        s.add_failure("q1", "gpt", "HTTP 429", ["d" * 64], attempts=6)  # a later failure of another sample
        s.append(rec("a" * 64))
        s.append(rec("c" * 64, item_id="q2"))
        open_ = s.open_failures()
    assert [(f["item_id"], f["reason"], sorted(f["keys"])) for f in open_] == [("q1", "HTTP 429", ["b" * 64, "d" * 64])]
    assert read_failures(tmp_path) == open_  # compacted on close
    with SampleStore(tmp_path) as s:
        s.append(rec("b" * 64, index=1))
        s.append(rec("d" * 64, index=2))
    assert read_failures(tmp_path) == []


def test_a_second_writer_is_refused(tmp_path):
    with SampleStore(tmp_path):
        with pytest.raises(RmsdError, match="another `rmsd sample`"):
            SampleStore(tmp_path)
    SampleStore(tmp_path).close()  # released on close (and by the OS on kill -9)


def test_fsync_is_shared_by_flush_every_records(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(store_mod.os, "fsync", lambda fd: (calls.append(fd), real(fd)))

    async def write(s: SampleStore) -> None:
        for i in range(7):
            s.append(rec(f"{i:064x}", index=i))
            await s.sync_if_due()

    s = SampleStore(tmp_path, flush_every=3)
    asyncio.run(write(s))
    assert len(calls) == 2  # after records 3 and 6; record 7 is synced on close
    s.close()
    assert len(calls) == 3


def test_merge_joins_shards_without_duplicates(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "all"
    with SampleStore(a) as s:
        s.append(rec("a" * 64))
        s.append(rec("b" * 64, index=1))
        s.add_failure("q2", "gpt", "HTTP 500", ["c" * 64], attempts=3)
    with SampleStore(b) as s:
        s.append(rec("b" * 64, index=1))
        s.append(rec("c" * 64, item_id="q2"))
        s.add_failure("q3", "gpt", "timeout", ["e" * 64], attempts=3)
    assert merge_stores([a, b], out) == 3
    assert sorted(r["key"][0] for r in read_records(out)) == ["a", "b", "c"]
    assert [f["item_id"] for f in read_failures(out)] == ["q3"]  # q2's failure was solved by shard b
    assert merge_stores([a, b], out) == 3  # idempotent
    assert json.loads((out / "summary.json").read_text())["records"] == 3
    with pytest.raises(RmsdError, match="not a sample store"):
        merge_stores([tmp_path / "nope"], out)
    with pytest.raises(RmsdError, match="must not be one of its inputs"):
        merge_stores([a, out], out)


def test_a_damaged_line_inside_a_part_is_a_clear_error(tmp_path):
    with SampleStore(tmp_path) as s:
        s.append(rec("a" * 64))
    part = part_files(tmp_path)[0]
    part.write_text(part.read_text() + "{not json\n" + json.dumps(rec("b" * 64)) + "\n")
    for read in (SampleStore, read_records):
        with pytest.raises(RmsdError, match=rf"{part.name}:2 is not a valid"):
            read(tmp_path)
