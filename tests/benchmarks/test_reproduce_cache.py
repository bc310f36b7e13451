"""benchmarks/reproduce.py reuses a finished run only when it describes the same run."""

from __future__ import annotations

from pathlib import Path

import run_cache  # benchmarks/ is on pytest's pythonpath (pyproject.toml)

from rmsd.config import load_recipe

ROOT = Path(__file__).resolve().parents[2]


def test_a_field_added_after_a_run_keeps_the_run_only_at_its_default():
    recipe = load_recipe(ROOT / "recipes" / "synthvid" / "experiment_matched.yaml")
    now = recipe.model_dump(mode="json")
    changed = recipe.model_dump(mode="json", exclude_defaults=True)
    saved = {**now, "matching": {k: v for k, v in now["matching"].items() if k != "anchor_fraction"}}
    assert run_cache.same_config(saved, now, changed)  # the old run knew no anchors: same run
    anchored = load_recipe(ROOT / "recipes" / "synthvid" / "experiment_matched.yaml", ["matching.anchor_fraction=0.1"])
    assert not run_cache.same_config(saved, anchored.model_dump(mode="json"),
                                      anchored.model_dump(mode="json", exclude_defaults=True))
    other = {**now, "distill": {**now["distill"], "sft": {**now["distill"]["sft"], "lr": 0.5}}}
    assert not run_cache.same_config(other, now, changed)
    assert not run_cache.same_config({**now, "gone": 1}, now, changed)  # a key the recipe no longer has


def test_a_run_in_the_committed_results_of_the_same_regime_is_not_trained_again(tmp_path):
    """A session's work tree may lack runs/: the committed reproduce.json is the cache an experiment longer than
    a session resumes from (same regime hash, same method and seed, same recipe and curve points)."""
    import json

    recipe = load_recipe(ROOT / "recipes" / "synthvid" / "experiment_matched.yaml")
    run = {"method": "matched", "seed": 1, "points": [0, 150, 300], "recipe": recipe.model_dump(mode="json"),
           "final": {"overall": 0.5}}
    results = tmp_path / "reproduce.json"
    results.write_text(json.dumps({"regime_hash": "abc", "runs": [run, {**run, "seed": 2, "error": "boom"}]}))
    assert run_cache.committed(results, "abc", "matched", 1, recipe, [0, 150, 300])["final"] == {"overall": 0.5}
    assert run_cache.committed(results, "other", "matched", 1, recipe, [0, 150, 300]) is None  # another regime
    assert run_cache.committed(results, "abc", "matched", 2, recipe, [0, 150, 300]) is None  # it failed: run again
    assert run_cache.committed(results, "abc", "matched", 1, recipe, [0, 100, 300]) is None
    changed = load_recipe(ROOT / "recipes" / "synthvid" / "experiment_matched.yaml", ["distill.sft.lr=0.5"])
    assert run_cache.committed(results, "abc", "matched", 1, changed, [0, 150, 300]) is None
    assert run_cache.committed(tmp_path / "absent.json", "abc", "matched", 1, recipe, [0, 150, 300]) is None


def test_a_run_on_a_matched_set_made_again_otherwise_is_not_reused(tmp_path):
    """The same recipe and points, but the matched set in its folder was made again from other samples or settings
    (another pool's store, another matching knob): the run is trained again, not reported from result.json."""
    import json

    recipe = load_recipe(ROOT / "recipes" / "synthvid" / "experiment_matched.yaml")
    result = {"points": [0, 150], "recipe": recipe.model_dump(mode="json"), "matched": "a" * 64, "final": {}}
    (tmp_path / "result.json").write_text(json.dumps(result))
    assert run_cache.cached(tmp_path, recipe, [0, 150], "a" * 64) is not None
    assert run_cache.cached(tmp_path, recipe, [0, 150], "b" * 64) is None
    (tmp_path / "result.json").write_text(json.dumps({k: v for k, v in result.items() if k != "matched"}))
    assert run_cache.cached(tmp_path, recipe, [0, 150], "b" * 64) is not None  # recorded before sets were identified
