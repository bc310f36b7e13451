"""A credential written anywhere in a recipe or pool is refused with its YAML path, in `rmsd validate`
and in every command that loads the file, and its value never appears in any output."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from rmsd.cli import app
from rmsd.config import load_recipe
from rmsd.config.pools import PoolConfig
from rmsd.credentials import Redactor, find_credentials
from rmsd.errors import RmsdError
from rmsd.validation import validate_file

ROOT = Path(__file__).resolve().parents[1]

# (value, what it is reported as); every value is fake and built here so no scanner flags this file
FORMS = [
    ("sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2", "an OpenAI API key"),
    ("sk-proj-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2", "an OpenAI API key"),
    ("sk-ant-" + "api03-Qw1Er2Ty3Ui4Op5As6Df7", "an Anthropic API key"),
    ("AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6", "a Google API key"),
    ("hf_" + "AbCdEfGhIjKlMnOpQrStUvWx12", "a Hugging Face token"),
    ("gsk_" + "q1W2e3R4t5Y6u7I8o9P0a1S2d3", "a Groq API key"),
    ("xai-" + "Mn8Bv7Cx6Zl5Kj4Hg3Fd2Sa1Qw", "an xAI API key"),
    ("ghp_" + "0123456789abcdefABCDEF0123456789abcd", "a GitHub token"),
    ("AKIA" + "IOSFODNN7EXAMPL3", "an AWS access key id"),
    ("Bearer " + "eyJhbGciOiJIUzI1NiJ9.e30.Zm9vYmFy", "a bearer token"),
]
UNDER_NAMES = [  # no known prefix, but long and random under a key-like name
    ("api_key", "9f8e7d6c5b4a39281706f5e4"), ("token", "Q7w8E9r0T1y2U3i4O5p6"),
    ("client_secret", "aB3dE5gH7jK9mN1pQ3sT"), ("password", "Tr0ub4dor&3xQ9zLp"),
    ("Authorization", "Zm9vOmJhcjEyMzQ1Njc4OTA="), ("x-api-key", "k3J9sL2mN8qR4tV6wY1z"),
]
NOT_CREDENTIALS = [
    {"api_key_env": "OPENAI_API_KEY"}, {"model": "gpt-4o-2024-08-06"}, {"max_tokens": 512},
    {"system_prompt": "Ask-questions carefully; the task-specific rule is below."}, {"token_file": "/run/secrets/tok"},
    {"tokens_per_minute": 30000}, {"base_url": "https://generativelanguage.googleapis.com/v1beta/openai/"},
    {"password": "EMPTY"}, {"auth": "none"}, {"key": "value"}, {"prompt_template": "Bearer of news: {prompt}"},
]


def pool_with(where: str, value) -> dict:
    """A valid pool with `value` placed at one of the places a user might paste a key."""
    teacher = {"name": "t", "backend": "openai", "openai": {"model": "m", "base_url": "http://127.0.0.1:9/v1"}}
    custom = {"name": "c", "backend": "mypkg.mod:Teacher"}
    if where == "extra_body":
        teacher["openai"]["extra_body"] = {"api_key": value}
    elif where == "headers":
        teacher["openai"]["extra_body"] = {"extra_headers": {"Authorization": value}}
    elif where == "options":
        custom["options"] = {"credentials": {"token": value}}
    elif where == "list":
        custom["options"] = {"keys": ["first", value]}
    elif where == "prompt":
        return {"name": "p", "system_prompt": f"Use {value} to log in.", "teachers": [teacher]}
    return {"name": "p", "teachers": [teacher, custom]}


PATHS = {"extra_body": "teachers.0.openai.extra_body.api_key",
         "headers": "teachers.0.openai.extra_body.extra_headers.Authorization",
         "options": "teachers.1.options.credentials.token", "list": "teachers.1.options.keys.1",
         "prompt": "system_prompt"}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), prog_name="rmsd", env={"COLUMNS": "200"})


@pytest.mark.parametrize(("value", "kind"), FORMS, ids=[k for _, k in FORMS])
def test_every_known_key_format_is_found_and_never_shown(tmp_path, value, kind):
    for where, path in PATHS.items():
        f = tmp_path / f"{where}.yaml"
        f.write_text(yaml.safe_dump(pool_with(where, value)))
        (problem,) = validate_file(f)
        assert problem.startswith(f"{f}: {path}: looks like a credential ({kind})"), problem
        assert value not in problem and value[4:14] not in problem
    result = invoke("validate", str(tmp_path))
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == len(PATHS)
    assert all(line.startswith("error: ") for line in result.stderr.splitlines())
    assert value not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("name", "value"), UNDER_NAMES, ids=[n for n, _ in UNDER_NAMES])
def test_long_random_tokens_under_key_like_names_are_found(name, value):
    (found,) = find_credentials({"teachers": [{"options": {name: value}}]})
    assert found[0] == f"teachers.0.options.{name}" and "key-like name" in found[1] and value not in found[1]


@pytest.mark.parametrize("data", NOT_CREDENTIALS, ids=lambda d: next(iter(d)))
def test_ordinary_settings_are_not_credentials(data):
    assert find_credentials(data) == []


def test_every_shipped_file_is_clean():
    files = sorted((ROOT / "recipes").rglob("*.yaml")) + sorted((ROOT / "teachers").rglob("*.yaml"))
    assert files and all(validate_file(f) == [] for f in files)


def test_commands_that_load_the_file_refuse_it_and_set_overrides_are_scanned(tmp_path):
    secret = FORMS[1][0]
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump(pool_with("extra_body", secret)))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "r", "dataset": {"benchmark": "synthvid", "path": str(tmp_path)},
                                      "pool": str(pool), "student": {"build": "tiny"}}))
    for args in (["sample", "--recipe", str(recipe)], ["validate", str(recipe)]):
        result = invoke(*args)
        assert result.exit_code == 2 and "looks like a credential (an OpenAI API key)" in result.stderr
        assert len(result.stderr.splitlines()) == 1 and secret not in result.output
    clean = tmp_path / "clean.yaml"
    clean.write_text(yaml.safe_dump({"name": "r", "dataset": {"benchmark": "synthvid", "path": str(tmp_path)},
                                     "student": {"build": "tiny"}}))
    for command in ("sample", "match", "distill", "eval"):
        extra = {"match": ["--samples", str(tmp_path)], "distill": ["--matched", str(tmp_path)],
                 "eval": ["--model", str(tmp_path)]}.get(command, [])
        result = invoke(command, "--recipe", str(clean), *extra, "--set", f"dataset.config={secret}")
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("error: --set dataset.config: dataset.config: looks like a credential")
        assert secret not in result.output
    with pytest.raises(RmsdError) as e:
        load_recipe(clean, [f"eval.judge_teacher={FORMS[4][0]}"])
    assert FORMS[4][0] not in str(e.value)


def test_configs_built_in_python_are_scanned_and_errors_hide_the_value():
    secret = FORMS[3][0]
    with pytest.raises(ValidationError) as e:
        PoolConfig.model_validate(pool_with("options", secret))
    text = str(e.value)
    assert "teachers.1.options.credentials.token: looks like a credential (a Google API key)" in text
    assert secret not in text and secret not in repr(e.value)


def test_the_redactor_stars_a_pools_keys_and_ignores_values_too_short_to_be_keys(monkeypatch):
    monkeypatch.setenv("RMSD_TEST_KEY_A", "sk-test-abcdef123456")
    monkeypatch.setenv("RMSD_TEST_KEY_B", "x")  # a one-letter value would star out every message
    teachers = [{"name": n, "backend": "openai", "openai": {"model": "m", "base_url": "http://127.0.0.1:1/v1",
                                                            "api_key_env": env}}
                for n, env in (("a", "RMSD_TEST_KEY_A"), ("b", "RMSD_TEST_KEY_B"))]
    redact = Redactor.of_pool(PoolConfig.model_validate({"name": "p", "teachers": teachers}))
    assert redact.secrets == ["sk-test-abcdef123456"]
    redact.add("later-key-9876")
    redact.add("later-key-9876")  # learnt twice, kept once
    assert redact("401 for sk-test-abcdef123456 and later-key-9876 at x") == "401 for *** and *** at x"
    assert redact.secrets == ["sk-test-abcdef123456", "later-key-9876"]
