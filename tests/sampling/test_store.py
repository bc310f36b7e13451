"""The sample store: append-only parts, kill repair (data and failures), damage, failures state, grouped fsync,
atomic merge, key-version marker, and `datasets.load_dataset` on the store and its failures."""

from __future__ import annotations

import asyncio
import json
import os

import datasets
import pytest

from rmsd.errors import RmsdError
from rmsd.sampling import store as store_mod
from rmsd.sampling.store import (
    SampleStore,
    key_version,
    merge_stores,
    part_files,
    read_failures,
    read_records,
)


def rec(key: str, item_id: str = "q1", teacher: str = "gpt", index: int = 0, **kw) -> dict:
    row = {"key": key, "item_id": item_id, "teacher": teacher, "model": "m", "sample_index": index,
           "text": f"<think>x</think><answer>({'ABCD'[index % 4]})</answer>", "finish_reason": "stop",
           "logprobs": None, "prompt_tokens": 10, "completion_tokens": 5, "latency_s": 0.1, "error": None,
           "created_at": "2025-01-01T00:00:00+00:00"}
    row.update(kw)
    return row


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


def test_fsync_runs_every_n_records_or_t_ms_in_the_background(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(store_mod.os, "fsync", lambda fd: (calls.append(fd), real(fd)))

    async def write(s: SampleStore, n: int, pause: float = 0.0) -> None:
        for i in range(n):
            s.append(rec(f"{len(s):064x}", index=i))
            s.sync_soon()
            if s._syncing is not None:
                await s._syncing  # records arrive slower than an fsync here (the count is then exact)
        await asyncio.sleep(pause)  # a quiet spell: the timer syncs what is pending
        if s._syncing is not None:
            await s._syncing

    s = SampleStore(tmp_path / "n", fsync_every=3, fsync_ms=60_000)
    asyncio.run(write(s, 7))
    assert len(calls) == 2 and s.fsyncs == 2  # after records 3 and 6; record 7 waits for the timer or close
    s.close()
    assert len(calls) == 3
    calls.clear()
    s = SampleStore(tmp_path / "t", fsync_every=1000, fsync_ms=50)
    asyncio.run(write(s, 2, pause=0.3))
    assert len(calls) == 1  # two records, then quiet: synced within fsync_ms, not at close only
    s.close()
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
    assert merge_stores([a, b], tmp_path / "all2") == 3  # the same again in a new folder
    assert json.loads((out / "summary.json").read_text())["records"] == 3
    assert str(out) in (out / "README.md").read_text()  # the card names the final folder, not the temporary one
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
        with pytest.raises(RmsdError, match=rf"{part.name}:2: not valid JSON"):
            read(tmp_path)


def test_a_cut_last_line_of_failures_is_repaired_and_later_failures_are_recorded(tmp_path):
    with SampleStore(tmp_path) as s:
        s.add_failure("q1", "gpt", "HTTP 500", ["a" * 64], attempts=3)
    with (tmp_path / "failures.jsonl").open("a") as f:  # a kill -9 in the middle of a failure line
        f.write('{"item_id": "q2", "teacher": "gpt", "rea')
    assert [f["item_id"] for f in read_failures(tmp_path)] == ["q1"]  # readers skip the cut line
    with SampleStore(tmp_path) as s:
        assert s.repaired_bytes > 0
        s.add_failure("q3", "gpt", "timeout", ["c" * 64], attempts=2)
        assert [f["item_id"] for f in s.open_failures()] == ["q1", "q3"]
    assert [f["item_id"] for f in read_failures(tmp_path)] == ["q1", "q3"]


@pytest.mark.parametrize("line", ['{"foo": 1}', "[1, 2]", "null", '"text"', '{"key": 5, "item_id": "q"}'])
def test_valid_json_that_is_not_a_record_is_damage_named_by_file_and_line(tmp_path, line):
    with SampleStore(tmp_path) as s:
        s.append(rec("a" * 64))
    part = part_files(tmp_path)[0]
    part.write_text(part.read_text() + line + "\n")
    for read in (SampleStore, read_records):
        with pytest.raises(RmsdError, match=rf"{part.name}:2: valid JSON but not a record") as e:
            read(tmp_path)
        assert "\n" not in str(e.value)


def test_a_failed_merge_leaves_nothing_and_merge_needs_a_new_folder(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "all"
    with SampleStore(a) as s:
        s.append(rec("a" * 64))
    with SampleStore(b) as s:
        s.append(rec("b" * 64, index=1))
    part = part_files(b)[0]
    part.write_text(part.read_text() + "[1, 2]\n")
    with pytest.raises(RmsdError, match="not a record"):
        merge_stores([a, b], out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no partial or hidden folder
    part.write_text(part.read_text().replace("[1, 2]\n", ""))
    assert merge_stores([a, b], out) == 2
    with pytest.raises(RmsdError, match="already exists; merge into a new folder"):
        merge_stores([a, b], out)
    assert merge_stores([out, a], tmp_path / "again") == 2  # an earlier merge is an input like any store


def test_every_store_has_a_marker_and_old_ones_read_as_key_version_1(tmp_path):
    with SampleStore(tmp_path / "new") as s:
        s.append(rec("a" * 64))
    assert json.loads((tmp_path / "new" / "store.json").read_text())["key_version"] == 2 == key_version(tmp_path / "new")
    old = tmp_path / "old"
    (old / "data").mkdir(parents=True)
    (old / "data" / "train-00000.jsonl").write_text(json.dumps(rec("b" * 64)) + "\n")  # a store from before store.json
    assert key_version(old) == 1
    with SampleStore(old) as s:  # opening keeps its version (rmsd sample refuses it; merge and match read it)
        assert s.key_version == 1
    assert key_version(old) == 1
    with pytest.raises(RmsdError, match="key versions? differ|whose record keys differ"):
        merge_stores([tmp_path / "new", old], tmp_path / "mixed")
    assert merge_stores([old], tmp_path / "old2") == 1 and key_version(tmp_path / "old2") == 1


def test_the_documented_datasets_lines_work_with_and_without_failures(tmp_path):
    cache = str(tmp_path / "hf_cache")
    clean, failed = tmp_path / "clean", tmp_path / "failed"
    with SampleStore(clean) as s:
        s.append(rec("a" * 64))
    with SampleStore(failed) as s:
        s.append(rec("a" * 64))
        s.add_failure("q2", "gpt", "HTTP 500", ["c" * 64, "d" * 64], attempts=3)
    for store in (clean, failed):
        card = (store / "README.md").read_text()
        lines = [line for line in card.splitlines() if "datasets.load_dataset" in line]
        namespace = {"datasets": datasets}
        for line in lines:  # run each documented line as written (with a private cache)
            exec(line.replace('")', f'", cache_dir={cache!r})'), namespace)
        assert len(namespace["records"]) == 1
        if store is failed:
            assert namespace["failures"]["keys"] == [["c" * 64, "d" * 64]]
        else:
            assert "failures" not in namespace and "no `failures` config" in card
    with SampleStore(failed) as s:  # the failure is solved: the store's card drops the config
        s.append(rec("c" * 64, item_id="q2"))
        s.append(rec("d" * 64, item_id="q2", index=1))
    assert not (failed / "failures.jsonl").exists() and "config_name: failures" not in (failed / "README.md").read_text()
    assert read_failures(failed) == []
