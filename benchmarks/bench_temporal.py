"""Cost of Video-R1's temporal contrast (issue 34): seconds per GRPO step with and without it, in one process.

Two `AdversarialTrainer`s over the same synthvid items and the same student checkpoint, with
the settings of the synthvid experiment's RL stage (recipes/synthvid/experiment_sft_rl.yaml:
4 items x G = 4 rollouts per step, temperature 0.8, up to 112 new tokens, correctness + format
rewards); the second has `temporal.enabled` with G′ = 2 shuffled rollouts per item
(recipes/synthvid/experiment_sft_rl_temporal.yaml). They train alternately, `--steps` steps
per round for `--rounds` rounds (default 4 x 6) (so slow drift of a shared machine falls on both), and each
step's wall time and this process's CPU time are taken from the trainer's step callbacks; the
first step of each run (first encodings, allocator warm-up) is left out. Reported, for both
clocks: median s/step of each, and the ratio as the median over rounds of each round's ratio
(the two settings of a round run back to back, in alternating order, so load that drifts
between rounds cancels). On a shared machine the CPU clock is the steadier one: with one
thread, other processes lengthen the wall time of a step but hardly its CPU time. What the extra costs is generation only: the shuffled rollouts are never trained on,
so no log-prob forward or backward is spent on them. The ratio depends on how long the
rollouts are: a student that stops early (`--student`: a trained checkpoint) spends less of
its step generating than the random-weight tiny student, which always runs to the cap.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_temporal.py --json benchmarks/results/temporal_cost.json
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_temporal.py --length 24 --json benchmarks/results/temporal_cost_24.json
    python benchmarks/bench_temporal.py --steps 3 --rounds 1          # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

STAGE = {"lr": 2e-5, "batch_size": 4, "num_generations": 4, "temperature": 0.8, "max_completion_length": 112,
         "reward_weights": {"correctness": 1.0, "format": 0.5}, "disc_warmup_steps": 0, "warmup_steps": 0,
         "logging_steps": 1, "save_steps": 10_000, "seed": 0}
TEMPORAL = {"enabled": True, "bonus": 0.3, "ratio": 1.0, "shuffled_generations": 2}


class StepTimes(TrainerCallback):
    """Wall and CPU seconds (this process) of every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu: list[float] = []
        self._t0 = self._c0 = 0.0

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self.times.append(time.perf_counter() - self._t0)
        self.cpu.append(time.process_time() - self._c0)


def trainer(student: Path, items: dict, steps: int, temporal: bool, out: Path,
            length: int) -> tuple[Any, StepTimes]:
    from datasets import Dataset

    from rmsd.config import AdversarialStageConfig, StudentConfig
    from rmsd.datasets import get_benchmark
    from rmsd.train.adversarial_trainer import AdversarialTrainer
    from rmsd.train.distill import load_for_training
    from rmsd.train.stage_inputs import StudentInputs
    from rmsd.train.trl_args import RunSettings, grpo_config

    cfg = AdversarialStageConfig(enabled=True, max_steps=steps, **{**STAGE, "max_completion_length": length},
                                 temporal=TEMPORAL if temporal else {"enabled": False})
    model, processor = load_for_training(student, StudentConfig(path=str(student)))
    run = RunSettings(output_dir=out, device="cpu", dtype="float32", report_to=[], gradient_checkpointing=False)
    rows = [{"prompt": it.prompt, "item_id": i} for i, it in items.items()]
    times = StepTimes()
    t = AdversarialTrainer(model, grpo_config(cfg, run), Dataset.from_list(rows), processor, items, stage=cfg,
                           inputs=StudentInputs(num_frames=8, max_side=None, system=None, shared_prefix=True),
                           benchmark=get_benchmark("synthvid"), callbacks=[times])
    return t, times


def measure(student: Path, items: dict, steps: int, rounds: int, work: Path,
            length: int) -> list[dict[str, dict[str, list[float]]]]:
    """Per round, each setting's step times, wall and CPU (its first step left out); the order within a round
    alternates."""
    out = []
    for r in range(rounds):
        got: dict[str, dict[str, list[float]]] = {}
        for name in ("plain", "temporal") if r % 2 == 0 else ("temporal", "plain"):
            t, times = trainer(student, items, steps, name == "temporal", work / f"{name}{r}", length)
            t.train()
            got[name] = {"wall": times.times[1:], "cpu": times.cpu[1:]}
            print(f"round {r} {name}: wall " + " ".join(f"{x:.2f}" for x in times.times) + ", cpu "
                  + " ".join(f"{x:.2f}" for x in times.cpu), flush=True)
        out.append(got)
    return out


def summary(times: list[dict[str, dict[str, list[float]]]], clock: str) -> dict[str, Any]:
    """Median s/step of each setting and the median over rounds of each round's ratio."""
    med = {name: statistics.median(x for r in times for x in r[name][clock]) for name in ("plain", "temporal")}
    ratios = [statistics.median(r["temporal"][clock]) / statistics.median(r["plain"][clock]) for r in times]
    return {"plain": round(med["plain"], 3), "temporal": round(med["temporal"], 3),
            "ratio_per_round": [round(x, 3) for x in ratios], "ratio": round(statistics.median(ratios), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", type=Path, default=None, help="checkpoint folder (default: a fresh tiny student)")
    ap.add_argument("--items", type=int, default=16, help="synthvid train items cycled through")
    ap.add_argument("--steps", type=int, default=4, help="GRPO steps per round and setting")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--length", type=int, default=STAGE["max_completion_length"], help=(
        "max_completion_length: the random-weight student always runs to it, so a short cap stands in for a "
        "student that stops early (synthvid's teacher answers: median ~20 tokens)"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from rmsd.datasets.synthvid import load_items
    from rmsd.models.offline.tiny import build_student
    from rmsd.synthvid.generator import generate

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate(work / "data", n=max(args.items * 2, 20), seed=1234)
        items = {it.item_id: it for it in load_items(work / "data", split="train")[: args.items]}
        student = args.student or build_student(work / "student", size="tiny", seed=0)
        load = os.getloadavg()
        times = measure(student, items, args.steps, args.rounds, work, args.length)
    wall, cpu = summary(times, "wall"), summary(times, "cpu")
    result = {"command": "python " + " ".join(os.sys.argv), "student": str(args.student or "tiny (random weights)"),
              "stage": {**STAGE, "max_completion_length": args.length}, "temporal": TEMPORAL, "threads": args.threads, "load_at_start": load,
              "load_at_end": os.getloadavg(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "python": platform.python_version(), "seconds_per_step": times, "wall": wall, "cpu": cpu}
    for name, s in (("wall", wall), ("cpu", cpu)):
        print(f"{name} s/step: plain {s['plain']:.3f}, temporal {s['temporal']:.3f}; ratio per round "
              f"{', '.join(f'{x:.2f}' for x in s['ratio_per_round'])}, median {s['ratio']:.2f}")
    print(f"load {load[0]:.1f} -> {result['load_at_end'][0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
