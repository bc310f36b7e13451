"""The batch ledger as one state machine: every transition of its table allowed, every other refused (when
written and when read back), each state taken up by a resumed run as the table says, and a ledger written
before the states were a table resumed as it is."""

from __future__ import annotations

import asyncio
import json
from itertools import product
from pathlib import Path

import pytest
from fake_batch import BatchBehaviour, FakeBatchServer

from rmsd.config.pools import PoolConfig
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.sampling.batch import BatchRun
from rmsd.sampling.ledger import IMPORTED, OPEN, TRANSITIONS, Ledger, PartState
from rmsd.sampling.sample import run_sampling
from rmsd.sampling.store import SampleStore, read_records
from rmsd.sampling.work import make_lanes
from rmsd.teachers.build import build_teachers

S = PartState
POLL = {"batch_poll_s": 0.001, "batch_poll_max_s": 0.01}


def items(n: int) -> list[Item]:
    return [Item(item_id=f"q{i}", benchmark="t", task_type="open", question=f"q{i}?", prompt=f"question {i}?")
            for i in range(n)]


def pool(url: str) -> PoolConfig:
    teacher = {"name": "api", "backend": "openai", "samples": 3, "params": {"seed": 7},
               "openai": {"model": "fake-vlm", "base_url": url, "mode": "batch", **POLL}}
    return PoolConfig.model_validate({"name": "ledger-test", "teachers": [teacher]})


def sample(path: Path, p: PoolConfig, its: list[Item]) -> dict:
    async def go() -> dict:
        teachers = build_teachers(p)
        try:
            with SampleStore(path) as store:
                return await run_sampling(its, p, teachers, store, progress=False)
        finally:
            await asyncio.gather(*(t.aclose() for t in teachers.values()))

    return asyncio.run(go())

# the life of a part, written out here by hand (not read from TRANSITIONS): what the module docstring draws
ALLOWED = {(None, S.WRITING), (S.WRITING, S.SUBMITTING), (S.WRITING, S.EXPORTED), (S.WRITING, S.DISCARDED),
           (S.SUBMITTING, S.CREATED), (S.SUBMITTING, S.INGESTED), (S.CREATED, S.INGESTED)}
PAIRS = list(product([None, *PartState], PartState))


def walk_to(ledger: Ledger, tag: str, state: PartState | None) -> None:
    """Take part `tag` to `state` along the table's shortest path."""
    path = {None: [], S.WRITING: [S.WRITING], S.SUBMITTING: [S.WRITING, S.SUBMITTING],
            S.CREATED: [S.WRITING, S.SUBMITTING, S.CREATED], S.INGESTED: [S.WRITING, S.SUBMITTING, S.INGESTED],
            S.EXPORTED: [S.WRITING, S.EXPORTED], S.DISCARDED: [S.WRITING, S.DISCARDED]}[state]
    for step in path:
        ledger.add(step, tag=tag, teacher="api")


def test_the_table_is_the_life_the_docstring_draws():
    assert {(a, b) for a, bs in TRANSITIONS.items() for b in bs} == ALLOWED
    assert set(TRANSITIONS) == {None, *PartState}
    assert OPEN == {S.SUBMITTING, S.CREATED}  # uploaded, not yet ingested: its keys are never asked again


@pytest.mark.parametrize("before, after", PAIRS, ids=[f"{a.value if a else 'new'}->{b.value}" for a, b in PAIRS])
def test_each_transition_is_written_if_the_table_has_it_and_refused_if_not(tmp_path, before, after):
    ledger = Ledger(tmp_path)
    walk_to(ledger, "p", before)
    lines = ledger.file.read_text().count("\n") if ledger.exists() else 0
    if (before, after) in ALLOWED:
        ledger.add(after, tag="p", teacher="api", batch_id="b1")
        assert Ledger(tmp_path).parts()["p"]["state"] is after  # read back from the file, not the cache
        assert Ledger(tmp_path).parts()["p"]["batch_id"] == "b1"
    else:
        with pytest.raises(RmsdError, match=f"cannot go from {before.value if before else 'nothing'} to {after.value}"):
            ledger.add(after, tag="p", teacher="api")
        assert (ledger.file.read_text().count("\n") if ledger.exists() else 0) == lines  # nothing written


@pytest.mark.parametrize("before, after", [p for p in PAIRS if p not in ALLOWED],
                         ids=[f"{a.value if a else 'new'}->{b.value}" for a, b in PAIRS if (a, b) not in ALLOWED])
def test_a_ledger_whose_line_leaves_the_table_is_damaged_and_says_which_line(tmp_path, before, after):
    ledger = Ledger(tmp_path)
    walk_to(ledger, "p", before)
    walk_to(ledger, "other", S.CREATED)
    with ledger.file.open("a") as f:
        f.write(json.dumps({"event": after.value, "tag": "p", "at": "2026-12-01T00:00:00Z"}) + "\n")
    n = ledger.file.read_text().count("\n")
    with pytest.raises(RmsdError, match=rf"ledger.jsonl:{n}: part p goes from {before.value if before else 'nothing'} "
                                        rf"to '{after.value}': the batch ledger is damaged"):
        Ledger(tmp_path).parts()


def test_a_line_that_is_no_state_and_a_part_state_without_a_tag_are_refused(tmp_path):
    ledger = Ledger(tmp_path)
    with pytest.raises(RmsdError, match="needs its tag"):
        ledger.add(S.CREATED, batch_id="b")
    ledger.add(IMPORTED, file="out.jsonl", teachers={})  # the store's own event: no tag, no state
    ledger.file.open("a").write('{"event": "uploaded", "tag": "p", "at": "x"}\n')
    with pytest.raises(RmsdError, match=r"ledger.jsonl:2: part p goes from nothing to 'uploaded'"):
        Ledger(tmp_path).parts()


# ----------------------------------------------------------------------------- a resumed run, state by state
def submit_and_stop(store: Path, url: str, its: list) -> None:
    """A run that submitted its batches and was stopped while they wait (nothing collected)."""
    p = pool(url)

    async def go() -> None:
        teachers = build_teachers(p)
        with SampleStore(store) as s:
            run = BatchRun(its, make_lanes(p, teachers), s, 8, None, progress=False)
            try:
                await run.start()
            finally:
                await run.aclose()
        await asyncio.gather(*(t.aclose() for t in teachers.values()))

    asyncio.run(go())


def test_a_resumed_run_takes_each_part_from_the_state_the_ledger_holds(tmp_path):
    """created: polled, not re-created; writing: its files removed, discarded; ended parts left alone."""
    its, store = items(6), tmp_path / "s"
    with FakeBatchServer(BatchBehaviour(hold=True)) as srv:
        submit_and_stop(store, srv.url, its)
        ledger = Ledger(store)
        assert [p["state"] for p in ledger.parts().values()] == [S.CREATED]
        ledger.add(S.WRITING, tag="api-00009-dead00", teacher="api")  # a part killed while being written
        leftovers = [ledger.requests("api-00009-dead00"), ledger.manifest("api-00009-dead00")]
        for path in leftovers:
            path.write_text('{"custom_id": "x"}\n')
        srv.batch.behaviour.hold = False
        summary = sample(store, pool(srv.url), its)
        stats = srv.batch.stats
    states = {tag: p["state"] for tag, p in Ledger(store).parts().items()}
    assert states == {next(iter(states)): S.INGESTED, "api-00009-dead00": S.DISCARDED}
    assert not any(path.exists() for path in leftovers)
    assert stats.created == 1 and summary["missing"] == 0 and len(read_records(store)) == 6 * 3


# ----------------------------------------------------------------------------- an upgrade
# Lines exactly as the ledger was written before its states were one table (an `event` per line, no
# `discarded`, a part killed while writing left at `writing`): an earlier run's ingested part, a killed
# part, an exported request file and an imported results file.
TODAY = """\
{"event": "writing", "tag": "api-00000-1a2b3c", "teacher": "api", "at": "2026-12-01T09:00:00.000000+00:00"}
{"event": "submitting", "tag": "api-00000-1a2b3c", "teacher": "api", "file_id": "file-900", "lines": 2, "bytes": 900, \
"round": 0, "since_s": 1764579600, "at": "2026-12-01T09:00:01.000000+00:00"}
{"event": "created", "tag": "api-00000-1a2b3c", "teacher": "api", "batch_id": "batch_0900", \
"at": "2026-12-01T09:00:02.000000+00:00"}
{"event": "ingested", "tag": "api-00000-1a2b3c", "teacher": "api", "batch_id": "batch_0900", "status": "completed", \
"teachers": {"api": {"billed_lines": 2, "billed_choices": 6, "billed_prompt_tokens": 100, \
"billed_completion_tokens": 40, "records": 0}}, "unknown": 0, "malformed": 0, "at": "2026-12-01T10:00:00.000000+00:00"}
{"event": "writing", "tag": "api-00001-4d5e6f", "teacher": "api", "at": "2026-12-01T10:05:00.000000+00:00"}
{"event": "writing", "tag": "export-00002-7a8b9c", "teacher": "export", "at": "2026-12-02T08:00:00.000000+00:00"}
{"event": "exported", "tag": "export-00002-7a8b9c", "teacher": "export", "file": "requests.jsonl", "lines": 1, \
"bytes": 500, "at": "2026-12-02T08:00:01.000000+00:00"}
{"event": "imported", "file": "out.jsonl", "teachers": {"api": {"billed_lines": 1, "billed_choices": 3, \
"billed_prompt_tokens": 50, "billed_completion_tokens": 20}}, "unknown": 0, "malformed": 0, \
"at": "2026-12-02T09:00:00.000000+00:00"}
"""


def test_a_ledger_written_before_the_state_table_is_read_and_resumed_as_it_is(tmp_path):
    its, store = items(6), tmp_path / "s"
    with FakeBatchServer(BatchBehaviour(hold=True)) as srv:
        submit_and_stop(store, srv.url, its)  # an open batch on the server, recorded as that code recorded it
        ledger = Ledger(store)
        (open_tag,) = ledger.parts()
        ours = ledger.file.read_text()
        assert [json.loads(line)["event"] for line in ours.splitlines()] == ["writing", "submitting", "created"]
        ledger.file.write_text(TODAY + ours)
        ledger.requests("api-00001-4d5e6f").write_text('{"custom_id": "half-written"\n')
        old = Ledger(store)
        assert {t: p["state"] for t, p in old.parts().items()} == {
            "api-00000-1a2b3c": S.INGESTED, "api-00001-4d5e6f": S.WRITING, "export-00002-7a8b9c": S.EXPORTED,
            open_tag: S.CREATED}
        assert old.billed() == {"api": {"billed_lines": 3, "billed_choices": 9, "billed_prompt_tokens": 150,
                                        "billed_completion_tokens": 60}}
        srv.batch.behaviour.hold = False
        summary = sample(store, pool(srv.url), its)
        stats = srv.batch.stats
    after = Ledger(store)
    assert after.file.read_text().startswith(TODAY + ours)  # appended to, never rewritten
    assert after.parts()["api-00001-4d5e6f"]["state"] is S.DISCARDED
    assert not after.requests("api-00001-4d5e6f").exists()
    assert after.parts()[open_tag]["state"] is S.INGESTED and stats.created == 1  # polled, not paid again
    assert summary["missing"] == 0 and len(read_records(store)) == 6 * 3
    billed = summary["teachers"]["api"]["store"]["modes"]["batch"]
    assert billed["prompt_tokens"] == 150 + stats_prompt(after, open_tag)


def stats_prompt(ledger: Ledger, tag: str) -> int:
    return ledger.parts()[tag]["teachers"]["api"]["billed_prompt_tokens"]
