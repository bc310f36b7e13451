"""Typed configuration, one package: recipes (`recipe.py`), teacher pools and the registry of teacher backends
(`pools.py`), the YAML loading both share (`loading.py`), and how a config mistake reads (`messages.py`).

What a stage needs of a recipe is imported from here (`from rmsd.config import Recipe, load_recipe`); a
pool's models and `BACKENDS` from `rmsd.config.pools`.

    rmsd validate recipes/synthvid/tiny_rmsd.yaml teachers/synthvid_sim.yaml
"""

from rmsd.config.loading import ConfigError, apply_overrides, load_pool, parse_config, read_yaml, resolve_path
from rmsd.config.pools import PoolConfig
from rmsd.config.recipe import (
    LORA_TARGETS,
    REWARDS,
    AdversarialStageConfig,
    CurriculumConfig,
    DatasetConfig,
    DistillConfig,
    EvalConfig,
    EvalSetConfig,
    LoRAConfig,
    MatchingConfig,
    Recipe,
    SamplingConfig,
    SFTStageConfig,
    StudentConfig,
    TemporalConfig,
    TrainCommon,
    VISDConfig,
    load_recipe,
)

__all__ = [
    "LORA_TARGETS", "REWARDS", "AdversarialStageConfig", "ConfigError", "CurriculumConfig", "DatasetConfig",
    "DistillConfig", "EvalConfig", "EvalSetConfig", "LoRAConfig", "MatchingConfig", "PoolConfig", "Recipe",
    "SamplingConfig", "SFTStageConfig", "StudentConfig", "TemporalConfig", "TrainCommon", "VISDConfig",
    "apply_overrides", "load_pool", "load_recipe", "parse_config", "read_yaml", "resolve_path",
]
