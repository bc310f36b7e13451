"""The README runs as written: every Python block executes, every YAML block validates.

A README that drifts from the code is the first thing a new user meets, so the blocks are
run, not read: each test works in a temporary copy of `recipes/` and `teachers/` (the
blocks name paths relative to the repository root), and the only change to what a block
does is a smaller budget — extra `--set`-style overrides appended to every `load_recipe`
call (later overrides win) and fewer synthvid items. A YAML block names the file it is in
its first line (`# teachers/<pool>.yaml`) and is written there, then `rmsd validate` must
find no problem with it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)

# What the blocks are run with instead of their real budgets: a few items, steps and tokens.
ITEMS = 12  # items every block samples
SYNTHVID_ITEMS = 30
SMALL = [
    f"dataset.limit={ITEMS}", f"dataset.generate={SYNTHVID_ITEMS}",
    "distill.sft.max_steps=2", "distill.sft.batch_size=4",
    "distill.adversarial.max_steps=1", "distill.adversarial.batch_size=2",
    "distill.adversarial.num_generations=2", "distill.adversarial.disc_warmup_steps=0",
    "distill.adversarial.max_completion_length=8",
    "eval.limit=6", "eval.max_new_tokens=8",
]


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README) if lang == language]


def defines_teacher(code: str) -> bool:
    return re.search(r"^class \w+\(Teacher\)", code, re.M) is not None


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A working folder laid out like the repository root (recipes, teachers), as cwd."""
    for folder in ("recipes", "teachers"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def small_budgets(monkeypatch):
    """Every load_recipe call gets SMALL appended; synthvid.generate writes SYNTHVID_ITEMS items."""
    import rmsd.config
    import rmsd.synthvid.generator

    load, generate = rmsd.config.load_recipe, rmsd.synthvid.generator.generate
    monkeypatch.setattr(rmsd.config, "load_recipe", lambda path, overrides=None: load(path, [*(overrides or []), *SMALL]))
    monkeypatch.setattr(rmsd.synthvid.generator, "generate", lambda out, n, **kw: generate(out, n=min(n, SYNTHVID_ITEMS), **kw))


def test_the_readme_has_the_blocks_these_tests_run():
    pipeline = [b for b in blocks("python") if "rmsd.pipeline" in b]
    assert pipeline, "the README lost its Python API example"
    assert any(defines_teacher(b) for b in blocks("python")), "the README lost its custom-teacher example"
    assert any("backend: openai" in b for b in blocks("yaml")), "the README lost its complete pool entry"


@pytest.mark.parametrize("index", range(len([b for b in blocks("python") if not defines_teacher(b)])))
def test_python_block_runs(index, checkout, small_budgets, capsys):
    code = [b for b in blocks("python") if not defines_teacher(b)][index]
    namespace: dict = {"__name__": "__readme__"}
    from rmsd.sampling.store import read_records

    exec(compile(code, f"README.md python block {index}", "exec"), namespace)  # noqa: S102 - the README's own code
    if "rmsd.pipeline" in code:
        results, ckpts = namespace["results"], namespace["ckpts"]
        assert 0.0 <= results["overall"] <= 1.0
        assert all((Path(p) / "config.json").is_file() or (Path(p) / "adapter_config.json").is_file()
                   for p in ckpts.values())
        recipe = namespace["recipe"]
        assert (Path(recipe.matching.out) / "matched.jsonl").is_file()
        assert read_records(recipe.sampling.out), "the example sampled nothing"
        printed = capsys.readouterr()
        assert f"overall {results['overall']:.3f}" in printed.out
        # the API is quiet by default: no library progress bars (RMSD_VERBOSE=1 brings them back)
        assert "Loading weights" not in printed.err and "Writing model shards" not in printed.err


def test_custom_teacher_block_samples_through_a_pool(checkout, small_budgets):
    """The custom teacher, saved as the module the README names, answers through `rmsd sample`."""
    from rmsd.config import load_recipe
    from rmsd.pipeline import sample_recipe
    from rmsd.sampling.store import read_records
    from rmsd.synthvid.generator import generate

    code = next(b for b in blocks("python") if defines_teacher(b))
    name = re.search(r"^class (\w+)\(Teacher\)", code, re.M).group(1)
    module = re.search(r"backend: ([\w.]+):" + name, README).group(1)
    package = checkout / "pkgs" / Path(*module.split("."))
    package.parent.mkdir(parents=True)
    for parent in package.relative_to(checkout / "pkgs").parents:
        (checkout / "pkgs" / parent / "__init__.py").touch()
    package.with_suffix(".py").write_text(code)
    sys.path.insert(0, str(checkout / "pkgs"))
    try:
        (checkout / "teachers" / "custom.yaml").write_text(
            f"name: custom\nteachers:\n  - name: echo\n    backend: {module}:{name}\n    samples: 2\n")
        generate("data/synthvid", n=600)
        recipe = load_recipe("recipes/synthvid/tiny_rmsd.yaml", ["pool=../../teachers/custom.yaml"])
        sample_recipe(recipe, progress=False)
        records = read_records(recipe.sampling.out)
    finally:
        sys.path.remove(str(checkout / "pkgs"))
        for loaded in [m for m in sys.modules if m == module.split(".")[0] or m.startswith(module.split(".")[0] + ".")]:
            sys.modules.pop(loaded)
    assert len(records) == 2 * ITEMS  # the pool asks K = 2 of its one teacher
    assert {r["teacher"] for r in records} == {"echo"}
    assert all(re.fullmatch(r"<think>\d+ frames</think><answer>\(A\)</answer>", r["text"]) for r in records)
    assert all(int(r["text"][7:].split(" ")[0]) > 0 for r in records)  # the runner prepared the frames


def write_yaml_blocks(root: Path) -> list[Path]:
    """Every YAML block written to the file its first line names (a recipe may name a pool block's file)."""
    paths = []
    for body in blocks("yaml"):
        first = body.split("\n", 1)[0]
        assert re.fullmatch(r"# [\w./-]+\.yaml", first), f"a YAML block must name its file first: {first!r}"
        paths.append(root / first[2:])
        paths[-1].write_text(body)
    return paths


@pytest.mark.parametrize("index", range(len(blocks("yaml"))))
def test_yaml_block_validates(index, checkout):
    path = write_yaml_blocks(checkout)[index]
    done = subprocess.run([sys.executable, "-m", "rmsd.cli", "validate", str(path)], capture_output=True, text=True,
                          env={**os.environ, "RMSD_VERBOSE": ""}, cwd=checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 problems" in done.stdout


def test_set_up_lines_are_the_two_the_ci_runs():
    setup = README[README.index("## Set up"):README.index("## Usage")]
    lines = [b.strip() for b in blocks("bash") if b.strip() in setup]
    assert lines == ['pip install -e . && rmsd quickstart', 'pip install -e ".[dev]" && pytest']
    assert not re.search(r"\b\d{3} tests\b", README), "the test count goes stale: let pytest print it"
    # .ci/run runs the first README line that starts like the test line: it must be this one
    assert re.findall(r'^pip install -e "\.\[dev\]".*$', README, re.M)[0] == lines[1]


def dotted_names(text: str) -> set[str]:
    """Every dotted rmsd name the text names in backticks; `rmsd.<module>.{<name>, <sub>.<Name>}` stands for
    both names under the module."""
    names = set()
    for head, braces in re.findall(r"`(rmsd(?:\.\w+)*)(?:\.\{([^}]*)\})?`", text):
        names.update(f"{head}.{tail.strip()}" for tail in braces.split(",")) if braces else names.add(head)
    return names


@pytest.mark.parametrize("name", sorted(dotted_names(README)))
def test_every_python_name_the_readme_gives_imports(name):
    import importlib

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute, None)
            assert obj is not None, f"README names {name}, which does not exist"
        return
    pytest.fail(f"README names {name}, which does not import")
