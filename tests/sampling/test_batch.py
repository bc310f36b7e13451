"""Batch mode (`openai.mode: batch`) against a real files + batches server on 127.0.0.1 (`fake_batch`), through
the official `openai` client. What is checked is what costs money or loses samples: every sample stored once,
every billed choice stored (billed choices == samples, with and without faults), only failed lines asked again,
a batch never created twice for one request (a kill anywhere), and stores interchangeable with online ones."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fake_batch import BatchBehaviour, FakeBatchServer

from rmsd.config import PoolConfig, load_recipe
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.pipeline import sample_recipe
from rmsd.sampling.ledger import Ledger
from rmsd.sampling.sample import run_sampling
from rmsd.sampling.store import SampleStore, read_failures, read_records
from rmsd.teachers.build import build_teachers

ROOT = Path(__file__).resolve().parents[2]
POLL = {"batch_poll_s": 0.001, "batch_poll_max_s": 0.01}
VOLATILE = ("latency_s", "created_at")  # when and how fast: the only fields a mode may change


def items(n: int = 6) -> list[Item]:
    return [Item(item_id=f"q{i}", benchmark="t", task_type="open", question=f"q{i}?", prompt=f"question {i}?")
            for i in range(n)]


def pool(url: str, k: int = 3, mode: str = "batch", **openai: object) -> PoolConfig:
    teacher = {"name": "api", "backend": "openai", "samples": k, "max_retries": 3, "params": {"seed": 7},
               "price": {"input_per_1m": 2.0, "output_per_1m": 8.0},
               "openai": {"model": "fake-vlm", "base_url": url, "mode": mode, **POLL, **openai}}
    return PoolConfig.model_validate({"name": "batch-test", "teachers": [teacher]})


def sample(path: Path, p: PoolConfig, its: list[Item]) -> dict:
    async def go() -> dict:
        teachers = build_teachers(p)
        try:
            with SampleStore(path) as store:
                return await run_sampling(its, p, teachers, store, progress=False, backoff_base_s=0.01,
                                          backoff_cap_s=0.02)
        finally:
            await asyncio.gather(*(t.aclose() for t in teachers.values()))

    return asyncio.run(go())


def records(path: Path) -> dict[str, dict]:
    return {r["key"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in read_records(path)}


# ----------------------------------------------------------------------------- interchangeable with online
def test_batch_and_online_give_interchangeable_stores_and_resume_each_other(tmp_path):
    its = items(6)
    with FakeBatchServer() as srv:
        online = sample(tmp_path / "online", pool(srv.url, mode="online"), its)
        batch = sample(tmp_path / "batch", pool(srv.url), its)
        # half the items online, then the rest in batch mode into the same store; and the other way round
        sample(tmp_path / "mixed", pool(srv.url, mode="online"), its[:3])
        mixed = sample(tmp_path / "mixed", pool(srv.url), its)
        again = sample(tmp_path / "batch", pool(srv.url, mode="online"), its)
        created = srv.batch.stats.created
    assert records(tmp_path / "batch") == records(tmp_path / "online")  # same keys, same fields, same texts
    assert records(tmp_path / "mixed") == records(tmp_path / "online")
    assert batch["missing"] == mixed["missing"] == 0 and mixed["new_records"] == 9
    assert again["new_records"] == 0 and created == 2  # nothing asked twice, in either direction
    t = batch["teachers"]["api"]
    assert t["batch"]["billed_lines"] == 6 and t["batch"]["lines"] == 6  # one line per item (n=3)
    assert t["modes"]["batch"]["prompt_tokens"] == online["teachers"]["api"]["prompt_tokens"]
    # batch requests at price.batch_discount (0.5) of the same tokens online
    assert t["cost_usd"] == pytest.approx(online["teachers"]["api"]["cost_usd"] * 0.5)
    assert batch["batch"]["bytes_per_request"] > 0
    assert mixed["teachers"]["api"]["store"]["modes"]["online"]["prompt_tokens"] > 0  # the store, per mode
    assert mixed["teachers"]["api"]["store"]["modes"]["batch"]["prompt_tokens"] > 0


def test_request_lines_are_the_online_request_and_split_at_the_limits(tmp_path):
    from rmsd.teachers.build import gen_params
    from rmsd.teachers.teacher import Media

    its = items(10)
    with FakeBatchServer() as srv:
        p = pool(srv.url, batch_max_requests=4)
        summary = sample(tmp_path / "s", p, its)
        created = srv.batch.stats.created
        first = json.loads(srv.batch.files["file-1"].splitlines()[0])
        teacher = build_teachers(p)["api"]
        sample(tmp_path / "small", pool(srv.url, batch_max_bytes=1_000), its)
    assert set(first) == {"custom_id", "method", "url", "body"} and first["url"] == "/v1/chat/completions"
    bodies = {it.item_id: teacher.request_body(it, Media(), 3, gen_params(p.teachers[0]), 0) for it in its}
    key_of = {r["key"]: r["item_id"] for r in read_records(tmp_path / "s")}
    key, start = first["custom_id"].rsplit("-", 1)
    assert start == "0" and first["body"] == bodies[key_of[key]]  # the online request, n and seed included
    assert created == 3 and summary["missing"] == 0 and summary["batch"]["lines"] == 10  # 4 + 4 + 2
    parts = [e for e in Ledger(tmp_path / "small").events() if e["event"] == "submitting"]
    assert len(parts) > 1 and all(e["bytes"] <= 1_000 for e in parts) and sum(e["lines"] for e in parts) == 10
    assert summary["batch"]["bytes_per_request"] == pytest.approx(summary["batch"]["bytes"] / 10, abs=0.1)


# ----------------------------------------------------------------------------- faults
def test_faults_lose_nothing_and_pay_nothing_twice(tmp_path):
    """A batch failing validation, one expiring with partial results, error-file lines, lines without choices
    and output lines for unknown ids: every sample stored once, each billed choice stored, only failed lines
    asked again, and each failure reason counted."""
    its, k = items(12), 2
    behaviour = BatchBehaviour(fail_validation=1, error_every=5, no_choices_every=4, unknown_lines=2)
    with FakeBatchServer(behaviour) as srv:
        p = pool(srv.url, k=k, batch_max_requests=6)
        summary = sample(tmp_path / "s", p, its)
        stats = srv.batch.stats
    b = summary["batch"]
    assert summary["missing"] == 0 and summary["failures"] == 0 and len(read_records(tmp_path / "s")) == 12 * k
    assert stats.billed_choices == 12 * k and b["billed_lines"] == stats.billed_lines == 12  # paid once each
    assert stats.statuses["failed"] == 1
    failed = sum(b["failed_lines"].values())
    assert set(b["failed_lines"]) >= {"failed_batch", "http_500", "no_choices"}
    assert b["lines"] == 12 + failed  # asked again: exactly the failed lines
    assert b["unknown_lines"] == 2 * stats.created - 2 * stats.statuses["failed"]


def test_an_expired_batch_keeps_its_partial_results_and_asks_only_the_rest(tmp_path):
    with FakeBatchServer(BatchBehaviour(expire_after=2)) as srv:
        summary = sample(tmp_path / "s", pool(srv.url, k=1), items(6))
        stats = srv.batch.stats
    assert summary["missing"] == 0 and stats.statuses["expired"] == 1
    assert summary["batch"]["failed_lines"] == {"expired": 4} and summary["batch"]["lines"] == 6 + 4
    assert stats.billed_choices == 6 and max(stats.submitted.values()) == 2


def test_a_server_that_ignores_n_gets_the_rest_one_sample_per_line(tmp_path):
    its, k = items(5), 3
    with FakeBatchServer(honour_n=False) as srv:
        summary = sample(tmp_path / "s", pool(srv.url, k=k), its)
        asked = list(srv.stats.n_asked)
        billed = srv.batch.stats.billed_choices
    assert summary["missing"] == 0 and len(read_records(tmp_path / "s")) == 5 * k
    assert billed == 5 * k  # every choice it gave was stored
    assert asked[:5] == [k] * 5 and set(asked[5:]) == {1}  # n once, then single-sample lines
    assert summary["batch"]["failed_lines"] == {"partial_n": 5}


def test_the_retry_budget_bounds_the_rounds_and_a_rerun_completes(tmp_path):
    with FakeBatchServer(BatchBehaviour(fail_validation=3)) as srv:
        p = pool(srv.url, k=1)
        p.teachers[0].max_retries = 1
        first = sample(tmp_path / "s", p, items(4))
        rounds = srv.batch.stats.created
        second = sample(tmp_path / "s", p, items(4))
    assert rounds == 2 and first["missing"] == 4 and first["failed_samples"] == 4
    assert first["batch"]["failed_lines"] == {"failed_batch": 8}
    assert all("failed_batch" in f["reason"] for f in read_failures(tmp_path / "s"))
    assert second["missing"] == 0 and not (tmp_path / "s" / "failures.jsonl").exists()


def test_failed_lines_fall_back_online_when_asked_to(tmp_path):
    with FakeBatchServer(BatchBehaviour(error_every=3)) as srv:
        summary = sample(tmp_path / "s", pool(srv.url, k=1, batch_fallback="online"), items(9))
        online_answers, created = srv.stats.answered - srv.batch.stats.billed_lines, srv.batch.stats.created
    t = summary["teachers"]["api"]
    assert summary["missing"] == 0 and created == 1 and online_answers == 3
    assert t["requests"] == 3 and t["batch"]["fallback_online"] == 3
    assert t["modes"]["online"]["prompt_tokens"] > 0 and t["modes"]["batch"]["prompt_tokens"] > 0


# ----------------------------------------------------------------------------- crashes
def test_a_crash_between_creating_a_batch_and_recording_it_finds_it_again(tmp_path, monkeypatch):
    with FakeBatchServer() as srv:
        p = pool(srv.url, k=2, batch_max_requests=3)
        add = Ledger.add

        def crash_on_create(self, event, **fields):
            if event == "created":
                raise RuntimeError("killed")  # the process dies after the server created the batch, before it is recorded
            return add(self, event, **fields)

        monkeypatch.setattr(Ledger, "add", crash_on_create)
        with pytest.raises(RuntimeError, match="killed"):
            sample(tmp_path / "s", p, items(6))
        monkeypatch.setattr(Ledger, "add", add)
        summary = sample(tmp_path / "s", p, items(6))
        stats = srv.batch.stats
    assert summary["missing"] == 0 and stats.lists >= 1
    assert stats.created == 2 and max(stats.submitted.values()) == 1  # the first batch was found, not re-created
    assert stats.billed_choices == 12


def write_recipe(tmp: Path, url: str, mode: str = "batch") -> Path:
    teacher = {"name": "api", "backend": "openai", "samples": 2, "params": {"seed": 3},
               "openai": {"model": "fake-vlm", "base_url": url, "mode": mode, **POLL}}
    (tmp / "pool.yaml").write_text(yaml.safe_dump({"name": "kill", "teachers": [teacher]}))
    recipe = {"name": "kill", "dataset": {"benchmark": "synthvid", "path": str(tmp / "data"), "num_frames": 2},
              "pool": str(tmp / "pool.yaml"), "student": {"build": "tiny"}}
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return tmp / "recipe.yaml"


def test_kill_9_right_after_creation_resumes_polling_the_same_batch(tmp_path):
    from rmsd.synthvid.generator import generate

    generate(tmp_path / "data", n=6, seed=1, frame_size=56)
    store = tmp_path / "store"
    with FakeBatchServer(BatchBehaviour(hold=True)) as srv:
        recipe_path = write_recipe(tmp_path, srv.url)
        code = (f"from rmsd.config import load_recipe; from rmsd.pipeline import sample_recipe; "
                f"sample_recipe(load_recipe({str(recipe_path)!r}), out={str(store)!r}, progress=False)")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while '"created"' not in (Ledger(store).file.read_text() if Ledger(store).file.is_file() else ""):
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the sampling subprocess created no batch"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with pytest.raises(RmsdError, match="open batches"):  # online would pay for them twice
            sample_recipe(load_recipe(write_recipe(tmp_path, srv.url, mode="online")), out=store, progress=False)
        srv.batch.behaviour.hold = False
        summary = sample_recipe(load_recipe(write_recipe(tmp_path, srv.url)), out=store, progress=False)
        stats = srv.batch.stats
    assert proc.returncode == -signal.SIGKILL
    assert stats.created == 1 and set(stats.submitted.values()) == {1}  # one creation per request
    assert summary["missing"] == 0 and summary["new_records"] == summary["planned"]


def test_cancel_stops_the_open_batches_and_online_then_resumes(tmp_path):
    from rmsd.synthvid.generator import generate

    generate(tmp_path / "data", n=4, seed=2, frame_size=56)
    store = tmp_path / "store"
    with FakeBatchServer(BatchBehaviour(hold=True)) as srv:
        recipe = load_recipe(write_recipe(tmp_path, srv.url))

        async def submit_only() -> None:  # a run that submitted and was stopped while its batch waits
            from rmsd.sampling.batch import BatchRun
            from rmsd.sampling.work import make_lanes

            p = recipe.load_pool()
            teachers = build_teachers(p)
            from rmsd.pipeline import load_recipe_items

            with SampleStore(store) as s:
                run = BatchRun(load_recipe_items(recipe), make_lanes(p, teachers, 2), s, 2, None, progress=False)
                await run.submit()
                await run.aclose()
            await asyncio.gather(*(t.aclose() for t in teachers.values()))

        asyncio.run(submit_only())
        assert sample_recipe(recipe, out=store, progress=False, cancel=True) == {"cancelled": 1}
        online = sample_recipe(load_recipe(write_recipe(tmp_path, srv.url, mode="online")), out=store, progress=False)
        stats = srv.batch.stats
    assert stats.cancels == 1 and stats.statuses["cancelled"] == 1
    assert online["missing"] == 0 and online["new_records"] == online["planned"]


# ----------------------------------------------------------------------------- batch file, import, keys
def run_batch_file(requests: Path, results: Path, drop: int = 0) -> None:
    """What `vllm run-batch -i requests -o results` does, with the fake's chat logic; `drop` lines as errors."""
    from fake_openai import FakeOpenAI

    chat = FakeOpenAI()
    rows = []
    for i, line in enumerate(requests.read_text().splitlines()):
        req = json.loads(line)
        if i < drop:
            rows.append({"id": f"vllm-{i}", "custom_id": req["custom_id"], "response": {"status_code": 400, "body": {
                "object": "error", "message": "prompt too long", "code": 400}}, "error": None})
            continue
        body = json.loads(chat._complete(req["body"], None, 0.0).body)
        rows.append({"id": f"vllm-{i}", "custom_id": req["custom_id"],
                     "response": {"status_code": 200, "request_id": f"vllm-batch-{i}", "body": body}, "error": None})
    rows.append({"id": "vllm-x", "custom_id": "someone-elses-0", "response": {"status_code": 200, "body": {}},
                 "error": None})
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_batch_file_then_import_gives_the_online_store(tmp_path):
    from rmsd.synthvid.generator import generate

    generate(tmp_path / "data", n=4, seed=5, frame_size=56)
    with FakeBatchServer() as srv:
        recipe = write_recipe(tmp_path, srv.url)
        cli = [sys.executable, "-m", "rmsd.cli", "sample", "--recipe", str(recipe)]
        out = subprocess.run([*cli, "--out", str(tmp_path / "s"), "--batch-file", str(tmp_path / "req.jsonl")],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        run_batch_file(tmp_path / "req.jsonl", tmp_path / "res.jsonl", drop=1)
        imp = subprocess.run([sys.executable, "-m", "rmsd.cli", "sample", "import", str(tmp_path / "res.jsonl"),
                              "--samples", str(tmp_path / "s")], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert imp.returncode == 0, imp.stderr[-2000:]
        sample_recipe(load_recipe(recipe), out=tmp_path / "s", progress=False)  # the dropped line, in batch mode
        sample_recipe(load_recipe(write_recipe(tmp_path, srv.url, mode="online")), out=tmp_path / "o", progress=False)
        created = srv.batch.stats.created
    assert "1 lines with unknown ids ignored" in imp.stdout and "http_400 1" in imp.stdout
    assert records(tmp_path / "s") == records(tmp_path / "o") and created == 1


def test_the_api_key_never_reaches_a_file_or_the_output_in_batch_mode(tmp_path):
    from rmsd.synthvid.generator import generate

    generate(tmp_path / "data", n=4, seed=0, frame_size=56)
    secret = "sk-batchleak-" + "Qx7" * 10
    with FakeBatchServer(require_key=secret) as good, FakeBatchServer(require_key="another-key") as echoing:
        for url, store, code in ((good.url, "good", 0), (echoing.url, "rejected", 2)):
            recipe = write_recipe(tmp_path, url)
            teacher = yaml.safe_load((tmp_path / "pool.yaml").read_text())
            teacher["teachers"][0]["openai"]["api_key_env"] = "BATCH_LEAK_KEY"
            (tmp_path / "pool.yaml").write_text(yaml.safe_dump(teacher))
            run = subprocess.run([sys.executable, "-m", "rmsd.cli", "sample", "--recipe", str(recipe), "--out",
                                  str(tmp_path / store)], env={**os.environ, "BATCH_LEAK_KEY": secret},
                                 capture_output=True, timeout=120, cwd=ROOT)
            assert run.returncode == code, run.stderr.decode()[-2000:]
            assert secret.encode() not in run.stdout + run.stderr
        assert good.batch.stats.billed_lines > 0
    assert b"401" in run.stderr and b"***" in run.stderr  # the echoed key, redacted
    for p in tmp_path.rglob("*"):
        if p.is_file() and "data" not in p.parts:
            assert secret.encode() not in p.read_bytes(), p


def test_result_lines_of_every_shape_are_read_and_unknown_ids_counted(tmp_path):
    from rmsd.sampling.batch_files import Ingest

    keys = ["a" * 64, "b" * 64]
    manifest = {f"{keys[0]}-0": {"custom_id": f"{keys[0]}-0", "item_id": "q0", "teacher": "api", "model": "m",
                                 "start": 0, "keys": keys}}
    body = {"choices": [{"index": 0, "message": {"content": "<answer>(A)</answer>"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4}}
    lines = [json.dumps({"custom_id": f"{keys[0]}-0", "response": {"status_code": 200, "body": body}}),
             json.dumps({"custom_id": f"{keys[0]}-0", "response": body}),  # a repeat: never stored twice
             json.dumps({"custom_id": "other-0", "response": body}), "not json", ""]
    with SampleStore(tmp_path / "s") as store:
        ingest = Ingest(store, manifest)
        ingest.lines(lines)
    got = read_records(tmp_path / "s")
    assert [r["key"] for r in got] == [keys[0]] and got[0]["text"] == "<answer>(A)</answer>"
    assert got[0]["prompt_tokens"] == 10 and got[0]["latency_s"] == 0.0
    assert ingest.unknown == 2 and ingest.malformed == 1
    assert ingest.reasons == {keys[1]: "partial_n"}  # asked n=2, one choice came back
    with SampleStore(tmp_path / "t") as store:
        bare = Ingest(store, manifest)
        bare.lines([json.dumps({"custom_id": f"{keys[0]}-0", "response": body})])  # vLLM's documented bare form
        assert keys[0] in store


def test_progress_off_a_terminal_is_one_line_per_change(tmp_path, capsys):
    p = pool("", k=1)
    with FakeBatchServer(BatchBehaviour(polls_to_finish=3, error_every=4)) as srv:
        p.teachers[0].openai.base_url = srv.url

        async def go() -> dict:
            teachers = build_teachers(p)
            try:
                with SampleStore(tmp_path / "s") as store:
                    return await run_sampling(items(4), p, teachers, store, progress=True)
            finally:
                await asyncio.gather(*(t.aclose() for t in teachers.values()))

        asyncio.run(go())
    err = capsys.readouterr().err
    assert "batch batch_0001 (api): 4 requests submitted" in err
    assert "batch batch_0001 (api): in_progress, 1/4 completed, 0 failed" in err
    assert "batch batch_0001 (api): completed, 3/4 completed, 1 failed" in err
    assert err.count("batch batch_0001 (api): in_progress, 2/4 completed") == 1  # a line per change, not per poll
