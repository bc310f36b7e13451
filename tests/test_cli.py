"""The `rmsd` command line: help everywhere, user mistakes as one `error:` line with exit
status 2, and the whole chain synthvid → build-student → sample (twice: resume) → match →
distill → eval on a tiny recipe written here (simulated pool, tiny student, a few steps).

The help and one mistake run the real console script in a subprocess; the rest go through
Typer's CliRunner in this process (no torch import per command).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rmsd.cli import app

ROOT = Path(__file__).resolve().parents[1]
RMSD = Path(sys.executable).with_name("rmsd")  # the console script of this venv
ENV = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}  # rich wraps and styles the same
COMMANDS = ["synthvid", "build-student", "validate", "sample", "sample merge", "sample rekey", "match", "match stats", "distill", "eval", "plan",
            "quickstart"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), prog_name="rmsd", env={"COLUMNS": "100"})


def run_ok(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, f"rmsd {' '.join(args)} failed:\n{result.output}\n{result.exception!r}"
    return result


def one_line_error(result) -> str:
    """The single `error:` line of a user mistake (exit 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an exception escaping the CLI
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ----------------------------------------------------------------------------- help
def test_python_m_rmsd_prints_the_same_help_as_the_console_script():
    shim = subprocess.run([sys.executable, "-m", "rmsd", "--help"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    script = subprocess.run([str(RMSD), "--help"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert shim.returncode == script.returncode == 0, shim.stderr + script.stderr
    assert shim.stdout == script.stdout
    assert "Usage: rmsd [OPTIONS] COMMAND" in script.stdout
    for command in ("synthvid", "build-student", "validate", "sample", "match", "distill", "eval", "quickstart"):
        assert re.search(rf"^  {command}\s", script.stdout, re.M), command  # plain click help: one line each


@pytest.mark.parametrize("command", COMMANDS)
def test_help_works_for_every_command(command):
    result = run_ok(*command.split(), "--help")
    assert f"Usage: rmsd {command} [OPTIONS]" in result.output
    assert "--help" in result.output


# ----------------------------------------------------------------------------- user mistakes
@pytest.fixture
def recipe(tmp_path) -> Path:
    """A valid recipe whose dataset does not exist yet."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "r", "dataset": {"benchmark": "synthvid", "path": str(tmp_path / "nodata")},
        "pool": str(ROOT / "teachers" / "synthvid_sim.yaml"), "student": {"build": "tiny"}}))
    return path


def test_a_missing_recipe_is_one_line_on_real_stderr_with_status_2(tmp_path):
    proc = subprocess.run([str(RMSD), "sample", "--recipe", "nonexistent.yaml"], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: nonexistent.yaml: no such file\n"
    assert proc.stdout == ""


@pytest.mark.parametrize(("args", "says"), [
    (["sample"], "--recipe is required"),
    (["sample", "--recipe", "nonexistent.yaml"], "nonexistent.yaml: no such file"),
    (["sample", "--recipe", "{R}"], "synthvid folder {tmp}/nodata not found: run `rmsd synthvid --out"),
    (["sample", "--recipe", "{R}", "--shard", "4/4"], "--shard 4/4: need 0 <= I < N"),
    (["match", "--recipe", "{R}", "--samples", "/nonexistent"], "/nonexistent: no sample store there"),
    (["distill", "--recipe", "{R}", "--matched", "/nonexistent"], "/nonexistent: no matched dataset there"),
    (["eval", "--recipe", "{R}", "--model", "/nonexistent"], "--model /nonexistent: no config.json there"),
    (["sample", "--recipe", "{R}", "--set", "distill.sft.learning_rate=1"],
     "--set distill.sft.learning_rate=1: distill.sft.learning_rate: unknown key (did you mean `lr`?)"),
    (["sample", "--recipe", "{R}", "--set", "distill.sft.lr"], "--set 'distill.sft.lr': expected key.path=value"),
    (["sample", "--recipe", "{R}", "--set", "distill.sft.lr=fast"], "--set distill.sft.lr=fast: distill.sft.lr: Input"),
    (["sample", "--recipe", "{BAD}"], "{BAD}: bogus: unknown key"),
    (["sample", "--recipe", str(ROOT / "teachers" / "synthvid_sim.yaml")], "this is a teacher pool, not a recipe"),
    (["validate", "{tmp}/empty"], "no YAML files under {tmp}/empty"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_user_mistakes_are_one_error_line_and_status_2(args, says, recipe, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"include: {recipe}\nbogus: 1\n")
    (tmp_path / "empty").mkdir()

    def fill(s: str) -> str:
        return s.replace("{R}", str(recipe)).replace("{BAD}", str(bad)).replace("{tmp}", str(tmp_path))

    line = one_line_error(invoke(*map(fill, args)))
    assert fill(says) in line


# ----------------------------------------------------------------------------- the chain
def write_tiny_recipe(root: Path) -> Path:
    """recipes/synthvid/tiny_rmsd.yaml with every path under `root` (steps are cut with --set)."""
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "include": str(ROOT / "recipes" / "synthvid" / "tiny_rmsd.yaml"),
        "name": "cli-chain",
        "dataset": {"path": str(root / "data")},
        "pool": str(ROOT / "teachers" / "synthvid_sim.yaml"),
        "sampling": {"out": str(root / "samples")},
        "matching": {"out": str(root / "matched")},
        "student": {"build_out": str(root / "student")},
        "distill": {"out": str(root / "distilled"), "report_to": []},
        "eval": {"out": str(root / "eval")},
    }))
    return path


FEW_STEPS = [f"--set={kv}" for kv in (
    "distill.sft.max_steps=3", "distill.sft.batch_size=4", "distill.sft.warmup_steps=0",
    "distill.adversarial.max_steps=2", "distill.adversarial.batch_size=2", "distill.adversarial.num_generations=2",
    "distill.adversarial.max_completion_length=8", "distill.adversarial.disc_warmup_steps=1",
    "distill.adversarial.warmup_steps=0", "distill.adversarial.disc_rollouts_per_item=1",
)]


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path).state_dict()


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_the_cli_chain_from_synthvid_to_eval(tmp_path):
    from rmsd.config import load_recipe
    from rmsd.pipeline import load_recipe_items
    from rmsd.sampling.store import read_records

    torch.set_num_threads(1)
    recipe_file = write_tiny_recipe(tmp_path)
    recipe = load_recipe(recipe_file)

    run_ok("synthvid", "--out", str(tmp_path / "data"), "--n", "50", "--seed", "0")
    run_ok("build-student", "--out", str(tmp_path / "student"), "--pretrain")  # the recipe's base: the shipped copy

    # sample: every served (item, teacher) pair K times; a re-run resumes and adds nothing
    run_ok("sample", "--recipe", str(recipe_file))
    items, pool = load_recipe_items(recipe), recipe.load_pool()
    expected = sum(t.samples for it in items for t in pool.teachers if it.task_type in t.task_types)
    records = read_records(tmp_path / "samples")
    assert len(records) == expected
    assert len({r["key"] for r in records}) == expected and not any(r["error"] for r in records)
    again = run_ok("sample", "--recipe", str(recipe_file))
    assert "0 new records" in again.output
    assert len(read_records(tmp_path / "samples")) == expected
    assert json.loads((tmp_path / "samples" / "summary.json").read_text())["new_records"] == 0

    # match: one weighted row per sample
    result = run_ok("match", "--recipe", str(recipe_file), "--samples", str(tmp_path / "samples"))
    assert f"matched {expected} samples of {len(items)} items" in result.output
    rows = [json.loads(line) for line in (tmp_path / "matched" / "matched.jsonl").read_text().splitlines()]
    assert len(rows) == expected and {r["item_id"] for r in rows} == {it.item_id for it in items}
    assert all(0.0 <= r["weight"] <= 1.0 and isinstance(r["kept"], bool) for r in rows)
    assert any(r["kept"] for r in rows) and not all(r["kept"] for r in rows)  # noisy teachers: some are dropped
    closed = [r for r in rows if r["kept"] and r["task_type"] != "open"]
    assert closed and all(r["weight"] >= recipe.matching.min_weight for r in closed)

    # distill: a few steps of each stage, each a from_pretrained folder with new weights
    result = run_ok("distill", "--recipe", str(recipe_file), "--matched", str(tmp_path / "matched"), *FEW_STEPS)
    sft, adversarial = tmp_path / "distilled" / "sft", tmp_path / "distilled" / "adversarial"
    assert f"sft: {sft}" in result.output and f"adversarial: {adversarial}" in result.output
    untrained, after_sft, after_adv = state_dict(tmp_path / "student"), state_dict(sft), state_dict(adversarial)
    assert changed(untrained, after_sft) and changed(after_sft, after_adv)
    assert all(torch.isfinite(v).all() for v in after_adv.values() if v.is_floating_point())

    # eval: the first 8 test items, results + one prediction per item under eval.out/<run>-<checkpoint>
    result = run_ok("eval", "--recipe", str(recipe_file), "--model", str(adversarial), "--limit", "8",
                    "--set", "eval.max_new_tokens=12")
    assert "overall" in result.output
    results = json.loads((tmp_path / "eval" / "distilled-adversarial" / "results.json").read_text())
    assert 0.0 <= results["overall"] <= 1.0 and results["n_items"] == 8
    by_type = results["breakdowns"]["task_type"]
    assert by_type and all(0.0 <= v <= 1.0 for v in by_type.values())
    predictions = (tmp_path / "eval" / "distilled-adversarial" / "predictions.jsonl").read_text().splitlines()
    test_items = load_recipe_items(recipe, split="test", limit=8)
    assert [json.loads(p)["item_id"] for p in predictions] == [it.item_id for it in test_items]
    assert len(load_recipe_items(recipe, split="test")) > 8  # --limit really cut the split


def test_help_shows_flags_as_flags():
    """--resume is a flag with a --no-resume twin; no option reads as taking a <bool>."""
    result = CliRunner().invoke(app, ["distill", "--help"])
    assert result.exit_code == 0 and "--resume / --no-resume" in result.output
    assert "<bool>" not in result.output and "KEY=VALUE" in result.output
