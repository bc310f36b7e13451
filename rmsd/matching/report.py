"""The match report: the statistics of `rmsd match` as JSON and as one four-panel figure.

Panels: per-teacher reliability (the label-free estimate beside the true accuracy where
ground truth exists, so a user sees whether Dawid–Skene can be trusted on this pool),
per-teacher format-error rate, the per-item agreement histogram and the distribution of
sample weights. Where ground truth is known the statistics also hold `teacher_quality`
(rmsd.matching.teacher_stats: accuracy, response-quality spreads across and within questions,
format violations, pairwise error correlation), drawn as a second figure,
teacher_stats.png, beside teacher_stats.json; `rmsd match stats` writes those two alone.
Figures are drawn with matplotlib's Agg backend (no display needed).

    rmsd match --recipe recipes/synthvid/tiny_rmsd.yaml --samples runs/synthvid-tiny-rmsd/samples
    # writes runs/<name>/matched/match_report.json and match_report.png (+ teacher_stats.*)
    rmsd match stats --recipe recipes/synthvid/tiny_rmsd.yaml --samples runs/synthvid-tiny-rmsd/samples
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and tests have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

REPORT_JSON = "match_report.json"
REPORT_PNG = "match_report.png"
STATS_JSON = "teacher_stats.json"
STATS_PNG = "teacher_stats.png"
TASKS = ("mcq", "numeric", "grounding", "open")
# Reported for GPT-4o-class teachers on video QA (summaries of arXiv 2603.11423): drawn as
# reference bands, so a pool's spreads can be read against real teachers'.
REFERENCE = {"sigma_cross": (0.22, 0.22), "sigma_within": (0.07, 0.15), "format_violation_rate": (0.01, 0.10)}


def write_report(stats: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write `out_dir/match_report.json` and `out_dir/match_report.png`; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / REPORT_JSON, out / REPORT_PNG
    json_path.write_text(json.dumps(stats, indent=2, sort_keys=False) + "\n")
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    try:
        teachers = stats.get("teachers", {})
        _reliability_panel(axes[0, 0], teachers)
        _format_panel(axes[0, 1], teachers)
        _histogram_panel(axes[1, 0], stats.get("agreement_histogram"), "per-item agreement", "items", "tab:green")
        _histogram_panel(axes[1, 1], stats.get("weight_histogram"), "sample weight (valid samples)", "samples",
                         "tab:purple")
        fig.suptitle(f"rmsd match: {stats.get('n_samples', 0)} samples, {stats.get('n_items', 0)} items, "
                     f"{stats.get('items_without_usable_sample', 0)} without a usable sample")
        fig.tight_layout()
        fig.savefig(png_path, dpi=100)
    finally:
        plt.close(fig)  # figures are global state in pyplot: never leak one per call
    if stats.get("teacher_quality"):
        write_teacher_stats(stats["teacher_quality"], out)
    return json_path, png_path


def write_teacher_stats(tstats: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """`out_dir/teacher_stats.json` and a four-panel figure `teacher_stats.png` (rmsd.matching.teacher_stats)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / STATS_JSON, out / STATS_PNG
    json_path.write_text(json.dumps(tstats, indent=2) + "\n")
    teachers = tstats.get("teachers", {})
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    try:
        _accuracy_panel(axes[0, 0], teachers)
        _spread_panel(axes[0, 1], teachers)
        _violation_panel(axes[1, 0], teachers)
        _correlation_panel(axes[1, 1], list(teachers), tstats.get("pairs", {}))
        fig.suptitle(f"teacher statistics against ground truth: {tstats.get('n_items', 0)} items "
                     "(quality = mean of the rule judge's three scores)")
        fig.tight_layout()
        fig.savefig(png_path, dpi=100)
    finally:
        plt.close(fig)
    return json_path, png_path


def _value(stats: dict | None, key: str) -> float:
    return np.nan if not stats or stats.get(key) is None else stats[key]


def _accuracy_panel(ax: Any, teachers: dict[str, dict]) -> None:
    names, x = list(teachers), np.arange(len(teachers))
    width = 0.8 / len(TASKS)
    for k, task in enumerate(TASKS):
        ax.bar(x - 0.4 + (k + 0.5) * width, [_value(teachers[t].get(task), "accuracy") for t in names], width,
               label=task)
    _teacher_axis(ax, names, "accuracy of format-valid responses", "accuracy")
    ax.set_ylim(0, 1.2)
    ax.legend(loc="upper center", ncol=4, fontsize=8)


def _spread_panel(ax: Any, teachers: dict[str, dict]) -> None:
    names, x = list(teachers), np.arange(len(teachers))
    for offset, key, colour in ((-0.2, "sigma_cross", "tab:blue"), (0.2, "sigma_within", "tab:orange")):
        ax.bar(x + offset, [_value(teachers[t].get("all"), key) for t in names], 0.4, color=colour,
               label=f"{key.replace('_', ' ')} (quality)")
        lo, hi = REFERENCE[key]
        ax.axhspan(lo - 0.005, hi + 0.005, color=colour, alpha=0.15)
    _teacher_axis(ax, names, "quality spread, all task types (bands: GPT-4o-class, reported)", "standard deviation")
    ax.set_ylim(0, 0.6)
    ax.legend(loc="upper center", ncol=2, fontsize=8)


def _violation_panel(ax: Any, teachers: dict[str, dict]) -> None:
    names = list(teachers)
    ax.bar(np.arange(len(names)), [_value(teachers[t].get("all"), "format_violation_rate") for t in names], 0.6,
           color="tab:red")
    ax.axhspan(*REFERENCE["format_violation_rate"], color="tab:red", alpha=0.15)
    _teacher_axis(ax, names, "format violations (band: 1-10%, reported)", "share of responses")
    ax.set_ylim(0, 0.3)


def _correlation_panel(ax: Any, names: list[str], pairs: dict[str, dict]) -> None:
    n = len(names)
    matrix = np.eye(n)
    for key, per_task in pairs.items():
        a, b = key.split("|")
        if a in names and b in names:
            matrix[names.index(a), names.index(b)] = matrix[names.index(b), names.index(a)] = _value(
                per_task.get("all"), "error_correlation")
    image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="coolwarm")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, "-" if np.isnan(matrix[i, j]) else f"{matrix[i, j]:.2f}", ha="center", va="center",
                    fontsize=9)
    ax.set_xticks(range(n), names, rotation=30, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_title("per-question error correlation between teachers")
    plt.colorbar(image, ax=ax, fraction=0.046)


def _reliability_panel(ax: Any, teachers: dict[str, dict]) -> None:
    names = list(teachers)
    overall = [teachers[t].get("reliability_overall", {}) for t in names]
    estimate = [np.nan if o.get("estimate") is None else o["estimate"] for o in overall]
    true = [np.nan if o.get("true") is None else o["true"] for o in overall]
    x = np.arange(len(names))
    ax.bar(x - 0.2, estimate, 0.4, label="label-free estimate", color="tab:blue")
    if not all(np.isnan(true)):
        ax.bar(x + 0.2, true, 0.4, label="true accuracy (ground truth)", color="tab:orange")
    _teacher_axis(ax, names, "closed-ended reliability per teacher", "accuracy")
    ax.set_ylim(0, 1.2)  # headroom so the legend never covers a bar
    ax.legend(loc="upper center", ncol=2, fontsize=8)


def _format_panel(ax: Any, teachers: dict[str, dict]) -> None:
    names = list(teachers)
    rates = [np.nan if teachers[t].get("format_error_rate") is None else teachers[t]["format_error_rate"]
             for t in names]
    ax.bar(np.arange(len(names)), rates, 0.6, color="tab:red")
    _teacher_axis(ax, names, "format-error rate per teacher", "share of usable samples")


def _teacher_axis(ax: Any, names: list[str], title: str, ylabel: str) -> None:
    ax.set_xticks(np.arange(len(names)), names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4
                  else "center")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if not names:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)


def _histogram_panel(ax: Any, hist: dict[str, list] | None, title: str, ylabel: str, color: str) -> None:
    if not hist or not sum(hist["counts"]):
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    else:
        edges = np.asarray(hist["edges"])
        ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color=color, edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
