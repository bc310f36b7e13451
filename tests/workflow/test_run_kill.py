"""kill -9 of `rmsd run` (a real process) during sampling and during distillation, then the same command again:
sampling asks only for what the store lacks, distillation continues from its last checkpoint and ends with the
same weights and evaluation numbers as an uninterrupted run (one thread, CPU)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from fake_openai import FakeOpenAIServer
from run_recipes import ROOT, tiny_recipe
from safetensors.torch import load_file

import rmsd
from rmsd.sampling.store import part_files, read_records
from rmsd.synthvid.generator import generate


def start(recipe: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "rmsd.cli", "run", "--recipe", str(recipe), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, f"the run never reached {what}"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def lines(store: Path) -> int:
    return sum(p.read_text().count("\n") for p in part_files(store)) if (store / "data").is_dir() else 0


def test_killed_during_sampling_resumes_without_asking_twice(tmp_path):
    generate(tmp_path / "data", n=16, seed=3, frame_size=56)
    with FakeOpenAIServer(latency_s=0.05) as srv:
        pool = {"name": "kill-test", "teachers": [
            {"name": "api", "backend": "openai", "samples": 4, "concurrency": 2,
             "openai": {"model": "fake-vlm", "base_url": srv.url, "use_n": "never"}}]}
        recipe = tiny_recipe(tmp_path, pool=pool)
        store = tmp_path / "runs" / "samples"
        proc = start(recipe, "--until", "match")
        kill_when(proc, lambda: lines(store) >= 10, "10 stored samples")
        stored = lines(store)
        sent_before = srv.stats.requests
        report = rmsd.run(recipe, stop="match", progress=False, echo=lambda line: None)
        sent_after = srv.stats.requests - sent_before
    keys = [r["key"] for r in read_records(store)]
    planned = 4 * json.loads((tmp_path / "data" / "info.json").read_text())["counts"]["train"]  # K = 4 per item
    assert report.status() == {"validate": "checked", "sample": "resumed", "match": "ran"}
    assert len(keys) == planned and max(Counter(keys).values()) == 1
    assert sent_after == planned - stored  # one request per sample: none of the stored ones asked again
    assert stored < planned


def test_killed_during_distillation_resumes_from_its_checkpoint_to_the_same_numbers(tmp_path):
    torch.set_num_threads(1)
    generate(tmp_path / "data", n=20, seed=0, frame_size=56)
    recipe = tiny_recipe(tmp_path, distill__sft__max_steps=8, distill__sft__save_steps=2)
    runs = tmp_path / "runs"
    rmsd.run(recipe, stop="match", progress=False, echo=lambda line: None)
    reference = tmp_path / "reference"  # the same recipe, uninterrupted, from a copy of the folder
    shutil.copytree(tmp_path, reference, symlinks=True, ignore=shutil.ignore_patterns("reference"))
    done = rmsd.run(tiny_recipe(reference, distill__sft__max_steps=8, distill__sft__save_steps=2), progress=False,
                    echo=lambda line: None)

    proc = start(recipe)
    kill_when(proc, lambda: (runs / "distilled" / "sft" / "checkpoint-4" / "trainer_state.json").is_file(),
              "checkpoint-4")
    assert not (runs / "distilled" / "sft" / "stage.json").exists()
    said: list[str] = []
    report = rmsd.run(recipe, progress=False, echo=said.append)
    assert report.status() == {"validate": "checked", "sample": "up to date", "match": "up to date",
                               "sft": "resumed", "eval": "ran"}
    assert any(line.startswith("sft: resuming from") for line in said)
    stage = json.loads((runs / "distilled" / "sft" / "stage.json").read_text())
    assert stage["global_step"] == 8 and Path(stage["resumed_from"]).name in ("checkpoint-4", "checkpoint-6")
    ours, theirs = (load_file(str(r / "distilled" / "sft" / "model.safetensors")) for r in (runs, reference / "runs"))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert report.results == {"synthvid": {**done.results["synthvid"], "seconds": report.results["synthvid"]["seconds"],
                                           "model": report.results["synthvid"]["model"]}}
    predictions = [(r / "eval" / "distilled-sft" / "predictions.jsonl").read_text() for r in (runs, reference / "runs")]
    assert predictions[0] == predictions[1]
