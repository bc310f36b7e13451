"""How clean are the SFT targets each experiment method trains on? (issue 7's "find out why")

For every method of a `benchmarks/reproduce.py` run, the rows its SFT stage reads
(`rmsd.train.sft_trainer.sft_rows` over the method's matched set, with its
`samples_per_item` and `weighting`) are scored against the training split's ground truth:
per task type, the share of each item's normalised target weight that sits on a correct
answer (mcq/numeric exact, grounding tIoU >= 0.5, open: ROUGE-L >= 0.5 against the
reference), averaged over items, plus sequences per item and the items covered. This is
what the student is asked to imitate, measured before any training.

    python benchmarks/targets.py --work runs/reproduce-v2 --methods single uniform matched anchored gt
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from method_recipes import load_method  # a sibling script (a script's own folder is sys.path[0])

TASKS = ("mcq", "numeric", "grounding", "open")


def method_targets(method: str, work: Path) -> tuple[list[dict], dict]:
    """(sft rows, items by id) of one method, read from the reproduce work folder."""
    from rmsd.pipeline import load_recipe_items
    from rmsd.train.sft_trainer import sft_rows

    recipe = load_method(method, work, 0, [])
    matched = Path(recipe.matching.out) / "matched.jsonl"
    if not matched.is_file():
        sys.exit(f"{matched}: not matched yet; run benchmarks/reproduce.py --methods {method} --work {work} first")
    rows = [json.loads(line) for line in matched.read_text().splitlines() if line.strip()]
    sft = recipe.distill.sft
    return sft_rows(rows, sft.samples_per_item, sft.weighting), {it.item_id: it for it in load_recipe_items(recipe)}


def correctness(rows: list[dict], items: dict, benchmark) -> dict[str, dict[str, float]]:
    """Per task type (and "all"): mean share of target weight on right answers, sequences per item, items."""
    share, seqs = defaultdict(list), defaultdict(list)
    for row in rows:
        item = items[row["item_id"]]
        total = sum(row["weights"])
        right = sum(w * _right(benchmark, t, item) for t, w in zip(row["texts"], row["weights"], strict=True))
        for key in (item.task_type, "all"):
            share[key].append(right / total)
            seqs[key].append(len(row["texts"]))
    return {k: {"right": sum(v) / len(v), "sequences": sum(seqs[k]) / len(seqs[k]), "items": len(v)}
            for k, v in share.items()}


def _right(benchmark, text: str, item) -> bool:
    answer = benchmark.extract(text, item, mode="strict")
    return answer is not None and benchmark.score(answer, item) >= 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="the reproduce.py --work folder")
    ap.add_argument("--methods", nargs="+", default=["single", "uniform", "matched", "anchored", "gt"])
    args = ap.parse_args()
    from rmsd.datasets import get_benchmark

    benchmark = get_benchmark("synthvid")
    print("| targets | all | " + " | ".join(TASKS) + " | sequences / item | items |")
    print("|---|" + "---:|" * (len(TASKS) + 3))
    for method in args.methods:
        rows, items = method_targets(method, args.work.resolve())
        c = correctness(rows, items, benchmark)
        cells = [f"{c[k]['right']:.3f}" if k in c else "-" for k in ("all", *TASKS)]
        print(f"| {method} | " + " | ".join(cells) + f" | {c['all']['sequences']:.1f} | {c['all']['items']} |")


if __name__ == "__main__":
    main()
