"""What the experiment's students got wrong, beside what they were trained to imitate (issue 23's analysis).

A claim that does not hold is reported with its analysis. This reads a finished
`benchmarks/reproduce.py` work folder and writes, per method:

- **targets**: the share of each item's target weight on a right answer, per task type
  (`targets.correctness`), and the numeric answer the targets give most often with its share; per mcq
  question kind, the share of target weight on the right option and the largest share one wrong value takes
  of one right value's targets (systematic mistakes, which a student learns, or spread ones, which it outvotes);
- **the students** (every seed's final predictions, `<method>/seed<k>/eval/final/predictions.jsonl`):
  accuracy per task type; for mcq and numeric how many distinct answers the student gives and the
  share of its most common one (a student that answers every item alike has learnt a prior, not
  the clip); for mcq whether the option its reasoning names is the right one (reading the clip)
  and whether the letter it answers is that option's letter (mapping a value to its letter);
- **the prior**: test accuracy of answering every item with the training split's most common
  answer for its question kind, no clip read; a student at this level has learnt the prior.

    python benchmarks/student_errors.py --work runs/reproduce-v3    # reproduce.md carries the same sections
    python benchmarks/student_errors.py --work runs/reproduce-v4 --runs runs/reproduce-v4/S900  # one of v4's S
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from reproduce_report import METHODS  # a sibling script: the methods in report order

CLOSED = ("mcq", "numeric")
TASKS = ("mcq", "numeric", "grounding", "open")


# ----------------------------------------------------------------------------- reading the work folder
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def predictions(work: Path) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """{method: {seed: final predictions}} for every finished run under `work`, in report order."""
    found: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for method in METHODS:
        runs = sorted((work / method).glob("seed*/eval/final/predictions.jsonl"))
        if runs:
            found[method] = {int(p.parts[-4].removeprefix("seed")): read_jsonl(p) for p in runs}
    return found


# ----------------------------------------------------------------------------- what the student answered
def collapse(rows: list[dict[str, Any]], task: str) -> tuple[int, float]:
    """(distinct answers, share of the most common one) among `task`'s predictions."""
    answers = Counter(r["prediction"] for r in rows if r["task_type"] == task)
    total = sum(answers.values())
    return len(answers), (answers.most_common(1)[0][1] / total if total else 0.0)


def named_option(text: str, options: list[str]) -> str | None:
    """The option the reasoning names first (whole words, before `</think>`), None when it names none."""
    reasoning = text.split("</think>")[0].lower()
    hits = [(m.start(), o) for o in options for m in [re.search(rf"\b{re.escape(o.lower())}\b", reasoning)] if m]
    return min(hits)[1] if hits else None


def mcq_reading(rows: list[dict[str, Any]], items: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Over mcq predictions: the share whose reasoning names an option, names the right one, and (where it
    names one) answers that option's letter."""
    names = right = mapped = total = 0
    for r in rows:
        if r["task_type"] != "mcq":
            continue
        item = items[r["item_id"]]
        total += 1
        option = named_option(r.get("response") or "", item["options"])
        if option is None:
            continue
        names += 1
        index = item["options"].index(option)
        right += index == ord(item["answer"]) - ord("A")
        mapped += (r["prediction"] or "") == chr(ord("A") + index)
    return {"names": names / total if total else 0.0, "content_right": right / total if total else 0.0,
            "letter_matches": mapped / names if names else 0.0}


def student_row(seeds: dict[int, list[dict[str, Any]]], items: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds of accuracy per task type, the collapse figures and the mcq reading figures."""
    def mean(xs: list[float]) -> float:
        return statistics.mean(xs) if xs else 0.0

    runs = list(seeds.values())
    row: dict[str, Any] = {"seeds": len(runs)}
    for task in TASKS:  # a task type no prediction has is "-" in the table, not a score of 0
        scores = [[r["score"] for r in run if r["task_type"] == task] for run in runs]
        row[task] = mean([mean(s) for s in scores if s]) if any(scores) else None
    for task in CLOSED:
        figures = [collapse(run, task) for run in runs]
        row[f"{task}_distinct"] = mean([d for d, _ in figures])
        row[f"{task}_top"] = mean([s for _, s in figures])
    reading = [mcq_reading(run, items) for run in runs]
    row.update({k: mean([x[k] for x in reading]) for k in reading[0]})
    return row


# ----------------------------------------------------------------------------- the prior
def prior_accuracy(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, float]:
    """Test accuracy per closed task type of the training split's most common answer per question kind."""
    common: dict[str, Counter] = defaultdict(Counter)
    for it in train:
        if it["task_type"] in CLOSED:
            common[it["meta"]["question_kind"]][it["answer"]] += 1
    scores: dict[str, list[float]] = defaultdict(list)
    for it in test:
        if it["task_type"] in CLOSED:
            guess = common[it["meta"]["question_kind"]].most_common(1)[0][0]
            scores[it["task_type"]].append(float(guess == it["answer"]))
    return {t: statistics.mean(v) for t, v in scores.items()}


# ----------------------------------------------------------------------------- the targets
@functools.cache  # a method's targets do not change between runs: reproduce.py's report after every run reuses them
def method_targets(method: str, work: Path) -> tuple[list[dict], dict, Any] | None:
    """(SFT rows, items by id, the synthvid benchmark) of a method, read once; None when it is not matched here."""
    import targets  # a sibling script; imports rmsd's SFT rows (torch), so only when targets are asked for

    from rmsd.datasets import get_benchmark

    try:
        rows, items = targets.method_targets(method, work)
    except SystemExit:  # not matched in this work folder
        return None
    return rows, items, get_benchmark("synthvid")


def target_row(method: str, work: Path) -> dict[str, Any] | None:
    """Target correctness per task type and the numeric targets' most common answer (weight share)."""
    import targets

    found = method_targets(method, work)
    if found is None:
        return None
    rows, items, benchmark = found
    row = {k: v["right"] for k, v in targets.correctness(rows, items, benchmark).items()}
    numeric: Counter = Counter()
    for r in rows:
        item = items[r["item_id"]]
        if item.task_type == "numeric":
            total = sum(r["weights"])
            for text, w in zip(r["texts"], r["weights"], strict=True):
                numeric[benchmark.extract(text, item, mode="strict")] += w / total
    if numeric:
        value, share = numeric.most_common(1)[0]
        row["numeric_top"] = f"{value} ({share / sum(numeric.values()):.2f})"
    return row


def mcq_target_values(method: str, work: Path) -> tuple[tuple[str, str, str, float], ...]:
    """(question kind, right option's text, the target's option text, weight) for every mcq target of a method."""
    from rmsd.items import OPTION_LETTERS

    found = method_targets(method, work)
    if found is None:
        return ()
    rows, items, benchmark = found

    def value(letter: str | None, options: list[str]) -> str:
        k = OPTION_LETTERS.find(letter) if letter else -1
        return options[k] if 0 <= k < len(options) else str(letter)

    out = []
    for r in rows:
        item = items[r["item_id"]]
        if item.task_type == "mcq":
            kind, total = f"{item.meta['difficulty']}/{item.meta['question_kind']}", sum(r["weights"])
            for text, w in zip(r["texts"], r["weights"], strict=True):
                given = value(benchmark.extract(text, item, mode="strict"), item.options)
                out.append((kind, value(item.answer, item.options), given, w / total))
    return tuple(out)


def kind_targets(values: tuple[tuple[str, str, str, float], ...]) -> dict[str, dict[str, Any]]:
    """Per question kind: the items' target weight, its share on the right value, and the largest share one wrong
    value takes of one right value's targets (a systematic mistake, which the student can learn, against mistakes
    spread over the other options, which the commonest target outvotes)."""
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for kind, right, given, w in values:
        by_kind[kind][right, given] += w
    out = {}
    for kind, c in by_kind.items():
        per_right: dict[str, float] = defaultdict(float)
        for (right, _), w in c.items():
            per_right[right] += w
        wrong = max(((w / per_right[r], r, g) for (r, g), w in c.items() if g != r), default=(0.0, "-", "-"))
        out[kind] = {"weight": sum(c.values()), "right": sum(w for (r, g), w in c.items() if g == r) / sum(c.values()),
                     "top_wrong": wrong[0], "top_wrong_pair": f"{wrong[1]} → {wrong[2]}"}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["weight"]))


def kind_targets_table(work: Path, methods: list[str]) -> str:
    lines = ["| method | mcq question kind | items | targets right | largest share one wrong value takes (right → wrong) |",
             "|---|---|---:|---:|---|"]
    for method in methods:
        for kind, k in kind_targets(mcq_target_values(method, work)).items():
            lines.append(f"| {method} | {kind} | {k['weight']:.0f} | {k['right']:.3f} | "
                         f"{k['top_wrong']:.2f} ({k['top_wrong_pair']}) |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- what consensus kept
def kept_errors(matched: list[dict[str, Any]], train: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per closed task type, over a matched set's rows: the items whose kept samples' answer is wrong, whose
    samples those are (by teacher), and each teacher's accuracy over all its samples: what consensus overruled."""
    truth = {it["item_id"]: it["answer"] for it in train}
    out: dict[str, dict[str, Any]] = {}
    for task in CLOSED:
        rows = [r for r in matched if r.get("task_type") == task and r["item_id"] in truth]
        kept = {r["item_id"]: r["answer"] for r in rows if r.get("kept")}
        wrong = {i for i, a in kept.items() if a != truth[i]}
        right: dict[str, list[bool]] = defaultdict(list)
        for r in rows:
            right[r["teacher"]].append(r.get("answer") == truth[r["item_id"]])
        out[task] = {"items": len(kept), "wrong": len(wrong),
                     "wrong_by_teacher": dict(Counter(r["teacher"] for r in rows if r.get("kept")
                                                      and r["item_id"] in wrong)),
                     "teacher_accuracy": {t: statistics.mean(v) for t, v in sorted(right.items())}}
    return out


def kept_table(errors: dict[str, dict[str, Any]]) -> str:
    lines = ["| task | items kept | kept answer wrong | wrong kept samples, by teacher | each teacher's accuracy |",
             "|---|---:|---:|---|---|"]
    for task, e in errors.items():
        by = ", ".join(f"{t} {n}" for t, n in sorted(e["wrong_by_teacher"].items()))
        acc = ", ".join(f"{t} {a:.3f}" for t, a in e["teacher_accuracy"].items())
        lines.append(f"| {task} | {e['items']} | {e['wrong']} | {by or '-'} | {acc} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the report
def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def targets_table(work: Path, methods: list[str]) -> str:
    lines = ["| method | targets right: all | mcq | numeric | grounding | open | numeric targets' top answer (share) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for method in methods:
        row = target_row(method, work)
        if row is not None:
            cells = [_f(row.get(k)) for k in ("all", *TASKS)]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {row.get('numeric_top', '-')} |")
    return "\n".join(lines)


def students_table(found: dict[str, dict[int, list[dict[str, Any]]]], items: dict[str, dict[str, Any]]) -> str:
    lines = ["| method | seeds | mcq | numeric | grounding | open | mcq: distinct answers, top share "
             "| numeric: distinct, top share | mcq: names an option | names the right one | letter matches the named option |",
             "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|"]
    for method, seeds in found.items():
        r = student_row(seeds, items)
        lines.append(f"| {method} | {r['seeds']} | " + " | ".join(_f(r[t]) for t in TASKS)
                     + f" | {r['mcq_distinct']:.1f}, {r['mcq_top']:.2f} | {r['numeric_distinct']:.1f}, "
                     f"{r['numeric_top']:.2f} | {_f(r['names'])} | {_f(r['content_right'])} | {_f(r['letter_matches'])} |")
    return "\n".join(lines)


def sections(work: Path, with_targets: bool = True, level: str = "##", runs: Path | None = None) -> str:
    """The students' table and the prior, then (with_targets) their targets' table; headings at `level`.
    `runs`: where the method folders are, when not in `work` (a piloted regime's S<S>/, e.g. regime v4's)."""
    train, test = read_jsonl(work / "data" / "train.jsonl"), read_jsonl(work / "data" / "test.jsonl")
    found = predictions(runs or work)
    prior = prior_accuracy(train, test)
    parts = [f"{level} The students (means over seeds, final checkpoints, test split)", "",
             students_table(found, {it["item_id"]: it for it in test}), "",
             "The prior, no clip read (the training split's most common answer per question kind): "
             + ", ".join(f"{t} {prior[t]:.3f}" for t in CLOSED if t in prior)
             + f"; chance on mcq 0.250 ({len(test)} test items)."]
    matched = work / "matched" / "matched.jsonl"  # the label-free consensus set (matched, rmsd, sft_rl, visd_rl)
    if matched.is_file():
        parts += ["", f"{level} What label-free consensus kept (training split, `matched`)", "",
                  kept_table(kept_errors(read_jsonl(matched), train))]
    if with_targets:
        parts += ["", f"{level} Their targets (the rows each method's SFT stage reads, before any training)", "",
                  targets_table(work, list(found)), "", "Their mcq targets by question kind:", "",
                  kind_targets_table(work, list(found))]
    return "\n".join(parts) + "\n"


def report(work: Path, with_targets: bool = True, runs: Path | None = None) -> str:
    return (f"# What the students got wrong (`python benchmarks/student_errors.py --work {work.name} ...`)\n\n"
            + sections(work, with_targets, runs=runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="the reproduce.py --work folder")
    ap.add_argument("--runs", type=Path, help="the method folders, when not in --work (regime v4: WORK/S<S>)")
    ap.add_argument("--out", type=Path, help="write the markdown here (default: print it)")
    ap.add_argument("--no-targets", action="store_true", help="the students only (no rmsd import, no torch)")
    args = ap.parse_args()
    text = report(args.work.resolve(), with_targets=not args.no_targets, runs=args.runs and args.runs.resolve())
    if args.out:
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
