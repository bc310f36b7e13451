"""Claims judged on paired per-item differences (regime v4, benchmarks/results/regime_v4.md).

Two methods are compared on the same test items: per item, the difference of their scores averaged over the
seeds both ran (seeds pooled), then the mean over items with a 95% bootstrap interval that resamples items
(an item's seeds move together: they share its video and question). A claim "A >= B + t" holds when the mean
difference is at least t and the interval excludes 0. Per task type the same, on that type's items.

    python -c "import paired; print(paired.CLAIMS)"      # the declared claims; reproduce_report prints them
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
# (name, A, B, threshold in score units): "A >= B + threshold"; threshold None = reported, no threshold.
CLAIMS: tuple[tuple[str, str, str, float | None], ...] = (
    ("1: gt >= single + 3 points", "gt", "single", 0.03),
    ("2a: rmsd >= gt", "rmsd", "gt", 0.0),
    ("2b: rmsd >= sft_rl", "rmsd", "sft_rl", 0.0),
    ("4: gt vs single_gt (more samples once wrong ones are filtered)", "gt", "single_gt", None),
    ("5a: matched vs single (label-free matching)", "matched", "single", None),
    ("5b: uniform vs single", "uniform", "single", None),
    ("headroom: ceiling vs single", "ceiling", "single", None),
)


def per_item_differences(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]],
                         items: list[str] | None = None) -> dict[str, float]:
    """{item: mean over the seeds both methods ran of score_a - score_b}; `a[seed][item]` = a score."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return {}
    keys = items if items is not None else sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)))
    return {i: statistics.mean(a[s][i] - b[s][i] for s in seeds) for i in keys}


def bootstrap(diffs: list[float], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """Mean of `diffs` and its 95% percentile interval over `resamples` resamples of the items."""
    x = np.asarray(diffs, dtype=float)
    if x.size == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(x.mean()), "lo": float(lo), "hi": float(hi), "n": int(x.size)}


def judge(stats: dict[str, float], threshold: float | None) -> bool | None:
    """Whether "A >= B + threshold" holds: mean >= threshold and the interval above 0; None without a threshold."""
    if threshold is None or stats["n"] == 0:
        return None
    return stats["mean"] >= threshold and stats["lo"] > 0


def claims(runs: list[dict[str, Any]], task_of: dict[str, str]) -> list[dict[str, Any]]:
    """Every declared claim on `runs` (reproduce.py's, with final.per_item), overall and per task type;
    a claim whose methods have no common seed is left out. `task_of`: item id -> task type."""
    scores: dict[str, dict[int, dict[str, float]]] = {}
    for r in runs:
        if "error" not in r and "per_item" in r.get("final", {}):
            scores.setdefault(r["method"], {})[r["seed"]] = r["final"]["per_item"]
    out = []
    for name, a, b, threshold in CLAIMS:
        diffs = per_item_differences(scores.get(a, {}), scores.get(b, {}))
        if not diffs:
            continue
        overall = bootstrap(list(diffs.values()))
        by_type = {}
        for t in sorted(set(task_of[i] for i in diffs)):
            by_type[t] = bootstrap([d for i, d in diffs.items() if task_of[i] == t])
        seeds = sorted(set(scores[a]) & set(scores[b]))
        out.append({"claim": name, "a": a, "b": b, "threshold": threshold, "seeds": seeds, **overall,
                    "holds": judge(overall, threshold), "task_type": by_type})
    return out


def claims_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: each claim's mean paired difference (points), its 95% interval and verdict, per task type."""
    types = sorted({t for r in rows for t in r["task_type"]})
    lines = ["| claim | seeds | A - B (points) | 95% interval | holds | " + " | ".join(types) + " |",
             "|---|---|---:|---|---|" + "---:|" * len(types)]
    for r in rows:
        verdict = {True: "**yes**", False: "**no**", None: "(reported)"}[r["holds"]]
        cells = [f"{r['task_type'][t]['mean'] * 100:+.1f} [{r['task_type'][t]['lo'] * 100:+.1f}, "
                 f"{r['task_type'][t]['hi'] * 100:+.1f}]" if t in r["task_type"] else "-" for t in types]
        lines.append(f"| {r['claim']} | {','.join(map(str, r['seeds']))} | {r['mean'] * 100:+.1f} | "
                     f"[{r['lo'] * 100:+.1f}, {r['hi'] * 100:+.1f}] | {verdict} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
