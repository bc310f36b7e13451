"""How config mistakes read: one line each, with the file and line or the YAML path, and a fix.

- YAML syntax errors say `file:line:column` and the parser's cause;
- a file that is not UTF-8 says the line and the byte;
- an unknown key names the closest known key of its section: one whose name is the
  unknown key's initials (`learning_rate` -> "did you mean `lr`?"), else the closest spelling
  (difflib, ratio >= 0.6); with neither, it lists the section's keys;
- a mistake in a `--set` override names the override, not the recipe file it was applied to.
`rmsd.config` raises these as `ConfigError` / `RmsdError`; the CLI prints `error: ...`, exit 2.

    rmsd validate recipes/synthvid/tiny_rmsd.yaml
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from rmsd.errors import RmsdError


def yaml_error(e: yaml.YAMLError) -> tuple[str, str]:
    """(line:column, cause) of a YAML error, on one line."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    cause = " ".join(str(x) for x in (getattr(e, "problem", None), getattr(e, "context", None)) if x) or str(e)
    return where, " ".join(cause.split())


def read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise RmsdError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                        "save the file as UTF-8") from None


def _model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config model holding the keys at `loc` (list indices and dict keys stepped over)."""
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model


def _inner_model(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def unknown_key(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    section = _model_at(model, loc[:-1])
    known = sorted(section.model_fields) if section is not None else []
    name = str(loc[-1])
    initials = "".join(w[0] for w in name.lower().split("_") if w)  # learning_rate -> lr: what spelling misses
    close = [initials] if len(initials) > 1 and initials in known else difflib.get_close_matches(
        name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean `{close[0]}`?)"
    return f"unknown key (this section takes: {', '.join(known)})" if known else "unknown key"


def format_errors(path: Path, err: ValidationError, model: type[BaseModel],
                   overrides: list[str] = ()) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = unknown_key(model, tuple(e["loc"]))
        if not e["loc"] and re.match(r"^[a-z_]+(\.[a-z_]+)+: ", msg):  # a check across sections names its own key
            lines.append(f"{path}: {msg}")
            continue
        where = str(path)
        for item in overrides:  # a key set on the command line is that override's mistake, not the file's
            dotted = item.split("=", 1)[0].strip()
            if loc == dotted or loc.startswith(dotted + ".") or dotted.startswith(loc + "."):
                where = f"--set {item}"
        lines.append(f"{where}: {loc}: {msg}")
    return lines
