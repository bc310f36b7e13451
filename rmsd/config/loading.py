"""The YAML loading recipes and pools share: `include:` (paths relative to the including file, which wins key by
key), `--set` overrides, credentials refused before anything reads a file, a pool path made relative to the file
that names it, and every problem reported with its YAML path (`rmsd.config.messages`); `load_pool` for a pool file.
`rmsd.config.recipe.load_recipe` reads a recipe the same way.

    python -c "from rmsd.config.loading import load_pool; print(load_pool('teachers/synthvid_sim.yaml'))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rmsd.config.messages import format_errors, read_text, yaml_error
from rmsd.config.pools import PoolConfig
from rmsd.credentials import credential_problems
from rmsd.errors import RmsdError


def resolve_path(path: str, relative_to: str | None) -> Path:
    """A path from a YAML file: relative to that file if it exists there, else to the cwd."""
    p = Path(path).expanduser()
    if not p.is_absolute() and relative_to is not None:
        beside = Path(relative_to).parent / p
        if beside.exists():
            return beside
    return p


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML file's mapping with its `include:`s merged in, credentials refused, a pool path made relative to it."""
    if not path.is_file():
        raise RmsdError(f"{path}: no such file")
    if path.resolve() in seen:
        raise RmsdError(f"{path}: include cycle ({' -> '.join(str(s) for s in seen)})")
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as e:
        where, cause = yaml_error(e)
        raise RmsdError(f"{path}:{where}: not valid YAML: {cause}" if where else f"{path}: not valid YAML: {cause}") from None
    if not isinstance(data, dict):
        raise RmsdError(f"{path}: expected a mapping of keys at the top level")
    problems = credential_problems(data, str(path))
    if problems:  # before anything else reads the file: every finding, the values never shown
        raise ConfigError(problems)
    includes = data.pop("include", None) or []
    if isinstance(data.get("pool"), str):  # a pool named in an included file is relative to *that* file
        data["pool"] = str(resolve_path(data["pool"], str(path)))
    merged: dict[str, Any] = {}
    for inc in [includes] if isinstance(includes, str) else includes:
        merged = _deep_merge(merged, read_yaml(resolve_path(inc, str(path)), seen + (path.resolve(),)))
    return _deep_merge(merged, data)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; the value is parsed as YAML (numbers, lists, null)."""
    for item in overrides:
        if "=" not in item:
            raise RmsdError(f"--set {item!r}: expected key.path=value, e.g. distill.sft.lr=1e-4")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip()
        keys = dotted.split(".")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            where, cause = yaml_error(e)
            at = f" at column {where.split(':')[1]} of the value" if where else ""
            raise RmsdError(f"--set {dotted}: the value is not valid YAML ({cause}{at}); quote it if it is text, "
                            f"e.g. --set '{dotted}=\"...\"'") from None
        problems = credential_problems(value, f"--set {dotted}", dotted)
        if problems:
            raise ConfigError(problems)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise RmsdError(f"--set {dotted}: {k} is not a section")
        node[keys[-1]] = value
    return data


def parse_config(model: type[BaseModel], path: Path, data: dict[str, Any], overrides: list[str] = ()) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(path, err, model, overrides)) from None


class ConfigError(RmsdError):
    """One or more config problems, each with its file and YAML path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def load_pool(path: str | Path, overrides: list[str] | None = None) -> PoolConfig:
    path = Path(path)
    return parse_config(PoolConfig, path, apply_overrides(read_yaml(path), overrides or []), overrides or [])
