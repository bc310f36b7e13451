"""Stage sft: the multi-sample weighted loss on video, smoke-trained on synthvid with the tiny student."""

from __future__ import annotations

import math

import pytest
import torch
from trainers import sft_trainer

from rmsd.train.collate import MultiSampleCollator, item_vision, merge_vision
from rmsd.train.sft_trainer import sft_rows


def _matched(items) -> list[dict]:
    """Two kept samples per item with different weights, and one dropped sample."""
    rows = []
    for it in items:
        answer = f"({it.answer})" if it.task_type == "mcq" else str(it.answer)
        for idx, (text, weight, kept) in enumerate([
            (f"<think>I watch the clip.</think><answer>{answer}</answer>", 1.0, True),
            (f"<think>Seen it.</think><answer>{answer}</answer>", 0.25, True),
            ("<think>a guess</think><answer>(Z)</answer>", 0.0, False),
        ]):
            rows.append({"item_id": it.item_id, "teacher": "sim", "sample_index": idx, "text": text,
                         "format_ok": True, "weight": weight, "kept": kept, "task_type": it.task_type})
    return rows


@pytest.fixture(scope="module")
def env(make_env):
    return make_env(n=6, seed=0, matched=_matched)


def _trainer(env, out, **overrides):
    return sft_trainer(env, out, **overrides)


def test_loss_is_the_per_item_weighted_mean_of_sample_nlls(env, tmp_path):
    """The fused-head loss equals docs/method.md's formula computed by hand from full logits."""
    trainer = _trainer(env, tmp_path / "loss")
    rows = sft_rows(env["matched"], None, "matched")[:2]
    batch = MultiSampleCollator(trainer.processing_class, env["items"], max_length=256)(rows)
    model = trainer.model
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        text = {k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
        logits = model(**text, **merge_vision(item_vision(batch))).logits  # one whole sequence per sample
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    seq_nll = -(logp * mask).sum(1) / mask.sum(1)
    w, idx = batch["weights"], batch["item_index"]
    expected = sum(
        (w[idx == i] / w[idx == i].sum() * seq_nll[idx == i]).sum() for i in range(len(rows))
    ) / len(rows)
    assert idx.tolist() == [0, 0, 1, 1] and w.tolist() == [1.0, 0.25, 1.0, 0.25]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_smoke_train_updates_vision_and_checkpoints_reload(env, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    trainer = _trainer(env, tmp_path / "run")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    trainer.save_model(str(tmp_path / "run"))

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert any(n.startswith("model.visual") for n in changed), "the vision tower got no gradient"
    assert any("language_model" in n for n in changed)
    assert [h["samples_per_item"] for h in trainer.state.log_history if "samples_per_item" in h][0] == 2.0

    for folder in (tmp_path / "run", tmp_path / "run" / "checkpoint-2"):
        reloaded = AutoModelForImageTextToText.from_pretrained(folder)
        AutoProcessor.from_pretrained(folder)
        if folder.name == "run":
            for n, p in reloaded.named_parameters():
                assert torch.equal(p, dict(trainer.model.named_parameters())[n].detach())


def test_single_sample_baseline_trains_on_one_sequence_per_item(env, tmp_path):
    trainer = _trainer(env, tmp_path / "single", samples_per_item=1, weighting="uniform", max_steps=1)
    trainer.train()
    spi = [h["samples_per_item"] for h in trainer.state.log_history if "samples_per_item" in h]
    assert spi == [1.0]


def test_config_validates_and_forces_collation_settings(tmp_path):
    from pydantic import ValidationError

    from rmsd.config import SFTStageConfig
    from rmsd.train.trl_args import RunSettings, sft_config

    cfg = sft_config(SFTStageConfig(), RunSettings(output_dir=tmp_path, device="cpu", dtype="float32", report_to=[],
                                                   gradient_checkpointing=False))
    assert cfg.dataset_kwargs["skip_prepare_dataset"] and cfg.remove_unused_columns is False
    with pytest.raises(ValidationError, match="weighting"):
        SFTStageConfig(weighting="best")
    with pytest.raises(ValidationError, match="samples_per_item"):
        SFTStageConfig(samples_per_item=0)


def test_cached_prompts_give_the_same_loss_and_step(env, tmp_path):
    """The SFT stage's prompt cache changes no number: the same loss, and the same weights after two steps."""
    rows = sft_rows(env["matched"], None, "matched")
    trained = []
    for cache in (False, True):
        trainer = _trainer(env, tmp_path / f"cache{cache}", max_steps=2, save_steps=10)
        trainer.data_collator.cache = cache
        batch = trainer.data_collator(rows[:3])
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, dict(batch))
        trainer.train()
        trained.append((loss, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}))
    assert torch.equal(trained[0][0], trained[1][0])
    assert all(torch.equal(p, trained[1][1][n]) for n, p in trained[0][1].items())


def _consensus(items) -> list[dict]:
    """What matching leaves after its consensus filter: an item's kept samples share one answer, so one weight;
    items differ in how much of their pool agrees (every other item: 2 of 3 samples at 0.95, else 1 of 3 at 0.55)."""
    rows = []
    for n, it in enumerate(items):
        answer = f"({it.answer})" if it.task_type == "mcq" else str(it.answer)
        weight, kept = (0.95, 2) if n % 2 == 0 else (0.55, 1)
        for idx in range(3):
            rows.append({"item_id": it.item_id, "teacher": "sim", "sample_index": idx,
                         "text": f"<think>Look {idx}.</think><answer>{answer}</answer>", "format_ok": True,
                         "weight": weight if idx < kept else 0.1, "kept": idx < kept, "task_type": it.task_type})
    return rows


def test_matched_conf_moves_the_student_where_per_item_weights_cannot(env, tmp_path):
    """On a consensus-filtered set, weighting matched and uniform train bit-identical students (per-item
    normalisation gives every kept sample 1/k); matched_conf weighs items by the pool's confidence."""
    consensus = {**env, "matched": _consensus(env["items"].values())}
    rows = sft_rows(consensus["matched"], None, "matched_conf")
    assert sorted({round(r["item_weight"], 9) for r in rows}) == pytest.approx([0.55 / 3, 0.95 * 2 / 3])
    results = {}
    for weighting in ("matched", "uniform", "matched_conf"):
        trainer = _trainer(consensus, tmp_path / weighting, weighting=weighting, max_steps=2, save_steps=10)
        batch = trainer.data_collator(sft_rows(consensus["matched"], None, weighting)[:2])
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, dict(batch))
        trainer.train()
        results[weighting] = (loss, {n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    same = [torch.equal(p, results["uniform"][1][n]) for n, p in results["matched"][1].items()]
    assert torch.equal(results["matched"][0], results["uniform"][0]) and all(same)
    assert not torch.equal(results["matched"][0], results["matched_conf"][0])
    moved = [not torch.equal(p, results["matched_conf"][1][n]) for n, p in results["matched"][1].items()]
    assert any(moved)
