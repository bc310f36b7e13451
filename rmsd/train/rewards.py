"""The adversarial stage's verifiable rewards, as TRL reward functions (the discriminator's is `Adversary`).

Each is called by `trl.GRPOTrainer` with the rollouts' texts and the dataset columns
(`item_id`) and returns one float per rollout; `None` leaves a rollout out of its group's
baseline (TRL gives it advantage 0). They only score: nothing here trains.

    rmsd distill --recipe recipes/synthvid/experiment_sft_rl.yaml --matched runs/reproduce/matched
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rmsd.datasets.benchmark import Benchmark
from rmsd.items import Item


class FormatReward:
    """1 when a rollout follows `<think>…</think><answer>…</answer>`, else 0."""

    __name__ = "format"

    def __call__(self, completions: list[str], **_: Any) -> list[float]:
        from rmsd.scoring import format_ok

        return [float(format_ok(c)) for c in completions]


class CorrectnessReward:
    """The benchmark's own score of the strictly extracted answer against the item's ground truth."""

    __name__ = "correctness"

    def __init__(self, items: Mapping[str, Item], benchmark: Benchmark):
        self.items = items
        self.benchmark = benchmark

    def __call__(self, completions: list[str], item_id: list[str], **_: Any) -> list[float | None]:
        out: list[float | None] = []
        for text, iid in zip(completions, item_id, strict=True):
            item = self.items[iid]
            # No ground truth: None, which TRL leaves out of the group baseline (advantage 0).
            out.append(None if item.answer is None else
                       float(self.benchmark.score(self.benchmark.extract(text, item, mode="strict"), item)))
        return out
