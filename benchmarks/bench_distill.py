"""Cost of `rmsd distill`'s trainers against stock TRL on the same tiny student and the same batch.

For each stage, seconds per optimizer step (median and 10th percentile over the timed steps:
the machine is shared, and the p10 is the least disturbed) and peak extra
memory (resident set size above the level before the run, sampled every 5 ms; this is a
CPU machine) of:
- stage sft: `MultiSampleSFTTrainer` (K samples per item, per-item weighted loss) against
  stock `trl.SFTTrainer` fed the *same* collated sequences (our collator minus the weight
  columns, since TRL's own collator is image-only) with its token-mean NLL;
- stage adversarial: `AdversarialTrainer` (video carried into every log-prob forward,
  discriminator scored and trained every step, format reward) and the same trainer without
  the discriminator, against stock `trl.GRPOTrainer` with the format reward, its prompts
  carrying the same frames as arrays. Stock TRL passes the video to generation and drops
  it from its loss forward, so it does less work per step than a correct video trainer.
All variants share the model size, items, batch, number of rollouts and completion length
(`min_new_tokens` pins every rollout to the full length, so sampling luck does not move
the timings). Variants run in one process, interleaved over rounds, so drift of a shared
machine hits them alike. Target: an adversarial step at most 1.5x a stock GRPO step.

    .venv/bin/python benchmarks/bench_distill.py               # writes benchmarks/results/distill.md
    .venv/bin/python benchmarks/bench_distill.py --rounds 1 --steps 3 --no-write   # quick look
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch
from datasets import Dataset
from transformers import TrainerCallback

RESULTS = Path(__file__).parent / "results" / "distill.md"
FORMAT_TEXT = "<think>I watch the clip.</think><answer>{}</answer>"


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, and the peak RSS seen while the steps ran."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0
        self._proc = psutil.Process()
        self.base = self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def on_train_begin(self, args, state, control, **kwargs):
        self.base = self.peak = self._proc.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t0)

    def on_train_end(self, args, state, control, **kwargs):
        self._stop.set()
        self._thread.join()


def _release_memory() -> None:
    """Give freed heap back to the OS between variants, so each starts from a comparable RSS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def setup(root: Path, n_items: int) -> dict[str, Any]:
    from rmsd.datasets.synthvid import load_items
    from rmsd.models.offline.tiny import build_student
    from rmsd.synthvid.generator import generate

    generate(root / "data", n=n_items, seed=0)
    items = load_items(root / "data", split="train")
    matched = []
    for it in items:
        answer = f"({it.answer})" if it.task_type == "mcq" else str(it.answer)
        for k, weight in enumerate([1.0, 0.5]):
            matched.append({"item_id": it.item_id, "teacher": "sim", "sample_index": k, "format_ok": True,
                            "text": FORMAT_TEXT.format(answer).replace("watch", "watch " * (k + 1)),
                            "weight": weight, "kept": True, "task_type": it.task_type})
    return {"items": {it.item_id: it for it in items}, "matched": matched,
            "student": build_student(root / "student", size="tiny", seed=0), "root": root}


def quickstart_data(env: dict[str, Any]) -> None:
    """The quickstart's own matched targets (embedded recipe, simulated pool, label-free matching) and items."""
    from rmsd.matching.dataset import read_matched
    from rmsd.pipeline import load_recipe_items, match_recipe, sample_recipe
    from rmsd.quickstart import quickstart_recipe
    from rmsd.synthvid.generator import generate

    recipe = quickstart_recipe(env["root"] / "qs")
    generate(recipe.dataset.path, n=400, seed=0)
    sample_recipe(recipe, progress=False)
    match_recipe(recipe, recipe.path_of(recipe.sampling.out))
    env["items"].update({it.item_id: it for it in load_recipe_items(recipe)})
    env["quickstart"] = read_matched(recipe.path_of(recipe.matching.out))
    env["quickstart_batch"] = recipe.distill.sft.batch_size


def _common(out: Path, steps: int, timer: StepTimer) -> dict[str, Any]:
    # activation checkpointing off, as rmsd's stages run by default (TRL would turn it on for the stock trainers)
    return dict(output_dir=str(out), max_steps=steps, learning_rate=1e-4, logging_steps=10_000, save_strategy="no",
                use_cpu=True, bf16=False, report_to="none", disable_tqdm=True, seed=0, dataloader_num_workers=0,
                activation_checkpointing=False)


# Ours are built the way `rmsd distill` builds them: recipe stage models -> rmsd.train.trl_args, with the
# same learning rate, schedule and logging as the stock trainers' `_common`.
OURS = {"lr": 1e-4, "warmup_steps": 0, "weight_decay": 0.0, "logging_steps": 10_000, "save_steps": 10_000, "seed": 0}
NO_SAVE = {"save_strategy": "no"}


def _run(out: Path) -> Any:
    from rmsd.train.trl_args import RunSettings

    return RunSettings(output_dir=out, device="cpu", dtype="float32", report_to=[], gradient_checkpointing=False)


def _inputs(shared: bool) -> Any:
    from rmsd.train.stage_inputs import StudentInputs

    return StudentInputs(num_frames=8, max_side=None, system=None, shared_prefix=shared)


# ----------------------------------------------------------------------------- variants
def sft_ours(env, out, steps, batch, timer, shared=True, samples_per_item=None, weighting="matched",
             matched="matched", cache=True):
    from rmsd.config import SFTStageConfig
    from rmsd.models.processing import load_student
    from rmsd.train.sft_trainer import MultiSampleSFTTrainer, sft_rows
    from rmsd.train.trl_args import sft_config

    model, processor = load_student(env["student"], device="cpu")
    stage = SFTStageConfig(**OURS, max_steps=steps, batch_size=batch, max_length=512,
                           samples_per_item=samples_per_item, weighting=weighting)
    rows = sft_rows(env[matched], samples_per_item, weighting)
    trainer = MultiSampleSFTTrainer(model, sft_config(stage, _run(out), **NO_SAVE), Dataset.from_list(rows),
                                    processor, env["items"], inputs=_inputs(shared), callbacks=[timer])
    collator = trainer.data_collator
    collator.cache = cache
    if cache:  # the stage's steady state: every item's prompt encoded by an earlier run (one stage = 300 steps)
        collator.prompts = env.setdefault(("prompts", matched), collator.prompts)
    return trainer


def sft_stock(env, out, steps, batch, timer):
    from trl import SFTConfig, SFTTrainer

    from rmsd.models.processing import load_student
    from rmsd.train.collate import VISION_KEYS, MultiSampleCollator, item_vision, merge_vision
    from rmsd.train.sft_trainer import sft_rows

    model, processor = load_student(env["student"], device="cpu")
    ours = MultiSampleCollator(processor, env["items"], max_length=512)

    def collate(rows):  # the same sequences, each with its own copy of its clip, without the weighting columns
        batch = ours(rows)
        text = {k: v for k, v in batch.items() if k not in ("weights", "item_index", *VISION_KEYS)}
        return {**text, **merge_vision(item_vision(batch))}

    args = SFTConfig(**_common(out, steps, timer), per_device_train_batch_size=batch, max_length=512,
                     dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False)
    return SFTTrainer(model, args, data_collator=collate,
                      train_dataset=Dataset.from_list(sft_rows(env["matched"], None, "matched")),
                      processing_class=processor, callbacks=[timer])


def _grpo_args(cls, out, steps, batch, timer, gens, length, **extra):
    return cls(**_common(out, steps, timer), per_device_train_batch_size=batch * gens, num_generations=gens,
               max_completion_length=length, temperature=0.8, generation_kwargs={"min_new_tokens": length}, **extra)


def adversarial_ours(env, out, steps, batch, timer, gens, length, rewards, disc_rollouts=None, shared=True):
    from rmsd.config import AdversarialStageConfig
    from rmsd.models.processing import load_student
    from rmsd.train.adversarial_trainer import AdversarialTrainer
    from rmsd.train.discriminator import TeacherSamples
    from rmsd.train.trl_args import grpo_config

    model, processor = load_student(env["student"], device="cpu")
    teacher = TeacherSamples.from_matched(env["matched"])
    data = Dataset.from_list([{"prompt": env["items"][i].prompt, "item_id": i} for i in teacher.texts])
    stage = AdversarialStageConfig(**OURS, enabled=True, max_steps=steps, batch_size=batch, num_generations=gens,
                                   max_completion_length=length, temperature=0.8, reward_weights=rewards,
                                   disc_lr=1e-4, disc_warmup_steps=0, disc_rollouts_per_item=disc_rollouts)
    args = grpo_config(stage, _run(out), **NO_SAVE, generation_kwargs={"min_new_tokens": length})
    return AdversarialTrainer(model, args, data, processor, env["items"], stage=stage, inputs=_inputs(shared),
                              teacher_samples=teacher, callbacks=[timer])


def grpo_stock(env, out, steps, batch, timer, gens, length):
    from trl import GRPOConfig, GRPOTrainer

    from rmsd.media.video import load_frames
    from rmsd.models.processing import load_student
    from rmsd.scoring import format_ok

    def format_reward(completions, **_):
        return [float(format_ok(c[0]["content"])) for c in completions]

    model, processor = load_student(env["student"], device="cpu")
    frames = {i: load_frames(it.video, num_frames=8).array for i, it in env["items"].items()}

    def as_messages(batch):  # the clip as an array part of the chat prompt, built when a row is read
        return {"prompt": [[{"role": "user", "content": [{"type": "video", "video": frames[i]},
                                                         {"type": "text", "text": env["items"][i].prompt}]}]
                           for i in batch["item_id"]]}

    dataset = Dataset.from_list([{"item_id": i} for i in env["items"]]).with_transform(as_messages)
    args = _grpo_args(GRPOConfig, out, steps, batch, timer, gens, length)
    return GRPOTrainer(model, reward_funcs=format_reward, args=args, train_dataset=dataset,
                       processing_class=processor, callbacks=[timer])


# ----------------------------------------------------------------------------- driver
def run(build, out: Path, steps: int, warmup: int) -> tuple[list[float], int]:
    _release_memory()
    timer = StepTimer()
    trainer = build(out, steps + warmup, timer)
    trainer.train()
    extra = timer.peak - timer.base
    del trainer
    _release_memory()
    return timer.times[warmup:], extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4, help="items per step")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--length", type=int, default=32, help="completion tokens")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--only", nargs="+", default=None, metavar="PREFIX",
                        help="run only the variants whose name starts with one of these (e.g. quickstart)")
    parser.add_argument("--append", action="store_true",
                        help="add the table to distill.md as a section of its own instead of replacing the file")
    parser.add_argument("--collate-repeats", type=int, default=60,
                        help="quickstart batches collated with and without the prompt cache (0: skip)")
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    with tempfile.TemporaryDirectory() as tmp:
        env = setup(Path(tmp), a.items)
        quickstart_data(env)
        g, n, b, qb = a.generations, a.length, a.batch, env["quickstart_batch"]
        variants = {
            "sft: MultiSampleSFTTrainer": lambda o, s, t: sft_ours(env, o, s, b, t),
            "sft: MultiSampleSFTTrainer (naive path)": lambda o, s, t: sft_ours(env, o, s, b, t, shared=False),
            "sft: stock SFTTrainer": lambda o, s, t: sft_stock(env, o, s, b, t),
            "quickstart: single-sample SFT (baseline)": lambda o, s, t: sft_ours(
                env, o, s, qb, t, samples_per_item=1, weighting="uniform", matched="quickstart"),
            "quickstart: R-MSD SFT": lambda o, s, t: sft_ours(env, o, s, qb, t, matched="quickstart"),
            "quickstart: R-MSD SFT (naive path)": lambda o, s, t: sft_ours(env, o, s, qb, t, shared=False,
                                                                          matched="quickstart"),
            "quickstart: single-sample SFT, processor every batch": lambda o, s, t: sft_ours(
                env, o, s, qb, t, samples_per_item=1, weighting="uniform", matched="quickstart", cache=False),
            "quickstart: R-MSD SFT, processor every batch": lambda o, s, t: sft_ours(
                env, o, s, qb, t, matched="quickstart", cache=False),
            "adversarial: AdversarialTrainer (D + format)": lambda o, s, t: adversarial_ours(
                env, o, s, b, t, g, n, {"discriminator": 1.0, "format": 0.5}),
            "adversarial: AdversarialTrainer (D on 1 rollout/item + format)": lambda o, s, t: adversarial_ours(
                env, o, s, b, t, g, n, {"discriminator": 1.0, "format": 0.5}, disc_rollouts=1),
            "adversarial: AdversarialTrainer (D + format, naive path)": lambda o, s, t: adversarial_ours(
                env, o, s, b, t, g, n, {"discriminator": 1.0, "format": 0.5}, shared=False),
            "adversarial: AdversarialTrainer (format only)": lambda o, s, t: adversarial_ours(
                env, o, s, b, t, g, n, {"format": 1.0}),
            "adversarial: stock GRPOTrainer (format)": lambda o, s, t: grpo_stock(env, o, s, b, t, g, n),
        }
        variants = {k: v for k, v in variants.items() if k.startswith(tuple(a.only))} if a.only else variants
        times: dict[str, list[float]] = {k: [] for k in variants}
        memory: dict[str, list[int]] = {k: [] for k in variants}
        for build in variants.values():  # untimed: fills the frame cache, tokenizer caches, lazy imports
            run(build, Path(tmp) / "warm", 1, 0)
        encode_seconds = fill_prompt_caches(env)
        collate_ms = collate_timing(env, env["quickstart_batch"], a.collate_repeats) if a.collate_repeats else {}
        for r in range(a.rounds):
            for name, build in variants.items():
                t, m = run(build, Path(tmp) / f"run{r}", a.steps, a.warmup)
                times[name] += t
                memory[name].append(m)
                print(f"round {r} {name}: {statistics.median(t):.3f} s/step, +{m / 2**20:.0f} MiB", flush=True)
    rows = summarise(times, memory)
    table = render(rows, a) + encoding_note(encode_seconds) + cache_ratios(rows)
    if collate_ms:
        table += (f"\nCollating one R-MSD batch of {env['quickstart_batch']} quickstart items alone (median of "
                  f"{a.collate_repeats}, alternating): {collate_ms['processor every batch']:.1f} ms with the processor "
                  f"every batch, {collate_ms['prompt cache']:.1f} ms from the prompt cache "
                  f"(x{collate_ms['prompt cache'] / collate_ms['processor every batch']:.2f}).\n")
    print(table)
    if not a.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        if a.append and RESULTS.is_file():
            section = table.replace("# distill: trainer cost against stock TRL", "## A later run", 1)
            RESULTS.write_text(RESULTS.read_text().rstrip("\n") + "\n\n" + section)
        else:
            RESULTS.write_text(table)
        print(f"wrote {RESULTS}")


def fill_prompt_caches(env: dict[str, Any]) -> dict[str, tuple[int, float]]:
    """Encode every item of each shared prompt cache once (what a stage pays in its first epoch):
    {matched set: (items, seconds)}."""
    spent = {}
    for key, cache in [(k, v) for k, v in env.items() if isinstance(k, tuple) and k[0] == "prompts"]:
        ids = list(dict.fromkeys(r["item_id"] for r in env[key[1]]))
        t0 = time.perf_counter()
        for item_id in ids:
            cache.prompt(item_id)
        spent[key[1]] = (len(ids), time.perf_counter() - t0)
    return spent


def collate_timing(env: dict[str, Any], batch: int, repeats: int) -> dict[str, float]:
    """Median ms to collate one quickstart batch of R-MSD rows, with the warm prompt cache and without it,
    alternating the two on the same batches (the collator's own cost, without the model's noise)."""
    from rmsd.models.processing import load_student
    from rmsd.train.collate import MultiSampleCollator
    from rmsd.train.sft_trainer import sft_rows

    _, processor = load_student(env["student"], device="cpu")
    rows = sft_rows(env["quickstart"], None, "matched")
    cached = MultiSampleCollator(processor, env["items"], max_length=512)
    cached.prompts = env.get(("prompts", "quickstart"), cached.prompts)
    plain = MultiSampleCollator(processor, env["items"], max_length=512, cache=False)
    spent: dict[str, list[float]] = {"prompt cache": [], "processor every batch": []}
    for r in range(repeats):
        chunk = rows[(r * batch) % len(rows):][:batch]
        for name, collate in (("prompt cache", cached), ("processor every batch", plain)):
            t0 = time.perf_counter()
            collate(chunk)
            spent[name].append(1000 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in spent.items()}


def encoding_note(spent: dict[str, tuple[int, float]]) -> str:
    if not spent:
        return ""
    lines = ["", "Prompt cache (`rmsd.train.stage_inputs.PromptCache`): the cached rows above run with every item",
             "already encoded (a stage's steady state after its first epoch); filling it once cost"]
    lines += [f"- {name}: {n} items in {s:.2f} s ({1000 * s / n:.1f} ms per item, once per stage)"
              for name, (n, s) in spent.items()]
    return "\n".join(lines) + "\n"


def cache_ratios(rows: list[dict[str, Any]]) -> str:
    """Cached / uncached step time for each variant measured both ways (the prompt cache's effect)."""
    by_name = {r["variant"]: r for r in rows}
    lines = []
    for name, before in by_name.items():
        if not name.endswith(", processor every batch"):
            continue
        base = name.removesuffix(", processor every batch")
        after = next((r for n, r in by_name.items() if n.startswith(base) and "naive" not in n and n != name), None)
        if after is not None:
            lines.append(f"- {base}: {before['s_per_step']:.3f} -> {after['s_per_step']:.3f} s/step median "
                         f"(x{after['s_per_step'] / before['s_per_step']:.2f}; p10 {before['p10']:.3f} -> "
                         f"{after['p10']:.3f}, x{after['p10'] / before['p10']:.2f})")
    return ("\nWith the prompt cache / processor every batch, same run:\n" + "\n".join(lines) + "\n") if lines else ""


def summarise(times: dict[str, list[float]], memory: dict[str, list[int]]) -> list[dict[str, Any]]:
    rows = []
    for name, t in times.items():
        stage = name.split(":")[0]
        stock = next(k for k in times if k.startswith(stage) and ("stock" in k or "(baseline)" in k))
        med, ref = statistics.median(t), statistics.median(times[stock])
        best, ref_best = _p10(t), _p10(times[stock])
        mem, ref_mem = statistics.median(memory[name]), statistics.median(memory[stock])
        rows.append({"variant": name, "s_per_step": med, "ratio": med / ref, "p10": best, "p10_ratio": best / ref_best,
                     "mem_mib": mem / 2**20, "mem_ratio": mem / ref_mem if ref_mem else float("nan"), "steps": len(t)})
    return rows


def _p10(values: list[float]) -> float:
    """10th percentile: the step time with the least interference from other work on a shared machine."""
    ordered = sorted(values)
    return ordered[int(0.1 * (len(ordered) - 1))]


def render(rows: list[dict[str, Any]], a: argparse.Namespace) -> str:
    lines = [
        "# distill: trainer cost against stock TRL",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_distill.py --items {a.items} --batch {a.batch} "
        f"--generations {a.generations} --length {a.length} --steps {a.steps} --rounds {a.rounds} "
        f"--threads {a.threads}" + (f" --only {' '.join(a.only)}" if a.only else "") + "`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
        f"torch {torch.__version__}, {a.threads} thread(s); tiny student (`build_student(size='tiny')`), "
        f"synthvid clips, 8 frames. sft: {a.batch} items x 2 samples per step. adversarial: {a.batch} items x "
        f"{a.generations} rollouts x {a.length} tokens per step.",
        "",
        f"Load average when it finished: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1 / 5 / 15 min); "
        f"finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| variant | s/step median | x base | s/step p10 | x base | peak extra RSS (MiB) | x base | steps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['s_per_step']:.3f} | {r['ratio']:.2f} | {r['p10']:.3f} | "
                     f"{r['p10_ratio']:.2f} | {r['mem_mib']:.0f} | {r['mem_ratio']:.2f} | {r['steps']} |")
    lines += [
        "",
        "x base: against the stage's stock TRL trainer (sft, adversarial) or the single-sample SFT step (quickstart).",
        "",
        "Reading the rows:",
        "- sft: the same sequences and the same fused-LM-head forward in both trainers. Ours processes and encodes",
        "  each item's clip once for its K samples and, by default, runs each item's prompt once for all of them",
        "  (`rmsd.models.shared_prefix`); the naive path runs K whole sequences; stock TRL one clip per sequence.",
        "- quickstart: the quickstart's own data and batch (`rmsd/assets/quickstart.yaml`: 16 items per step,",
        "  matched targets of the simulated pool): single-sample SFT (one sample per item) against R-MSD SFT",
        "  (every kept sample of each item), with and without the shared prefix. \"processor every batch\": the",
        "  collator without its prompt cache (`MultiSampleCollator(cache=False)`, the code before the cache):",
        "  the video processor and tokeniser run on every batch; the same tensors, bit for bit.",
        "- adversarial, format only: the cost of a *correct* video GRPO step. Stock GRPO drops the video from",
        "  its loss forward (it never runs the vision tower there, and never trains it); ours carries it and",
        "  encodes each item's clip once for its G rollouts.",
        "- adversarial, D + format: adds the discriminator (a copy of the student's language backbone): one",
        "  forward + backward over B teacher samples and B·G rollouts per step, each prompt read once through a",
        "  shared prefix; the rollouts' rewards come from the same forward. The policy's loss forward (and",
        "  old / reference log-probs when used) also runs each item's prompt once for its G rollouts; the",
        "  naive-path row runs G whole sequences there.",
        "- adversarial, D on 1 rollout/item (`disc_rollouts_per_item: 1`): D's loss reads one of each item's G",
        "  rollouts, the others are scored under no_grad (the reward still covers every rollout); the default",
        "  (null) trains on all G, as GAD does.",
    ]
    lines += ["", "Raw rows: " + json.dumps([{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                                             for r in rows]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
