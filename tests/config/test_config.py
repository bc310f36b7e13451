"""Recipes and pools: every shipped file validates; mistakes are reported with their YAML path."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rmsd.cli import app
from rmsd.config import ConfigError, load_pool, load_recipe
from rmsd.errors import RmsdError
from rmsd.validation import validate_file

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "recipes").rglob("*.yaml")) + sorted((ROOT / "teachers").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_and_pool_validates(path):
    assert validate_file(path) == []


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _recipe(**over):
    data = {"name": "r", "dataset": {"benchmark": "synthvid", "path": "data"}, "student": {"build": "tiny"}}
    data.update(over)
    return data


def test_unknown_key_is_reported_with_its_path(tmp_path):
    p = _write(tmp_path, "r.yaml", _recipe(distill={"sft": {"lr": 1e-3, "learning_rate": 2}}))
    problems = validate_file(p)
    assert problems == [f"{p}: distill.sft.learning_rate: unknown key (did you mean `lr`?)"]


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    p = _write(tmp_path, "r.yaml", _recipe(dataset={"benchmark": "synthvid", "path": "d", "num_frames": 0},
                                           eval={"batch_size": -1}))
    problems = validate_file(p)
    assert len(problems) == 2
    assert any("dataset.num_frames" in line for line in problems)
    assert any("eval.batch_size" in line for line in problems)


def test_include_merges_and_the_including_file_wins(tmp_path):
    _write(tmp_path, "base.yaml", _recipe(distill={"sft": {"lr": 0.5, "max_steps": 7}}))
    p = _write(tmp_path, "child.yaml", {"include": "base.yaml", "name": "child", "distill": {"sft": {"lr": 0.1}}})
    recipe = load_recipe(p)
    assert recipe.name == "child"
    assert recipe.distill.sft.lr == 0.1
    assert recipe.distill.sft.max_steps == 7


def test_include_cycle_is_an_error(tmp_path):
    _write(tmp_path, "a.yaml", {"include": "b.yaml"})
    p = _write(tmp_path, "b.yaml", {"include": "a.yaml"})
    with pytest.raises(RmsdError, match="include cycle"):
        load_recipe(p)


def test_set_overrides_parse_values_as_yaml(tmp_path):
    p = _write(tmp_path, "r.yaml", _recipe())
    recipe = load_recipe(p, ["distill.sft.lr=1e-4", "distill.adversarial.enabled=true", "dataset.limit=5"])
    assert recipe.distill.sft.lr == 1e-4
    assert recipe.distill.adversarial.enabled is True
    assert recipe.dataset.limit == 5
    with pytest.raises(ConfigError, match="distill.sft.lr"):
        load_recipe(p, ["distill.sft.lr=fast"])
    with pytest.raises(ConfigError, match="distill.adversarial.disc_rollouts_per_item"):
        load_recipe(p, ["distill.adversarial.disc_rollouts_per_item=0"])
    with pytest.raises(ConfigError, match="matching.anchor_fraction"):
        load_recipe(p, ["matching.anchor_fraction=2"])
    with pytest.raises(RmsdError, match="expected key.path=value"):
        load_recipe(p, ["distill.sft.lr"])


def test_student_needs_exactly_one_source(tmp_path):
    p = _write(tmp_path, "r.yaml", _recipe(student={"build": "tiny", "path": "/models/x"}))
    assert "exactly one of student.path" in validate_file(p)[0]


def _pool(**teacher):
    t = {"name": "t", "backend": "openai", "openai": {"model": "gpt-4o"}}
    t.update(teacher)
    return {"name": "p", "teachers": [t]}


def test_api_key_in_yaml_is_rejected(tmp_path):
    p = _write(tmp_path, "pool.yaml", _pool(openai={"model": "gpt-4o", "api_key": "sk-abc"}))
    (problem,) = validate_file(p)
    assert "teachers.0.openai" in problem and "never read from a YAML" in problem
    p = _write(tmp_path, "pool2.yaml", _pool(openai={"model": "m", "api_key_env": "sk-proj1234567890abcdefghij"}))
    assert "api_key_env: looks like a credential (an OpenAI API key)" in validate_file(p)[0]
    p = _write(tmp_path, "pool3.yaml", _pool(openai={"model": "m", "api_key_env": "my-key"}))
    assert "NAME of an environment variable" in validate_file(p)[0]


def test_backend_section_must_match(tmp_path):
    p = _write(tmp_path, "pool.yaml", _pool(backend="hf"))
    assert "backend hf needs a `hf:` section" in validate_file(p)[0]
    p = _write(tmp_path, "pool2.yaml", _pool(backend="nope"))
    assert "unknown" in validate_file(p)[0]
    custom = _pool(backend="mypkg.teachers:MyTeacher", openai=None, options={"url": "x"})
    assert load_pool(_write(tmp_path, "pool3.yaml", custom)).teachers[0].options == {"url": "x"}


def test_duplicate_teacher_names(tmp_path):
    t = {"name": "same", "backend": "simulated", "simulated": {}}
    p = _write(tmp_path, "pool.yaml", {"name": "p", "teachers": [t, t]})
    assert "repeated: same" in validate_file(p)[0]


def test_recipe_pool_path_resolves_beside_the_recipe(tmp_path):
    _write(tmp_path, "pool.yaml", {"name": "p", "teachers": [{"name": "s", "backend": "simulated", "simulated": {}}]})
    p = _write(tmp_path, "r.yaml", _recipe(pool="pool.yaml"))
    assert load_recipe(p).load_pool().teachers[0].name == "s"
    missing = _write(tmp_path, "r2.yaml", _recipe(pool="nowhere.yaml"))
    assert validate_file(missing) == [f"{missing}: pool: nowhere.yaml: no such file"]


def test_cli_validate_reports_problems_and_exit_code(tmp_path):
    bad = _write(tmp_path, "bad.yaml", _recipe(extra_key=1))
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2  # as every command's user mistakes; validate lists all of them
    assert result.stderr.startswith("error: ") and "extra_key: unknown key" in result.stderr
    result = CliRunner().invoke(app, ["validate", *map(str, SHIPPED)])  # the LoRA recipes wait for student.lora
    assert result.exit_code == 0, result.output
    assert "0 problems" in result.output


def test_lora_recipes_validate_and_a_lora_discriminator_needs_a_lora_student(tmp_path):
    lora_recipes = sorted((ROOT / "recipes").rglob("*_lora.yaml"))
    assert len(lora_recipes) == 6  # the three 4B benchmarks and recipes/paper/'s four students
    for path in lora_recipes:
        recipe = load_recipe(path)
        assert recipe.student.lora is not None and recipe.distill.adversarial.discriminator == "lora"
    p = _write(tmp_path, "r.yaml", _recipe(distill={"adversarial": {"enabled": True, "discriminator": "lora"}}))
    result = CliRunner().invoke(app, ["validate", str(p)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {p}: distill.adversarial.discriminator: lora puts D's adapter on the student's frozen base, so it needs "
        "student.lora (set student.lora: {r: 16}, or discriminator: full)"]
    ok = _write(tmp_path, "ok.yaml", _recipe(student={"build": "tiny", "lora": {"r": 8}},
                                            distill={"adversarial": {"enabled": True, "discriminator": "lora"}}))
    assert validate_file(ok) == []
    assert load_recipe(ok).student.lora.alpha == 32.0  # documented defaults
    with pytest.raises(ConfigError, match="student.lora.r"):
        load_recipe(ok, ["student.lora.r=0"])
    with pytest.raises(ConfigError, match="student.lora.target_modules"):
        load_recipe(ok, ["student.lora.target_modules=[model.layers.q_proj]"])
    with pytest.raises(ConfigError, match="student.lora.vision"):
        load_recipe(ok, ["student.lora.vision=trained"])


def test_not_yaml_is_one_line_error(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    (problem,) = validate_file(p)
    assert "not valid YAML" in problem and "\n" not in problem


def test_a_pool_named_in_an_included_recipe_resolves_beside_that_recipe(tmp_path, monkeypatch):
    other = tmp_path / "elsewhere"
    other.mkdir()
    p = _write(other, "variant.yaml", {"include": str(ROOT / "recipes" / "synthvid" / "tiny_rmsd.yaml"),
                                       "name": "variant"})
    monkeypatch.chdir(tmp_path)  # neither the cwd nor the variant's folder holds ../../teachers/
    recipe = load_recipe(p)
    assert recipe.load_pool().name == "synthvid-sim"


def test_an_llm_judge_must_name_a_teacher_of_the_pool(tmp_path):
    """Caught by `rmsd validate`, not after the data and the student were loaded."""
    pool = {"name": "p", "teachers": [{"name": "judge-a", "backend": "simulated", "simulated": {}}]}
    _write(tmp_path, "pool.yaml", pool)
    missing = _write(tmp_path, "r1.yaml", _recipe(pool="pool.yaml", distill={"adversarial": {
        "enabled": True, "visd": {"enabled": True, "judge": "llm"}}}))
    assert any("judge: llm needs judge_teacher" in line for line in validate_file(missing))
    wrong = _write(tmp_path, "r2.yaml", _recipe(pool="pool.yaml", eval={"judge_teacher": "judge-b"}, distill={
        "adversarial": {"enabled": True, "visd": {"enabled": True, "judge": "llm", "judge_teacher": "judge-c"}}}))
    problems = validate_file(wrong)
    assert len(problems) == 2 and all("not a teacher of pool p (teachers: judge-a)" in line for line in problems)
    right = _write(tmp_path, "r3.yaml", _recipe(pool="pool.yaml", distill={"adversarial": {
        "enabled": True, "visd": {"enabled": True, "judge": "llm", "judge_teacher": "judge-a"}}}))
    assert validate_file(right) == []
