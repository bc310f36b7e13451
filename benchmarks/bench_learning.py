"""Calibration: does the default tiny student learn synthvid on a CPU in minutes? (issue 2, item 8)

Builds the `tiny` student from its config (random weights, local tokenizer) and trains it
with a plain PyTorch loop on synthvid train items, the ground truth written as a perfect
teacher would write it: the simulated teacher at accuracy 1.0, short reasoning,
`<think>The object is red. So the answer is (B).</think><answer>(B)</answer>`
(`--target answer`: only `<answer>(B)</answer>`). AdamW lr 1e-3, betas (0.9, 0.98),
weight decay 0.01, 20 warm-up steps then constant, gradient clip 1.0, batch 32, frames at
their real fps through `rmsd.models.processing.encode` (the same inputs as `rmsd distill`).
Every `--eval-every` steps it decodes the test split greedily and scores it; the learning
curve goes to benchmarks/results/learning.md.

What it measures is the student and the input pipeline, not the distillation method: no
teacher noise, no matching. Target (issue 2): the easy tier learnable in minutes (colour
>= 0.9), the hard tier not saturated. Scores: mcq and numeric exact, grounding tIoU,
open ROUGE-L F1 of the description, all read from `<answer>...</answer>` (strict: a reply
without the tag scores 0). The time budget covers training; the last evaluation runs after it.

    .venv/bin/python benchmarks/bench_learning.py --minutes 8            # ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_learning.py --minutes 2 --n 400 --eval-every 50   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from rmsd.datasets.synthvid import load_items
from rmsd.items import Item
from rmsd.media.video import load_frames
from rmsd.models.offline.tiny import PRESETS, build_student
from rmsd.models.processing import generate, load_student
from rmsd.scoring import rouge_l
from rmsd.synthvid.generator import GENERATOR_VERSION
from rmsd.synthvid.generator import generate as generate_synthvid

ROOT = Path(__file__).resolve().parent
GROUPS = (("tier", lambda it: it.meta["difficulty"]), ("task", lambda it: it.task_type),
          ("kind", lambda it: f"{it.meta['difficulty']}/{it.meta['question_kind']}"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=8.0, help="training time budget (evaluation excluded)")
    p.add_argument("--n", type=int, default=2000, help="synthvid items (80%% train, 20%% test)")
    p.add_argument("--data", type=Path, default=None,
                   help="synthvid folder (default: one per generator version, --n, --seed, --tier-mix)")
    p.add_argument("--tier-mix", default=None, help='synthvid tier shares, e.g. "easy=1" (default: synthvid\'s mix)')
    p.add_argument("--size", default="tiny", help="student preset")
    p.add_argument("--base", type=Path, default=None,
                   help="start from this from_pretrained folder (e.g. `rmsd build-student --pretrain`) instead of "
                        "a random-weight --size student")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one number of the preset for this run (calibration), e.g. --set rope_theta=100")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", choices=("reasoning", "answer"), default="reasoning")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-steps", type=int, default=None, help="stop here even if time is left")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-items", type=int, default=400, help="test items scored at each evaluation")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "learning.md")
    return p.parse_args()


def prepare(args: argparse.Namespace) -> tuple[list[Item], list[Item], dict[str, object]]:
    """synthvid train/test items (generated once per --data/--n/--seed) and every clip decoded once."""
    mix = {k: float(v) for k, v in (kv.split("=") for kv in args.tier_mix.split(","))} if args.tier_mix else None
    if args.data is None:  # one folder per dataset, reused by later runs
        args.data = Path("runs/bench_learning") / (f"synthvid-v{GENERATOR_VERSION}-n{args.n}-s{args.seed}"
                                                   + (f"-{args.tier_mix}" if mix else ""))
    if not (args.data / "info.json").exists():
        generate_synthvid(args.data, n=args.n, seed=args.seed, tier_mix=mix)
    train, test = load_items(args.data, "train"), load_items(args.data, "test")[: args.eval_items]
    frames = {it.video: load_frames(it.video, num_frames=8) for it in train + test}
    return train, test, frames


def targets(items: list[Item], kind: str) -> list[str]:
    """The response trained on per item: a perfect simulated teacher's short reply, or the answer tag alone."""
    if kind == "answer":
        return [f"<answer>{'(' + it.answer + ')' if it.task_type == 'mcq' else it.answer}</answer>" for it in items]
    from rmsd.teachers.simulated import SimulatedTeacher

    oracle = SimulatedTeacher("oracle", accuracy=1.0, verbosity="short", seed=0)  # SIMULATOR: ground truth as text
    return [oracle.sample_text(it, 0) for it in items]


# ----------------------------------------------------------------------------- scoring
def answer_text(text: str) -> str | None:
    match = re.search(r"<answer>(.*?)</answer>", text, re.S)
    return match.group(1).strip() if match else None


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text)]


def _tiou(pred: list[float], gold: list[float]) -> float:
    if len(pred) < 2 or pred[1] <= pred[0]:
        return 0.0
    inter = max(0.0, min(pred[1], gold[1]) - max(pred[0], gold[0]))
    return inter / (max(pred[1], gold[1]) - min(pred[0], gold[0]))


def score(text: str, item: Item) -> float:
    """Strict: 0 without an <answer> tag; mcq/numeric exact, grounding tIoU, open ROUGE-L F1."""
    pred = answer_text(text)
    if pred is None:
        return 0.0
    if item.task_type == "mcq":
        return float(pred.strip("() ").upper() == item.answer)
    if item.task_type == "numeric":
        values = _numbers(pred)
        return float(bool(values) and math.isclose(values[0], float(item.answer)))
    if item.task_type == "grounding":
        return _tiou(_numbers(pred)[:2], _numbers(item.answer))
    return rouge_l(pred, item.answer)


def stated_option(text: str, item: Item) -> str | None:
    """The letter of the one option whose text the reply's reasoning names before its conclusion, else None."""
    think = re.split(r"\b(?:So|Therefore|The correct answer)\b", text.split("</think>")[0])[0]
    named = [letter for letter, option in zip(item.letters, item.options, strict=True)
             if re.search(rf"\b{re.escape(option)}\b", think)]
    return named[0] if len(named) == 1 else None


def evaluate(model, processor, items: list[Item], frames: dict, max_new_tokens: int,
             predictions: Path | None = None) -> dict[str, float]:
    """Mean score overall and per tier, task type and tier/question kind (greedy decoding)."""
    model.eval()
    texts: list[str] = []
    for start in range(0, len(items), 50):
        chunk = items[start : start + 50]
        outs = generate(model, processor, [it.prompt for it in chunk], [frames[it.video] for it in chunk],
                        max_new_tokens=max_new_tokens)
        texts += [o[0] for o in outs]
    model.train()
    by_group: dict[str, list[float]] = defaultdict(list)
    rows = []
    for item, text in zip(items, texts, strict=True):
        s = score(text, item)
        if item.task_type == "mcq":  # perception (the right option word) vs the letter lookup
            word = stated_option(text, item) == item.answer
            by_group["mcq word"].append(float(word))
            if word:
                by_group["mcq letter|word"].append(s)
        rows.append({"item_id": item.item_id, "kind": item.meta["question_kind"], "answer": item.answer,
                     "response": text, "score": s})
        by_group["overall"].append(s)
        for _, key in GROUPS:
            by_group[key(item)].append(s)
    if predictions is not None:  # the latest evaluation's replies, to see what the student says
        predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {group: sum(v) / len(v) for group, v in by_group.items()}


# ----------------------------------------------------------------------------- training
def batches(args: argparse.Namespace, train_items: list[Item], replies: list[str]):
    """Batches of (prompt, clip, reply) in epochs of shuffled train items (rmsd.models.offline.pretrain.Example)."""
    from rmsd.models.offline.pretrain import Example

    gen = torch.Generator().manual_seed(args.seed)
    order: list[int] = []
    while True:
        if len(order) < args.batch_size:
            order += torch.randperm(len(train_items), generator=gen).tolist()
        picked, order = order[: args.batch_size], order[args.batch_size :]
        yield [Example(train_items[i].prompt, replies[i], train_items[i].video) for i in picked]


def train(args: argparse.Namespace, model, processor, train_items: list[Item], replies: list[str], frames: dict,
          on_eval) -> tuple[int, float]:
    """Train until the time budget is spent; call on_eval(step, seconds, loss) every --eval-every steps.

    The loop is rmsd.models.offline.pretrain.train_steps (the one the pre-trained base is built with);
    its clock counts training steps only, so evaluations do not eat the budget."""
    from rmsd.models.offline.pretrain import train_steps

    losses: list[float] = []
    clock = {"s": 0.0, "t0": time.perf_counter(), "eval": 0.0}

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        if step % args.eval_every == 0:
            t0 = time.perf_counter()
            on_eval(step, time.perf_counter() - clock["t0"] - clock["eval"], sum(losses[-20:]) / len(losses[-20:]))
            clock["eval"] += time.perf_counter() - t0

    result = train_steps(model, processor, batches(args, train_items, replies), args.max_steps or 10**9, args.lr,
                         warmup_steps=20, frames_of=frames.__getitem__, on_step=on_step,
                         max_seconds=args.minutes * 60)
    step, seconds = result["steps"], result["seconds"]
    if step % args.eval_every:
        on_eval(step, seconds, sum(losses[-20:]) / len(losses[-20:]))
    return step, seconds


# ----------------------------------------------------------------------------- report
def table(curve: list[dict], cols: list[str]) -> list[str]:
    lines = [f"| step | train min | loss | {' | '.join(cols)} |", "|" + "---|" * (3 + len(cols))]
    for row in curve:
        cells = [f"{row[c]:.2f}" if c in row else "-" for c in cols]
        lines.append(f"| {row['step']} | {row['min']:.1f} | {row['loss']:.3f} | {' | '.join(cells)} |")
    return lines


def report(args: argparse.Namespace, curve: list[dict], n_params: int, n_train: int, n_test: int) -> str:
    groups = set(curve[-1])
    summary = ["overall"] + [g for g in ("easy", "medium", "hard", "mcq", "numeric", "grounding", "open",
                                         "mcq word", "mcq letter|word") if g in groups]
    loads = ", ".join(f"{row.get('load1', float('nan')):.1f}" for row in curve)
    kinds = sorted((g for g in groups if "/" in g and " " not in g),
                   key=lambda g: (("easy", "medium", "hard").index(g.split("/")[0]), g))
    return "\n".join([
        "# Learning curve of the tiny student on synthvid (CPU calibration)", "",
        "Written by `benchmarks/bench_learning.py`; command:", "",
        "    python benchmarks/bench_learning.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]), "",
        f"Student `{args.size}` ({n_params / 1e6:.2f}M parameters) trained "
        f"{'from the base ' + str(args.base) if args.base else 'from scratch'} on {n_train} synthvid train "
        f"items (targets: `{args.target}`), batch {args.batch_size}, AdamW lr {args.lr:g}; greedy decoding on "
        f"{n_test} test items. Scores: mcq/numeric exact, grounding tIoU, open ROUGE-L F1, strict `<answer>` tag. "
        f"`train min`: training wall time on {args.threads} CPU threads of a shared machine, evaluation excluded; "
        f"machine load (1 min) at each evaluation: {loads}.",
        "", "## By tier and task type", "", *table(curve, summary),
        "", "## By tier / question kind", "", *table(curve, kinds), "",
    ])


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_items, test_items, frames = prepare(args)
    replies = targets(train_items, args.target)
    if args.overrides:  # a calibration variant of the preset, registered under its own name
        changes = {k: type(getattr(PRESETS[args.size], k))(v) for k, v in (o.split("=", 1) for o in args.overrides)}
        args.size = f"{args.size}+" + ",".join(args.overrides)
        PRESETS[args.size] = dataclasses.replace(PRESETS[args.size.split("+")[0]], **changes)
    if args.base is not None:
        student = args.base
    else:
        student = build_student(args.data.parent / re.sub(r"[^\w.-]+", "_", f"student-{args.size}-{args.seed}"),
                                size=args.size, seed=args.seed)
    model, processor = load_student(student)
    longest = max(len(processor.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies)
    curve: list[dict] = []

    def on_eval(step: int, seconds: float, loss: float) -> None:
        row = {"step": step, "min": seconds / 60, "loss": loss, "load1": os.getloadavg()[0],
               **evaluate(model, processor, test_items, frames, longest + 4, args.data.parent / "predictions.jsonl")}
        curve.append(row)
        print(f"step {step} ({seconds / 60:.1f} min) loss {loss:.3f} overall {row['overall']:.2f} "
              + " ".join(f"{k} {v:.2f}" for k, v in row.items() if "/" in k or k in ("easy", "medium", "hard")),
              flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report(args, curve, sum(p.numel() for p in model.parameters()),
                                   len(train_items), len(test_items)))
        args.out.with_suffix(".json").write_text(json.dumps(
            {"command": "python benchmarks/bench_learning.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
             "student": str(student), "train_items": len(train_items), "test_items": len(test_items),
             "batch_size": args.batch_size, "lr": args.lr, "generator_version": GENERATOR_VERSION, "curve": curve},
            indent=1) + "\n")

    steps, seconds = train(args, model, processor, train_items, replies, frames, on_eval)
    print(f"{steps} steps in {seconds / 60:.1f} min ({seconds / max(steps, 1):.2f} s/step); table in {args.out}")


if __name__ == "__main__":
    main()
