"""Easy-to-hard curriculum over items (VISD option; off unless `curriculum.enabled`).

Difficulty of an item comes from one of two sources:
- "agreement": the teacher pool's agreement from `rmsd match` (difficulty = 1 − agreement;
  the matched dataset's `difficulty` column, which with ground truth is 1 − the pool's mean
  correctness), fixed for the run;
- "pass_rate": the student's running pass rate on the item, an EMA updated during training
  (`update(item_id, passed)`), starting from the pool's agreement when known, else 0.5.
A pacing function gives the share of the easiest items available at step s (competence-
based curriculum, Platanios et al., NAACL 2019):
    linear: c(s) = c0 + (1 − c0) · p          root: c(s) = sqrt(c0² + (1 − c0²) · p)
with p = min(1, s / (full_at · total_steps)) and c0 = `start_fraction`; every item is
available from step full_at · total_steps on. Each step's batch is drawn uniformly from the
available items, by a generator seeded with (seed, step): the same seed gives the same
order, and a resumed run that replays the steps draws the same batches.

How it differs from a sorted dataset: difficulty can change during training (pass rate),
ties are broken by a seeded permutation rather than dataset order, and `CurriculumSampler`
yields indices in TRL's `RepeatSampler` layout, so it replaces GRPO's sampler directly.

    rmsd distill --recipe recipes/synthvid/tiny_visd.yaml --set distill.adversarial.visd.curriculum.enabled=true
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from torch.utils.data import Sampler

from rmsd.errors import RmsdError

SOURCES = ("agreement", "pass_rate")
PACINGS = ("linear", "root")


def pacing_fraction(step: int, total_steps: int, start_fraction: float = 0.3, full_at: float = 0.7,
                    kind: str = "linear") -> float:
    """Share of the easiest items available at `step` (module docstring), in [start_fraction, 1]."""
    if kind not in PACINGS:
        raise RmsdError(f"curriculum.pacing must be one of {PACINGS}, got {kind!r}")
    horizon = full_at * total_steps
    progress = min(1.0, max(step, 0) / horizon) if horizon > 0 else 1.0
    if kind == "linear":
        return start_fraction + (1.0 - start_fraction) * progress
    return math.sqrt(start_fraction**2 + (1.0 - start_fraction**2) * progress)


def difficulty_from_matched(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """item_id -> difficulty from matched-dataset rows: their `difficulty`, else 1 − `agreement`."""
    out: dict[str, float] = {}
    for row in rows:
        if row["item_id"] in out:
            continue
        if row.get("difficulty") is not None:
            out[row["item_id"]] = float(row["difficulty"])
        elif row.get("agreement") is not None:
            out[row["item_id"]] = 1.0 - float(row["agreement"])
    return out


class Curriculum:
    """Ranks dataset positions easy → hard and draws each step's items from the easiest share.

    item_ids: the item of each dataset position (repeats allowed: positions of one item share
        its difficulty and pass rate).
    difficulty: item_id -> difficulty in [0, 1] from the pool; items missing from it count as
        `unknown_difficulty` (1.0: the pool had no usable sample, so hardest).
    total_steps: the number of draws (batches) the run makes; pacing reaches 1 at full_at of it.
    pass_rate_decay: β of the pass-rate EMA p ← β p + (1 − β) passed.
    """

    def __init__(self, item_ids: Sequence[str], difficulty: Mapping[str, float] | None = None, *,
                 total_steps: int, source: str = "agreement", pacing: str = "linear", start_fraction: float = 0.3,
                 full_at: float = 0.7, pass_rate_decay: float = 0.8, unknown_difficulty: float = 1.0, seed: int = 0):
        if source not in SOURCES:
            raise RmsdError(f"curriculum.source must be one of {SOURCES}, got {source!r}")
        if not item_ids:
            raise RmsdError("the curriculum has no items: the training set is empty")
        if not (0 < start_fraction <= 1 and 0 < full_at <= 1 and 0 <= pass_rate_decay < 1 and total_steps >= 1):
            raise RmsdError("curriculum needs 0 < start_fraction <= 1, 0 < full_at <= 1, 0 <= pass_rate_decay < 1 and "
                            f"total_steps >= 1; got {start_fraction}, {full_at}, {pass_rate_decay}, {total_steps}")
        pacing_fraction(0, 1, kind=pacing)  # validates the name
        self.item_ids, self.source, self.pacing = list(item_ids), source, pacing
        self.start_fraction, self.full_at, self.total_steps = start_fraction, full_at, total_steps
        self.decay, self.seed = pass_rate_decay, seed
        given = dict(difficulty or {})
        if not given and source == "agreement":
            raise RmsdError("curriculum.source=agreement needs item difficulties: run `rmsd match` and pass "
                            "the matched dataset, or use source=pass_rate")
        # no pool data (pass_rate only): every item starts at an uninformed 0.5
        self.pool_difficulty = {i: float(given.get(i, unknown_difficulty)) if given else 0.5 for i in self.item_ids}
        self.pass_rate = {i: 1.0 - d for i, d in self.pool_difficulty.items()}
        order = list(range(len(self.item_ids)))
        random.Random(f"curriculum-ties:{seed}").shuffle(order)
        self._tiebreak = {pos: rank for rank, pos in enumerate(order)}

    def __len__(self) -> int:
        return len(self.item_ids)

    def difficulty(self, item_id: str) -> float:
        """Current difficulty of `item_id` under the chosen source."""
        if self.source == "pass_rate":
            return 1.0 - self.pass_rate[item_id]
        return self.pool_difficulty[item_id]

    def update(self, item_id: str, passed: float) -> None:
        """Record a rollout's result on `item_id` (1 passed, 0 failed, or a score in [0, 1])."""
        if item_id not in self.pass_rate:
            raise KeyError(f"item {item_id!r} is not in the curriculum")
        self.pass_rate[item_id] = self.decay * self.pass_rate[item_id] + (1.0 - self.decay) * float(passed)

    def ranked(self) -> list[int]:
        """Dataset positions from easiest to hardest (ties in seeded random order)."""
        return sorted(range(len(self.item_ids)), key=lambda p: (self.difficulty(self.item_ids[p]), self._tiebreak[p]))

    def fraction(self, step: int) -> float:
        return pacing_fraction(step, self.total_steps, self.start_fraction, self.full_at, self.pacing)

    def available(self, step: int) -> list[int]:
        """Positions that may be drawn at `step`: the easiest ceil(fraction · N), at least one."""
        n = max(1, math.ceil(self.fraction(step) * len(self.item_ids) - 1e-9))
        return self.ranked()[:n]

    def draw(self, step: int, n: int) -> list[int]:
        """n positions for `step`, uniformly from the available ones (without replacement while they last)."""
        rng = random.Random(f"curriculum:{self.seed}:{step}")
        pool = self.available(step)
        out: list[int] = []
        while len(out) < n:
            out += rng.sample(pool, min(len(pool), n - len(out)))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"pass_rate": dict(self.pass_rate)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.pass_rate.update({k: float(v) for k, v in state["pass_rate"].items() if k in self.pass_rate})

    @classmethod
    def from_config(cls, cfg: Any, item_ids: Sequence[str], difficulty: Mapping[str, float] | None,
                    total_steps: int, seed: int = 0) -> Curriculum:
        """From a `rmsd.config.CurriculumConfig` (source, pacing, start_fraction, full_at)."""
        return cls(item_ids, difficulty, total_steps=total_steps, source=cfg.source, pacing=cfg.pacing,
                   start_fraction=cfg.start_fraction, full_at=cfg.full_at, seed=seed)


class CurriculumSampler(Sampler[int]):
    """Dataset indices in curriculum order, laid out as TRL's `RepeatSampler`.

    Each step draws `batch_size` distinct positions (`Curriculum.draw`); the chunk is yielded
    `repeat_count` times, each index `mini_repeat_count` times in a row (GRPO: G rollouts of
    one prompt). An epoch is `steps_per_epoch` steps (default len(curriculum) // batch_size);
    the step index runs on across epochs (`set_epoch`, or one more epoch per `__iter__`), so
    pacing follows the whole run. Pass-rate updates made while iterating take effect at the
    next chunk the loader asks for (the DataLoader may prefetch a few).
    With several processes, every process must apply the same `update`s (gather results
    first) so that all draw the same chunks.
    """

    def __init__(self, curriculum: Curriculum, batch_size: int, mini_repeat_count: int = 1, repeat_count: int = 1,
                 steps_per_epoch: int | None = None):
        if min(batch_size, mini_repeat_count, repeat_count) < 1:
            raise ValueError("batch_size, mini_repeat_count and repeat_count must be >= 1")
        self.curriculum, self.batch_size = curriculum, batch_size
        self.mini_repeat_count, self.repeat_count = mini_repeat_count, repeat_count
        self.steps_per_epoch = steps_per_epoch or max(1, len(curriculum) // batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        self.epoch += 1  # a loader that never calls set_epoch still moves on
        for i in range(self.steps_per_epoch):
            chunk = self.curriculum.draw(epoch * self.steps_per_epoch + i, self.batch_size)
            for _ in range(self.repeat_count):
                for index in chunk:
                    yield from [index] * self.mini_repeat_count

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size * self.mini_repeat_count * self.repeat_count
