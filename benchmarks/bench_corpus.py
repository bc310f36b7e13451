"""How fast a training corpus loads and is checked against the evaluation sets, at Video-R1's scale.

Writes a Video-R1-schema JSON of 260,000 rows (the five problem types, video and image rows, in
Video-R1-260k's proportions of roughly 45% video), loads it with the `videor1` loader (media
existence not checked: the files are not here), and runs the contamination check
(`rmsd.datasets.contamination`) against 3,000 evaluation items in Video-MME's form, with `--planted`
corpus rows that ask an evaluation question about a same-named video (the check must find exactly
those). The measured part runs in a child process, so its peak resident memory is the corpus's,
not the generator's. Targets: load + check ≤ 20 s and ≤ 1.5 GB.

    python benchmarks/bench_corpus.py                   # writes benchmarks/results/corpus.md and .json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TYPES = [("multiple choice", 0.45), ("numerical", 0.2), ("OCR", 0.1), ("free-form", 0.15), ("regression", 0.1)]
WORDS = "the a person object red blue moves left right count how many what where when does video image chart".split()


def eval_question(n: int) -> str:
    return f"What happens to object {n} in the clip after the {WORDS[n % len(WORDS)]} event?"


def corpus_rows(n: int, planted: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    kinds, weights = zip(*TYPES, strict=True)
    rows = []
    for i in range(n):
        ptype = rng.choices(kinds, weights)[0]
        video = rng.random() < 0.45
        row = {"problem_id": i, "problem": " ".join(rng.choices(WORDS, k=14)) + f" #{i}?",
               "data_type": "video" if video else "image", "problem_type": ptype, "options": [],
               "solution": "<answer>3</answer>", "path": f"./src{i % 40}/{'videos' if video else 'images'}/{i}."
                                                        f"{'mp4' if video else 'png'}", "data_source": f"src{i % 40}"}
        if ptype == "multiple choice":
            row["options"] = ["A. red", "B. blue", "C. green", "D. yellow"]
            row["solution"] = "<answer>B</answer>"
        elif ptype in ("OCR", "free-form"):
            row["solution"] = "<answer>" + " ".join(rng.choices(WORDS, k=6)) + "</answer>"
        rows.append(row)
    for k in range(planted):  # an evaluation question about a same-named (re-encoded) video
        rows[k * (n // max(1, planted))] |= {"problem": eval_question(k), "data_type": "video",
                                             "path": f"./videomme/vid{k}.mp4"}
    return rows


def measure(corpus: Path, n_eval: int) -> dict:
    """In the child: load the corpus, build the evaluation index, run the check."""
    from rmsd.datasets import get_benchmark
    from rmsd.datasets.contamination import EvalIndex, find_overlaps
    from rmsd.items import Item

    evaluation = [Item(f"{n:03d}-1", "videomme", "mcq", eval_question(n), eval_question(n), ["a", "b", "c", "d"], "A",
                       video=f"/data/videomme/data/vid{n}.mp4") for n in range(n_eval)]
    t0 = time.perf_counter()
    items = get_benchmark("videor1").load_items(corpus, check_media=False)
    t1 = time.perf_counter()
    overlaps = find_overlaps(items, EvalIndex({"videomme": evaluation}))
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    return {"rows": len(items), "eval_items": n_eval, "overlaps": len(overlaps), "load_s": round(t1 - t0, 2),
            "check_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2), "peak_rss_gb": round(peak / 1e9, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=260_000)
    ap.add_argument("--eval-items", type=int, default=3_000)
    ap.add_argument("--planted", type=int, default=50)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS / "corpus")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.eval_items)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "Video-R1-260k.json"
        corpus.write_text(json.dumps(corpus_rows(args.rows, args.planted), indent=2))
        size_mb = corpus.stat().st_size / 1e6
        child = subprocess.run([sys.executable, __file__, "--child", str(corpus), "--eval-items", str(args.eval_items)],
                               capture_output=True, text=True, check=True)
    result = json.loads(child.stdout.strip().splitlines()[-1]) | {
        "planted": args.planted, "corpus_mb": round(size_mb, 1), "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    assert result["overlaps"] == args.planted, result  # the check finds exactly the planted rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(
        f"# Loading a Video-R1-scale corpus and checking it against the evaluation sets\n\n"
        f"`python benchmarks/bench_corpus.py` ({result['date']}, {result['machine']}, load average "
        f"{', '.join(map(str, result['load_average']))} at the end)\n\n"
        f"| rows | corpus JSON | eval items | overlaps found (planted) | load | check | total | peak RSS |\n"
        f"|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {result['rows']:,} | {result['corpus_mb']} MB | {result['eval_items']:,} | {result['overlaps']} "
        f"({args.planted}) | {result['load_s']} s | {result['check_s']} s | {result['total_s']} s | "
        f"{result['peak_rss_gb']} GB |\n\n"
        "Targets: total ≤ 20 s, peak ≤ 1.5 GB. Media existence is not checked (`check_media=False`): the files "
        "are not on this machine, so the check takes its question route for every row; with media present it "
        "also stats each distinct file once and reads bytes only for files whose size an evaluation file shares.\n")
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
