"""`rmsd match` (and `rmsd match stats`) read the samples their recipe's pool plans, as `rmsd run` does: a store that also holds
another pool's samples (a teacher dropped, a teacher's settings changed, fewer samples asked) gives this
pool's only and says how many it left out; a store holding none of them is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from test_cli import ROOT, invoke, run_ok, write_tiny_recipe


def other_pool(root: Path) -> Path:
    """synthvid_sim.yaml with sim-weak dropped and sim-strong asked twice instead of four times."""
    pool = yaml.safe_load((ROOT / "teachers" / "synthvid_sim.yaml").read_text())
    pool["teachers"] = [t for t in pool["teachers"] if t["name"] != "sim-weak"]
    pool["teachers"][0]["samples"] = 2
    path = root / "other_pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return path


def test_match_reads_only_its_pools_samples_from_a_shared_store(tmp_path):
    from rmsd.config import load_recipe
    from rmsd.pipeline import load_recipe_items
    from rmsd.sampling.store import read_records

    recipe_file = write_tiny_recipe(tmp_path)
    run_ok("synthvid", "--out", str(tmp_path / "data"), "--n", "20", "--seed", "0")
    run_ok("sample", "--recipe", str(recipe_file))
    full = len(read_records(tmp_path / "samples"))
    items = load_recipe_items(load_recipe(recipe_file))
    served = sum(1 for it in items if it.task_type in ("mcq", "numeric"))  # sim-biased's task types

    # the smaller pool samples into the same store: sim-strong's first two samples and sim-biased's four
    # per item are the ones already there (same teacher, same settings), so nothing new is asked
    smaller = ["--set", f"pool={other_pool(tmp_path)}"]
    again = run_ok("sample", "--recipe", str(recipe_file), *smaller)
    assert "0 new records" in again.output and len(read_records(tmp_path / "samples")) == full

    result = run_ok("match", "--recipe", str(recipe_file), "--samples", str(tmp_path / "samples"),
                    "--out", str(tmp_path / "m_small"), *smaller)
    kept = 2 * len(items) + 4 * served
    assert f"matched {kept} samples of {len(items)} items" in result.output
    assert f"left out {full - kept} samples of these items that this recipe's pool does not plan" in result.output
    rows = [json.loads(line) for line in (tmp_path / "m_small" / "matched.jsonl").read_text().splitlines()]
    assert {r["teacher"] for r in rows} == {"sim-strong", "sim-biased"}
    assert max(r["sample_index"] for r in rows if r["teacher"] == "sim-strong") == 1

    # how the pool errs is measured on the same samples: the dropped teacher is not in it
    run_ok("match", "stats", "--recipe", str(recipe_file), "--samples", str(tmp_path / "samples"),
           "--out", str(tmp_path / "stats_small"), *smaller)
    stats = json.loads((tmp_path / "stats_small" / "teacher_stats.json").read_text())
    assert set(stats["teachers"]) == {"sim-strong", "sim-biased"}

    # the recipe's own pool: every sample, nothing left out
    result = run_ok("match", "--recipe", str(recipe_file), "--samples", str(tmp_path / "samples"))
    assert f"matched {full} samples" in result.output and "left out" not in result.output

    # a pool that sampled nothing here (a changed setting changes every key): one line, nothing written
    changed = yaml.safe_load(other_pool(tmp_path).read_text())
    for t in changed["teachers"]:
        t["params"]["temperature"] = 0.5
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    refused = invoke("match", "--recipe", str(recipe_file), "--samples", str(tmp_path / "samples"),
                     "--out", str(tmp_path / "m_changed"), "--set", f"pool={tmp_path / 'changed.yaml'}")
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "none of its" in refused.stderr and "sim-strong" in refused.stderr
    assert not (tmp_path / "m_changed").exists()
