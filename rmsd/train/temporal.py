"""The temporal contrast of the GRPO stage (Video-R1's T-GRPO): shuffled-frame rollouts and the bonus they decide.

For every item of a generation batch that has a clip and a ground truth, the policy also
answers G′ times from the item's frames in a fixed random order (`PromptCache.shuffled_prompt`:
the decoded frames come from the frame cache, only their pixels are permuted, the prompt and
the processor's timestamps are the ordered clip's). Those rollouts are scored by the same
correctness reward and then dropped: they are never trained on, so no log-prob forward (and
no shared-prefix pass) is spent on them, only their generation. The ordered rollouts'
correctness then gets the bonus of `rmsd.losses.temporal_bonus.temporal_contrast`, item by item.

The trainer (`rmsd.train.adversarial_trainer`, the seam with TRL) hands this component a
`generate(rows) -> texts` function that samples exactly as the ordered rollouts are sampled;
nothing here touches TRL. Logged per generation batch (TRL averages them per logging step
into the trainer state's log_history and TensorBoard): `temporal/ordered_accuracy`,
`temporal/shuffled_accuracy`, `temporal/bonus_fired` (share of items where p ≥ μ·p̃) and
`temporal/bonus_mean` (mean bonus per ordered rollout).

    rmsd distill --recipe recipes/synthvid/experiment_sft_rl_temporal.yaml --matched runs/synthvid-experiment/matched
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from rmsd.config import AdversarialStageConfig
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.losses.temporal_bonus import temporal_contrast
from rmsd.train.stage_inputs import PromptCache

Scores = list[float | None]


class TemporalReward:
    """Shuffled rollouts and the T-GRPO bonus for one GRPO stage.

    stage: the recipe's adversarial section (`temporal`: bonus α, ratio μ; G′ =
        `stage.shuffled_generations`; `seed` keys each item's frame order).
    items: every item the stage may name. score(texts, item_ids): the correctness reward.
    """

    def __init__(self, stage: AdversarialStageConfig, items: Mapping[str, Item],
                 score: Callable[[list[str], list[str]], Scores]):
        self.bonus, self.ratio = stage.temporal.bonus, stage.temporal.ratio
        self.generations, self.seed = stage.shuffled_generations, stage.seed
        self.items, self.score = items, score

    def eligible(self, item_id: str) -> bool:
        """Only a clip can be shuffled and only a ground truth can say an answer is correct."""
        item = self.items[item_id]
        return bool(item.video) and item.answer is not None

    def check(self, item_ids: list[str]) -> None:
        """One line when no item of the stage can take part (an unlabelled corpus, or images only)."""
        if not any(self.eligible(i) for i in item_ids):
            raise RmsdError(f"distill.adversarial.temporal needs items with a video and a ground-truth answer: none of "
                            f"the stage's {len(item_ids)} items has both (an unlabelled corpus?); turn temporal off")

    def shuffled_scores(self, item_ids: list[str], prompts: PromptCache, device: Any,
                        generate: Callable[[list[tuple[list[int], dict[str, Any]]]], list[str]]) -> dict[str, Scores]:
        """G′ correctness scores per eligible item of `item_ids`, from rollouts on its shuffled frames.

        generate(rows): one completion text per (prompt ids, vision tensors) row, sampled as the
        ordered rollouts are; an item's G′ rows share one vision dict.
        """
        ids = [i for i in dict.fromkeys(item_ids) if self.eligible(i)]
        if not ids:
            return {}
        rows, names = [], []
        for item_id in ids:
            enc = prompts.shuffled_prompt(item_id, self.seed)
            vision = {k: v.to(device) for k, v in enc.vision.items()}
            rows += [(enc.ids, vision)] * self.generations
            names += [item_id] * self.generations
        scores = self.score(generate(rows), names)
        out: dict[str, Scores] = {i: [] for i in ids}
        for item_id, s in zip(names, scores, strict=True):
            out[item_id].append(s)
        return out

    def bonuses(self, ordered: list[float], item_ids: list[str], shuffled: Mapping[str, Scores], group: int,
                log: Callable[[str, float], None]) -> list[float]:
        """The bonus of every ordered rollout; `ordered` and `item_ids` in TRL's layout (consecutive groups of
        `group` rollouts of one item; NaN: not scored). Items without shuffled scores get 0."""
        if len(ordered) != len(item_ids) or len(ordered) % group:
            raise ValueError(f"{len(ordered)} rewards for {len(item_ids)} rows in groups of {group}")
        out = [0.0] * len(ordered)
        fired, p, p_shuffled, paid = [], [], [], []
        for start in range(0, len(ordered), group):
            item_id = item_ids[start]
            if set(item_ids[start: start + group]) != {item_id}:
                raise ValueError(f"rows {start}..{start + group - 1} are not one item's group")
            if not shuffled.get(item_id):
                continue
            scores = [None if math.isnan(s) else s for s in ordered[start: start + group]]
            result = temporal_contrast(scores, shuffled[item_id], self.bonus, self.ratio)
            out[start: start + group] = result.bonuses
            fired.append(float(result.fired))
            p += [s for s in scores if s is not None]
            p_shuffled += [s for s in shuffled[item_id] if s is not None]
            paid += result.bonuses
        if fired:
            log("temporal/ordered_accuracy", _mean(p))
            log("temporal/shuffled_accuracy", _mean(p_shuffled))
            log("temporal/bonus_fired", _mean(fired))
            log("temporal/bonus_mean", _mean(paid))
        return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
