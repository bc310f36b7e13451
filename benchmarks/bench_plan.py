"""`rmsd plan` against a measured training step: exact weights/gradients/AdamW, total within 25%?

For each student (family x preset) a fresh process builds the student, decodes the synthvid
clips and collates the batch, reads its resident set size (the baseline), then loads the
student and runs real `MultiSampleSFTTrainer` steps (K teacher samples per item, the
trainer's fused LM head, torch AdamW) and reads the peak resident set size of the process
(VmHWM). The plan is computed for the same settings: the same frames, the batch's own
sequence width, float32 on the CPU. Reported per student:
- weights, gradients and AdamW states: the plan's bytes against torch's (numel x element size
  of the loaded parameters, of their `.grad` after backward, of the optimizer's state) — exact;
- the plan's total (static + the student step's gradients and activations) against the
  measured peak above the baseline.

With `--lora R` the student trains LoRA adapters of rank R (`student.lora`, through
`rmsd.train.distill.load_for_training`, as `rmsd distill` loads it; `--lora-dropout` its dropout)
and the results go to their own section of plan.md, the rest of the file kept.

    python benchmarks/bench_plan.py                           # writes benchmarks/results/plan.md
    python benchmarks/bench_plan.py --presets tiny --no-write # quick look
    python benchmarks/bench_plan.py --presets tiny --lora 16 --lora-dropout 0 0.05   # the LoRA section
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "plan.md"
CHECKPOINTING = False  # the recipe default (student.gradient_checkpointing)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _release() -> None:
    """Free what Python holds and hand glibc's free heap back to the OS, so the baseline is what is live."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def _warm_up(work: Path, lora: dict | None = None) -> None:
    """One step of a throwaway tiny student: every lazy import and one-off buffer of a trainer step happens here."""
    from datasets import Dataset

    from rmsd.datasets.synthvid import load_items
    from rmsd.models.offline.tiny import build_student
    from rmsd.synthvid.generator import generate
    from rmsd.train.sft_trainer import MultiSampleSFTTrainer

    generate(work / "data", n=2, seed=1)
    data = {it.item_id: it for it in load_items(work / "data", split="train")[:1]}
    model, processor = _student(build_student(work / "student"), lora)
    rows = [{"item_id": i, "texts": ["<answer>(A)</answer>"], "weights": [1.0]} for i in data]
    MultiSampleSFTTrainer(model, _args(work / "out", 1, 1, False), Dataset.from_list(rows), processor, data,
                          inputs=_inputs()).train()


def _args(out: Path, steps: int, items: int, checkpointing: bool):
    """The TRL config `rmsd distill` builds for these settings (recipe stage model -> rmsd.train.trl_args)."""
    from rmsd.config import SFTStageConfig
    from rmsd.train.trl_args import RunSettings, sft_config

    stage = SFTStageConfig(max_steps=steps, batch_size=items, lr=1e-4, logging_steps=1, max_length=1024, seed=0)
    run = RunSettings(output_dir=out, device="cpu", dtype="float32", report_to=[], gradient_checkpointing=checkpointing)
    return sft_config(stage, run, save_strategy="no")


def _inputs():
    from rmsd.train.stage_inputs import StudentInputs

    return StudentInputs(num_frames=8, max_side=None, system=None, shared_prefix=True)


def _student(path: Path, lora: dict | None):
    """The student as a stage loads it: plain, or a peft model with fresh adapters (student.lora)."""
    from rmsd.config import StudentConfig
    from rmsd.train.distill import load_for_training

    return load_for_training(path, StudentConfig(path=str(path), lora=lora))


def _count_saved(trainer, model, rows) -> int:
    """Bytes of the tensors autograd saves for the backward pass in one loss forward (parameters excluded):
    the part of the activations the plan counts tensor by tensor, without the allocator's slack. Run after
    the peak is read, so the hooks do not touch the measurement."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    model.train()
    batch = trainer._prepare_inputs(trainer.data_collator(rows))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = trainer.compute_loss(model, batch)
    del loss
    return sum(storages.values())


def child(family: str, preset: str, items: int, samples: int, steps: int, work: Path,
          lora: dict | None = None) -> dict:
    """One measurement, in its own process so the peak resident set belongs to this student alone."""
    import torch
    from datasets import Dataset

    from rmsd.datasets.synthvid import load_items
    from rmsd.models.memory import architecture
    from rmsd.models.offline.tiny import build_student
    from rmsd.models.processing import load_student
    from rmsd.plan import GIB, Settings, stage_plan
    from rmsd.synthvid.generator import generate
    from rmsd.train.collate import MultiSampleCollator
    from rmsd.train.sft_trainer import MultiSampleSFTTrainer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    _warm_up(work / "warm", lora)  # imports, threads and first-step buffers of the trainer are not the student's
    generate(work / "data", n=items * 2, seed=0)
    data = {it.item_id: it for it in load_items(work / "data", split="train")[:items]}
    path = build_student(work / "student", size=preset, family=family)
    texts = [f"<think>I watch the clip and see sample {k} of the objects move.</think><answer>(A)</answer>"
             for k in range(samples)]
    rows = [{"item_id": i, "texts": texts, "weights": [1.0] * samples} for i in data]
    _, processor = load_student(path)
    batch = MultiSampleCollator(processor, data, num_frames=8, max_length=1024)(rows)
    width, vis = batch["input_ids"].shape[1], int((batch["mm_token_type_ids"][0] == 2).sum())
    prompt = int((batch["labels"][0] != -100).int().argmax())  # tokens before the first target
    del processor
    _release()
    baseline = _rss_kib("VmRSS") * 1024
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set

    model, processor = _student(path, lora)
    trainer = MultiSampleSFTTrainer(model, _args(work / "out", steps, items, CHECKPOINTING), Dataset.from_list(rows),
                                    processor, data, inputs=_inputs())
    grads: dict[str, int] = {}

    def keep_grads(_module, _inputs=None):  # read .grad before the trainer zeroes it
        grads["bytes"] = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)

    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_pre_optimizer_step(self, *_a, **_k):
            keep_grads(model)

    trainer.add_callback(Probe())
    trainer.train()
    peak = _rss_kib("VmHWM") * 1024
    saved = _count_saved(trainer, model, rows)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    adam = sum(t.numel() * t.element_size() for st in trainer.optimizer.state.values()
               for k, t in st.items() if k in ("exp_avg", "exp_avg_sq"))

    arch = architecture(path)
    from rmsd.config import DatasetConfig, DistillConfig, StudentConfig

    # the recipe this run is: its sections as `rmsd distill` reads them, the batch's own sequence width
    settings = Settings(dataset=DatasetConfig(benchmark="synthvid", path=str(work / "data"), num_frames=8),
                        student=StudentConfig(path=str(path), gradient_checkpointing=CHECKPOINTING, lora=lora),
                        distill=DistillConfig(sft={"batch_size": items, "samples_per_item": samples,
                                                   "max_length": width}),
                        side=84, prompt_tokens=prompt - vis, response_tokens=width - prompt, pool_samples=samples)
    plan = stage_plan("sft", arch, settings, usable=1 << 62, suggest=False)
    from rmsd.models.memory import head_workspace_bytes, step_bytes
    from rmsd.plan import _step

    reply = width - prompt
    plan_saved = step_bytes(arch, _step("sft", settings)).student - \
        head_workspace_bytes(arch, plan.rows * (reply + 1), head_trains=not lora)  # the kept tensors, not the head's
    student = plan.models[0]
    return {"family": family, "preset": preset, "params": arch.params, "lora": lora,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad), "rows": plan.rows, "width": width,
            "plan_weights": student.weight_bytes, "torch_weights": weights, "plan_grads": student.grad_bytes,
            "torch_grads": grads.get("bytes", 0), "plan_adam": student.optimizer_bytes, "torch_adam": adam,
            "plan_activations": plan.activation_bytes, "plan_total": plan.total_bytes,
            "measured": peak - baseline, "saved": saved, "plan_saved": plan_saved, "gib": GIB,
            "settings": {k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v for k, v in vars(settings).items()}}


def mib(n: float) -> str:
    return f"{n / 1024**2:,.1f}"


def write(results: list[dict], command: str, load: str) -> str:
    lines = ["# `rmsd plan` against a measured training step (CPU)", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load} before the run; "
             "float32 on the CPU, one thread.", "",
             "Each row: a fresh process runs one warm-up step of a throwaway tiny student (imports, threads and"
             " one-off buffers of a trainer step), frees it, collates one batch (synthvid clips, 8 frames of 84 px,"
             " K teacher samples per item), reads its resident set size and resets the peak, then loads the"
             " student and runs real `MultiSampleSFTTrainer` steps as `rmsd distill` builds them (the recipe"
             " defaults: no gradient checkpointing, the shared-prefix forward); *measured* is the peak resident"
             " set (VmHWM) above that baseline. Weights, gradients and AdamW states are compared with torch's"
             " own byte counts.", "",
             "| student | params | sequences x tokens | weights plan / torch MiB | grads plan / torch MiB "
             "| AdamW plan / torch MiB | peak phase beyond the grads, plan MiB | total plan MiB | measured MiB "
             "| plan / measured |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = r["plan_total"] / r["measured"] if r["measured"] > 0 else float("nan")
        lines.append(
            f"| {r['family']} {r['preset']} | {r['params']:,} | {r['rows']} x {r['width']} "
            f"| {mib(r['plan_weights'])} / {mib(r['torch_weights'])} | {mib(r['plan_grads'])} / {mib(r['torch_grads'])} "
            f"| {mib(r['plan_adam'])} / {mib(r['torch_adam'])} | {mib(r['plan_activations'])} "
            f"| {mib(r['plan_total'])} | {mib(r['measured'])} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


LORA_TITLE = "## LoRA students (`student.lora`)"


def write_lora(results: list[dict], command: str, load: str) -> str:
    """The LoRA section: the same measurement with the student's adapters training and its base frozen."""
    lines = [LORA_TITLE, "", f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load} before the run; "
             "float32 on the CPU, one thread.", "",
             "The method above, with the student loaded as `rmsd distill` loads a `student.lora` student (fresh peft"
             " adapters on the text backbone's seven projections, vision tower frozen): only the adapters have"
             " gradients and AdamW states, and the plan counts the frozen vision tower's missing activations, the"
             " frozen LM head's missing fp32 gradient and, with dropout, each adapted layer's dropped input copy."
             " *Saved for backward* is measured apart: the bytes of every tensor autograd keeps for the backward pass"
             " in one loss forward over the same batch, run after the peak was read (`torch.autograd.graph."
             "saved_tensors_hooks`, parameters excluded), against the"
             " plan's activations without the LM head's workspace and the pixels.", "",
             "| student | LoRA | trainable | sequences x tokens | weights plan / torch MiB | grads plan / torch MiB "
             "| AdamW plan / torch MiB | saved for backward plan / measured MiB | total plan MiB | measured MiB "
             "| plan / measured |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = r["plan_total"] / r["measured"] if r["measured"] > 0 else float("nan")
        lines.append(
            f"| {r['family']} {r['preset']} | r={r['lora']['r']}, dropout {r['lora']['dropout']} | {r['trainable']:,} "
            f"| {r['rows']} x {r['width']} | {mib(r['plan_weights'])} / {mib(r['torch_weights'])} "
            f"| {mib(r['plan_grads'])} / {mib(r['torch_grads'])} | {mib(r['plan_adam'])} / {mib(r['torch_adam'])} "
            f"| {mib(r['plan_saved'])} / {mib(r['saved'])} | {mib(r['plan_total'])} | {mib(r['measured'])} "
            f"| {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def _with_section(text: str, section: str) -> str:
    """plan.md with its LoRA section replaced (or added at the end)."""
    head, found, tail = text.partition(LORA_TITLE)
    if found:
        rest = tail.split("\n## ", 1)
        tail = ("\n## " + rest[1]) if len(rest) > 1 else ""
        return head + section + tail
    return text.rstrip("\n") + "\n\n" + section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=["qwen2_5_vl", "qwen3_vl"])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    ap.add_argument("--items", type=int, default=4)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--lora", type=int, default=None, help="train LoRA adapters of this rank (student.lora.r)")
    ap.add_argument("--lora-dropout", type=float, nargs="+", default=[0.05], help="student.lora.dropout values")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-lora", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        family, preset = a.child
        lora = json.loads(a.child_lora) if a.child_lora else None
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(child(family, preset, a.items, a.samples, a.steps, Path(tmp), lora)))
        return
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    loras = [None] if a.lora is None else [{"r": a.lora, "alpha": 2.0 * a.lora, "dropout": d} for d in a.lora_dropout]
    results = []
    for preset in a.presets:
        for family in a.families:
            for lora in loras:
                cmd = [sys.executable, __file__, "--child", family, preset, "--items", str(a.items), "--samples",
                       str(a.samples), "--steps", str(a.steps), *(["--child-lora", json.dumps(lora)] if lora else [])]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
                if out.returncode != 0:
                    raise SystemExit(out.stderr[-3000:])
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = results[-1]
                print(f"{family} {preset} {lora or ''}: plan {mib(r['plan_total'])} MiB, measured {mib(r['measured'])} MiB",
                      flush=True)
    command = "python benchmarks/bench_plan.py " + " ".join(sys.argv[1:])
    if a.lora is None:
        text = write(results, command.strip(), load)
    else:
        section = write_lora(results, command.strip(), load)
        text = _with_section(RESULTS.read_text() if RESULTS.is_file() else "", section)
    print(text)
    if not a.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
