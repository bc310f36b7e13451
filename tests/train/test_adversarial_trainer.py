"""Stage adversarial: video through GRPO's loss, the discriminator game, the VISD seam, checkpoints."""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch
from oracles import group_advantages
from trainers import adversarial_trainer
from transformers import TrainerCallback

from rmsd.train.adversarial_trainer import AdversarialTrainer
from rmsd.train.discriminator import STATE_FILE, WEIGHTS_FILE, Adversary, TeacherSamples
from rmsd.train.rewards import CorrectnessReward


def _matched(items) -> list[dict]:
    rows = []
    for it in items:
        answer = f"({it.answer})" if it.task_type == "mcq" else str(it.answer)
        for idx, (text, weight) in enumerate([(f"<think>I watch the clip.</think><answer>{answer}</answer>", 1.0),
                                              (f"<think>Seen.</think><answer>{answer}</answer>", 0.5)]):
            rows.append({"item_id": it.item_id, "teacher": "sim", "sample_index": idx, "text": text,
                         "format_ok": True, "weight": weight, "kept": True, "task_type": it.task_type})
    return rows


@pytest.fixture(scope="module")
def env(make_env):
    return make_env(n=4, seed=0, matched=_matched)


def _trainer(env, out, cls=AdversarialTrainer, callbacks=None, **overrides):
    return adversarial_trainer(env, out, cls=cls, callbacks=callbacks, **overrides)


D_SETTINGS = {"lr": 1e-4, "weight_decay": 0.0, "max_grad_norm": 1.0, "max_response_tokens": None,
              "rollouts_per_item": None, "system": None, "seed": 0}


def _rollout(trainer, env):
    """One generation batch as TRL's RepeatSampler hands it over: each item G times in a row."""
    trainer.model.train()
    ids = list(env["items"])[:2]
    rows = [{"prompt": env["items"][i].prompt, "item_id": i} for i in ids for _ in range(trainer.num_generations)]
    return trainer._generate_and_score_completions(rows), rows


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_vision_tower_receives_gradients_from_the_grpo_loss(env, tmp_path):
    trainer = _trainer(env, tmp_path)
    rollout, _ = _rollout(trainer, env)
    assert len(rollout["vision"]) == rollout["completion_ids"].size(0)
    assert "pixel_values_videos" in rollout["vision"][0]
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0]).unsqueeze(1)
    rollout["advantages"] = signs.expand_as(rollout["completion_mask"]).contiguous()

    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, rollout).backward()
    visual = {n: g for n, g in _grads(trainer.model).items() if n.startswith("model.visual")}
    assert visual and any(g.abs().sum() > 0 for g in visual.values()), "video did not reach the loss forward"

    # Without the carried vision tensors (stock TRL's forward) the vision tower learns nothing.
    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, {k: v for k, v in rollout.items() if k != "vision"}).backward()
    assert all(g.abs().sum() == 0 for n, g in _grads(trainer.model).items() if n.startswith("model.visual"))


def test_completion_logps_read_the_clip(env, tmp_path):
    """The helper VISD scores tokens with: same numbers as a plain forward over prompt + clip + completion."""
    from rmsd.train.adversarial_trainer import merge_vision

    trainer = _trainer(env, tmp_path)
    rollout, _ = _rollout(trainer, env)
    trainer.model.eval()
    logps = trainer.completion_logps(trainer.model, rollout)
    ids = torch.cat([rollout["prompt_ids"], rollout["completion_ids"]], 1)
    mask = torch.cat([rollout["prompt_mask"], rollout["completion_mask"]], 1)
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=mask, mm_token_type_ids=trainer.token_types(ids),
                               **merge_vision(rollout["vision"])).logits
    expected = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    t = rollout["completion_ids"].size(1)
    keep = rollout["completion_mask"].bool()
    torch.testing.assert_close(logps[keep], expected[:, -t:][keep], rtol=1e-4, atol=1e-4)
    blind = trainer.completion_logps(trainer.model, dict(rollout, vision=[{} for _ in rollout["vision"]]))
    assert not torch.allclose(blind[keep], logps[keep])  # the clip changes what the model predicts


def test_default_token_advantages_are_trls_update(env, tmp_path):
    trainer = _trainer(env, tmp_path)
    seen = {}
    default = trainer.token_advantages

    def spy(rollout, rows):
        seen["A"], seen["rows"] = rollout["advantages"].clone(), rows
        return default(rollout, rows)

    trainer.token_advantages = spy
    rollout, rows = _rollout(trainer, env)
    assert seen["A"].shape == (4,) and seen["rows"] == rows
    # TRL's rollout advantages are docs/method.md's group normalisation of the weighted reward sum.
    logged = trainer._logs["rewards"]
    total = torch.tensor(logged["discriminator"]) * 1.0 + torch.tensor(logged["format"]) * 0.5
    torch.testing.assert_close(seen["A"], group_advantages(total, trainer.num_generations))
    assert rollout["advantages"].shape == rollout["completion_mask"].shape
    assert torch.equal(rollout["advantages"][:, 0], seen["A"])

    trainer.model.zero_grad()
    loss_tokens = trainer._compute_loss(trainer.model, rollout)
    loss_tokens.backward()
    per_token = _grads(trainer.model)
    trainer.model.zero_grad()
    loss_trl = trainer._compute_loss(trainer.model, dict(rollout, advantages=seen["A"]))  # TRL's own [B] path
    loss_trl.backward()
    per_rollout = _grads(trainer.model)
    assert loss_tokens.item() == pytest.approx(loss_trl.item(), abs=1e-7)
    assert per_token.keys() == per_rollout.keys()
    for name, g in per_token.items():
        torch.testing.assert_close(g, per_rollout[name])

    # The hook's output is what the update uses: zero token advantages, zero policy gradient.
    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, dict(rollout, advantages=torch.zeros_like(rollout["advantages"]))).backward()
    assert all(g.abs().sum() == 0 for g in _grads(trainer.model).values())


class _Snapshots(TrainerCallback):
    def __init__(self, trainer_ref):
        self.trainer_ref, self.student, self.disc = trainer_ref, [], []

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer_ref[0]
        self.student.append([p.detach().clone() for p in trainer.model.parameters()])
        self.disc.append([p.detach().clone() for p in trainer.adversary.disc.parameters()])


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_warmup_trains_the_discriminator_alone_then_both_learn(env, tmp_path):
    ref = []
    snaps = _Snapshots(ref)
    trainer = _trainer(env, tmp_path, callbacks=[snaps], disc_warmup_steps=1, save_steps=100)
    ref.append(trainer)
    student0 = [p.detach().clone() for p in trainer.model.parameters()]
    disc0 = [p.detach().clone() for p in trainer.adversary.disc.parameters()]
    trainer.train()

    assert _same(snaps.student[0], student0), "the student moved during the discriminator warm-up"
    assert not _same(snaps.disc[0], disc0)
    assert not _same(snaps.student[1], student0) and not _same(snaps.disc[1], snaps.disc[0])
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all(math.isfinite(h["loss"]) for h in logs)
    for key in ("discriminator/accuracy", "discriminator/score_teacher", "discriminator/score_student",
                "rewards/discriminator/mean", "rewards/format/mean", "completions/mean_length"):
        assert all(key in h for h in logs), key
    assert 0.0 <= logs[-1]["discriminator/accuracy"] <= 1.0


def test_checkpoints_carry_the_discriminator_and_resume_restores_it(env, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "run"
    trainer = _trainer(env, out)
    trainer.train()
    trainer.save_model(str(out))
    ckpt = out / "checkpoint-1"
    assert (ckpt / "discriminator" / WEIGHTS_FILE).is_file() and (ckpt / "discriminator" / STATE_FILE).is_file()
    assert (out / "discriminator" / WEIGHTS_FILE).is_file()
    AutoModelForImageTextToText.from_pretrained(out)
    AutoProcessor.from_pretrained(out)

    fresh = _trainer(env, out)
    saved = load_file(str(ckpt / "discriminator" / WEIGHTS_FILE))
    assert not all(torch.equal(saved[n], p) for n, p in fresh.adversary.disc.state_dict().items())
    fresh.create_optimizer_and_scheduler(num_training_steps=2)
    fresh._load_optimizer_and_scheduler(str(ckpt))
    assert all(torch.equal(saved[n], p) for n, p in fresh.adversary.disc.state_dict().items())
    assert fresh.adversary.optimizer.state_dict()["state"], "the discriminator's optimizer state was not restored"


def test_shared_prompt_prefix_scores_like_whole_sequences(env):
    """Reading an item's prompt once for all its rows changes neither D's scores nor its gradients."""
    from rmsd.models.processing import encode, load_student
    from rmsd.train.discriminator import Discriminator

    model, processor = load_student(env["student"], device="cpu")
    disc = Discriminator.from_student(model)
    adversary = Adversary(disc, processor, TeacherSamples({}, {}), **D_SETTINGS)
    first, second = list(env["items"].values())[:2]
    prompts = [first.prompt] * 3 + [second.prompt] * 2
    replies = ["<think>a</think><answer>(A)</answer>", "short", "<think>it moves left, then stops</think>", "2",
               "<think>two objects</think><answer>2</answer>"]
    shared = adversary.inputs(prompts, replies)
    assert shared["prefix_ids"].size(0) == 2 and shared["input_ids"].size(0) == 5
    whole = encode(processor, prompts, None, responses=replies)
    plain = {"input_ids": whole["input_ids"], "attention_mask": whole["attention_mask"],
             "score_index": whole["attention_mask"].sum(1) - 1}
    results = []
    for inputs in (shared, plain):
        disc.zero_grad()
        with warnings.catch_warnings():  # no deprecated argument (transformers' past_key_values) on our side
            warnings.simplefilter("error", FutureWarning)
            scores = disc(**inputs)
        scores.square().sum().backward()
        results.append((scores.detach(), [p.grad.clone() for p in disc.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # float32 sums taken in another order


def test_teacher_samples_follow_match_weights_and_are_cut_to_the_student_budget(env):
    teacher = TeacherSamples.from_matched([
        {"item_id": "a", "text": "good", "weight": 0.9, "kept": True},
        {"item_id": "a", "text": "fair", "weight": 0.1, "kept": True},
        {"item_id": "a", "text": "dropped", "weight": 0.0, "kept": False},
    ])
    draws = teacher.draw(["a"] * 4000, random.Random(0))
    assert "dropped" not in draws and 0.86 < draws.count("good") / len(draws) < 0.94

    from rmsd.models.processing import load_student

    _, processor = load_student(env["student"], device="cpu")
    adversary = Adversary.__new__(Adversary)  # only the text helper is exercised
    adversary.processor, adversary.max_response_tokens = processor, 5
    long = "<think>the red square moves left and then right</think><answer>(A)</answer>"
    cut = adversary._cut([long, "ok"])
    assert len(processor.tokenizer(cut[0], add_special_tokens=False)["input_ids"]) <= 5 and cut[1] == "ok"


def test_correctness_reward_scores_with_the_benchmark(env):
    import dataclasses

    from rmsd.datasets import get_benchmark

    mcq = next(it for it in env["items"].values() if it.task_type == "mcq")
    wrong = next(letter for letter in "ABCD" if letter != mcq.answer)
    unlabelled = dataclasses.replace(mcq, item_id="no-gt", answer=None)
    reward = CorrectnessReward({mcq.item_id: mcq, "no-gt": unlabelled}, get_benchmark("synthvid"))
    texts = [f"<think>I see it.</think><answer>({mcq.answer})</answer>",
             f"<think>I see it.</think><answer>({wrong})</answer>", "no answer at all", "<answer>(A)</answer>"]
    assert reward(texts, [mcq.item_id] * 3 + ["no-gt"]) == [1.0, 0.0, 0.0, None]


def test_kl_to_a_reference_reloaded_from_the_student_path(env, tmp_path):
    trainer = _trainer(env, tmp_path, beta=0.1, save_steps=100)
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    trainer.train()
    kl = [h["kl"] for h in trainer.state.log_history if "kl" in h]
    # Step 1: policy == reference, on the same clip (a reference blind to the video would differ already).
    assert len(kl) == 2 and abs(kl[0]) < 1e-6 and kl[1] > 0 and math.isfinite(kl[1])


def test_discriminator_trains_on_a_subset_of_rollouts_and_scores_them_all(env):
    """rollouts_per_item = m: D's step equals a step on m rollouts per item; every rollout is still scored."""
    import copy

    from rmsd.models.processing import load_student
    from rmsd.train.discriminator import Discriminator

    model, processor = load_student(env["student"], device="cpu")
    teacher = TeacherSamples.from_matched(env["matched"])
    first, second = list(env["items"].values())[:2]
    prompts = [first.prompt] * 3 + [second.prompt] * 3
    ids = [first.item_id] * 3 + [second.item_id] * 3
    rollouts = ["<think>a</think><answer>(A)</answer>", "left", "<think>it stops</think>", "2", "<answer>3</answer>",
                "<think>two objects</think><answer>2</answer>"]
    disc = Discriminator.from_student(model)
    sub = Adversary(disc, processor, teacher, **{**D_SETTINGS, "lr": 1e-2, "rollouts_per_item": 1, "seed": 3})
    ref = Adversary(copy.deepcopy(disc), processor, teacher, **{**D_SETTINGS, "lr": 1e-2, "seed": 3})
    before = sub.score(prompts, rollouts)
    chosen: list[int] = []
    pick = sub._trained_rows
    sub._trained_rows = lambda *a: chosen.extend(pick(*a)) or chosen
    scores, metrics = sub.step(prompts, rollouts, ids)
    torch.testing.assert_close(scores, before, rtol=1e-5, atol=1e-5)  # the reward: every rollout, pre-step D
    assert len(chosen) == 2 and {ids[n] for n in chosen} == {first.item_id, second.item_id}
    assert set(metrics) == {"loss", "accuracy", "score_teacher", "score_student"}
    ref.step([prompts[n] for n in chosen], [rollouts[n] for n in chosen], [ids[n] for n in chosen])
    for a, b in zip(sub.disc.parameters(), ref.disc.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    fresh = Discriminator.from_student(model)  # seeded: the D both started from
    assert any(not torch.allclose(a, b) for a, b in zip(sub.disc.parameters(), fresh.parameters(), strict=True))  # the step did change D (so the equality above can fail)
    from pydantic import ValidationError

    from rmsd.config import AdversarialStageConfig

    with pytest.raises(ValidationError, match="disc_rollouts_per_item"):
        AdversarialStageConfig(disc_rollouts_per_item=0)
