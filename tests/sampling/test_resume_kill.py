"""kill -9 in the middle of `rmsd sample`, resume, and get exactly an uninterrupted run's keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml
from fake_openai import FakeOpenAIServer

from rmsd.config import load_recipe
from rmsd.pipeline import sample_recipe
from rmsd.sampling.store import part_files, read_records
from rmsd.synthvid.generator import generate

ROOT = Path(__file__).resolve().parents[2]


def write_recipe(tmp: Path, url: str) -> Path:
    pool = {"name": "kill-test", "system_prompt": "Answer in <answer></answer>.", "teachers": [
        {"name": "api", "backend": "openai", "samples": 4, "concurrency": 2, "max_retries": 2,
         "openai": {"model": "fake-vlm", "base_url": url, "use_n": "never"}},
        {"name": "sim", "backend": "simulated", "samples": 2, "simulated": {"accuracy": {"mcq": 0.8}},
         "task_types": ["mcq"]}]}
    recipe = {"name": "kill-test", "dataset": {"benchmark": "synthvid", "path": str(tmp / "data"), "num_frames": 4},
              "pool": str(tmp / "pool.yaml"), "sampling": {"concurrency": 4}, "student": {"build": "tiny"}}
    (tmp / "pool.yaml").write_text(yaml.safe_dump(pool))
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return tmp / "recipe.yaml"


def count_lines(store: Path) -> int:
    return sum(p.read_text().count("\n") for p in part_files(store))


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    generate(tmp_path / "data", n=16, seed=3, frame_size=56)
    with FakeOpenAIServer(latency_s=0.05) as srv:
        recipe_path = write_recipe(tmp_path, srv.url)
        killed = tmp_path / "killed"
        code = (f"from rmsd.config import load_recipe; from rmsd.pipeline import sample_recipe; "
                f"sample_recipe(load_recipe({str(recipe_path)!r}), out={str(killed)!r}, progress=False)")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while count_lines(killed) < 10 if (killed / "data").is_dir() else True:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the sampling subprocess wrote nothing"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        written = count_lines(killed)
        recipe = load_recipe(recipe_path)
        summary = sample_recipe(recipe, out=killed, progress=False)  # resume
        full = sample_recipe(recipe, out=tmp_path / "full", progress=False)  # uninterrupted reference
    got = [r["key"] for r in read_records(killed)]
    raw = [line for p in part_files(killed) for line in p.read_text().splitlines()]
    assert proc.returncode == -signal.SIGKILL and 10 <= written < full["planned"]
    assert sorted(got) == sorted(r["key"] for r in read_records(tmp_path / "full"))
    assert len(raw) == len(got) and max(Counter(got).values()) == 1  # no duplicate line, even in the raw parts
    assert summary["missing"] == 0 and summary["new_records"] == full["planned"] - written
    assert len(part_files(killed)) == 2  # the killed run's part, and the resume's
