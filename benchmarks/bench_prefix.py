"""Shared-prefix forward vs the naive one: forward + backward time, peak memory and equivalence (issue 13).

For an item whose prompt has P tokens (system + video + question) and K continuations of R
tokens each, times forward + backward of
- naive: K whole sequences of P + R tokens, each with its own copy of the clip (the plain
  computation, whose cost the ideal ratio below describes);
- today: the path rmsd took before the shared prefix: K whole sequences, but the clip goes
  through the vision tower once per item (`rmsd.train.collate.vision_kwargs`);
- shared: the prompt and clip once, the K continuations attending to its keys/values
  (`rmsd.models.shared_prefix`, the default in every stage),
on the tiny student architecture (`build_student(size="tiny", family=--family)`, float32, random
weights; `--family qwen3_5` is the hybrid student whose linear-attention layers hand the prompt's
recurrent and convolution states to the continuations instead of keys and values),
both in the same process and alternated, median over `--repeats`. P is set by the clip:
8 frames of 84 px (~80 tokens, synthvid today), 32 frames of 168 px (~620), 32 frames of
336 px (~2,350). Each row also records the ideal ratio (P + K·R) / (K·(P + R)), the peak
extra memory of each path (resident set size above the level after setup, in a fresh
subprocess per measurement, so one path's freed memory cannot hide the other's), and the
largest per-token log-prob difference and relative gradient difference between the paths.

    python benchmarks/bench_prefix.py --json benchmarks/results/prefix.json      # the full grid (~20 min)
    python benchmarks/bench_prefix.py --quick                                   # P ~ 600, R = 32, K in {1, 4}
    python benchmarks/bench_prefix.py --family qwen3_5 --json benchmarks/results/prefix_qwen3_5.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

CLIPS = {80: (8, 84), 600: (32, 168), 2400: (32, 336)}  # nominal P -> (frames, side)
FULL = {"P": (80, 600, 2400), "R": (32, 256), "K": (1, 4, 8)}
QUICK = {"P": (600,), "R": (32,), "K": (1, 4)}


def setup(student: Path, p: int, r: int, k: int, seed: int = 0) -> dict[str, Any]:
    """The model (fused head, shared prefix enabled) and one item's K naive rows with their vision."""
    from trl.trainer.utils import add_fused_lm_head

    from rmsd.media.video import Frames
    from rmsd.models import shared_prefix
    from rmsd.models.processing import encode_samples, load_student, set_max_pixels

    model, processor = load_student(student, device="cpu")
    frames, side = CLIPS[p]
    set_max_pixels(processor, side * side)
    add_fused_lm_head(model)
    shared_prefix.enable(model)
    model.train()
    rng = np.random.default_rng(seed)
    clip = Frames(array=rng.integers(0, 255, (frames, side, side, 3), dtype=np.uint8), fps=2.0,
                  timestamps=tuple(np.arange(frames) / 2.0), duration=frames / 2.0, path="synthetic")
    vocab = [t for t in processor.tokenizer.get_vocab() if t.isalpha() and len(t) > 2][:200]
    responses = [" ".join(rng.choice(vocab, size=r)) for _ in range(k)]
    batch = encode_samples(processor, ["Describe what happens in the video, step by step."], [clip], [responses])
    ids, labels = batch["input_ids"], batch["labels"]
    # exactly R response tokens per row: cut (or the sequence keeps its own shorter length)
    prompt_len = int((labels[0] == -100).sum() - (batch["attention_mask"][0] == 0).sum())
    width = min(ids.size(1), prompt_len + r)
    batch = {key: (v[:, :width] if key in ("input_ids", "labels", "attention_mask", "mm_token_type_ids") else v)
             for key, v in batch.items()}
    vision = {key: batch[key] for key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts") if key in batch}
    return {"model": model, "batch": batch, "rows": [vision] * k, "prompt_len": prompt_len,
            "response_len": width - prompt_len}


PATHS = ("naive", "today", "shared")


def step(env: dict[str, Any], path: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward + backward of the mean token NLL; (per-token log-probs, gradients)."""
    from rmsd.models import shared_prefix
    from rmsd.train.collate import merge_vision, vision_kwargs

    model, b = env["model"], env["batch"]
    model.zero_grad(set_to_none=True)
    keys = [0] * len(env["rows"])
    first_target = (b["labels"] != -100).int().argmax(dim=1) - 1
    split = shared_prefix.plan_split(b["input_ids"], b["attention_mask"], first_target, keys,
                                     b["mm_token_type_ids"]) if path == "shared" else None
    if split is not None:
        out = shared_prefix.shared_forward(model, b["input_ids"], b["attention_mask"], b["labels"], split,
                                           env["rows"], b["mm_token_type_ids"])
        logps, mask = out["log_probs"], out["label_mask"]
    else:
        vision = merge_vision(env["rows"]) if path == "naive" else vision_kwargs(model, env["rows"], keys)
        fused = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"],
                      mm_token_type_ids=b["mm_token_type_ids"], fused_lm_head=True, use_cache=False, **vision)
        logps, mask = fused.log_probs, fused.label_mask
    (-(logps * mask).sum() / mask.sum()).backward()
    return logps.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def peak_mb(student: Path, p: int, r: int, k: int, path: str) -> float:
    """Peak extra RSS (MiB) of one step, measured in a fresh subprocess."""
    cmd = [sys.executable, __file__, "--memory-probe", str(student), str(p), str(r), str(k), path]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(out.stdout.strip().splitlines()[-1])


def _probe(student: str, p: str, r: str, k: str, path: str) -> None:
    torch.set_num_threads(1)
    env = setup(Path(student), int(p), int(r), int(k))
    proc, peak = psutil.Process(), [0]
    base = proc.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    step(env, path)
    done.set()
    thread.join()
    print((max(peak[0], proc.memory_info().rss) - base) / 2**20)


def measure(student: Path, p: int, r: int, k: int, repeats: int, memory: bool) -> dict[str, Any]:
    env = setup(student, p, r, k)
    naive_logps, naive_grads = step(env, "naive")
    naive_grads = {n: g.clone() for n, g in naive_grads.items()}
    shared_logps, shared_grads = step(env, "shared")
    rel = max(float((shared_grads[n] - g).norm() / g.norm().clamp(min=1e-12)) for n, g in naive_grads.items())
    times: dict[str, list[float]] = {path: [] for path in PATHS}
    for _ in range(repeats):
        for path in PATHS:  # alternated: drift of a shared machine hits every path alike
            t0 = time.perf_counter()
            step(env, path)
            times[path].append(time.perf_counter() - t0)
    pp, rr = env["prompt_len"], env["response_len"]
    med = {path: statistics.median(t) for path, t in times.items()}
    row = {"P": pp, "R": rr, "K": k, "naive_s": round(med["naive"], 4), "today_s": round(med["today"], 4),
           "shared_s": round(med["shared"], 4), "ratio": round(med["shared"] / med["naive"], 3),
           "ratio_vs_today": round(med["shared"] / med["today"], 3),
           "ideal_ratio": round((pp + k * rr) / (k * (pp + rr)), 3),
           "max_abs_logp_diff": float((naive_logps - shared_logps).abs().max()), "max_rel_grad_diff": rel}
    if memory:
        row["naive_peak_mb"] = round(peak_mb(student, p, r, k, "naive"), 1)
        row["shared_peak_mb"] = round(peak_mb(student, p, r, k, "shared"), 1)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = ("|    P |   R | K | naive s | today s | shared s | ratio | ideal | vs today | naive MB | shared MB "
            "| logp diff | grad diff |")
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        lines.append(f"| {r['P']:>4} | {r['R']:>3} | {r['K']} | {r['naive_s']:>7.3f} | {r['today_s']:>7.3f} | "
                     f"{r['shared_s']:>8.3f} | {r['ratio']:>5.2f} | {r['ideal_ratio']:>5.2f} | "
                     f"{r['ratio_vs_today']:>8.2f} | {r.get('naive_peak_mb', float('nan')):>8.0f} | "
                     f"{r.get('shared_peak_mb', float('nan')):>9.0f} | {r['max_abs_logp_diff']:>9.1e} | "
                     f"{r['max_rel_grad_diff']:>9.1e} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-probe":
        return _probe(*sys.argv[2:7])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write {'rows': [...]} here")
    parser.add_argument("--quick", action="store_true", help="P ~ 600, R = 32, K in {1, 4}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess memory probes")
    parser.add_argument("--family", default="qwen2_5_vl", help="student architecture: qwen2_5_vl | qwen3_vl | qwen3_5")
    for axis in ("P", "R", "K"):
        parser.add_argument(f"--{axis}", type=int, nargs="+", default=None, help=f"only these {axis} values")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    from rmsd.models.offline.tiny import build_student

    grid = {axis: getattr(args, axis) or values for axis, values in (QUICK if args.quick else FULL).items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        student = build_student(Path(tmp) / "student", size="tiny", seed=0, family=args.family)
        for p in grid["P"]:
            for r in grid["R"]:
                for k in grid["K"]:
                    rows.append(measure(student, p, r, k, args.repeats, memory=not args.no_memory))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
                    _write(args, rows, load_before)  # after every row: a cut run keeps what it measured
    print(table(rows))


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], load_before: list[float]) -> None:
    meta = {"command": " ".join(["python", "benchmarks/bench_prefix.py", *sys.argv[1:]]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                       f"{args.threads} thread(s)", "family": args.family,
            "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
