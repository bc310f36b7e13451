"""`rmsd distill` stages end to end: order, checkpoints, resume after a kill, two CPU processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from rmsd.config import AdversarialStageConfig, DatasetConfig, DistillConfig, Recipe, SFTStageConfig, StudentConfig
from rmsd.errors import RmsdError
from rmsd.pipeline import distill_recipe
from rmsd.train.distill import STAGE_FILE, DistillContext, run_stages

REPO = Path(__file__).resolve().parents[2]

# Stages run in another process; the data and student come from the test.
# kill: the adversarial stage alone, stalling after step 3 so the test can kill it mid-stage.
# ddp: stage sft through run_stages, then the adversarial trainer kept in hand, so each
#      process can report what it holds in memory (student and discriminator replicas).
SCRIPT = textwrap.dedent('''
    import hashlib, json, sys, time
    from pathlib import Path
    import torch
    from accelerate import PartialState
    from transformers import TrainerCallback
    from rmsd.config import AdversarialStageConfig, DatasetConfig, SFTStageConfig, StudentConfig
    from rmsd.datasets.synthvid import load_items
    from rmsd.train.distill import DistillContext, build_trainer, run_stages

    torch.set_num_threads(1)
    mode, root, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

    class Hang(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                time.sleep(600)

    items = {it.item_id: it for it in load_items(root / "data", split="train")}
    matched = [json.loads(line) for line in (root / "matched.jsonl").open()]
    ctx = DistillContext(items=items, matched=matched, out=out, dataset=DatasetConfig(benchmark="synthvid", path="-"),
                         student=StudentConfig(path=str(root / "student")), report_to=[], shared_prefix=True,
                         callbacks=[Hang()] if mode == "kill" else [])
    sft = SFTStageConfig(enabled=mode == "ddp", max_steps=2, batch_size=2, save_steps=2, logging_steps=1)
    adv = AdversarialStageConfig(enabled=mode == "kill", max_steps=4, batch_size=1, num_generations=2,
                                 max_completion_length=8, save_steps=2, logging_steps=1, disc_warmup_steps=1,
                                 reward_weights={"discriminator": 1.0, "format": 0.5})
    paths = run_stages(sft, adv, ctx, root / "student")
    if mode == "ddp":
        adv = adv.model_copy(update={"max_steps": 2})
        trainer = build_trainer("adversarial", adv, ctx, paths["sft"], out / "adversarial")
        trainer.train()
        def digest(params):
            h = hashlib.sha256()
            for p in params:
                h.update(p.detach().cpu().numpy().tobytes())
            return h.hexdigest()
        (out / f"rank{PartialState().process_index}.json").write_text(json.dumps({
            "student": digest(trainer.model.parameters()), "disc": digest(trainer.adversary.disc.parameters()),
            "step": trainer.state.global_step}))
''')


def _matched(items) -> list[dict]:
    rows = []
    for it in items:
        answer = f"({it.answer})" if it.task_type == "mcq" else str(it.answer)
        for idx, weight in enumerate([1.0, 0.5]):
            rows.append({"item_id": it.item_id, "teacher": "sim", "sample_index": idx, "format_ok": True,
                         "text": f"<think>Step {idx}.</think><answer>{answer}</answer>", "weight": weight,
                         "kept": True, "task_type": it.task_type})
    return rows


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from rmsd.datasets.synthvid import load_items
    from rmsd.models.offline.tiny import build_student
    from rmsd.synthvid.generator import generate

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("distill")
    generate(root / "data", n=4, seed=0)
    items = load_items(root / "data", split="train")
    build_student(root / "student", size="tiny", seed=0)
    matched = _matched(items)
    (root / "matched.jsonl").write_text("".join(json.dumps(r) + "\n" for r in matched))
    (root / "script.py").write_text(SCRIPT)
    return {"root": root, "items": {it.item_id: it for it in items}, "matched": matched}


def _ctx(env, out, resume=False) -> DistillContext:
    return DistillContext(items=env["items"], matched=env["matched"], out=out, resume=resume,
                          dataset=DatasetConfig(benchmark="synthvid", path="-"),
                          student=StudentConfig(path=str(env["root"] / "student")), report_to=["tensorboard"],
                          shared_prefix=True)


def test_recipe_stages_run_in_order_and_leave_loadable_checkpoints(env, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    sft = SFTStageConfig(max_steps=2, batch_size=2, save_steps=1, logging_steps=1)
    adv = AdversarialStageConfig(enabled=True, max_steps=2, batch_size=1, num_generations=2, max_completion_length=8,
                                 save_steps=1, logging_steps=1, disc_warmup_steps=0,
                                 reward_weights={"discriminator": 1.0, "correctness": 1.0})
    recipe = Recipe(name="t", dataset=DatasetConfig(benchmark="synthvid", path=str(env["root"] / "data")),
                    student=StudentConfig(path=str(env["root"] / "student")),
                    distill=DistillConfig(out=str(tmp_path / "unused"), sft=sft, adversarial=adv))
    paths = distill_recipe(recipe, env["root"], out=tmp_path)

    assert paths == {"sft": tmp_path / "sft", "adversarial": tmp_path / "adversarial"}
    adv_stage = json.loads((tmp_path / "adversarial" / STAGE_FILE).read_text())
    assert adv_stage["student"] == str(tmp_path / "sft") and adv_stage["global_step"] == 2
    for path in paths.values():
        AutoModelForImageTextToText.from_pretrained(path)
        AutoProcessor.from_pretrained(path)
        assert list((path / "runs").rglob("events.out.tfevents*")), "no TensorBoard log"
        card = (path / "README.md").read_text()
        assert "[None]" not in card and "huggingface.co/None" not in card  # TRL's card named no base model
        assert f"rmsd stage `{path.name}`" in card and str(env["root"] / "student") in card and "Recipe: t" in card
    assert "sft · multi-sample (matched)" in (tmp_path / "sft" / "README.md").read_text()
    assert "adversarial · D + correctness" in (tmp_path / "adversarial" / "README.md").read_text()

    stamp = (tmp_path / "sft" / STAGE_FILE).stat().st_mtime_ns
    assert distill_recipe(recipe, env["root"], out=tmp_path, resume=True) == paths
    assert (tmp_path / "sft" / STAGE_FILE).stat().st_mtime_ns == stamp  # finished stages are skipped
    with pytest.raises(RmsdError, match="--resume"):
        distill_recipe(recipe, env["root"], out=tmp_path)
    with pytest.raises(RmsdError, match="rmsd match"):
        distill_recipe(recipe, tmp_path / "nowhere", out=tmp_path / "other")


def test_killed_stage_resumes_from_its_last_checkpoint(env, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from rmsd.train.adversarial_trainer import AdversarialTrainer

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(env["root"] / "script.py"), "kill", str(env["root"]), str(out)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    ckpt = out / "adversarial" / "checkpoint-2"
    deadline = time.time() + 180
    while not (ckpt / "trainer_state.json").is_file():
        time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the stage never wrote checkpoint-2"
    time.sleep(3.0)  # step 3 runs, then the script stalls: checkpoint-2 stays the last resume point
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "adversarial" / STAGE_FILE).exists()

    restored = {}
    original = AdversarialTrainer._load_optimizer_and_scheduler

    def spy(self, checkpoint):
        original(self, checkpoint)
        restored["checkpoint"] = checkpoint
        restored["disc"] = {k: v.clone() for k, v in self.adversary.disc.state_dict().items()}

    monkeypatch.setattr(AdversarialTrainer, "_load_optimizer_and_scheduler", spy)
    sft = SFTStageConfig(enabled=False)
    adv = AdversarialStageConfig(enabled=True, max_steps=4, batch_size=1, num_generations=2, max_completion_length=8,
                                 save_steps=2, logging_steps=1, disc_warmup_steps=1,
                                 reward_weights={"discriminator": 1.0, "format": 0.5})
    ctx = _ctx(env, out, resume=True)
    ctx.report_to = []
    run_stages(sft, adv, ctx, env["root"] / "student")

    assert restored["checkpoint"] == str(ckpt)
    saved = load_file(str(ckpt / "discriminator" / "discriminator.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in restored["disc"].items())
    stage = json.loads((out / "adversarial" / STAGE_FILE).read_text())
    assert stage["global_step"] == 4 and stage["resumed_from"] == str(ckpt)


def test_two_cpu_processes_under_accelerate_launch(env, tmp_path):
    # `accelerate launch --cpu` starts ONE process (accelerate 1.15's simple launcher); the
    # torchrun-based launcher behind --multi_gpu gives two processes on gloo when no GPU is visible.
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(env["root"] / "script.py"), "ddp", str(env["root"]), str(out)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    # DDP keeps the student replicas equal; the averaged D gradients keep the D replicas equal.
    assert ranks[0] == ranks[1] and ranks[0]["step"] == 2
    assert json.loads((out / "sft" / STAGE_FILE).read_text())["global_step"] == 2
    assert (out / "adversarial" / "checkpoint-2" / "discriminator" / "discriminator.safetensors").is_file()
