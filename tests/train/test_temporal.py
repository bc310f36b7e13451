"""The temporal contrast (Video-R1's T-GRPO) in the GRPO stage: shuffled frames, the bonus, the four logged figures.

The rule itself is held to Video-R1's code in tests/losses/test_temporal.py; here: the
shuffled clip is the same decoded frames in another order with the ordered clip's prompt and
timestamps, the bonus reaches TRL's correctness column only for correct ordered rollouts, a
stage with the option trains on the tiny student of both the Qwen2.5-VL and the Qwen3.5 family
and logs ordered / shuffled accuracy, the bonus's firing share and its mean (log_history and
TensorBoard), and a recipe without ground truth is refused in one line.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from trainers import adversarial_trainer

from rmsd.errors import RmsdError
from rmsd.train.temporal import TemporalReward

FIGURES = ("temporal/ordered_accuracy", "temporal/shuffled_accuracy", "temporal/bonus_fired", "temporal/bonus_mean")
TEMPORAL = {"reward_weights": {"correctness": 1.0, "format": 0.5}, "num_generations": 2,
            "temporal": {"enabled": True, "shuffled_generations": 2}}


def _matched(items) -> list[dict]:
    return [{"item_id": it.item_id, "teacher": "sim", "sample_index": 0, "weight": 1.0, "kept": True,
             "format_ok": True, "task_type": it.task_type,
             "text": f"<think>seen</think><answer>{f'({it.answer})' if it.task_type == 'mcq' else it.answer}</answer>"}
            for it in items]


@pytest.fixture(scope="module")
def envs(make_env):
    return {family: make_env(n=4, seed=0, matched=_matched, family=family) for family in ("qwen2_5_vl", "qwen3_5")}


def _benchmark():
    from rmsd.datasets import get_benchmark

    return get_benchmark("synthvid")


def test_shuffled_frames_are_the_same_frames_reordered_with_the_same_times(envs):
    from rmsd.media.frame_cache import cache_info
    from rmsd.media.video import load_frames, shuffled_frames

    item = next(iter(envs["qwen2_5_vl"]["items"].values()))
    frames = load_frames(item.video, num_frames=8)
    shuffled, order = shuffled_frames(frames, "0:" + item.item_id)
    assert shuffled.array.shape == frames.array.shape and sorted(order) == list(range(8)) and order != list(range(8))
    assert shuffled.timestamps == frames.timestamps and shuffled.fps == frames.fps
    assert shuffled.duration == frames.duration
    assert not np.array_equal(shuffled.array, frames.array)  # the pixels really moved
    for n, src in enumerate(order):
        assert np.array_equal(shuffled.array[n], frames.array[src])
    assert shuffled_frames(frames, "0:" + item.item_id)[1] == order  # fixed per key
    assert not shuffled.array.flags.writeable and not frames.array.flags.writeable  # the cached decode untouched

    before = cache_info()
    load_frames(item.video, num_frames=8)
    assert cache_info().misses == before.misses  # the frame cache holds the decode: nothing is decoded twice


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_5"])
def test_the_shuffled_prompt_keeps_tokens_and_time_grid_and_permutes_pixels(envs, family):
    from rmsd.media.frame_cache import cache_info
    from rmsd.models.processing import load_student
    from rmsd.train.stage_inputs import PromptCache

    env = envs[family]
    _, processor = load_student(env["student"])
    cache = PromptCache(processor, env["items"])
    item_id = next(iter(env["items"]))
    ordered = cache.prompt(item_id)
    misses = cache_info().misses
    shuffled = cache.shuffled_prompt(item_id, seed=0)
    assert cache_info().misses == misses, "the shuffled clip was decoded again"
    assert shuffled.ids == ordered.ids and shuffled.types == ordered.types  # same prompt, same timestamps in text
    assert set(shuffled.vision) == set(ordered.vision)
    for key, value in ordered.vision.items():
        if key == "pixel_values_videos":
            assert value.shape == shuffled.vision[key].shape and not torch.equal(value, shuffled.vision[key])
        else:  # the grid and the time per temporal patch (Qwen2.5-VL's second_per_grid_ts) are the ordered clip's
            assert torch.equal(value, shuffled.vision[key]), key
    assert cache.shuffled_prompt(item_id, seed=0) is shuffled  # encoded once per stage


def test_the_bonus_lands_on_correct_ordered_rollouts_in_trls_correctness_column(envs, tmp_path):
    env = envs["qwen2_5_vl"]
    trainer = adversarial_trainer(env, tmp_path, benchmark=_benchmark(), **TEMPORAL)
    mcq = [it for it in env["items"].values() if it.task_type == "mcq"][:2]
    assert len(mcq) == 2
    a, b = mcq

    def answer(it, right: bool) -> str:
        letter = it.answer if right else next(x for x in "ABCD" if x != it.answer)
        return f"<think>seen</think><answer>({letter})</answer>"

    inputs = [{"prompt": it.prompt, "item_id": it.item_id} for it in (a, a, b, b)]
    texts = [answer(a, True), answer(a, False), answer(b, True), answer(b, False)]
    # a: p = 0.5 >= p̃ = 0.0, fires; b: p = 0.5 < p̃ = 1.0, does not
    trainer.model.train()
    trainer._shuffled = {a.item_id: [0.0, 0.0], b.item_id: [1.0, 1.0]}
    rewards = trainer._calculate_rewards(inputs, [x["prompt"] for x in inputs], texts, [[1]] * 4)
    col = list(trainer.stage.active_rewards()).index("correctness")
    assert rewards[:, col].tolist() == pytest.approx([1.3, 0.0, 1.0, 0.0])
    assert rewards[:, 1 - col].tolist() == [1.0] * 4  # the format reward is untouched
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items() if k.startswith("temporal/")}
    assert logged == pytest.approx({FIGURES[0]: 0.5, FIGURES[1]: 0.5, FIGURES[2]: 0.5, FIGURES[3]: 0.3 / 4})

    trainer._shuffled = None  # the option off (or eval): TRL's rewards as they are
    plain = trainer._calculate_rewards(inputs, [x["prompt"] for x in inputs], texts, [[1]] * 4)
    assert plain[:, col].tolist() == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_5"])
def test_a_stage_with_the_temporal_reward_trains_and_logs_the_four_figures(envs, tmp_path, family):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.set_num_threads(1)
    env = envs[family]
    # An untrained student is never correct, so every correctness group ties: D's reward gives the update a signal.
    trainer = adversarial_trainer(env, tmp_path, benchmark=_benchmark(), save_steps=100,
                                  trl={"report_to": ["tensorboard"]},
                                  **{**TEMPORAL, "reward_weights": {"discriminator": 1.0, **TEMPORAL["reward_weights"]}})
    generated, rollouts = [], []
    generate, score = trainer._generate_texts, trainer._generate_and_score_completions
    trainer._generate_texts = lambda rows: generated.append(rows) or generate(rows)
    trainer._generate_and_score_completions = lambda inputs: rollouts.append(out := score(inputs)) or out
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()

    # every step: 2 items x G' = 2 shuffled rollouts, one vision dict per item; the rollouts trained on are the G ordered
    assert [len(rows) for rows in generated] == [4, 4]
    assert all(rows[0][1] is rows[1][1] and rows[1][1] is not rows[2][1] for rows in generated)
    assert all(r["completion_ids"].size(0) == 2 * 2 for r in rollouts)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    for h in logs:
        assert all(0.0 <= h[k] <= 1.0 for k in FIGURES[:3]), h
        assert 0.0 <= h[FIGURES[3]] <= 0.3
    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents*")).parent))
    events.Reload()
    assert {f"train/{k}" for k in FIGURES} <= set(events.Tags()["scalars"])


def test_the_temporal_reward_composes_with_the_discriminator_and_visd(envs, tmp_path):
    """Every GRPO-based stage takes it: here D's reward and the VISD signal on top, on the same rollouts."""
    from rmsd.config import VISDConfig
    from rmsd.judge.rules import RuleJudge
    from rmsd.train.visd import StructuredSignal

    def signal(model, cfg):
        return StructuredSignal.from_config(VISDConfig(enabled=True, lam=0.5), RuleJudge(), model, total_steps=2)

    torch.set_num_threads(1)
    trainer = adversarial_trainer(envs["qwen2_5_vl"], tmp_path, benchmark=_benchmark(), visd=signal, save_steps=100,
                                  **{**TEMPORAL, "reward_weights": {"discriminator": 1.0, "correctness": 1.0,
                                                                    "format": 0.5}})
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    for key in (*FIGURES, "visd/lambda", "visd/advantage_scale", "discriminator/accuracy"):
        assert all(key in h for h in logs), key


def test_a_corpus_without_ground_truth_is_refused_in_one_line(envs, tmp_path):
    env = envs["qwen2_5_vl"]
    unlabelled = {**env, "items": {i: dataclasses.replace(it, answer=None) for i, it in env["items"].items()}}
    with pytest.raises(RmsdError, match="needs items with a video and a ground-truth answer") as err:
        adversarial_trainer(unlabelled, tmp_path, benchmark=_benchmark(), **TEMPORAL)
    assert "\n" not in str(err.value)


def test_items_without_a_clip_or_an_answer_take_no_part(envs):
    from rmsd.config import AdversarialStageConfig

    items = dict(envs["qwen2_5_vl"]["items"])
    first, second = list(items)[:2]
    items[first] = dataclasses.replace(items[first], answer=None)
    items[second] = dataclasses.replace(items[second], video=None)
    stage = AdversarialStageConfig(**{k: v for k, v in TEMPORAL.items() if k != "num_generations"}, num_generations=2)
    temporal = TemporalReward(stage, items, lambda texts, ids: [1.0] * len(texts))
    assert not temporal.eligible(first) and not temporal.eligible(second)
    assert all(temporal.eligible(i) for i in list(items)[2:])
    seen = []
    bonuses = temporal.bonuses([1.0, 1.0, 1.0, 0.0], [first, first, list(items)[2], list(items)[2]],
                               {list(items)[2]: [0.0, 0.0]}, group=2, log=lambda k, v: seen.append((k, v)))
    assert bonuses == [0.0, 0.0, 0.3, 0.0] and dict(seen)["temporal/bonus_fired"] == 1.0


def test_the_model_card_says_the_stage_used_the_temporal_reward(tmp_path):
    from rmsd.config import AdversarialStageConfig
    from rmsd.train.model_card import run_info, write_card

    info = run_info("built from config: rmsd build-student", "r", "r.yaml")
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    on = AdversarialStageConfig(num_generations=6, reward_weights={"correctness": 1.0}, temporal={"enabled": True})
    card = write_card(tmp_path / "on", info, "adversarial", "GRPO", on.model_dump(mode="json")).read_text()
    assert "Temporal reward: Video-R1's T-GRPO contrast (bonus α = 0.3" in card and "μ = 1.0" in card
    assert "3 shuffled-frame rollouts per item" in card
    off = AdversarialStageConfig(reward_weights={"correctness": 1.0})
    assert "Temporal reward" not in write_card(tmp_path / "off", info, "adversarial", "GRPO",
                                               off.model_dump(mode="json")).read_text()


DDP_SCRIPT = '''
import hashlib, json, sys
from pathlib import Path
import torch
from accelerate import PartialState
from datasets import Dataset
from rmsd.config import AdversarialStageConfig, StudentConfig
from rmsd.datasets import get_benchmark
from rmsd.datasets.synthvid import load_items
from rmsd.train.adversarial_trainer import AdversarialTrainer
from rmsd.train.distill import load_for_training
from rmsd.train.stage_inputs import StudentInputs
from rmsd.train.trl_args import RunSettings, grpo_config

torch.set_num_threads(1)
root, student, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
items = {it.item_id: it for it in load_items(root, split="train")}
cfg = AdversarialStageConfig(enabled=True, max_steps=2, batch_size=1, num_generations=2, max_completion_length=8,
                             logging_steps=1, save_steps=100, warmup_steps=0, temperature=1.0, disc_warmup_steps=0,
                             reward_weights={"correctness": 1.0, "discriminator": 1.0},
                             temporal={"enabled": True, "shuffled_generations": 2})
model, processor = load_for_training(student, StudentConfig(path=str(student)))
args = grpo_config(cfg, RunSettings(output_dir=out, device="cpu", dtype="float32", report_to=[],
                                    gradient_checkpointing=False))
from rmsd.train.discriminator import TeacherSamples
teacher = TeacherSamples.from_matched([{"item_id": i, "text": "<answer>(A)</answer>", "weight": 1.0, "kept": True}
                                       for i in items])
trainer = AdversarialTrainer(model, args, Dataset.from_list([{"prompt": it.prompt, "item_id": i}
                                                             for i, it in items.items()]),
                             processor, items, stage=cfg, teacher_samples=teacher,
                             inputs=StudentInputs(num_frames=8, max_side=None, system=None, shared_prefix=True),
                             benchmark=get_benchmark("synthvid"))
seen = []
calculate = trainer._calculate_rewards
def spy(inputs, *rest):
    rewards = calculate(inputs, *rest)
    seen.append({"local": [x["item_id"] for x in inputs], "rows": rewards.size(0),
                 "shuffled": {k: len(v) for k, v in trainer._shuffled.items()}})
    return rewards
trainer._calculate_rewards = spy
trainer.train()
h = hashlib.sha256()
for p in trainer.model.parameters():
    h.update(p.detach().numpy().tobytes())
logs = [{k: v for k, v in x.items() if k.startswith("temporal/")} for x in trainer.state.log_history if "loss" in x]
(out / f"rank{PartialState().process_index}.json").write_text(json.dumps({"seen": seen, "logs": logs,
                                                                          "student": h.hexdigest()}))
'''


def test_two_processes_pool_the_groups_before_the_rule(envs, tmp_path):
    """Under DDP each process shuffles its own items; rewards and shuffled scores are gathered first, so every
    process applies the rule to the same groups and logs the same figures."""
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "script.py").write_text(DDP_SCRIPT)
    env = envs["qwen2_5_vl"]
    root = env["root"] / "data"  # the synthvid folder make_env generated
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(tmp_path / "script.py"), str(root), str(env["student"]), str(tmp_path / "out")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr[-6000:]
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["student"] == ranks[1]["student"]  # DDP: one update from the pooled advantages
    assert ranks[0]["logs"] == ranks[1]["logs"] and len(ranks[0]["logs"]) == 2
    assert all(set(log) == set(FIGURES) for log in ranks[0]["logs"])
    for step in range(2):
        a, b = ranks[0]["seen"][step], ranks[1]["seen"][step]
        assert a["rows"] == b["rows"] == 4  # TRL's gathered rewards: 2 processes x 1 item x G = 2
        assert len(set(a["local"])) == len(set(b["local"])) == 1  # each process holds one item's group ...
        assert a["shuffled"] == b["shuffled"]  # ... and both see every item's pooled shuffled scores
        assert set(a["shuffled"]) == set(a["local"]) | set(b["local"]) and set(a["shuffled"].values()) == {2}
