"""`rmsd validate`: every problem of a recipe, teacher pool or accelerate config file, before anything runs.

A recipe is checked as `load_recipe` reads it (keys, ranges, credentials, `include:`), then as a
whole: the pool it names (and that pool's own problems), the teachers its keys name, and whether it
would train on a split it also evaluates (`rmsd.eval.sets`), which no knob allows.

    rmsd validate recipes/paper/qwen3_vl_4b_rmsd.yaml teachers/video_api_pool.yaml
"""

from __future__ import annotations

from pathlib import Path

from rmsd.config import ConfigError, Recipe, load_pool, load_recipe, parse_config, read_yaml, resolve_path
from rmsd.config.pools import PoolConfig
from rmsd.errors import RmsdError
from rmsd.eval.sets import evaluated_training_split


def _pool_names(path: Path, recipe: Recipe, pool: PoolConfig) -> list[str]:
    """The recipe keys that name a teacher of its pool, checked against the pool."""
    names = {t.name for t in pool.teachers}
    named = {"distill.adversarial.visd.judge_teacher": recipe.distill.adversarial.visd.judge_teacher,
             "eval.judge_teacher": recipe.eval.judge_teacher}
    return [f"{path}: {key}: {value!r} is not a teacher of pool {pool.name} (teachers: {', '.join(sorted(names))})"
            for key, value in named.items() if value is not None and value not in names]


def validate_accelerate_config(path: str | Path) -> list[str]:
    """Problems of an `accelerate launch --config_file` YAML (recipes/accelerate/), read by accelerate itself."""
    from accelerate.commands.config.config_args import ClusterConfig

    try:
        ClusterConfig.from_yaml_file(str(path))
    except (ValueError, TypeError, KeyError) as e:
        return [f"{path}: not an accelerate config: {str(e).splitlines()[0]}"]
    return []


def validate_file(path: str | Path) -> list[str]:
    """Every problem of a recipe, pool or accelerate config file (and of the pool a recipe names); [] when valid."""
    path = Path(path)
    try:
        data = read_yaml(path)
        if "distributed_type" in data:
            return validate_accelerate_config(path)
        if "teachers" in data:
            parse_config(PoolConfig, path, data)
            return []
        return recipe_problems(load_recipe(path), path)
    except ConfigError as e:
        return e.problems
    except RmsdError as e:
        return [str(e)]


def recipe_problems(recipe: Recipe, path: str | Path) -> list[str]:
    """What is wrong with a loaded recipe as a whole (`rmsd validate`, and `rmsd run` with its --set overrides):
    a training split it also evaluates, its pool and the pool's teachers its keys name; [] when nothing is."""
    try:
        refusal = evaluated_training_split(recipe.dataset, recipe.eval)
        if refusal:
            return [f"{path}: {refusal}"]
        if recipe.pool is not None:
            pool_path = resolve_path(recipe.pool, str(path))
            if not pool_path.is_file():
                return [f"{path}: pool: {recipe.pool}: no such file"]
            return validate_file(pool_path) or _pool_names(Path(path), recipe, load_pool(pool_path))
        return []
    except ConfigError as e:
        return e.problems
    except RmsdError as e:
        return [str(e)]
