"""The CLI and the Python API are quiet by default; RMSD_VERBOSE=1 brings every library message back."""

from __future__ import annotations

import os
import subprocess
import sys

# TRL's SFTConfig sets transformers' deprecated `gradient_checkpointing` (a FutureWarning raised inside
# transformers), and loading a checkpoint draws transformers' weight-loading bar: both are library noise.
PROBE = """
import tempfile, warnings
warnings.simplefilter("always")
from rmsd.verbosity import quiet_libraries
quiet_libraries()
from trl import SFTConfig
SFTConfig(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False)
from rmsd.models.offline.tiny import build_student
from rmsd.models.processing import load_student
load_student(build_student(tempfile.mkdtemp() + "/s"))
print("done")
"""


def _run(verbose: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RMSD_VERBOSE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    if verbose:
        env["RMSD_VERBOSE"] = "1"
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env)


def test_library_noise_is_off_by_default_and_back_on_request():
    quiet, loud = _run(False), _run(True)
    assert quiet.returncode == loud.returncode == 0, quiet.stderr[-2000:] + loud.stderr[-2000:]
    assert "FutureWarning" in loud.stderr and "Loading weights" in loud.stderr  # the probe can see the noise
    assert "FutureWarning" not in quiet.stderr and "Loading weights" not in quiet.stderr
    assert quiet.stdout.strip() == "done"
