"""Build `Teacher` objects from a pool config (`teachers/*.yaml`) through the registry of backends.

A pool entry's `backend` is a name of the registry (`rmsd.config.pools.BACKENDS`: `openai`,
`hf`, `simulated`), which stands for the import path of its class, or a custom teacher's own
import path, `backend: mypkg.module:MyTeacher`; either way `backend_class` imports the class,
checks it subclasses `rmsd.teachers.teacher.Teacher`, and the class builds the teacher
(`Teacher.from_config`: a custom class is constructed as `MyTeacher(name=..., **options)`).
Every problem (an unknown module, a class that is not a Teacher, options the class rejects, a
missing API key or model folder) is a one-line `RmsdError` raised here, before the runner
sends any request.

What a teacher sees of a video is known here without building it (`media_needs`), which
the record keys use (`rmsd.sampling.keys`: a teacher that never looks at the frames keeps its
keys when `num_frames` changes).

    rmsd validate teachers/video_api_pool.yaml && rmsd sample --recipe recipes/videomme/qwen2_5_vl_3b_rmsd.yaml
"""

from __future__ import annotations

import importlib
import inspect

from rmsd.config.pools import BACKENDS, PoolConfig, TeacherConfig
from rmsd.errors import RmsdError
from rmsd.teachers.teacher import GenParams, Teacher


def gen_params(cfg: TeacherConfig) -> GenParams:
    p = cfg.params
    return GenParams(temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, seed=p.seed)


def backend_class(cfg: TeacherConfig) -> type[Teacher]:
    """The Teacher class of a pool entry: the registry's for a built-in name, the import path's for a custom one."""
    return load_class(BACKENDS.get(cfg.backend, cfg.backend), cfg.name)


def model_name(cfg: TeacherConfig) -> str:
    """The `model` field of records: what answered (an API model, a checkpoint, a simulator, a class)."""
    return backend_class(cfg).record_model(cfg)


def media_needs(cfg: TeacherConfig) -> frozenset[str]:
    """What the teacher `build_teacher(cfg)` makes will ask of a video (its `media_needs`), without building it."""
    return backend_class(cfg).needs_of(cfg)


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
        raise RmsdError(f"{where}: {class_name} is not a subclass of rmsd.teachers.teacher.Teacher")
    if inspect.isabstract(cls):
        raise RmsdError(f"{where}: {class_name} does not implement `async generate(item, media, n, params, "
                        "start_index)`")
    return cls


def build_teacher(cfg: TeacherConfig, pool: PoolConfig | None = None) -> Teacher:
    """One teacher, with the pool's system prompt and prompt template set on it."""
    teacher = backend_class(cfg).from_config(cfg)
    if pool is not None:
        teacher.system_prompt, teacher.prompt_template = pool.system_prompt, pool.prompt_template
    return teacher


def build_teachers(pool: PoolConfig) -> dict[str, Teacher]:
    """Every teacher of the pool by name; fails on the first misconfigured one, before any request."""
    return {cfg.name: build_teacher(cfg, pool) for cfg in pool.teachers}
