"""Build `Teacher` objects from a pool config (`teachers/*.yaml`): the user-edge registry of backends.

Built-in backends are named (`openai`, `hf`, `simulated`); a custom teacher is named by
import path, `backend: mypkg.module:MyTeacher`, must subclass `rmsd.teachers.base.Teacher`
and is constructed as `MyTeacher(name=..., **options)`. Every problem (an unknown module,
a class that is not a Teacher, options the class rejects, a missing API key or model
folder) is a one-line `RmsdError` raised here, before the runner sends any request.

What a teacher sees of a video is known here without building it (`media_needs`), which
the record keys use (`rmsd.sampling.keys`: a teacher that never looks at the frames keeps its
keys when `num_frames` changes).

    rmsd validate teachers/video_api_pool.yaml && rmsd sample --recipe recipes/videomme/qwen2_5_vl_3b_rmsd.yaml
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from rmsd.errors import RmsdError
from rmsd.pool_config import PoolConfig, TeacherConfig
from rmsd.teachers.base import GenParams, Teacher

BUILTIN = ("openai", "hf", "simulated")


def gen_params(cfg: TeacherConfig) -> GenParams:
    p = cfg.params
    return GenParams(temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, seed=p.seed)


def model_name(cfg: TeacherConfig) -> str:
    """The `model` field of records: what answered (an API model, a checkpoint, a simulator, a class)."""
    if cfg.backend == "openai":
        return cfg.openai.model
    if cfg.backend == "hf":
        return str(Path(cfg.hf.model_path).expanduser())
    if cfg.backend == "simulated":
        return "simulated"
    return cfg.backend


def media_needs(cfg: TeacherConfig) -> frozenset[str]:
    """What the teacher `build_teacher(cfg)` makes will ask of a video (its `media_needs`), without building it."""
    if cfg.backend == "openai":
        return frozenset({"video"} if cfg.openai.video_mode == "video_url" else {"jpeg"})
    if cfg.backend == "hf":
        return frozenset({"frames"})
    if cfg.backend == "simulated":
        return frozenset()  # the simulator reads the ground truth, never the pixels
    return frozenset(load_class(cfg.backend, cfg.name).media_needs)


def load_class(spec: str, teacher: str) -> type[Teacher]:
    """Import `package.module:Class` and check it is a Teacher subclass."""
    module_name, _, class_name = spec.partition(":")
    where = f"teacher {teacher}: backend {spec}"
    if not module_name or not class_name:
        raise RmsdError(f"{where}: expected package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RmsdError(f"{where}: cannot import {module_name} ({e}); install it or fix the path") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise RmsdError(f"{where}: module {module_name} has no {class_name}")
    if not (inspect.isclass(cls) and issubclass(cls, Teacher)):
        raise RmsdError(f"{where}: {class_name} is not a subclass of rmsd.teachers.base.Teacher")
    if inspect.isabstract(cls):
        raise RmsdError(f"{where}: {class_name} does not implement `async generate(item, media, n, params, "
                        "start_index)`")
    return cls


def _custom(cfg: TeacherConfig) -> Teacher:
    cls = load_class(cfg.backend, cfg.name)
    try:
        return cls(name=cfg.name, **cfg.options)
    except TypeError as e:
        raise RmsdError(f"teacher {cfg.name}: {cls.__name__} rejected its options {sorted(cfg.options)}: {e}") from None


def build_teacher(cfg: TeacherConfig, pool: PoolConfig | None = None) -> Teacher:
    """One teacher, with the pool's system prompt and prompt template set on it."""
    if cfg.backend == "openai":
        from rmsd.teachers.openai_api import OpenAITeacher

        teacher: Teacher = OpenAITeacher(cfg.name, cfg.openai, timeout_s=cfg.timeout_s, concurrency=cfg.concurrency)
    elif cfg.backend == "hf":
        from rmsd.teachers.hf_local import HFTeacher

        teacher = HFTeacher(cfg.name, cfg.hf)
    elif cfg.backend == "simulated":
        from rmsd.teachers.simulated import SimulatedTeacher

        teacher = SimulatedTeacher(cfg.name, **cfg.simulated.model_dump())
        teacher.media_needs = media_needs(cfg)
    else:
        teacher = _custom(cfg)
    if pool is not None:
        teacher.system_prompt, teacher.prompt_template = pool.system_prompt, pool.prompt_template
    return teacher


def build_teachers(pool: PoolConfig) -> dict[str, Teacher]:
    """Every teacher of the pool by name; fails on the first misconfigured one, before any request."""
    return {cfg.name: build_teacher(cfg, pool) for cfg in pool.teachers}
