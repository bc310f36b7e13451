"""Shared by the trainer tests: a few synthvid items and the tiny student, built offline."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def make_env(tmp_path_factory):
    """`make_env(n, seed, matched, family)` -> {"root", "student", "items", "matched"}; `matched(items)` builds the
    rows; `family` is the student's architecture (default qwen2_5_vl)."""
    from rmsd.datasets.synthvid import load_items
    from rmsd.models.offline.tiny import build_student
    from rmsd.synthvid.generator import generate

    def make(n: int, seed: int, matched, family: str = "qwen2_5_vl") -> dict:
        torch.set_num_threads(1)
        root = tmp_path_factory.mktemp("env")
        generate(root / "data", n=n, seed=seed)
        items = load_items(root / "data", split="train")
        return {"root": root, "student": build_student(root / "student", size="tiny", seed=0, family=family),
                "items": {it.item_id: it for it in items}, "matched": matched(items)}

    return make

