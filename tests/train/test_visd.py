"""VISD in the adversarial stage: λ = 0 is TRL's update bit for bit, the teacher reads the feedback
and the student does not, the magnitudes follow δ, the EMA teacher follows and resumes, the curriculum draws."""

from __future__ import annotations

import math

import pytest
import torch
from oracles import advantage_bounds
from trainers import adversarial_trainer

from rmsd.config import VISDConfig
from rmsd.datasets import get_benchmark
from rmsd.judge.rules import RuleJudge
from rmsd.train.curriculum import Curriculum, CurriculumSampler
from rmsd.train.visd import TEACHER_DIR, StructuredSignal


def _matched(items) -> list[dict]:
    rows = []
    for it in items:
        answer = f"({it.answer})" if it.task_type == "mcq" else str(it.answer)
        rows.append({"item_id": it.item_id, "teacher": "sim", "sample_index": 0, "format_ok": True, "weight": 1.0,
                     "kept": True, "task_type": it.task_type, "agreement": 0.95 - 0.15 * len(rows),  # distinct
                     "text": f"<think>I watch the clip.</think><answer>{answer}</answer>"})
    return rows


@pytest.fixture(scope="module")
def env(make_env):
    return make_env(n=6, seed=1, matched=_matched)


def _trainer(env, out, visd: dict | None = None, curriculum: dict | None = None, **overrides):
    stage = {"reward_weights": {"discriminator": 1.0, "correctness": 1.0, "format": 0.5}, **overrides}
    signal = None
    if visd is not None:
        def signal(model, cfg):
            return StructuredSignal.from_config(VISDConfig(enabled=True, **visd), RuleJudge(), model,
                                                total_steps=cfg.max_steps)
    order = None
    if curriculum is not None:
        from rmsd.config import CurriculumConfig
        from rmsd.train.curriculum import difficulty_from_matched

        ids = list(dict.fromkeys(r["item_id"] for r in env["matched"]))
        order = Curriculum.from_config(CurriculumConfig(enabled=True, **curriculum), ids,
                                       difficulty_from_matched(env["matched"]),
                                       total_steps=stage.get("max_steps", 2))
    return adversarial_trainer(env, out, benchmark=get_benchmark("synthvid"), visd=signal, curriculum=order, **stage)


def _rollout(trainer, env):
    trainer.model.train()
    ids = list(env["items"])[:2]
    rows = [{"prompt": env["items"][i].prompt, "item_id": i} for i in ids for _ in range(trainer.num_generations)]
    return trainer._generate_and_score_completions(rows), rows


def _spy_rollout_advantages(trainer) -> dict:
    """Records the rollout-level A the signal is handed (under key "A") on each call."""
    seen = {}
    original = trainer.visd.token_advantages

    def spy(scorer, rollout, rows):
        seen["A"] = rollout["advantages"].clone()
        return original(scorer, rollout, rows)

    trainer.visd.token_advantages = spy
    return seen


def test_lambda_zero_reproduces_the_plain_update_exactly(env, tmp_path):
    from rmsd.models.processing import load_student

    start = {n: p.detach().clone() for n, p in load_student(env["student"])[0].named_parameters()}
    plain = _trainer(env, tmp_path / "plain")
    plain.train()
    visd = _trainer(env, tmp_path / "visd", visd={"lam": 0.0, "lam_schedule": "constant"})
    visd.train()
    assert visd.visd.teacher.num_updates == 2 and visd.state.global_step == 2
    assert any(k.startswith("visd/judge/") for k in visd.state.log_history[0])  # the judge and teacher ran
    reference = dict(plain.model.named_parameters())
    for name, p in visd.model.named_parameters():
        assert torch.equal(p, reference[name]), name
    vision = [n for n in start if ".visual." in n]
    assert vision and any(not torch.equal(reference[n], start[n]) for n in vision)  # and the clip was trained


def test_teacher_reads_feedback_the_student_never_sees_and_modulates_magnitudes_only(env, tmp_path):
    trainer = _trainer(env, tmp_path, visd={"lam": 1.0, "lam_schedule": "constant", "eps": 0.2})
    seen = _spy_rollout_advantages(trainer)
    rollout, rows = _rollout(trainer, env)
    tokenizer = trainer.processing_class.tokenizer
    student_prompts = tokenizer.batch_decode(rollout["prompt_ids"], skip_special_tokens=False)
    teacher_prompts = trainer.visd.last_prompts
    assert all(p is not None and "A reviewer checked" in p for p in teacher_prompts)
    for verdict, prompt in zip(trainer.visd.last_verdicts, teacher_prompts, strict=True):
        assert verdict.feedback.strip().splitlines()[0] in prompt
    assert not any("reviewer" in p or "Reference answer" in p for p in student_prompts)

    A, token_adv, mask = seen["A"], rollout["advantages"], rollout["completion_mask"].bool()
    assert token_adv.shape == mask.shape
    for n in range(A.numel()):
        got = token_adv[n][mask[n]]
        if A[n] == 0:
            assert torch.all(got == 0)
            continue
        assert torch.all(torch.sign(got) == torch.sign(A[n]))  # the direction is the rollout's alone
        low, high = advantage_bounds(float(A[n]), lam=1.0, eps=0.2)
        assert torch.all(got.abs() >= low - 1e-6) and torch.all(got.abs() <= high + 1e-6)
    assert not torch.allclose(token_adv[mask], A.unsqueeze(1).expand_as(token_adv)[mask])  # δ moved them


def test_privileged_prompt_keeps_the_rollouts_vision_placeholders(env, tmp_path):
    from rmsd.train.visd import privileged_prompts

    trainer = _trainer(env, tmp_path, visd={"lam": 0.5})
    rollout, rows = _rollout(trainer, env)
    items = [env["items"][r["item_id"]] for r in rows]
    ids, mask = privileged_prompts(trainer.rollout_scorer(), items, trainer.visd.last_prompts, rollout["prompt_ids"],
                                   rollout["prompt_mask"])
    video = trainer.accelerator.unwrap_model(trainer.model).config.video_token_id
    for n in range(len(rows)):
        assert (ids[n][mask[n].bool()] == video).sum() == (rollout["prompt_ids"][n][rollout["prompt_mask"][n].bool()]
                                                           == video).sum() > 0
    assert ids.size(1) > rollout["prompt_ids"].size(1)  # the feedback made the prompt longer


def test_ema_teacher_follows_checkpoints_and_resumes(env, tmp_path):
    start = {k: v.clone() for k, v in _trainer(env, tmp_path / "init").model.state_dict().items()}
    trainer = _trainer(env, tmp_path / "run", visd={"lam": 0.5, "ema_decay": 0.5})
    trainer.train()
    teacher = trainer.visd.teacher.model.state_dict()
    student = trainer.model.state_dict()
    name = "model.language_model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(teacher[name], start[name]) and not torch.equal(teacher[name], student[name])
    ckpt = tmp_path / "run" / "checkpoint-2" / TEACHER_DIR
    assert (ckpt / "model.safetensors").is_file()

    resumed = _trainer(env, tmp_path / "run", visd={"lam": 0.5, "ema_decay": 0.5}, max_steps=3)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert resumed.visd.teacher.num_updates == 3  # 2 restored + 1 new step

    fixed = _trainer(env, tmp_path / "fixed", visd={"lam": 0.5, "teacher": "fixed"})
    fixed.train()
    assert torch.equal(fixed.visd.teacher.model.state_dict()[name], start[name])


def test_curriculum_replaces_the_sampler_and_pass_rates_follow_the_rollouts(env, tmp_path):
    trainer = _trainer(env, tmp_path, visd={"lam": 0.5}, curriculum={"source": "pass_rate", "start_fraction": 0.5})
    assert isinstance(trainer._get_train_sampler(), CurriculumSampler)
    before = dict(trainer.curriculum.pass_rate)
    _rollout(trainer, env)
    after = trainer.curriculum.pass_rate
    moved = [i for i in after if after[i] != before[i]]
    assert moved and set(moved) <= set(list(env["items"])[:2])  # only the items that were rolled out
    trainer.train()
    assert (tmp_path / "checkpoint-2" / "curriculum.json").is_file()


def _stage(env, tmp_path, visd: dict, pool=None):
    """The adversarial trainer as `rmsd distill` builds it from a recipe's stage config."""
    from rmsd.config import AdversarialStageConfig, DatasetConfig, StudentConfig
    from rmsd.train.distill import DistillContext, build_trainer

    ctx = DistillContext(items=env["items"], matched=env["matched"], out=tmp_path,
                         dataset=DatasetConfig(benchmark="synthvid", path="-"),
                         student=StudentConfig(path=str(env["student"])), report_to=[], shared_prefix=True,
                         benchmark=get_benchmark("synthvid"), pool=pool, progress=False)
    cfg = AdversarialStageConfig(enabled=True, max_steps=2, batch_size=2, num_generations=2, max_completion_length=8,
                                 disc_warmup_steps=0, warmup_steps=0,
                                 reward_weights={"correctness": 1.0, "format": 0.5}, visd={"enabled": True, **visd})
    trainer = build_trainer("adversarial", cfg, ctx, env["student"], tmp_path / "adversarial")
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def test_recipe_builds_rules_judge_and_agreement_curriculum(env, tmp_path):
    trainer = _stage(env, tmp_path, {"judge": "rules", "curriculum": {"enabled": True, "source": "agreement"}})
    assert isinstance(trainer.visd.judge, RuleJudge) and trainer.adversary is None  # no discriminator reward
    sampler = trainer._get_train_sampler()
    first = [trainer.train_dataset[i]["item_id"] for i in list(iter(sampler))[:2 * trainer.num_generations]]
    difficulty = trainer.curriculum.pool_difficulty
    assert len(set(difficulty.values())) == len(difficulty) > 2  # distinct difficulties, so the order can be wrong
    # start_fraction 0.3: at step 0 only the easiest ceil(0.3 N) items may be drawn
    allowed = sorted(difficulty, key=difficulty.get)[: math.ceil(0.3 * len(difficulty))]
    assert set(first) <= set(allowed) and len(allowed) < len(difficulty)
    trainer.train()
    assert trainer.state.global_step == 2 and trainer.visd.teacher.num_updates == 2


def test_llm_judge_from_the_pool_and_a_malformed_verdict_falls_back_to_reward_only(env, tmp_path, caplog):
    import json

    from fake_openai import FakeOpenAIServer

    from rmsd.config.pools import PoolConfig
    from rmsd.judge.llm import LLMJudge

    good = json.dumps({"answer_correctness": 1.0, "logical_consistency": 0.5, "spatiotemporal_grounding": 0.0,
                       "feedback": "answer_correctness: right\nspatiotemporal_grounding: wrong, no time cited"})
    with FakeOpenAIServer() as server:
        pool = PoolConfig(name="judges", teachers=[{"name": "grader", "backend": "openai",
                                                    "openai": {"model": "judge", "base_url": server.url}}])
        trainer = _stage(env, tmp_path, {"judge": "llm", "judge_teacher": "grader", "lam": 1.0,
                                         "lam_schedule": "constant"}, pool=pool)
        assert isinstance(trainer.visd.judge, LLMJudge)
        server.reset(replies=[good] * 4)
        rollout, _ = _rollout(trainer, env)
        assert all(v.ok for v in trainer.visd.last_verdicts)
        assert all("no time cited" in p for p in trainer.visd.last_prompts)
        server.reset(replies=["not json"] * 40)  # every try of every rollout malformed
        seen = _spy_rollout_advantages(trainer)
        rollout, _ = _rollout(trainer, env)
        trainer.visd.judge.close()
    assert not any(v.ok for v in trainer.visd.last_verdicts)
    assert trainer._metrics["train"]["visd/judge_failed"][-1] == 1.0
    assert "this rollout gets reward-only credit" in caplog.text  # and the fallback is logged
    expected = seen["A"].unsqueeze(1).expand_as(rollout["advantages"])
    mask = rollout["completion_mask"].bool()
    assert torch.equal(rollout["advantages"][mask], expected[mask])  # reward-only credit: Â = A


def test_discriminator_warmup_does_not_ask_the_judge(env, tmp_path):
    """Warm-up steps train D alone: the judge (paid, with an LLM) and the EMA teacher's forward are skipped."""
    trainer = _trainer(env, tmp_path, visd={"lam": 0.5}, disc_warmup_steps=1, save_steps=100)
    calls = []
    judge = trainer.visd.judge.judge_many
    trainer.visd.judge.judge_many = lambda items, texts: calls.append(trainer.state.global_step) or judge(items, texts)
    trainer.train()
    assert trainer.state.global_step == 2 and calls == [1]  # step 0 was D's alone
    d_steps = [h for h in trainer.state.log_history if "discriminator/loss" in h]
    assert len(d_steps) == 2  # D trained in both steps
