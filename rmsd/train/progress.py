"""Progress of a training stage: a rich bar on a terminal, plain lines in a log.

On a terminal: one bar per stage with step / total, steps per second, time left and the
latest logged loss (and reward, discriminator pair accuracy, token accuracy). When stdout is
not a terminal (nohup, a Slurm log, CI) a bar would print nothing useful, so a plain line —
stage, step/total, the same figures, rate, ETA — is printed every `LINE_EVERY_S` seconds,
at the first step and at the last. Only the main process reports; the full logs still go to
the stage's `report_to` integrations (TensorBoard by default) and `trainer_state.json`.

Stages are labelled by what they train (`stage_label`), so the quickstart's two SFT runs
read "sft · single-sample" and "sft · multi-sample (matched)".

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched > log.txt
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from transformers import TrainerCallback

LINE_EVERY_S = 30.0  # plain-line interval in a log (a terminal gets the live bar instead)
# logged key -> what the line calls it
SHOWN = {"loss": "loss", "reward": "reward", "discriminator/accuracy": "D pair acc",
         "mean_token_accuracy": "token acc"}
_REWARD_NAMES = {"discriminator": "D", "format": "format", "correctness": "correctness"}


def stage_label(stage: str, cfg: Any) -> str:
    """What a stage trains, in a few words: its bar's and its log lines' name."""
    if stage == "sft":
        kind = "single-sample" if cfg.samples_per_item == 1 else f"multi-sample ({cfg.weighting})"
        return f"sft · {kind}"
    rewards = " + ".join(_REWARD_NAMES[r] for r in cfg.active_rewards())
    name = "adversarial" if "discriminator" in cfg.active_rewards() else "rl"
    return f"{name} · {rewards}" + (" + VISD" if cfg.visd.enabled else "")


def _figures(logs: dict[str, Any]) -> str:
    return "  ".join(f"{label} {logs[k]:.3g}" for k, label in SHOWN.items() if isinstance(logs.get(k), int | float))


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class StageProgress(TrainerCallback):
    """The stage's progress on `stream` (default stdout): a bar when it is a terminal, else plain lines."""

    def __init__(self, label: str, stream: TextIO | None = None, every_s: float = LINE_EVERY_S):
        self.label, self.stream, self.every_s = label, stream, every_s
        self.bar: Any = None
        self.task: Any = None
        self.figures = ""
        self._start_step = 0
        self._t0 = self._last_line = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if not state.is_world_process_zero:
            return
        stream = self.stream or sys.stdout
        self._start_step, self._t0, self._last_line = state.global_step, time.monotonic(), -float("inf")
        if stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                TextColumn("{task.fields[shown]}"), console=Console(file=stream))
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=state.max_steps, completed=state.global_step,
                                          rate="", shown="")

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if not state.is_world_process_zero:
            return
        if self.bar is not None:
            speed = self.bar.tasks[0].speed
            self.bar.update(self.task, completed=state.global_step, rate=f"{speed:.2f} step/s" if speed else "")
            return
        now = time.monotonic()
        first, last = state.global_step == self._start_step + 1, state.global_step >= state.max_steps
        if first or last or now - self._last_line >= self.every_s:
            self._last_line = now
            self._line(state, now)

    def _line(self, state: Any, now: float) -> None:
        done = state.global_step - self._start_step
        rate = done / max(now - self._t0, 1e-9)
        left = (state.max_steps - state.global_step) / rate if rate > 0 else 0.0
        pct = 100.0 * state.global_step / max(state.max_steps, 1)
        parts = [f"[{self.label}] step {state.global_step}/{state.max_steps} ({pct:.0f}%)", self.figures,
                 f"{rate:.2f} step/s", f"ETA {_duration(left)}"]
        print("  ".join(p for p in parts if p), file=self.stream or sys.stdout, flush=True)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
        figures = _figures(logs or {})
        if figures:
            self.figures = figures
            if self.bar is not None:
                self.bar.update(self.task, shown=figures)

    def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=state.global_step)
            self.bar.stop()
            self.bar = None
