"""Benchmark of `rmsd sample` against the fake OpenAI-compatible server (tests/fake_openai.py).

1. Throughput: the server answers every request after `--latency` seconds (100 ms), so
   `concurrency / latency` responses per second is the ideal bound of a client that keeps
   `concurrency` requests in flight. We sample text-only items with K=1 at concurrency 1,
   16, 64 and 256 (teacher and pool limits both set to it), through the whole runner: plan,
   keys, limits, the official async client, the store (every record flushed, fsync in groups:
   the defaults), and in the same run the bare client (the same teacher's `generate` under
   one semaphore) on the same items, in alternating pairs; we report responses/s, CPU per
   response and runner / bare client (target >= 0.95 at 64 and 256). The clock runs from
   the plan to the last record (the HTTP clients are built before it, once per run). The
   server runs in its own process so it does not share the client's GIL.
2. Video input billed: synthvid items with 8 frames, K=4 samples, against a server that
   bills 85 tokens per image part (OpenAI's `detail: low` price) plus one per word, with
   `n=4` in one request versus 4 separate requests.

    python benchmarks/bench_sample.py [--latency 0.1] [--seconds 3] [--repeats 3] [--out benchmarks/results/sample.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rmsd.config.pools import PoolConfig
from rmsd.items import Item
from rmsd.sampling.sample import run_sampling
from rmsd.sampling.store import SampleStore
from rmsd.teachers.build import build_teachers
from rmsd.teachers.teacher import GenParams, Media

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
        with SampleStore(store_dir) as store:
            cpu = time.process_time()
            summary = await run_sampling(items, p, teachers, store, num_frames=num_frames, concurrency=concurrency,
                                         progress=False)
            summary["cpu_s"] = time.process_time() - cpu
            return summary
    finally:
        for t in teachers.values():
            await t.aclose()


async def _client_alone(url: str, items: list[Item], concurrency: int) -> tuple[float, float]:
    """(responses/s, CPU s) of the teacher's HTTP client with no runner or store around it: the ceiling here."""
    teacher = build_teachers(pool(url, 1, concurrency))["fake"]
    slots = asyncio.Semaphore(concurrency)

    async def one(item: Item) -> None:
        async with slots:
            await teacher.generate(item, Media(), 1, GenParams(max_tokens=64))

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(it) for it in items))
    rate, cpu = len(items) / (time.perf_counter() - started), time.process_time() - cpu
    await teacher.aclose()
    return rate, cpu


def _median(values: list[float]) -> float:
    return statistics.median(values)


def throughput(url: str, latency: float, seconds: float, levels: list[int], repeats: int, tmp: Path) -> list[dict]:
    """Per level, `repeats` pairs of (runner, bare client) runs, alternating which goes first (the load of a
    shared machine drifts; pairs see the same drift)."""
    rows = []
    for c in levels:
        n = max(20, int(c / latency * seconds))
        items = [Item(item_id=f"c{c}-{i}", benchmark="bench", task_type="open", question="q",
                      prompt=f"Describe clip {i} in one sentence.") for i in range(n)]
        control(url, latency_s=latency)
        runner_rates, bare_rates, runner_cpu, bare_cpu, in_flight = [], [], [], [], 0
        for r in range(repeats):
            for which in (("runner", "bare") if r % 2 == 0 else ("bare", "runner")):
                if which == "runner":
                    summary = asyncio.run(_run(items, pool(url, 1, c), c, tmp / f"c{c}-{r}", 8))
                    assert summary["new_records"] == n and summary["failures"] == 0, summary
                    runner_rates.append(n / summary["wall_s"])  # from the plan to the last record
                    runner_cpu.append(summary["cpu_s"] / n)
                    in_flight = max(in_flight, stats(url)["max_in_flight"])
                else:
                    rate, cpu = asyncio.run(_client_alone(url, items, c))
                    bare_rates.append(rate)
                    bare_cpu.append(cpu / n)
        pairs = [a / b for a, b in zip(runner_rates, bare_rates, strict=True)]
        row = {"concurrency": c, "responses": n, "repeats": repeats, "rate": _median(runner_rates),
               "bound": c / latency, "client_alone": _median(bare_rates), "ratio_pairs": _median(pairs),
               "runner_cpu_us": _median(runner_cpu) * 1e6, "bare_cpu_us": _median(bare_cpu) * 1e6,
               "server_max_in_flight": in_flight, "load": os.getloadavg()[0]}
        row["ratio"] = row["rate"] / row["bound"]
        rows.append(row)
        print(f"concurrency {c:4d}: runner {row['rate']:7.1f}/s, bare client {row['client_alone']:7.1f}/s, "
              f"runner/bare {row['ratio_pairs']:.3f} (median of {repeats} pairs); CPU per response "
              f"{row['runner_cpu_us']:.0f} vs {row['bare_cpu_us']:.0f} us; load {row['load']:.1f}", flush=True)
    return rows


def billing(url: str, tmp: Path, k: int = 4, frames: int = 8, n_items: int = 10) -> list[dict]:
    from rmsd.datasets.synthvid import load_items
    from rmsd.synthvid.generator import generate

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


def write_markdown(path: Path, rows: list[dict], bills: list[dict], latency: float, cmd: str, load: str) -> None:
    lines = [
        "# `rmsd sample` against the fake OpenAI-compatible server", "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), Python "
        f"{platform.python_version()}; server in its own process on 127.0.0.1, {latency * 1000:.0f} ms per request; "
        "store: every record flushed to the OS, fsync every 256 records or 500 ms (the defaults).  ",
        f"Load (`uptime` before and after): {load}", "",
        "## Throughput (text-only items, K=1; ideal bound = concurrency / latency)", "",
        "Runner and bare client run in pairs at each level, alternating which goes first; the figures are "
        "medians over the pairs, and `runner / bare` is the median of the per-pair ratios (a shared machine's "
        "load drifts between pairs, far less within one). CPU per response is the client process's CPU time "
        "(the server's is not counted) divided by the responses.", "",
        "| concurrency | responses | pairs | runner/s | bare client/s | runner / bare | bound/s | runner / bound "
        "| CPU us/response runner | bare | max in flight at server | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['concurrency']} | {r['responses']} | {r['repeats']} | {r['rate']:.1f} | {r['client_alone']:.1f} | "
              f"{r['ratio_pairs']:.3f} | {r['bound']:.0f} | {r['ratio']:.1%} | {r['runner_cpu_us']:.0f} | "
              f"{r['bare_cpu_us']:.0f} | {r['server_max_in_flight']} | {r['load']:.1f} |" for r in rows]
    for r in rows:
        if r["concurrency"] in (64, 256):
            verdict = "met" if r["ratio_pairs"] >= 0.95 else "NOT met"
            lines.append(f"\nTarget runner / bare client >= 0.95 at concurrency {r['concurrency']}: {verdict} "
                         f"({r['ratio_pairs']:.3f}).")
    lines += ["", "\"bare client\": the same teacher (official `openai` client, same connection pools) sending the "
              "same requests under one semaphore, with no plan, keys, limits, retries or store: the ceiling of this "
              "client on this machine."]
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


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--seconds", type=float, default=3.0, help="target duration of each throughput run")
    ap.add_argument("--levels", default="1,16,64,256")
    ap.add_argument("--repeats", type=int, default=3, help="runner / bare-client pairs per level")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sample.md")
    args = ap.parse_args()
    before = _uptime()
    proc, url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            levels = [int(x) for x in args.levels.split(",")]
            rows = throughput(url, args.latency, args.seconds, levels, args.repeats, Path(tmp))
            bills = billing(url, Path(tmp))
    finally:
        proc.terminate()
        proc.wait()
    cmd = "python benchmarks/bench_sample.py " + shlex.join(sys.argv[1:])
    write_markdown(args.out, rows, bills, args.latency, cmd.strip(), f"`{before}`; `{_uptime()}`")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
