"""Benchmark of `rmsd sample` against the fake OpenAI-compatible server (tests/fake_openai.py).

1. Throughput: the server answers every request after `--latency` seconds (100 ms), so
   `concurrency / latency` responses per second is the ideal bound of a client that keeps
   `concurrency` requests in flight. We sample text-only items with K=1 at concurrency 1,
   16, 64 and 256 (teacher and pool limits both set to it), through the whole runner: plan,
   rate/concurrency limits, the official async client, the store (one fsync per record,
   `flush_every=1`), and report responses/s and the ratio to the bound. The clock runs from
   the plan to the last record (the HTTP clients are built before it, once per run). The
   server runs in its own process so it does not share the client's GIL.
2. Video input billed: synthvid items with 8 frames, K=4 samples, against a server that
   bills 85 tokens per image part (OpenAI's `detail: low` price) plus one per word, with
   `n=4` in one request versus 4 separate requests.

    python benchmarks/bench_sample.py [--latency 0.1] [--seconds 3] [--out benchmarks/results/sample.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rmsd.config import PoolConfig
from rmsd.data.items import Item
from rmsd.sampling.runner import run_sampling
from rmsd.sampling.store import SampleStore
from rmsd.teachers.base import GenParams, Media
from rmsd.teachers.pool import build_teachers

ROOT = Path(__file__).resolve().parents[1]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_openai.py"), "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    for _ in range(200):  # the port is bound before uvicorn listens on it
        try:
            stats(url)
            return proc, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the fake server did not start")


def control(url: str, **behaviour) -> None:
    req = urllib.request.Request(url.removesuffix("/v1") + "/control", data=json.dumps(behaviour).encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()


def stats(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url.removesuffix("/v1") + "/stats").read())


def pool(url: str, samples: int, concurrency: int, use_n: str = "auto") -> PoolConfig:
    return PoolConfig.model_validate({"name": "bench", "teachers": [{
        "name": "fake", "backend": "openai", "samples": samples, "concurrency": concurrency, "max_retries": 0,
        "params": {"max_tokens": 64}, "openai": {"model": "fake-vlm", "base_url": url, "use_n": use_n}}]})


async def _run(items: list[Item], p: PoolConfig, concurrency: int, store_dir: Path, num_frames: int) -> dict:
    teachers = build_teachers(p)
    try:
        with SampleStore(store_dir, flush_every=1) as store:
            return await run_sampling(items, p, teachers, store, num_frames=num_frames, concurrency=concurrency,
                                      progress=False)
    finally:
        for t in teachers.values():
            await t.aclose()


async def _client_alone(url: str, items: list[Item], concurrency: int) -> float:
    """Responses/s of the teacher's HTTP client with no runner or store around it: the ceiling here."""
    teacher = build_teachers(pool(url, 1, concurrency))["fake"]
    slots = asyncio.Semaphore(concurrency)

    async def one(item: Item) -> None:
        async with slots:
            await teacher.generate(item, Media(), 1, GenParams(max_tokens=64))

    started = time.perf_counter()
    await asyncio.gather(*(one(it) for it in items))
    rate = len(items) / (time.perf_counter() - started)
    await teacher.aclose()
    return rate


def throughput(url: str, latency: float, seconds: float, levels: list[int], tmp: Path) -> list[dict]:
    rows = []
    for c in levels:
        n = max(20, int(c / latency * seconds))
        items = [Item(item_id=f"c{c}-{i}", benchmark="bench", task_type="open", question="q",
                      prompt=f"Describe clip {i} in one sentence.") for i in range(n)]
        control(url, latency_s=latency)
        summary = asyncio.run(_run(items, pool(url, 1, c), c, tmp / f"c{c}", 8))
        assert summary["new_records"] == n and summary["failures"] == 0, summary
        wall = summary["wall_s"]  # run_sampling from plan to last record (clients are built before it)
        rate = n / wall
        in_flight = stats(url)["max_in_flight"]
        alone = asyncio.run(_client_alone(url, items, c))
        rows.append({"concurrency": c, "responses": n, "wall_s": wall, "rate": rate, "bound": c / latency,
                     "ratio": rate / (c / latency), "server_max_in_flight": in_flight, "client_alone": alone})
        print(f"concurrency {c:4d}: {rate:8.1f} responses/s, {rows[-1]['ratio']:.1%} of {c / latency:.0f}/s "
              f"(client alone {alone:.1f}/s)", flush=True)
    return rows


def billing(url: str, tmp: Path, k: int = 4, frames: int = 8, n_items: int = 10) -> list[dict]:
    from rmsd.data.benchmarks.synthvid import load_items
    from rmsd.data.synthvid import generate

    generate(tmp / "synthvid", n=n_items + 4, seed=0, frame_size=56)
    items = load_items(tmp / "synthvid", split="train")[:n_items]
    rows = []
    for label, use_n in ((f"n={k} in one request", "always"), (f"{k} separate requests", "never")):
        control(url, latency_s=0.0)
        summary = asyncio.run(_run(items, pool(url, k, 8, use_n), 8, tmp / f"bill-{use_n}", frames))
        s = stats(url)
        assert summary["new_records"] == n_items * k, summary
        rows.append({"mode": label, "requests": s["requests"] / n_items, "image_parts": s["image_parts"] / n_items,
                     "input_tokens": summary["prompt_tokens"] / n_items,
                     "output_tokens": summary["completion_tokens"] / n_items})
        print(f"{label}: {rows[-1]['input_tokens']:.0f} input tokens billed per item", flush=True)
    return rows


def write_markdown(path: Path, rows: list[dict], bills: list[dict], latency: float, cmd: str) -> None:
    lines = [
        "# `rmsd sample` against the fake OpenAI-compatible server", "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), Python "
        f"{platform.python_version()}; server in its own process on 127.0.0.1, {latency * 1000:.0f} ms per request; "
        "store with one fsync per record.", "",
        "## Throughput (text-only items, K=1; ideal bound = concurrency / latency)", "",
        "| concurrency | responses | wall s | responses/s | bound/s | ratio to bound | max in flight at server "
        "| client alone/s | runner / client alone |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['concurrency']} | {r['responses']} | {r['wall_s']:.2f} | {r['rate']:.1f} | {r['bound']:.0f} | "
              f"{r['ratio']:.1%} | {r['server_max_in_flight']} | {r['client_alone']:.1f} | "
              f"{r['rate'] / r['client_alone']:.1%} |" for r in rows]
    at64 = [r for r in rows if r["concurrency"] == 64]
    if at64:
        r = at64[0]
        verdict = "met" if r["ratio"] >= 0.9 else "NOT met"
        lines += ["", f"Target >= 90% of the bound at concurrency 64: {verdict} ({r['ratio']:.1%}; the client alone "
                      f"reaches {r['client_alone'] / r['bound']:.1%} on this machine)."]
    lines += ["", "\"client alone\": the same teacher (official `openai` client, same connection pools) sending the "
              "same requests under a semaphore, with no runner, limits or store: the ceiling of this client on this "
              "machine."]
    lines += ["", "## Video input billed per item (synthvid, 8 frames, K=4; 85 tokens per image part + 1 per word)", "",
              "| mode | requests/item | image parts/item | input tokens/item | output tokens/item |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {b['mode']} | {b['requests']:.1f} | {b['image_parts']:.1f} | {b['input_tokens']:.0f} | "
              f"{b['output_tokens']:.0f} |" for b in bills]
    if len(bills) == 2:
        lines += ["", f"Input billed with `n`: {bills[0]['input_tokens'] / bills[1]['input_tokens']:.2f}x that of "
                      "separate requests (the video is sent once, not K times)."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--seconds", type=float, default=3.0, help="target duration of each throughput run")
    ap.add_argument("--levels", default="1,16,64,256")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sample.md")
    args = ap.parse_args()
    proc, url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = throughput(url, args.latency, args.seconds, [int(x) for x in args.levels.split(",")], Path(tmp))
            bills = billing(url, Path(tmp))
    finally:
        proc.terminate()
        proc.wait()
    cmd = "python benchmarks/bench_sample.py " + " ".join(sys.argv[1:])
    write_markdown(args.out, rows, bills, args.latency, cmd.strip())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
