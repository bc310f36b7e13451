"""benchmarks/reproduce.py's results: the summary over seeds, reproduce.md and .json, the plots.

Kept apart from the runs themselves so each file reads on its own; `reproduce.py` calls
`write_results` after every finished run and prints `results_table(summarise(runs))` at the end.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import paired  # sibling scripts: the paired per-item claims
import steps_to_target  # the VISD-vs-GRPO section and its plot

METHODS = ("ceiling", "ceiling_multi", "sanity_matched", "single", "uniform", "matched", "matched_conf", "anchored",
           "gt", "single_gt", "rmsd", "sft_rl", "visd", "visd_rl", "sft_rl_2e4", "visd_rl_2e4")
TASK_TYPES = ("mcq", "numeric", "grounding", "open")
DATA_SEED = 1234


# ----------------------------------------------------------------------------- summary
def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method (the untrained student first): mean and std over seeds, failures."""
    rows = []
    for method in ("untrained", *METHODS):
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        ok = [r for r in mine if "error" not in r]
        row = {"method": method, "seeds": [r["seed"] for r in ok], "errors": {r["seed"]: r["error"] for r in mine
                                                                                if "error" in r}}
        if ok:
            row["overall"] = _stats([r["final"]["overall"] for r in ok])
            row["task_type"] = {t: _stats([r["final"].get("breakdowns", {}).get("task_type", {}).get(t, 0.0)
                                           for r in ok]) for t in TASK_TYPES}
            row["train_seconds"] = _stats([r["train_seconds"] for r in ok])
        rows.append(row)
    return rows


def _stats(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def _cell(s: dict[str, float] | None, digits: int = 3) -> str:
    if s is None:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def results_table(summary: list[dict[str, Any]]) -> str:
    lines = ["| method | seeds | overall | " + " | ".join(TASK_TYPES) + " | train s |",
             "|---|---|" + "---:|" * (len(TASK_TYPES) + 2)]
    for row in summary:
        if "overall" not in row:
            lines.append(f"| {row['method']} | 0 | failed | " + " | ".join("-" for _ in TASK_TYPES) + " | - |")
            continue
        cells = [_cell(row["overall"])] + [_cell(row["task_type"][t]) for t in TASK_TYPES]
        secs = _cell(row["train_seconds"], 0) if row["method"] != "untrained" else "-"
        failed = f" (+{len(row['errors'])} failed)" if row["errors"] else ""
        lines.append(f"| {row['method']} | {len(row['seeds'])}{failed} | " + " | ".join(cells) + f" | {secs} |")
    return "\n".join(lines)


HEADROOM_MIN = 0.05  # regime_v3.md's headroom rule: under 5 points, the regime can barely test the claim


def _mean(summary: dict[str, dict[str, Any]], method: str) -> float | None:
    row = summary.get(method, {})
    return row["overall"]["mean"] if "overall" in row else None


def _spread(summary: dict[str, dict[str, Any]], method: str) -> tuple[float, float] | None:
    row = summary.get(method, {})
    return (row["overall"]["mean"] - row["overall"]["std"], row["overall"]["mean"] + row["overall"]["std"]) \
        if "overall" in row else None


def claims_table(summary_rows: list[dict[str, Any]]) -> str:
    """The declared claims (regime_v3.md) with the headroom that bounds each, from the overall means over seeds.

    Headroom: ceiling - single (what perfect targets buy over one noisy sample) and
    ceiling_multi - uniform (over every noisy sample); "spreads" are mean ± 1 std over seeds.
    The VISD claim is the steps-to-target section's (training reward, not test accuracy)."""
    summary = {r["method"]: r for r in summary_rows}

    def gap(a: str, b: str) -> float | None:
        return None if _mean(summary, a) is None or _mean(summary, b) is None else _mean(summary, a) - _mean(summary, b)

    def pts(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:+.1f} points"

    def apart(a: str, b: str) -> bool:  # a's spread lies wholly above b's
        sa, sb = _spread(summary, a), _spread(summary, b)
        return sa is not None and sb is not None and sa[0] > sb[1]

    single_room, multi_room = gap("ceiling", "single"), gap("ceiling_multi", "uniform")

    def room(x: float | None) -> str:
        if x is None:
            return "-"
        return pts(x) + ("" if x >= HEADROOM_MIN else " (under 5 points: the regime can barely test this)")

    rows = [("matched ≥ single + 3 points, spreads apart", gap("matched", "single"),
             None if gap("matched", "single") is None else gap("matched", "single") >= 0.03 and apart("matched", "single"),
             room(single_room)),
            ("matched_conf ≥ single + 3 points, spreads apart", gap("matched_conf", "single"),
             None if gap("matched_conf", "single") is None
             else gap("matched_conf", "single") >= 0.03 and apart("matched_conf", "single"), room(single_room)),
            ("rmsd ≥ matched", gap("rmsd", "matched"),
             None if gap("rmsd", "matched") is None else gap("rmsd", "matched") >= 0, room(single_room)),
            ("matched_conf vs matched (weights that can matter)", gap("matched_conf", "matched"), None, room(multi_room)),
            ("matched vs uniform", gap("matched", "uniform"), None, room(multi_room)),
            ("sanity: sanity_matched ties ceiling_multi (noise-free pool)", gap("sanity_matched", "ceiling_multi"),
             None, "-"),
            ("sanity: ceiling_multi vs ceiling (more perfect targets per item)", gap("ceiling_multi", "ceiling"),
             None, "-")]
    lines = ["| claim or comparison | measured (overall, mean over seeds) | held? | headroom |", "|---|---:|---|---|"]
    for name, value, held, headroom in rows:
        verdict = "-" if held is None else ("yes" if held else "**no**")
        lines.append(f"| {name} | {pts(value)} | {verdict} | {headroom} |")
    return "\n".join(lines)


def teacher_table(report: dict[str, Any]) -> str:
    lines = ["| teacher | samples | format-error rate | kept | reliability estimate (label-free) | true accuracy |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, t in report.get("teachers", {}).items():
        rel = t.get("reliability_overall", {})
        lines.append(f"| {name} | {t.get('samples', 0)} | {_num(t.get('format_error_rate'))} | "
                     f"{t.get('kept', 0) / max(t.get('samples', 1), 1):.2f} | {_num(rel.get('estimate'))} | "
                     f"{_num(rel.get('true'))} |")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": [round(x, 1) for x in os.getloadavg()], "python": platform.python_version()}


def write_results(out: Path, meta: dict[str, Any], runs: list[dict[str, Any]], report: dict[str, Any],
                  matched_rows: list[dict[str, Any]], analysis: str | None = None) -> None:
    """reproduce.json, reproduce.md and the PNGs (a plot that fails is noted, the rest is kept); `analysis`:
    student_errors' sections, what the students answered beside their targets."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    plots = {"reproduce_curves.png": lambda p: plot_curves(runs, meta["budget"], p),
             "reproduce_teachers.png": lambda p: plot_teachers(report, p),
             "reproduce_weights.png": lambda p: plot_weights(matched_rows, meta["min_weight"], p),
             "reproduce_visd.png": lambda p: steps_to_target.plot(runs, p)}
    plot_errors = {}
    for name, draw in plots.items():
        try:
            draw(out / name)
        except Exception as e:  # noqa: BLE001 - a broken plot must not lose the numbers
            plot_errors[name] = f"{type(e).__name__}: {e}"
    (out / "reproduce.json").write_text(json.dumps(
        {**meta, "summary": summary, "plot_errors": plot_errors, "match_report": report, "runs": runs},
        indent=2, default=str))
    (out / "reproduce.md").write_text(markdown(meta, summary, report, runs, plot_errors, analysis))


def markdown(meta: dict[str, Any], summary: list[dict[str, Any]], report: dict[str, Any], runs: list[dict[str, Any]],
             plot_errors: dict[str, str], analysis: str | None = None) -> str:
    b, m = meta["budget"], meta["machine"]
    cached = sum(1 for r in runs if r.get("cached"))
    # a resumed experiment's invocation only re-reads its earlier runs: its wall time is not the experiment's
    earlier = (f" ({cached} of {len(runs)} runs read from the results committed by earlier invocations; every "
               f"run's own seconds are in the json)" if cached else "")
    failures = [f"- {r['method']} seed {r['seed']}: `{r['error']}`" for r in runs if "error" in r]
    # regimes that keep each test item's score (v4 on) judge their claims per item, paired
    claim_rows = paired.claims(runs, {i: v["task_type"] for i, v in meta["test_items"].items()}) \
        if meta.get("test_items") else []
    parts = [
        "# synthvid reproduction: multi-sample reliable distillation against its baselines", "",
        "**QUICK SMOKE RUN: tiny data and steps, not a measurement.**\n" if meta["quick"] else "",
        f"Command: `{meta['command']}`", "",
        f"Machine: {m['machine']}, {m['cpus']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
        f"GPU: {m['gpu'] or 'none'}; load average at the end {m['load_average']}. Wall time of this invocation {meta['wall_seconds']:.0f} s{earlier}.",
        "",
        _regime_line(meta),
        f"Data: synthvid, {meta['data']['train']} train / {meta['data']['test']} test items (data seed {DATA_SEED}); "
        f"pool `teachers/{meta.get('pool', 'experiment_pool.yaml')}` (simulated); ceiling, ceiling_multi and "
        "sanity_matched sample its noise-free twin `teachers/experiment_pool_noise_free.yaml`; "
        f"matching label-free (Dawid–Skene) except anchored (10% of the items labelled) and gt (ground truth). "
        f"Seeds: {meta['seeds']} (student init, data order, rollouts).",
        "",
        f"Budget: {b['total']} optimisation steps for every method: the SFT-only methods train {b['total']} SFT "
        f"steps; rmsd, sft_rl, visd, visd_rl train {b['sft']} SFT steps then {b['adversarial']} adversarial (GRPO) steps. "
        "Steps are equal, compute is not: see train s (training only, the curve's evaluations left out; the "
        "adversarial methods share one SFT stage per seed, whose seconds each of them counts).", "",
        f"Curve: test accuracy at global steps {meta['points']} and at the end; step 0 is the untrained student.", "",
        "## Test accuracy, mean ± std over seeds", "",
        results_table(summary), "",
        "Accuracy is the benchmark's harness score (greedy decoding, the eval split); per task type beside it.", "",
        *(["## Claims on paired per-item differences", "", paired.claims_table(claim_rows), "",
           paired.__doc__.split("\n\n")[1].replace("\n", " "), "The VISD claim (≤ 0.6x sft_rl's steps to its final "
           "training reward) is in the steps-to-target section below.", ""] if claim_rows else []),
        *(["## Claims and headroom", "", claims_table(summary), "",
            "Headroom: ceiling − single for the claims against single-sample SFT, ceiling_multi − uniform for the "
            "weighting comparisons (regime_v3.md's rule). The VISD claim (≤ 0.6x sft_rl's steps to its final "
            "training reward) is in the steps-to-target section below.", ""]
          if any(r["method"] == "ceiling" for r in summary) and not claim_rows else []),
        *(["## What the students answered, beside their targets", "",
           "The analysis a claim that does not hold is reported with (regime_v3.md): what each student answered "
           "(`benchmarks/student_errors.py`, from its predictions) and how right its SFT targets were.", "",
           analysis, ""] if analysis else []),
        "## Accuracy vs steps", "", "![accuracy vs steps](reproduce_curves.png)", "",
        "## Teachers (match report of the quality-matched set)", "", teacher_table(report), "",
        "![teacher reliability](reproduce_teachers.png)", "",
        "## Weights of the matched samples", "", "![weight distribution](reproduce_weights.png)", "",
    ]
    pairs = [c for b, v in steps_to_target.PAIRS if (c := steps_to_target.compare(runs, b, v)) is not None]
    if pairs:
        parts += ["## VISD vs GRPO: steps to a target training reward", "", steps_to_target.__doc__.split("\n\n")[2],
                  "", *[steps_to_target.markdown(c) + "\n" for c in pairs], "![reward curves](reproduce_visd.png)", ""]
    if failures or plot_errors:
        parts += ["## Failures", "", *failures, *[f"- plot {k}: `{v}`" for k, v in plot_errors.items()], ""]
    return "\n".join(parts)


def _regime_line(meta: dict[str, Any]) -> str:
    """Which declared regime the run is, and the hash of what it ran (reproduce.regime_hash)."""
    if not meta.get("regime_hash"):
        return ""
    # a repository path, not a link: a regime's results sit in benchmarks/results/<regime>/, its declaration beside
    declared = (f"regime `{meta['regime']}`, declared in `benchmarks/results/regime_{meta['regime']}.md`; "
                if meta.get("regime") else "no declared regime (ad-hoc options); ")
    return f"Regime: {declared}regime hash `{meta['regime_hash']}`.\n"


# ----------------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: list[dict[str, Any]], budget: dict[str, int], path: Path) -> None:
    """Accuracy vs global step per method: mean over seeds, a ±1 std band; step 0 = untrained student."""
    import numpy as np

    plt = _pyplot()
    start = {r["seed"]: r["final"]["overall"] for r in runs if r["method"] == "untrained" and "error" not in r}
    fig, ax = plt.subplots(figsize=(8, 5))
    try:
        for method in METHODS:
            curves = [[{"step": 0, "overall": start[r["seed"]]}] * (r["seed"] in start) + r["curve"]
                      for r in runs if r["method"] == method and "error" not in r]
            if not curves:
                continue
            steps_ = sorted({p["step"] for c in curves for p in c})
            values = [[p["overall"] for c in curves for p in c if p["step"] == s] for s in steps_]
            mean = np.array([statistics.mean(v) for v in values])
            std = np.array([statistics.stdev(v) if len(v) > 1 else 0.0 for v in values])
            color = plt.get_cmap("tab20")(METHODS.index(method) % 20)  # one colour per method in every run's plot
            ax.plot(steps_, mean, marker="o", ms=3, color=color, label=f"{method} (n={len(curves)})")
            ax.fill_between(steps_, mean - std, mean + std, color=color, alpha=0.15)
        ax.axvline(budget["sft"], color="grey", ls=":", lw=1)
        ax.text(budget["sft"], ax.get_ylim()[1], "adversarial stages start (rmsd, sft_rl, visd, visd_rl) ", va="top",
                ha="right", fontsize=8, color="grey")
        ax.set_xlabel("optimisation step")
        ax.set_ylabel("synthvid test accuracy")
        ax.set_title("accuracy vs steps (mean over seeds, band ±1 std)")
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def plot_teachers(report: dict[str, Any], path: Path) -> None:
    """Per teacher: label-free reliability against the truth per task type, format errors, kept share."""
    import numpy as np

    plt = _pyplot()
    teachers = report.get("teachers", {})
    names = list(teachers)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [2, 1, 1]})
    try:
        closed = ("mcq", "numeric", "grounding")
        width = 0.8 / len(closed)
        for i, task in enumerate(closed):
            rel = [teachers[t].get("reliability", {}).get(task, {}) for t in names]
            est = [np.nan if r.get("estimate") is None else r["estimate"] for r in rel]
            true = [np.nan if r.get("true") is None else r["true"] for r in rel]
            pos = x - 0.4 + width * (i + 0.5)
            axes[0].bar(pos, est, width * 0.9, label=f"{task} (estimate)")
            axes[0].scatter(pos, true, marker="_", s=200, color="black", zorder=3,
                            label="true accuracy" if i == 0 else None)
        axes[0].set_title("reliability per teacher: Dawid–Skene estimate (bars) vs truth (ticks)")
        axes[0].set_ylim(0, 1.15)
        axes[0].legend(fontsize=7, ncol=4, loc="upper right")
        rates = [teachers[t].get("format_error_rate") or 0.0 for t in names]
        axes[1].bar(x, rates, 0.6, color="tab:red")
        axes[1].set_title("format-error rate")
        kept = [teachers[t].get("kept", 0) / max(teachers[t].get("samples", 1), 1) for t in names]
        axes[2].bar(x, kept, 0.6, color="tab:green")
        axes[2].set_title("share of samples kept by matching")
        for ax in axes:
            ax.set_xticks(x, names)
            ax.grid(axis="y", alpha=0.3)
        axes[1].set_ylim(0, max(0.3, max(rates, default=0) * 1.2))
        axes[2].set_ylim(0, 1)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def plot_weights(rows: list[dict[str, Any]], min_weight: float, path: Path) -> None:
    """Histogram of match weights of the format-valid samples, per task type, stacked by teacher."""
    import numpy as np

    plt = _pyplot()
    teachers = sorted({r["teacher"] for r in rows})
    edges = np.linspace(0, 1, 11)
    fig, axes = plt.subplots(1, len(TASK_TYPES), figsize=(15, 3.8))
    try:
        for ax, task in zip(axes, TASK_TYPES, strict=True):
            valid = [r for r in rows if r["task_type"] == task and r.get("format_ok") and r.get("answer") is not None]
            bottom = np.zeros(len(edges) - 1)
            for t in teachers:
                counts, _ = np.histogram([float(r["weight"]) for r in valid if r["teacher"] == t], bins=edges)
                ax.bar(edges[:-1], counts, width=np.diff(edges), bottom=bottom, align="edge", label=t,
                       edgecolor="white")
                bottom += counts
            if task != "open":
                ax.axvline(min_weight, color="black", ls="--", lw=1)
            kept = sum(bool(r["kept"]) for r in valid)
            ax.set_title(f"{task}: {kept} of {len(valid)} valid samples kept", fontsize=10)
            ax.set_xlabel("match weight")
        axes[0].set_ylabel("samples")
        axes[0].legend(fontsize=8)
        fig.suptitle("weights of the quality-matched samples (dashed: min_weight; open-ended: uniform)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
