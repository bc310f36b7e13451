"""A rich progress bar for a training stage, in place of transformers' printed log dicts.

Shows step / total, steps per second, time left and the latest logged loss (and reward, for
the adversarial stage). Only the main process draws; the full logs still go to the stage's
`report_to` integrations (TensorBoard by default) and to `trainer_state.json`.

    rmsd distill --recipe recipes/synthvid/tiny_rmsd.yaml --matched runs/synthvid-tiny-rmsd/matched
"""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback

SHOWN = ("loss", "reward", "discriminator/accuracy", "mean_token_accuracy")


class RichProgress(TrainerCallback):
    """One bar per stage; `stage` names it."""

    def __init__(self, stage: str):
        self.stage = stage
        self.progress: Progress | None = None
        self.task: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.progress = Progress(TextColumn(f"[bold]{self.stage}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[shown]}"))
        self.progress.start()
        self.task = self.progress.add_task(self.stage, total=state.max_steps, completed=state.global_step,
                                           rate="", shown="")

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.progress is not None:
            speed = self.progress.tasks[0].speed
            self.progress.update(self.task, completed=state.global_step,
                                 rate=f"{speed:.2f} step/s" if speed else "")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
        if self.progress is None or not logs:
            return
        shown = "  ".join(f"{k.split('/')[-1]} {logs[k]:.3g}" for k in SHOWN if isinstance(logs.get(k), (int, float)))
        if shown:
            self.progress.update(self.task, shown=shown)

    def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None
