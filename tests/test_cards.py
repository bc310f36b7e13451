"""Every snippet a card rmsd writes shows, runs: on a folder rmsd wrote, in each state the card tells apart.

The cards: the sample store's dataset card (a store with and without failed requests), the
matched set's card, and the model card of a stage checkpoint (full weights, LoRA adapters, and
after `rmsd eval` added its results). Each ```python block is run as written, in a fresh
namespace, and what it loaded is checked against what the folder holds.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from rmsd.config import load_recipe
from rmsd.pipeline import distill_recipe, match_recipe, sample_recipe
from rmsd.sampling.store import SampleStore, read_failures, read_records
from rmsd.synthvid.generator import generate

ROOT = Path(__file__).resolve().parents[1]


def snippets(card: Path) -> list[str]:
    blocks = re.findall(r"^```python\n(.*?)^```$", card.read_text(), flags=re.S | re.M)
    assert blocks, f"{card} shows no Python snippet"
    return blocks


def run_snippets(card: Path) -> dict:
    """Run every Python block of `card` as a reader would paste it, one after another in one namespace."""
    namespace: dict = {}
    for code in snippets(card):
        exec(compile(code, str(card), "exec"), namespace)  # noqa: S102 - the card's own code
    return namespace


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small pipeline run: synthvid items, the simulated pool's samples, the matched set, one SFT step."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cards")
    generate(root / "data", n=8, seed=0)
    recipe = {"name": "cards", "dataset": {"benchmark": "synthvid", "path": str(root / "data"), "num_frames": 4},
              "pool": str(ROOT / "teachers" / "synthvid_sim.yaml"),
              "sampling": {"out": str(root / "samples")}, "matching": {"out": str(root / "matched")},
              "student": {"build": "tiny", "build_out": str(root / "student")},
              "distill": {"out": str(root / "distilled"), "report_to": [],
                          "sft": {"max_steps": 1, "batch_size": 2, "save_steps": 100, "logging_steps": 1}}}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    sample_recipe(load_recipe(path))
    match_recipe(load_recipe(path), root / "samples")
    return {"root": root, "recipe": path}


def test_the_sample_store_card_loads_its_records(run):
    store = run["root"] / "samples"
    assert read_failures(store) == []
    loaded = run_snippets(store / "README.md")
    assert len(loaded["records"]) == len(read_records(store)) > 0
    assert "failures" not in loaded


def test_the_sample_store_card_loads_its_failures_too(run, tmp_path, monkeypatch):
    store = tmp_path / "failed"
    shutil.copytree(run["root"] / "samples", store)
    monkeypatch.chdir(tmp_path)
    with SampleStore(Path("failed")) as s:  # rmsd's store writes the card again, now with the failures config
        s.add_failure("i-x", "sim-weak", "HTTP 500", ["c" * 64], attempts=3)
    monkeypatch.chdir(ROOT)  # a store opened by a relative path: its card still loads from elsewhere
    loaded = run_snippets(store / "README.md")
    assert len(loaded["records"]) == len(read_records(store))
    assert loaded["failures"]["keys"] == [["c" * 64]]


def test_the_matched_set_card_loads_its_rows(run):
    from rmsd.matching.dataset import read_matched

    matched = run["root"] / "matched"
    loaded = run_snippets(matched / "README.md")
    rows = read_matched(matched)
    assert len(loaded["rows"]) == len(rows) and loaded["rows"][0]["weight"] == rows[0]["weight"]


@pytest.mark.parametrize("lora", [None, {"r": 4}], ids=["full", "lora"])
def test_the_model_card_loads_the_checkpoint_before_and_after_eval(run, tmp_path, lora):
    from rmsd.train.model_card import add_results

    overrides = [f"distill.out={tmp_path / 'distilled'}"] + ([f"student.lora={lora}"] if lora else [])
    folder = distill_recipe(load_recipe(run["recipe"], overrides), run["root"] / "matched")["sft"]
    for state in ("trained", "evaluated"):
        if state == "evaluated":
            scored = {"overall": 0.5, "n": 2, "breakdowns": {}, "counts": {}}
            assert add_results(folder, {"videomme": (scored, "rmsd eval"), "mathverse": (scored, "rmsd eval")})
        loaded = run_snippets(Path(folder) / "README.md")
        assert isinstance(loaded["model"], torch.nn.Module) and loaded["processor"].tokenizer is not None, state
        trained = any("lora_" in name for name, _ in loaded["model"].named_parameters())
        assert trained == (lora is not None), f"{state}: the snippet loads the adapters iff the stage trained them"
