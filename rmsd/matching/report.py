"""The match report: the statistics of `rmsd match` as JSON and as one four-panel figure.

Panels: per-teacher reliability (the label-free estimate beside the true accuracy where
ground truth exists, so a user sees whether Dawid–Skene can be trusted on this pool),
per-teacher format-error rate, the per-item agreement histogram and the distribution of
sample weights. The figure is drawn with matplotlib's Agg backend (no display needed).

    rmsd match --recipe recipes/synthvid/tiny_rmsd.yaml --samples runs/synthvid-tiny-rmsd/samples
    # writes runs/<name>/matched/match_report.json and match_report.png
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
    return json_path, png_path


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
