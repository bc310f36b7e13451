"""Every user mistake through the real CLI is one `error:` line, exit status 2, no traceback:
broken YAML (with file:line:column), bad `--set` values and keys (naming the override, with
the closest known key), files that are not UTF-8, broken items files in `sample` and `match`
(file, line, field), a folder that is not a model for `rmsd eval`, and damaged stores in
`sample`, `match` and `sample merge` (file and line; a failed merge leaves nothing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rmsd.cli import app
from rmsd.sampling.store import SampleStore, part_files
from rmsd.synthvid.generator import generate

ROOT = Path(__file__).resolve().parents[1]
POOL = ROOT / "teachers" / "synthvid_sim.yaml"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="rmsd", env={"COLUMNS": "200"})


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # nothing escaped the CLI
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def synthvid(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("sv") / "data"
    generate(data, n=8, seed=1, frame_size=56)
    return data


def write_recipe(tmp: Path, data: Path, **over) -> Path:
    recipe = {"name": "e", "dataset": {"benchmark": "synthvid", "path": str(data)}, "pool": str(POOL),
              "sampling": {"out": str(tmp / "samples")}, "matching": {"out": str(tmp / "matched")},
              "student": {"build": "tiny"}, **over}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def a_store(path: Path) -> Path:
    with SampleStore(path) as s:
        s.append({"key": "a" * 64, "item_id": "x", "teacher": "t", "model": "m", "sample_index": 0,
                  "text": "<think>x</think><answer>(A)</answer>", "finish_reason": "stop", "logprobs": None,
                  "prompt_tokens": 1, "completion_tokens": 1, "latency_s": 0.1, "error": None,
                  "created_at": "2026-01-01T00:00:00.000+00:00"})
    return path


# ----------------------------------------------------------------------------- recipes, pools, --set
def test_yaml_syntax_errors_say_file_line_column_and_cause(tmp_path, synthvid):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: r\ndataset:\n  benchmark: synthvid\n\tpath: x\n")
    for args in (["validate", bad], ["sample", "--recipe", bad], ["match", "--recipe", bad, "--samples", tmp_path]):
        line = one_line_error(invoke(*args))
        assert f"{bad}:4:1: not valid YAML: found character '\\t' that cannot start any token" in line
    unclosed = tmp_path / "unclosed.yaml"
    unclosed.write_text("name: [r, s\nstudent: {build: tiny}\n")
    assert f"{unclosed}:2:8: not valid YAML:" in one_line_error(invoke("validate", unclosed))


@pytest.mark.parametrize("value", ["{a: 1", "[1, 2", "'unclosed", "a: b: c"])
def test_a_set_value_that_is_not_yaml_is_one_line(tmp_path, synthvid, value):
    recipe = write_recipe(tmp_path, synthvid)
    line = one_line_error(invoke("sample", "--recipe", recipe, "--set", f"sampling.concurrency={value}"))
    assert line.startswith("error: --set sampling.concurrency: the value is not valid YAML (")


def test_unknown_keys_name_the_override_and_the_closest_known_key(tmp_path, synthvid):
    recipe = write_recipe(tmp_path, synthvid)
    line = one_line_error(invoke("sample", "--recipe", recipe, "--set", "distill.sft.learning_rate=1e-4"))
    assert line == ("error: --set distill.sft.learning_rate=1e-4: distill.sft.learning_rate: unknown key "
                    "(did you mean `lr`?)")
    line = one_line_error(invoke("sample", "--recipe", recipe, "--set", "sampling.concurency=4"))
    assert line.endswith("sampling.concurency: unknown key (did you mean `concurrency`?)")
    assert line.startswith("error: --set sampling.concurency=4:")
    typo = write_recipe(tmp_path, synthvid, eval={"max_new_token": 8})
    line = one_line_error(invoke("sample", "--recipe", typo))
    assert line == f"error: {typo}: eval.max_new_token: unknown key (did you mean `max_new_tokens`?)"
    far = write_recipe(tmp_path, synthvid, matching={"zzz": 1})
    assert "matching.zzz: unknown key (this section takes: anchor_fraction, consensus," in one_line_error(
        invoke("sample", "--recipe", far))
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump({"name": "p", "teachers": [
        {"name": "s", "backend": "simulated", "simulated": {"acuracy": {"mcq": 0.5}}}]}))
    result = invoke("validate", pool)
    assert result.exit_code == 2
    assert result.stderr == f"error: {pool}: teachers.0.simulated.acuracy: unknown key (did you mean `accuracy`?)\n"


@pytest.mark.parametrize("which", ["recipe", "pool"])
def test_files_that_are_not_utf8_are_one_line(tmp_path, synthvid, which):
    recipe = write_recipe(tmp_path, synthvid)
    target = recipe
    if which == "pool":
        target = tmp_path / "pool.yaml"
        shutil.copy(POOL, target)
        recipe = write_recipe(tmp_path, synthvid, pool=str(target))
    target.write_bytes(target.read_bytes() + "\ndescription: caf\xe9\n".encode("latin-1"))
    lines = target.read_bytes().count(b"\n")
    for args in (["validate", recipe], ["sample", "--recipe", recipe]):
        line = one_line_error(invoke(*args))
        assert f"{target}:{lines}: not UTF-8 text (byte 0xe9 at offset" in line and "save the file as UTF-8" in line


def test_validate_is_consistent_with_the_other_commands(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "r", "dataset": {"benchmark": "synthvid", "path": "d", "num_frames": 0},
                                   "student": {"build": "tiny"}, "extra": 1}))
    result = invoke("validate", bad)
    assert result.exit_code == 2 and result.stdout == "1 files checked, 2 problems\n"
    assert [line.split(": ")[0] for line in result.stderr.splitlines()] == ["error", "error"]


# ----------------------------------------------------------------------------- items files
BROKEN_ITEMS = [
    ("prompt", lambda row: row.pop("prompt"), "the item lacks the field(s) prompt"),
    ("video-null", lambda row: row.update(video=None), "field video is null"),
    ("task-type", lambda row: row.update(task_type="essay"), "field task_type: unknown task type 'essay'"),
    ("not-an-object", lambda row: row.clear(), "the item lacks the field(s) item_id"),
]


@pytest.mark.parametrize(("name", "damage", "says"), BROKEN_ITEMS, ids=[b[0] for b in BROKEN_ITEMS])
def test_a_broken_items_file_names_file_line_and_field_in_sample_and_match(tmp_path, synthvid, name, damage, says):
    data = tmp_path / "data"
    shutil.copytree(synthvid, data)
    lines = (data / "train.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    damage(row)
    lines[2] = json.dumps(row)
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")
    recipe = write_recipe(tmp_path, data)
    store = a_store(tmp_path / "store")
    for args in (["sample", "--recipe", recipe], ["match", "--recipe", recipe, "--samples", store]):
        line = one_line_error(invoke(*args))
        assert f"{data / 'train.jsonl'}:3: {says}" in line, line


# ----------------------------------------------------------------------------- eval --model
@pytest.mark.parametrize(("config", "says"), [
    ({"foo": 1}, "config.json is not a model's (no model_type)"),
    ({"model_type": "no-such-architecture"}, "transformers cannot read its config.json"),
    ("not json", "config.json is not valid JSON"),
])
def test_eval_on_a_folder_that_is_not_a_model_is_one_line(tmp_path, synthvid, config, says):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    line = one_line_error(invoke("eval", "--recipe", write_recipe(tmp_path, synthvid), "--model", model))
    assert f"--model {model}: {says}" in line


# ----------------------------------------------------------------------------- damaged stores
@pytest.mark.parametrize("junk", ['{"foo": 1}', "[1, 2]", "null"])
def test_a_store_line_that_is_not_a_record_is_one_line_in_sample_match_and_merge(tmp_path, synthvid, junk):
    store = a_store(tmp_path / "store")
    part = part_files(store)[0]
    part.write_text(part.read_text() + junk + "\n")
    recipe = write_recipe(tmp_path, synthvid)
    out = tmp_path / "merged"
    for args in (["sample", "--recipe", recipe, "--out", store], ["match", "--recipe", recipe, "--samples", store],
                 ["sample", "merge", store, "--out", out]):
        line = one_line_error(invoke(*args))
        assert f"{part}:2: valid JSON but not a record" in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
