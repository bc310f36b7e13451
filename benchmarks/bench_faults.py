"""Benchmark: what a hostile OpenAI-compatible server costs `rmsd sample`.

The fake server (tests/fake_openai.py, in its own process on 127.0.0.1) answers 30% of
requests with a fault drawn at random: 429 (with Retry-After), 500, 503, a hang until the
client gives up (its timeout), a 200 whose body is not JSON, a 200 without choices. Two
scenarios: the server ignores `n` (one choice per request, as `transformers serve` does), or
honours it. Each run samples `--items` text items x K=`--k` samples through the runner, with
a requests-per-minute limit, and reports what costs money, as the server counts it:
- successful requests / samples needed (target <= 1.05 when `n` is ignored: one request per
  sample; when `n` is honoured, one per item is the floor);
- paid responses not stored: choices the server sent in 200s minus records written (target 0);
- the most requests that arrived in any sliding window, against the limit, and the most
  requests in flight at the server, against the teacher's concurrency.
The "minute" of the limit is shortened to `--window` seconds (the limit scales with it:
`--per-window` requests per window), so a run spans several windows in a minute or two;
`--window 60` measures a real minute. The server counts arrivals with its own clock.

`--baseline-tree DIR` runs the same scenarios, without the rate limit (its limiter had no
window to shorten), with the rmsd code found in DIR (e.g. `git archive 014c688 | tar -x -C
/tmp/oldrmsd`), to set the figures beside those of the code that was there before.

    python benchmarks/bench_faults.py [--items 60] [--k 4] [--window 10] [--per-window 40] [--baseline-tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# nothing of rmsd is imported at module level: a worker must import the code of its --tree
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

FAULT_RATE = 0.3
CONCURRENCY = 8
TIMEOUT_S = 1.0


def worker(args: argparse.Namespace) -> None:
    """Run one scenario with the rmsd code of `--tree` (default: this checkout); print the summary as JSON."""
    if args.tree:
        sys.path.insert(0, args.tree)  # found before this checkout's editable install
    import asyncio
    import inspect

    import rmsd
    from rmsd.config.pools import PoolConfig
    from rmsd.items import Item
    from rmsd.sampling.sample import run_sampling
    from rmsd.sampling.store import SampleStore
    from rmsd.teachers.build import build_teachers

    teacher = {"name": "api", "backend": "openai", "samples": args.k, "concurrency": CONCURRENCY,
               "max_retries": 10, "timeout_s": TIMEOUT_S, "params": {"max_tokens": 64},
               "openai": {"model": "fake-vlm", "base_url": args.url}}
    kw = {}
    if args.per_window:
        teacher["requests_per_minute"] = args.per_window * 60.0 / args.window
        kw["rate_window_s"] = args.window
    pool = PoolConfig.model_validate({"name": "hostile", "teachers": [teacher]})
    items = [Item(item_id=f"q{i}", benchmark="bench", task_type="open", question=f"question {i}?",
                  prompt=f"Describe clip {i} in one sentence.") for i in range(args.items)]
    if "rate_window_s" not in inspect.signature(run_sampling).parameters:
        kw.pop("rate_window_s", None)

    async def go() -> dict:
        teachers = build_teachers(pool)
        try:
            with SampleStore(Path(args.store)) as store:
                return await run_sampling(items, pool, teachers, store, concurrency=64, progress=False,
                                          backoff_base_s=0.05, backoff_cap_s=1.0, **kw)
        finally:
            await asyncio.gather(*(t.aclose() for t in teachers.values()))

    summary = asyncio.run(go())
    summary["code"] = str(Path(rmsd.__file__).resolve().parents[1])
    print(json.dumps(summary))


def run_scenario(url: str, honour_n: bool, args: argparse.Namespace, tree: str | None, seed: int) -> dict:
    from bench_sample import control, stats
    from fake_openai import max_in_window

    control(url, honour_n=honour_n, fault_rate=FAULT_RATE, fault_seed=seed, latency_s=0.02, hang_s=60.0,
            retry_after_s=0.2)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--worker", "--url", url, "--items", str(args.items), "--k", str(args.k),
               "--window", str(args.window), "--per-window", str(0 if tree else args.per_window),
               "--store", str(Path(tmp) / "store")]
        if tree:
            cmd += ["--tree", tree]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed:\n{proc.stderr[-3000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    s = stats(url)
    needed = args.items * args.k
    limit = None if tree else args.per_window
    return {
        "scenario": "server ignores n" if not honour_n else "server honours n", "code": "before" if tree else "now",
        "needed": needed, "stored": summary["new_records"], "missing": summary["missing"],
        "requests": s["requests"], "answered": s["answered"], "choices": s["choices"],
        "answered_per_sample": s["answered"] / needed, "paid_not_stored": s["choices"] - summary["new_records"],
        "faults": {k: v for k, v in sorted(s["statuses"].items()) if k != "200"},
        "max_in_window": max_in_window(s["arrivals"], args.window), "limit": limit,
        "max_in_flight": s["max_in_flight"], "concurrency": CONCURRENCY, "wall_s": wall,
        "retries": summary.get("retries"), "failures": summary.get("failures"),
    }


def write_markdown(path: Path, rows: list[dict], args: argparse.Namespace, cmd: str, load: str) -> None:
    lines = [
        "# `rmsd sample` against a hostile OpenAI-compatible server", "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), Python "
        f"{platform.python_version()}; fake server (tests/fake_openai.py) in its own process, 20 ms per answer, "
        f"{FAULT_RATE:.0%} of requests faulted (429 / 500 / 503 / hang past the {TIMEOUT_S:g} s client timeout / "
        "200 with a non-JSON body / 200 without choices, drawn at random with a fixed seed).  ",
        f"Load (`uptime` before and after): {load}", "",
        f"{args.items} text items x K={args.k} = {args.items * args.k} samples; teacher concurrency {CONCURRENCY}; "
        f"limit {args.per_window} requests in any {args.window:g} s window (the per-minute limit with its minute "
        f"shortened to {args.window:g} s), counted at the server from its arrival times.", "",
        "| scenario | code | samples stored / needed | successful requests / samples | paid responses not stored "
        "| requests (faulted) | max requests in any window / limit | max in flight at server / concurrency "
        "| wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        faulted = r["requests"] - r["answered"]
        limit = f"{r['max_in_window']} / {r['limit']}" if r["limit"] else f"{r['max_in_window']} / (no limit set)"
        lines.append(f"| {r['scenario']} | {r['code']} | {r['stored']} / {r['needed']} | "
                     f"{r['answered_per_sample']:.3f} | {r['paid_not_stored']} | {r['requests']} ({faulted}) | "
                     f"{limit} | {r['max_in_flight']} / {r['concurrency']} | {r['wall_s']:.1f} |")
    lines += ["", "Faults met (HTTP status at the server; 504 = a hang the client gave up on):", ""]
    lines += [f"- {r['scenario']}, {r['code']}: {r['faults']}" for r in rows]
    now = [r for r in rows if r["code"] == "now"]
    ignored = [r for r in now if r["scenario"] == "server ignores n"]
    if ignored:
        r = ignored[0]
        verdict = "met" if r["answered_per_sample"] <= 1.05 and r["paid_not_stored"] == 0 else "NOT met"
        lines += ["", f"Targets with a server that ignores `n` (successful requests <= 1.05x the samples, 0 paid "
                      f"responses not stored, the limit never exceeded at the server): {verdict} "
                      f"({r['answered_per_sample']:.3f}x, {r['paid_not_stored']}, "
                      f"{r['max_in_window']} <= {r['limit']})."]
    if any(r["code"] == "before" for r in rows):
        what = f" ({args.baseline_label})" if args.baseline_label else ""
        lines += ["", f"\"before\": the same scenarios with the code given as `--baseline-tree`{what}, with no rate "
                      "limit set (its limiter was a token bucket over real minutes, which a shortened window cannot "
                      "show); its wall time is therefore not comparable."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=60)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--window", type=float, default=10.0, help="seconds of the limit's 'minute'")
    ap.add_argument("--per-window", type=int, default=40, help="requests allowed in any window")
    ap.add_argument("--baseline-tree", default=None, help="a checkout of earlier rmsd code to run beside this one")
    ap.add_argument("--baseline-label", default=None, help="what that checkout is, for the results (e.g. a commit)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults.md")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    from bench_sample import start_server

    before = _uptime()
    proc, url = start_server(0.02)
    rows = []
    try:
        for honour_n in (False, True):
            for tree in ([None, args.baseline_tree] if args.baseline_tree else [None]):
                rows.append(run_scenario(url, honour_n, args, tree, args.seed))
                r = rows[-1]
                print(f"{r['scenario']:17s} {r['code']:6s}: stored {r['stored']}/{r['needed']}, successful "
                      f"requests/sample {r['answered_per_sample']:.3f}, paid not stored {r['paid_not_stored']}, "
                      f"max in window {r['max_in_window']} (limit {r['limit']}), max in flight {r['max_in_flight']}",
                      flush=True)
    finally:
        proc.terminate()
        proc.wait()
    cmd = "python benchmarks/bench_faults.py " + shlex.join(sys.argv[1:])
    write_markdown(args.out, rows, args, cmd.strip(), f"`{before}`; `{_uptime()}`")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
