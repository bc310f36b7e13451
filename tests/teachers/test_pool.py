"""Building teachers from a pool: builtins by name, custom classes by import path, media needs without building."""

from __future__ import annotations

import sys
import textwrap

import pytest

from rmsd.config import ConfigError, load_pool
from rmsd.config.pools import PoolConfig
from rmsd.errors import RmsdError
from rmsd.teachers.build import build_teacher, build_teachers, load_class, media_needs, model_name
from rmsd.teachers.simulated import SimulatedTeacher
from rmsd.teachers.teacher import Teacher


def pool(*teachers: dict, **kw) -> PoolConfig:
    return PoolConfig.model_validate({"name": "p", "teachers": list(teachers), **kw})


SIM = {"name": "sim", "backend": "simulated", "simulated": {"accuracy": {"mcq": 0.9}}}
API = {"name": "api", "backend": "openai", "openai": {"model": "gpt-x", "base_url": "http://127.0.0.1:9/v1"}}


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    (tmp_path / "my_teachers.py").write_text(textwrap.dedent("""
        from rmsd.teachers.teacher import Response, Teacher

        class Echo(Teacher):
            media_needs = frozenset()

            def __init__(self, name, prefix="echo"):
                super().__init__(name)
                self.prefix = prefix

            async def generate(self, item, media, n, params, start_index=0):
                return [Response(text=f"{self.prefix} {item.item_id} {start_index + i}") for i in range(n)]

        class NotATeacher:
            pass

        class Abstract(Teacher):
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_teachers"
    sys.modules.pop("my_teachers", None)


def test_builtins_are_built_by_name_with_the_pool_prompts():
    p = pool(SIM, API, system_prompt="Be careful.", prompt_template="Q: {prompt}")
    teachers = build_teachers(p)
    assert isinstance(teachers["sim"], SimulatedTeacher) and teachers["sim"].media_needs == frozenset()
    assert teachers["api"].media_needs == frozenset({"jpeg"})
    for t in teachers.values():
        assert t.system_prompt == "Be careful." and t.prompt_template == "Q: {prompt}"
    assert [model_name(c) for c in p.teachers] == ["simulated", "gpt-x"]


def test_media_needs_are_known_without_building_the_teacher(custom_module):
    video = {**API, "name": "vid", "openai": {**API["openai"], "video_mode": "video_url"}}
    hf = {"name": "h", "backend": "hf", "hf": {"model_path": "/nowhere"}}  # building it would fail: no model there
    custom = {"name": "mine", "backend": f"{custom_module}:Echo"}
    cfgs = pool(SIM, API, video, hf, custom).teachers
    assert [media_needs(c) for c in cfgs] == [frozenset(), frozenset({"jpeg"}), frozenset({"video"}),
                                              frozenset({"frames"}), frozenset()]
    built = build_teachers(pool(SIM, API, video, custom))
    assert [t.media_needs for t in built.values()] == [media_needs(c) for c in cfgs if c.name != "h"]


def test_custom_teacher_by_import_path(custom_module):
    p = pool({"name": "mine", "backend": f"{custom_module}:Echo", "options": {"prefix": "hi"}})
    t = build_teachers(p)["mine"]
    assert isinstance(t, Teacher) and t.name == "mine" and t.prefix == "hi"


@pytest.mark.parametrize("backend, options, message", [
    ("no_such_module_xyz:Thing", {}, "cannot import no_such_module_xyz"),
    ("{m}:Missing", {}, "has no Missing"),
    ("{m}:NotATeacher", {}, "not a subclass of rmsd.teachers.teacher.Teacher"),
    ("{m}:Abstract", {}, "does not implement"),
    ("{m}:Echo", {"colour": "red"}, "rejected its options"),
])
def test_custom_teacher_errors_are_one_clear_line(custom_module, backend, options, message):
    cfg = pool({"name": "mine", "backend": backend.format(m=custom_module), "options": options}).teachers[0]
    with pytest.raises(RmsdError, match=message) as e:
        build_teacher(cfg)
    assert "\n" not in str(e.value) and "mine" in str(e.value)


def test_bad_pools_stop_before_any_request(tmp_path, monkeypatch):
    with pytest.raises(Exception, match="unknown"):
        pool({"name": "x", "backend": "gpt5"})
    f = tmp_path / "pool.yaml"
    f.write_text("name: p\nteachers:\n  - {name: a, backend: openai, openai: {model: m, api_key: sk-abc}}\n")
    with pytest.raises(ConfigError, match="never read from a YAML"):
        load_pool(f)
    monkeypatch.delenv("REMOTE_KEY_FOR_TEST", raising=False)
    remote = {"name": "r", "backend": "openai",
              "openai": {"model": "m", "base_url": "https://api.example.com/v1", "api_key_env": "REMOTE_KEY_FOR_TEST"}}
    with pytest.raises(RmsdError, match="REMOTE_KEY_FOR_TEST is not set"):
        build_teachers(pool(SIM, remote))
    with pytest.raises(RmsdError, match="no config.json"):
        build_teachers(pool({"name": "h", "backend": "hf", "hf": {"model_path": str(tmp_path / "none")}}))
    with pytest.raises(RmsdError, match="expected package.module:ClassName"):
        load_class("pkg.mod:", "t")


# ----------------------------------------------------------------------------- registry
def test_the_registry_names_each_builtin_class_and_its_section():
    """Each built-in name stands for its class's import path; the pool section of that name holds its options."""
    from rmsd.config.pools import BACKENDS, TeacherConfig
    from rmsd.teachers.build import backend_class
    from rmsd.teachers.hf_local import HFTeacher
    from rmsd.teachers.openai_api import OpenAITeacher

    assert tuple(BACKENDS) == ("openai", "hf", "simulated")
    cfgs = [TeacherConfig.model_validate(t) for t in (API, {"name": "h", "backend": "hf", "hf": {"model_path": "/m"}},
                                                       SIM)]
    assert [backend_class(c) for c in cfgs] == [OpenAITeacher, HFTeacher, SimulatedTeacher]
    assert all(name in TeacherConfig.model_fields for name in BACKENDS)  # the section of the same name
    with pytest.raises(Exception, match="unknown: use openai, hf, simulated or package.module:Class"):
        TeacherConfig.model_validate({"name": "x", "backend": "gpt5"})


def test_no_name_of_a_backend_is_compared_outside_the_registry():
    """What construction, validation and keys need to know of a backend is asked of its class: no `== "openai"`
    (or any other registered name) compared in rmsd/ outside rmsd/config/pools.py, where the table is."""
    import re
    from pathlib import Path

    from rmsd.config.pools import BACKENDS

    root = Path(__file__).resolve().parents[2] / "rmsd"
    names = "|".join(BACKENDS)
    pattern = re.compile(rf"""(==|!=|\bin)\s*[({{\[]?\s*["']({names})["']|["']({names})["']\s*(==|!=|,\s*["'])""")
    found = [f"{f.relative_to(root)}:{n}: {line.strip()}" for f in root.rglob("*.py") if f != root / "config" / "pools.py"
             for n, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found
    before = 'if cfg.backend not in ("openai", "hf", "simulated"):\n    elif cfg.backend == "hf":'
    assert sum(bool(pattern.search(line)) for line in before.splitlines()) == 2  # the rule reads what it forbids
