"""VISD vs plain GRPO: optimisation steps to reach a target training reward (issue 6).

Reads the per-step training logs that `benchmarks/reproduce.py` records for the adversarial
stage (`train_log`: TRL's `rewards/correctness/mean` of each step's rollouts) and compares
a baseline method with its VISD counterpart — same start (the shared SFT stage), same
rewards, same seeds, same steps; only `distill.adversarial.visd.enabled` differs:
`sft_rl` vs `visd_rl` (the paper's setting, verifiable rewards only, the recipes' RL lr
2e-5) and `sft_rl_2e4` vs `visd_rl_2e4` (the same at lr 2e-4, where GRPO moves the reward
within the stage). rmsd and visd log no correctness reward (theirs is the discriminator's
score); their test accuracy is in reproduce.md's table.

Target: the reward the baseline *ends* at — the mean over seeds of its last `window`
steps — fixed before either curve is searched, so neither method picks its own bar. A
run's steps-to-target is the last step of the first full `window` whose mean reaches the
target (None when none does). Each run's gain (mean of its last `window` steps minus its
first) is reported beside it: when the baseline gains nothing, every run "reaches" its
final reward at once and the step count says nothing. The paper reports VISD needing
about half the steps of GRPO; this reports what we measure.

    python benchmarks/reproduce.py --methods sft_rl visd_rl --seeds 0 1 2   (writes the section)
    python benchmarks/reproduce.py --methods sft_rl_2e4 visd_rl_2e4 --seeds 0 1 2 --points 5 \
        --results benchmarks/results/visd_lr2e-4     (reuses the SFT stages of the main run)
"""

from __future__ import annotations

import statistics
from typing import Any

PAIRS = (("sft_rl", "visd_rl"), ("sft_rl_2e4", "visd_rl_2e4"))
METRIC = "rewards/correctness/mean"
WINDOW = 5


def reward_curve(run: dict[str, Any], metric: str = METRIC) -> list[tuple[int, float]]:
    """(stage step, value) of the adversarial stage's logged metric, in step order."""
    return sorted((p["step"], float(p[metric])) for p in run.get("train_log", []) if p.get(metric) is not None)


def running_mean(values: list[float], window: int) -> list[float]:
    """Mean of the last `window` values (fewer at the start) at each position."""
    return [statistics.mean(values[max(0, i + 1 - window): i + 1]) for i in range(len(values))]


def steps_to(curve: list[tuple[int, float]], target: float, window: int) -> int | None:
    """Last step of the first full window of `window` steps whose mean reaches `target`."""
    smooth = running_mean([v for _, v in curve], window)
    return next((step for n, ((step, _), s) in enumerate(zip(curve, smooth, strict=True))
                 if n + 1 >= window and s >= target - 1e-12), None)


def gain(curve: list[tuple[int, float]], window: int) -> float:
    """Mean of the last `window` values minus the mean of the first `window`."""
    values = [v for _, v in curve]
    return statistics.mean(values[-window:]) - statistics.mean(values[:window])


def compare(runs: list[dict[str, Any]], base: str, visd: str, window: int = WINDOW) -> dict[str, Any] | None:
    """Steps to the baseline's final reward for both methods, per seed; None without both methods' logs."""
    curves = {m: {r["seed"]: reward_curve(r) for r in runs if r.get("method") == m and reward_curve(r)}
              for m in (base, visd)}
    seeds = sorted(set(curves[base]) & set(curves[visd]))
    if not seeds:
        return None
    target = statistics.mean(statistics.mean(v for _, v in curves[base][s][-window:]) for s in seeds)
    rows = [{"seed": s, base: steps_to(curves[base][s], target, window),
             visd: steps_to(curves[visd][s], target, window),
             f"{base}_final": statistics.mean(v for _, v in curves[base][s][-window:]),
             f"{visd}_final": statistics.mean(v for _, v in curves[visd][s][-window:]),
             f"{base}_gain": gain(curves[base][s], window), f"{visd}_gain": gain(curves[visd][s], window)}
            for s in seeds]
    return {"base": base, "visd": visd, "metric": METRIC, "window": window, "target": target, "rows": rows,
            "steps": len(curves[base][seeds[0]])}


def markdown(result: dict[str, Any]) -> str:
    base, visd = result["base"], result["visd"]

    def cell(x: int | None, total: int) -> str:
        return f"{x}" if x is not None else f"not in {total}"

    lines = [f"### {visd} vs {base}: steps to {base}'s final training reward",
             "",
             f"Target: `{result['metric']}` = {result['target']:.3f}, the mean of {base}'s last {result['window']} "
             f"steps over seeds; a run reaches it when its running mean over {result['window']} steps does. "
             f"Stage length: {result['steps']} steps.",
             "",
             f"| seed | {base} steps | {visd} steps | {base} final | {visd} final | {base} gain | {visd} gain |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['seed']} | {cell(r[base], result['steps'])} | {cell(r[visd], result['steps'])} | "
                     f"{r[f'{base}_final']:.3f} | {r[f'{visd}_final']:.3f} | {r[f'{base}_gain']:+.3f} | "
                     f"{r[f'{visd}_gain']:+.3f} |")
    reached = [(r[base], r[visd]) for r in result["rows"] if r[base] is not None and r[visd] is not None]
    if reached:
        ratio = statistics.mean(v / b for b, v in reached if b > 0) if all(b > 0 for b, _ in reached) else None
        lines += ["", f"Seeds where both reached it: {len(reached)} of {len(result['rows'])}"
                  + (f"; mean ratio {visd}/{base} steps = {ratio:.2f}." if ratio is not None else ".")]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Any, window: int = WINDOW) -> bool:
    """Running-mean training reward per step, one line per (method, seed) of every pair present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(b, v) for b, v in PAIRS if any(r.get("method") == b and reward_curve(r) for r in runs)
               and any(r.get("method") == v and reward_curve(r) for r in runs)]
    if not present:
        return False
    fig, axes = plt.subplots(1, len(present), figsize=(6 * len(present), 4), squeeze=False)
    for ax, pair in zip(axes[0], present, strict=True):
        for method, colour in zip(pair, ("tab:blue", "tab:red"), strict=True):
            for n, r in enumerate(r for r in runs if r.get("method") == method and reward_curve(r)):
                curve = reward_curve(r)
                ax.plot([s for s, _ in curve], running_mean([v for _, v in curve], window), color=colour,
                        alpha=0.8, label=method if n == 0 else None)
        ax.set_xlabel("adversarial-stage step")
        ax.set_ylabel(f"correctness reward (running mean, {window} steps)")
        ax.set_title(f"{pair[1]} vs {pair[0]}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
