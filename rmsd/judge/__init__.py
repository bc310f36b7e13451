"""VISD judges: a rollout in, named scores and feedback out (`rmsd.judge.verdict`).

`Judge`, `Verdict`, `RuleJudge` and `LLMJudge` are importable from here, loaded on first use
(`import rmsd.judge` alone imports none of them).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Judge": "rmsd.judge.verdict", "Verdict": "rmsd.judge.verdict", "RuleJudge": "rmsd.judge.rules",
         "LLMJudge": "rmsd.judge.llm"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    # an unknown name must raise AttributeError: `from rmsd.judge import rules` then imports the submodule
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
