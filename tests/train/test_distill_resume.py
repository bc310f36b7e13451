"""`rmsd distill --resume` answers the recipe asked for: a finished stage trained with another `max_steps` or `lr`
is trained again (saying why), never reported as the result; checkpoints of another configuration are not
resumed; and a resumed stage continues from its checkpoint's weights, ending where an uninterrupted run ends."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from run_recipes import tiny_recipe
from safetensors.torch import load_file
from typer.testing import CliRunner

from rmsd.cli import app
from rmsd.config import load_recipe
from rmsd.pipeline import match_recipe, sample_recipe
from rmsd.synthvid.generator import generate


@pytest.fixture(scope="module")
def matched(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("resume")
    generate(folder / "data", n=20, seed=0, frame_size=56)
    path = tiny_recipe(folder)
    recipe = load_recipe(path)
    sample_recipe(recipe, progress=False)
    match_recipe(recipe, recipe.sampling.out)
    return path, recipe.matching.out, folder


def distill(recipe, matched, out, *args):
    result = CliRunner().invoke(app, ["distill", "--recipe", str(recipe), "--matched", str(matched), "--out",
                                      str(out), *args])
    assert result.exit_code == 0, result.output
    return result.output


def stage(out):
    return json.loads((out / "sft" / "stage.json").read_text())


def weights(out):
    return load_file(str(out / "sft" / "model.safetensors"))


def test_a_finished_stage_with_another_max_steps_or_lr_is_trained_again(matched, tmp_path):
    torch.set_num_threads(1)
    recipe, matched_dir, _ = matched
    out = tmp_path / "run"
    distill(recipe, matched_dir, out)
    assert stage(out)["global_step"] == 2
    before = weights(out)

    said = distill(recipe, matched_dir, out, "--resume", "--set", "distill.sft.max_steps=4",
                   "--set", "distill.sft.lr=5e-4")
    assert stage(out)["global_step"] == 4 and stage(out)["config"]["lr"] == 5e-4  # not the 2-step, lr 1e-3 model
    assert "training again" in said and "distill.sft.max_steps 2 -> 4" in said and "distill.sft.lr 0.001 -> 0.0005" in said

    four_steps = weights(out)
    said = distill(recipe, matched_dir, out, "--resume", "--set", "distill.sft.max_steps=4")  # lr alone differs
    assert "distill.sft.lr 0.0005 -> 0.001" in said and stage(out)["config"]["lr"] == 1e-3
    assert any(not torch.equal(four_steps[k], v) for k, v in weights(out).items())
    assert any(not torch.equal(before[k], v) for k, v in weights(out).items())

    mtime = (out / "sft" / "stage.json").stat().st_mtime_ns
    said = distill(recipe, matched_dir, out, "--resume", "--set", "distill.sft.max_steps=4")  # same inputs
    assert "up to date" in said and (out / "sft" / "stage.json").stat().st_mtime_ns == mtime

    # another recipe resuming into this folder with other inputs is refused, the folder left as it is
    result = CliRunner().invoke(app, ["distill", "--recipe", str(recipe), "--matched", str(matched_dir), "--out",
                                      str(out), "--resume", "--set", "name=other-recipe", "--set", "distill.sft.lr=0.01"])
    assert result.exit_code == 2 and "holds recipe tiny-run's sft stage" in result.stderr
    assert (out / "sft" / "stage.json").stat().st_mtime_ns == mtime


def test_checkpoints_resume_only_with_their_inputs_and_restore_the_weights(matched, tmp_path):
    torch.set_num_threads(1)
    recipe, matched_dir, _ = matched
    full = tmp_path / "full"
    distill(recipe, matched_dir, full, "--set", "distill.sft.max_steps=4")  # checkpoints at steps 2 and 4
    uninterrupted = weights(full)

    cut = tmp_path / "cut"  # the same run cut after step 2: its checkpoint-2 and fingerprint, no end
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "sft" / "checkpoint-4")
    for name in ("stage.json", "model.safetensors"):
        (cut / "sft" / name).unlink()
    said = distill(recipe, matched_dir, cut, "--resume", "--set", "distill.sft.max_steps=4")
    assert "resuming from" in said and stage(cut)["resumed_from"].endswith("checkpoint-2")
    resumed = weights(cut)
    assert all(torch.equal(uninterrupted[k], v) for k, v in resumed.items())  # bit for bit, on one thread

    other = tmp_path / "other"  # the same cut, resumed with another lr: its checkpoints are not this run's
    shutil.copytree(full, other)
    shutil.rmtree(other / "sft" / "checkpoint-4")
    (other / "sft" / "stage.json").unlink()
    said = distill(recipe, matched_dir, other, "--resume", "--set", "distill.sft.max_steps=4",
                   "--set", "distill.sft.lr=5e-4")
    assert "checkpoints were made with other inputs: distill.sft.lr 0.001 -> 0.0005" in said
    assert stage(other)["resumed_from"] is None and stage(other)["global_step"] == 4


def test_a_cut_adversarial_stage_resumes_to_the_same_weights(matched, tmp_path):
    """GRPO against the discriminator: rollouts draw from the RNG, so the checkpoint's RNG, optimizer and
    discriminator states must all come back for the resumed stage to end where the uninterrupted one does."""
    torch.set_num_threads(1)
    recipe, matched_dir, _ = matched
    adversarial = ["--set", "distill.adversarial.enabled=true", "--set", "distill.adversarial.max_steps=4",
                   "--set", "distill.adversarial.save_steps=2"]
    full = tmp_path / "full"
    distill(recipe, matched_dir, full, *adversarial)
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "adversarial" / "checkpoint-4")
    for name in ("stage.json", "model.safetensors"):
        (cut / "adversarial" / name).unlink()
    said = distill(recipe, matched_dir, cut, "--resume", *adversarial)
    assert "sft: up to date" in said and "adversarial: resuming from" in said
    ours, theirs = (load_file(str(r / "adversarial" / "model.safetensors")) for r in (cut, full))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_stage_trained_again_keeps_its_judge_verdicts(tmp_path):
    """Clearing a stale stage folder keeps the LLM judge's cache (verdicts keyed by content, paid for)."""
    from rmsd.train.resume import clear_stage

    out = tmp_path / "adversarial"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "stage.json").write_text("{}")
    (out / "judge_cache.jsonl").write_text('{"judge": "llm:t", "key": "k", "verdict": {}}\n')
    clear_stage(out)
    assert sorted(p.name for p in out.iterdir()) == ["judge_cache.jsonl"]
    assert (out / "judge_cache.jsonl").read_text().startswith('{"judge": "llm:t"')
    assert not list(tmp_path.glob(".*"))  # nothing left aside
