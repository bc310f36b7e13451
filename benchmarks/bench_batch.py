"""Benchmark: batch sampling (`openai.mode: batch`) of video requests through a local Batch API.

`--requests` single-sample video requests (`--frames` JPEG frames each, synthvid clips of
`--frame-size` px, `--per-video` questions per clip) are measured three ways:
- request-file writing (`rmsd sample --batch-file`: plan, media, the online request body of
  each line, manifest) and result ingestion (`rmsd sample import` of the answers to that file,
  as `vllm run-batch` writes them), in records per second (target >= 2,000/s), and the bytes
  per request;
- end to end through the fake files + batches server (tests/fake_batch.py, in this process),
  without and with faults (20% of lines in the error file, an expired batch, unknown ids):
  billed (successful) lines per stored sample (target exactly 1.00) and submitted lines per
  sample (target <= 1 + the failed share).
Not a timed test: figures go to benchmarks/results/batch.md and .json, with the command,
`uptime` and the date.

    python benchmarks/bench_batch.py [--requests 20000] [--frames 8] [--frame-size 56]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake servers live with the tests


def make_items(data: Path, requests: int, per_video: int, frame_size: int) -> list:
    """`requests` items over requests / per_video synthvid clips (consecutive items share a clip)."""
    import dataclasses

    from rmsd.items import read_items
    from rmsd.synthvid.generator import generate

    videos = max(1, requests // per_video)
    generate(data, n=videos, seed=0, frame_size=frame_size, questions_per_video=1, test_fraction=0.0)
    base = [dataclasses.replace(it, video=str(data / it.video)) for it in read_items(data / "train.jsonl")]
    return [dataclasses.replace(base[(i // per_video) % len(base)], item_id=f"b{i}",
                                prompt=f"{base[(i // per_video) % len(base)].prompt} (#{i})") for i in range(requests)]


def make_pool(url: str, **openai: object):
    from rmsd.config import PoolConfig

    return PoolConfig.model_validate({"name": "bench-batch", "teachers": [{
        "name": "api", "backend": "openai", "samples": 1, "max_retries": 6, "params": {"seed": 1, "max_tokens": 64},
        "openai": {"model": "fake-vlm", "base_url": url, "mode": "batch", "batch_poll_s": 0.01,
                   "batch_poll_max_s": 0.05, **openai}}]})


def answer_file(requests: Path, results: Path) -> None:
    """The answers `vllm run-batch` would write, made with the fake chat server's logic."""
    from fake_openai import FakeOpenAI

    chat = FakeOpenAI()
    with requests.open() as src, results.open("w") as out:
        for i, line in enumerate(src):
            req = json.loads(line)
            body = json.loads(chat._complete(req["body"], None, 0.0).body)
            out.write(json.dumps({"id": f"vllm-{i}", "custom_id": req["custom_id"], "error": None,
                                  "response": {"status_code": 200, "request_id": f"r{i}", "body": body}}) + "\n")


def files_phase(items: list, tmp: Path, frames: int) -> dict:
    """Write the request file, then import its answers: records/s of each, bytes per request."""
    from rmsd.sampling.batch import BatchRun
    from rmsd.sampling.batch_files import import_results
    from rmsd.sampling.store import SampleStore
    from rmsd.sampling.work import make_lanes
    from rmsd.teachers.build import build_teachers

    pool = make_pool("http://127.0.0.1:9/v1")
    teachers = build_teachers(pool)
    store, requests = tmp / "files", tmp / "requests.jsonl"

    runs = []

    async def export() -> int:
        with SampleStore(store) as s:
            runs.append(BatchRun(items, make_lanes(pool, teachers, frames), s, frames, None, False))
            try:
                return await runs[0].export(requests)
            finally:
                await runs[0].aclose()

    started = time.perf_counter()
    lines = asyncio.run(export())
    write_s = time.perf_counter() - started
    media_s = runs[0].media_wait_s  # waiting for frames (decode + JPEG), the same work online sampling does
    size = requests.stat().st_size
    answer_file(requests, tmp / "results.jsonl")
    started = time.perf_counter()
    done = import_results(store, tmp / "results.jsonl")
    ingest_s = time.perf_counter() - started
    return {"lines": lines, "write_s": round(write_s, 2), "write_per_s": round(lines / write_s),
            "media_wait_s": round(media_s, 2), "write_per_s_without_media": round(lines / (write_s - media_s)),
            "bytes_per_request": round(size / lines), "file_mb": round(size / 1e6, 1),
            "imported": done["records"], "ingest_s": round(ingest_s, 2), "ingest_per_s": round(done["records"] / ingest_s)}


def end_to_end(items: list, tmp: Path, frames: int, name: str, **faults: object) -> dict:
    """One batch run through the fake files + batches server; what the server billed and was sent."""
    from fake_batch import BatchBehaviour, FakeBatchServer

    from rmsd.sampling.sample import run_sampling
    from rmsd.sampling.store import SampleStore
    from rmsd.teachers.build import build_teachers

    with FakeBatchServer(BatchBehaviour(**faults)) as srv:
        pool = make_pool(srv.url)
        teachers = build_teachers(pool)

        async def go() -> dict:
            try:
                with SampleStore(tmp / name) as store:
                    return await run_sampling(items, pool, teachers, store, num_frames=frames, progress=False)
            finally:
                await asyncio.gather(*(t.aclose() for t in teachers.values()))

        started = time.perf_counter()
        summary = asyncio.run(go())
        wall = time.perf_counter() - started
        stats = srv.batch.stats
    b = summary["batch"]
    samples = summary["records"]
    failed = sum(b["failed_lines"].values())
    return {"samples": samples, "missing": summary["missing"], "batches": stats.created, "lines": b["lines"],
            "failed_lines": b["failed_lines"], "failed_share": round(failed / samples, 4),
            "unknown_lines": b["unknown_lines"], "billed_lines_per_sample": round(stats.billed_lines / samples, 4),
            "billed_choices_per_sample": round(stats.billed_choices / samples, 4),
            "submitted_lines_per_sample": round(sum(stats.submitted.values()) / samples, 4),
            "bytes_per_request": b["bytes_per_request"], "wall_s": round(wall, 1)}


def report(out: Path, args: argparse.Namespace, result: dict) -> None:
    f, clean, faulty = result["files"], result["clean"], result["faults"]
    md = [
        "# Batch sampling: request files, ingestion, billing", "",
        f"`{result['command']}`", "",
        f"{result['date']}, {result['machine']}; load before: `{result['uptime_before']}`; after: "
        f"`{result['uptime_after']}`", "",
        f"{args.requests:,} single-sample requests, {args.frames} JPEG frames each ({args.frame_size} px synthvid "
        f"clips, {args.per_video} questions per clip, media built once per clip).", "",
        "| phase | figure |", "|---|---|",
        f"| request-file writing (`--batch-file`) | {f['write_per_s']:,} records/s ({f['lines']:,} lines in "
        f"{f['write_s']} s, {f['file_mb']} MB) |",
        f"| of which waiting for frames (decode + JPEG, as online) | {f['media_wait_s']} s |",
        f"| request-file writing, frame decoding left out | {f['write_per_s_without_media']:,} records/s |",
        f"| result ingestion (`rmsd sample import`) | {f['ingest_per_s']:,} records/s ({f['imported']:,} in "
        f"{f['ingest_s']} s) |",
        f"| bytes per request | {f['bytes_per_request']:,} |", "",
        "| end to end (fake files + batches server) | no faults | faults |", "|---|---|---|"]
    for key, label in (("samples", "samples stored"), ("missing", "missing"), ("batches", "batches created"),
                       ("lines", "lines submitted"), ("failed_lines", "failed lines by reason"),
                       ("failed_share", "failed share"), ("unknown_lines", "unknown ids ignored"),
                       ("billed_lines_per_sample", "billed lines per sample (target 1.00)"),
                       ("submitted_lines_per_sample", "submitted lines per sample (target <= 1 + failed share)"),
                       ("wall_s", "wall s (server in-process)")):
        md.append(f"| {label} | {clean[key]} | {faulty[key]} |")
    md += ["", f"Faults: {result['fault_settings']} (every 5th line of every batch in the error file, retries "
           "included; the first batch to end expires after that many lines). Writing target >= 2,000 records/s: "
           f"{'met' if f['write_per_s'] >= 2000 else 'NOT met'} with frame decoding, "
           f"{'met' if f['write_per_s_without_media'] >= 2000 else 'NOT met'} without; ingestion: "
           f"{'met' if f['ingest_per_s'] >= 2000 else 'NOT met'}.", ""]
    out.write_text("\n".join(md))
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--frame-size", type=int, default=56)
    ap.add_argument("--per-video", type=int, default=20, help="questions per clip (media built once per clip)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "batch.md")
    args = ap.parse_args()
    faults = {"error_every": 5, "unknown_lines": 10, "expire_after": int(args.requests * 0.8)}
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        items = make_items(tmp / "data", args.requests, args.per_video, args.frame_size)
        result = {"files": files_phase(items, tmp, args.frames),
                  "clean": end_to_end(items, tmp, args.frames, "clean"),
                  "faults": end_to_end(items, tmp, args.frames, "faults", **faults)}
    command = " ".join(["python benchmarks/bench_batch.py", shlex.join(sys.argv[1:])]).strip()
    result.update(command=command, uptime_before=uptime,
                  uptime_after=subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.platform(),
                  fault_settings=faults)
    report(args.out, args, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
