"""The pre-trained base (rmsd.models.offline.pretrain): drills that are right, held-out question kinds, a real
from_pretrained folder out of a few real training steps, and the CLI flag."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from typer.testing import CliRunner

from rmsd.cli import app
from rmsd.errors import RmsdError
from rmsd.models.offline.pretrain import MAKERS, PretrainConfig, build_pretrained, drill, stream
from rmsd.models.processing import load_student
from rmsd.synthvid.generator import build_items

OPTION = re.compile(r"^- (.+) \(([A-F])\)$", re.M)


def test_drills_name_the_letter_of_the_value_they_state():
    rng = random.Random(1)
    mcq = 0
    for _ in range(300):
        ex = drill(rng)
        think, answer = re.fullmatch(r"<think>(.+)</think><answer>(.+)</answer>", ex.response).groups()
        options = {letter: value for value, letter in OPTION.findall(ex.prompt)}
        if options:
            mcq += 1
            letter = answer.strip("()")
            assert letter in options and f"({letter})" in think
            stated = [v for v in options.values() if re.search(rf"\b{re.escape(v)}\b", think.split(" So ")[0]
                                                                 .split(" Therefore ")[0].split(" The correct")[0])]
            assert stated == [options[letter]], (ex.prompt, ex.response)  # one option stated, and it is the answer
        else:
            assert re.fullmatch(r"\d+|\[\d+\.\d, \d+\.\d\]", answer)
    assert mcq > 150


def test_pretraining_holds_out_the_distillation_question_kinds():
    """No pre-training prompt asks one of synthvid's questions (the distillation's kinds)."""
    splits = build_items(300, seed=4)
    questions = {it.question for it in splits["train"] + splits["test"]}
    videos = splits["train"][:20]
    config = PretrainConfig(batch_size=64, mix={k: 1.0 for k in MAKERS})
    batches = stream(config, videos)
    prompts = [ex.prompt for _ in range(5) for ex in next(batches)]
    assert {ex.split("\n")[0] for ex in prompts}.isdisjoint(questions)
    assert not any(q in p for q in questions for p in prompts)


def test_bad_mix_is_one_clear_error():
    with pytest.raises(RmsdError, match="mix"):
        PretrainConfig(mix={"drill": 1.0, "gossip": 1.0})


def test_build_pretrained_writes_a_trained_checkpoint(tmp_path):
    torch.set_num_threads(1)
    config = PretrainConfig(steps=3, batch_size=4, videos=4, mix={"drill": 1.0, "caption": 1.0, "shape": 1.0})
    out = build_pretrained(tmp_path / "base", seed=0, config=config, cache=tmp_path / "cache", log=None)
    record = json.loads((out / "pretrain.json").read_text())
    assert record["steps"] == 3 and record["config"]["mix"] == config.mix and "colour" in record["held_out_kinds"]
    model, processor = load_student(out)
    from rmsd.models.offline.pretrain import drill_corpus
    from rmsd.models.offline.tiny import build_student, default_corpus

    fresh, _ = load_student(build_student(tmp_path / "fresh", seed=0, corpus=default_corpus() + drill_corpus()))
    moved = [not torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters(), strict=True)]
    assert sum(moved) > len(moved) // 2  # the steps trained it; same init otherwise
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cli_pretrain_flag(tmp_path):
    result = CliRunner().invoke(app, ["build-student", "--out", str(tmp_path / "b"), "--pretrain",
                                      "--pretrain-steps", "2", "--pretrain-videos", "3", "--seed", "2"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "b" / "pretrain.json").read_text())
    assert record["steps"] == 2 and record["seed"] == 2 and record["config"]["videos"] == 3
    assert "wrote a pre-trained tiny student" in result.output


def test_the_shipped_base_is_copied_only_for_its_own_recipe(tmp_path, monkeypatch):
    import rmsd.models.offline.pretrain as pretrain

    config = PretrainConfig(steps=2, batch_size=2, videos=2, mix={"drill": 1.0})
    shipped = build_pretrained(tmp_path / "shipped", seed=0, config=config, cache=tmp_path / "cache", log=None)
    monkeypatch.setattr(pretrain, "SHIPPED", shipped)
    copied = pretrain.pretrained_base(tmp_path / "copy", seed=0, config=config, log=None)
    assert (copied / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()
    assert not pretrain.shipped_matches("tiny", 1, config)  # another seed, another recipe: trained anew
    assert not pretrain.shipped_matches("tiny", 0, PretrainConfig(steps=3, batch_size=2, videos=2, mix={"drill": 1.0}))
    retrained = pretrain.pretrained_base(tmp_path / "again", seed=0, config=config, cache=tmp_path / "cache",
                                         rebuild=True, log=None)
    assert json.loads((retrained / "pretrain.json").read_text())["steps"] == 2


# ----------------------------------------------------------------------------- the shipped base
def test_the_shipped_base_is_the_default_recipes_result_and_says_how_it_was_built():
    from rmsd.models.offline.pretrain import SHIPPED, shipped_matches

    record = json.loads((SHIPPED / "pretrain.json").read_text())
    assert shipped_matches("tiny", 0, PretrainConfig())  # `rmsd build-student --pretrain` copies it
    assert record["steps"] == PretrainConfig().steps and record["caption_split_seed"] == 9001
    assert record["command"].startswith("rmsd build-student --out OUT --pretrain")
    assert {"torch", "transformers", "python", "threads"} <= set(record) and record["seconds"] > 0
    losses = record["loss_every_100"]
    assert len(losses) == record["steps"] // 100 and losses[-1] < losses[0] / 2  # it learnt
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) <= 16 * 2**20  # package data stays small


def test_the_shipped_base_loads_offline_and_answers_in_format(tmp_path, monkeypatch):
    """The weights load from the package folder with the hub unreachable, and the base writes the teachers'
    reply format on distillation questions it never saw (their kinds are held out of pre-training)."""
    from rmsd.datasets.synthvid import load_items
    from rmsd.media.video import load_frames
    from rmsd.models.offline.pretrain import SHIPPED
    from rmsd.models.processing import generate as answer
    from rmsd.synthvid.generator import generate

    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    generate(tmp_path / "data", n=16, seed=77)
    items = load_items(tmp_path / "data", split="train")[:12]
    model, processor = load_student(SHIPPED)
    replies = answer(model, processor, [it.prompt for it in items], [load_frames(it.video) for it in items],
                     max_new_tokens=96)
    formatted = [r[0] for r in replies if re.fullmatch(r"<think>.+</think><answer>.+</answer>", r[0].strip(), re.S)]
    assert len(formatted) >= 10, replies


def test_the_pretraining_videos_are_no_test_item_of_the_experiments_or_the_quickstart():
    """The caption split (its own synthvid seed) shares no scene with a test item of any experiment regime or of the
    quickstart: nothing the base saw is scored. With a training split it may share a one-object scene, which lies on
    the generator's coarse grid (v4's 8,400 items share 3 of their 4,441 scenes, all training ones), never a scene
    of more than one object."""
    import inspect

    import regimes

    from rmsd.models.offline.pretrain import PRETRAIN_DATA_SEED
    from rmsd.quickstart import run_quickstart

    def scenes(n: int, seed: int, test_fraction: float = 0.2) -> dict[str, set[str]]:
        splits = build_items(n, seed, test_fraction)
        return {split: {json.dumps(it.meta["objects"], sort_keys=True) for it in items}
                for split, items in splits.items()}

    pretraining = scenes(2 * PretrainConfig().videos, PRETRAIN_DATA_SEED, test_fraction=0.0)["train"]
    quickstart = inspect.signature(run_quickstart).parameters
    used = {(r["n"], regimes.DATA_SEED) for r in regimes.REGIMES.values()}
    used.add((quickstart["n"].default, quickstart["seed"].default))
    for n, seed in sorted(used):
        assert seed != PRETRAIN_DATA_SEED
        theirs = scenes(n, seed)
        assert pretraining.isdisjoint(theirs["test"]), (n, seed)
        shared = pretraining & theirs["train"]
        assert all(len(json.loads(scene)) == 1 for scene in shared), (n, seed)
