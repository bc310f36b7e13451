"""Quiet libraries by default, in the CLI and the Python API; everything back with RMSD_VERBOSE=1.

rmsd reports its own progress (stage bars or log lines, the sampling bar, phase lines of the
quickstart). Under it, the libraries print per-file weight-loading and shard-writing bars
and deprecation notices about calls *inside* them (TRL 1.16 reads transformers'
`is_gradient_checkpointing`, renamed in transformers 5.x), none of which a user can act on.
rmsd's own calls use the current names; this module silences the rest: FutureWarnings
raised from transformers / TRL / accelerate / datasets / peft, and their progress bars.
Errors and warnings that are not deprecations still show.

    RMSD_VERBOSE=1 rmsd quickstart        # see every library message
"""

from __future__ import annotations

import os
import warnings

VERBOSE_ENV = "RMSD_VERBOSE"
LIBRARIES = r"(transformers|trl|accelerate|datasets|peft|huggingface_hub)(\.|$)"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def quiet_libraries() -> None:
    """Silence library deprecation notices and progress bars (idempotent), unless RMSD_VERBOSE is set."""
    if verbose():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=LIBRARIES)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
