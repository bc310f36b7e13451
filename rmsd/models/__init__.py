"""The student models: build, load, encode, generate (and LoRA, memory, the model families).

`build_student`, `load_student`, `encode` and `generate` are importable from here; they are
loaded on first use, so `import rmsd.models` stays free of torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"build_student": "rmsd.models.offline.tiny", "load_student": "rmsd.models.processing",
         "encode": "rmsd.models.processing", "generate": "rmsd.models.processing"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    # an unknown name must raise AttributeError: `from rmsd.models import lora` then imports the submodule
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
