"""Video-R1 as a training corpus: Video-R1-260k / Video-R1-COT-165k rows into `Item`s.

Rows keep the public schema (`Video-R1/Video-R1-data`, one JSON list per file): `problem_id,
problem, data_type (video|image), problem_type, options ["A. …", …], solution
"<answer>…</answer>", path, data_source` (the COT file adds `process`, the teacher's reasoning,
kept in `meta`). `path` is relative to the data folder ("./LLaVA-Video-178K/…"); media resolve
under `dataset.video_root`, default the folder of the JSON file. Image rows become image items.

Each problem type keeps the scoring Video-R1's own accuracy reward uses, so a number reported
on this corpus reads like theirs (and `matching.use_ground_truth` / `anchor_fraction` weigh
samples by it):

| problem_type    | task type | score                                                        |
|-----------------|-----------|--------------------------------------------------------------|
| multiple choice | mcq       | the letter, exact                                            |
| numerical       | numeric   | equal after normalisation (commas dropped, rounded to 0.01)  |
| regression      | numeric   | 1 − relative error, clipped to [0, 1]                        |
| OCR             | open      | word edit similarity, 1 − word error rate, clipped to [0, 1] |
| free-form       | open      | ROUGE-L F1                                                   |

The prompt is the one Video-R1 trains with: the problem (with "Options:" and the lettered
options for multiple choice), the think-then-answer instruction, and the problem type's answer
instruction; the answer format is rmsd's own `<think>…</think><answer>…</answer>`.

    rmsd sample --recipe recipes/paper/qwen2_5_vl_3b_rmsd.yaml
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from rmsd import scoring as ex
from rmsd.data.benchmarks.base import BadRows, Benchmark, located_rows
from rmsd.data.items import OPTION_LETTERS, Item

FIELDS = ("problem_id", "problem", "data_type", "problem_type", "solution", "path")
TASK_OF = {"multiple choice": "mcq", "numerical": "numeric", "regression": "numeric", "OCR": "open",
           "free-form": "open"}
QUESTION_TEMPLATE = (
    "{question}\nPlease think about this question as if you were a human pondering deeply. Engage in an internal "
    "dialogue using expressions such as 'let me think', 'wait', 'Hmm', 'oh, I see', 'let's break it down', etc, or "
    "other natural language thought expressions It's encouraged to include self-reflection or verification in the "
    "reasoning process. Provide your detailed reasoning between the <think> </think> tags, and then give your final "
    "answer between the <answer> </answer> tags.")
ANSWER_INSTRUCTION = {
    "multiple choice": " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the "
                       "<answer> </answer> tags.",
    "numerical": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "OCR": " Please transcribe text from the image/video clearly and provide your text answer within the "
           "<answer> </answer> tags.",
    "free-form": " Please provide your text answer within the <answer> </answer> tags.",
    "regression": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
}
_OPTION = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s*(.*?)\s*$", re.S)
_SOLUTION = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.S)


def build_prompt(problem: str, problem_type: str, options: list[str]) -> str:
    """Video-R1's training prompt for one row (options as the row writes them, "A. …")."""
    question = problem + "Options:\n" + "".join(o + "\n" for o in options) if problem_type == "multiple choice" \
        else problem
    return QUESTION_TEMPLATE.format(question=question) + ANSWER_INSTRUCTION[problem_type]


def parse_options(options: Any) -> list[str] | None:
    """Option texts without their letters, or None unless the options are "A. …", "B. …", … in order."""
    if not isinstance(options, list) or len(options) < 2:
        return None
    texts = []
    for letter, option in zip(OPTION_LETTERS, options, strict=False):
        m = _OPTION.match(str(option))
        if m is None or m.group(1) != letter:
            return None
        texts.append(m.group(2))
    return texts


def _number(text: str | None) -> float | None:
    try:
        return float(str(text).replace(",", "").strip())
    except (TypeError, ValueError):
        return None


def relative_score(pred: str | None, gold: str | None) -> float:
    """1 − |pred − gold| / |gold|, clipped to [0, 1] (Video-R1's regression reward)."""
    p, g = _number(pred), _number(gold)
    if p is None or g is None:
        return 0.0
    return 1.0 - min(1.0, (abs(p - g) + 1e-9) / (abs(g) + 1e-9))


def word_similarity(pred: str | None, gold: str | None) -> float:
    """1 − word error rate of `pred` against `gold` (case and spacing normalised), clipped to [0, 1]."""
    ref, hyp = (gold or "").lower().split(), (pred or "").lower().split()
    row = list(range(len(hyp) + 1))  # one row of the word-level Levenshtein table
    for i, r in enumerate(ref, 1):
        diag, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diag, row[j] = row[j], diag if r == h else 1 + min(diag, row[j], row[j - 1])
    return max(0.0, 1.0 - row[-1] / max(1, len(ref)))


class VideoR1(Benchmark):
    """The Video-R1 corpus (video and image reasoning questions of five problem types)."""

    name = "videor1"
    default_split = "train"
    breakdown_keys = ("problem_type", "data_type", "data_source")
    media = "mixed"
    corpus = True

    def load_items(self, path: str | Path, split: str | None = None, video_root: str | Path | None = None,
                   limit: int | None = None, config: str | None = None, on_bad_row: str = "error",
                   check_media: bool = True) -> list[Item]:
        """Items of every row (a file, a folder of them, or a hub id's `split`); a broken row raises or,
        with `on_bad_row="skip"`, is counted in `self.skipped`. `check_media=False` trusts the paths."""
        located, data_dir = located_rows(path, split or self.default_split, config, self.name)
        bad = BadRows(on_bad_row)
        items: list[Item] = []
        seen: set[str] = set()
        roots: dict[Path | None, str] = {}  # one media root per data file (plain str: pathlib is slow per row)
        for file, index, row in located:
            if limit is not None and len(items) >= limit:
                break
            if file not in roots:
                roots[file] = str(video_root if video_root is not None else file.parent if file is not None
                                  else data_dir or ".")
            item = self._item(row, roots[file], check_media, bad.at(file, index, path))
            if item is None:
                continue
            if item.item_id in seen:
                bad.at(file, index, path)("problem_id", "duplicate problem_id",
                    f"{item.item_id} appears twice")
                continue
            seen.add(item.item_id)
            items.append(item)
        self.skipped = bad.counts
        return items

    def _item(self, row: Any, root: str, check_media: bool, bad: Any) -> Item | None:
        if not isinstance(row, dict):
            return bad("(row)", "not a row", f"a {type(row).__name__}, expected the Video-R1 schema")
        missing = [f for f in FIELDS if row.get(f) is None]
        if missing:
            return bad(missing[0], "missing field", f"the row lacks {', '.join(missing)}")
        ptype, dtype = str(row["problem_type"]), str(row["data_type"])
        if ptype not in TASK_OF:
            return bad("problem_type", "unknown problem_type", f"{ptype!r}; known: {', '.join(TASK_OF)}")
        if dtype not in ("video", "image"):
            return bad("data_type", "unknown data_type", f"{dtype!r}; expected video or image")
        answer = _SOLUTION.search(str(row["solution"]))
        if answer is None:
            return bad("solution", "no answer", f"{str(row['solution'])[:60]!r} has no <answer>…</answer>")
        answer_text, options = answer.group(1), []
        if ptype == "multiple choice":
            options = parse_options(row.get("options"))
            if options is None:
                return bad("options", "unparseable options", f"{str(row.get('options'))[:80]} (expected "
                                                             "[\"A. …\", \"B. …\", …])")
            if answer_text.upper() not in OPTION_LETTERS[: len(options)]:
                return bad("solution", "answer not an option", f"{answer_text!r} with {len(options)} options")
            answer_text = answer_text.upper()
        elif TASK_OF[ptype] == "numeric" and _number(answer_text) is None:
            return bad("solution", "answer not a number", repr(answer_text))
        media = str(row["path"])
        found = os.path.abspath(os.path.join(root, media.removeprefix("./")))
        if check_media and not os.path.isfile(found):
            return bad("path", "missing media", f"{media} not found under {root} (set dataset.video_root)")
        source = str(row.get("data_source") or "")
        return Item(item_id=f"{source}/{row['problem_id']}" if source else str(row["problem_id"]),
                    benchmark=self.name, task_type=TASK_OF[ptype], question=str(row["problem"]),
                    prompt=build_prompt(str(row["problem"]), ptype, [str(o) for o in row.get("options") or []]),
                    options=options, answer=answer_text,
                    video=str(found) if dtype == "video" else None, image=str(found) if dtype == "image" else None,
                    meta=row)

    def score(self, pred: str | None, item: Item) -> float:
        """The problem type's own score (module docstring)."""
        ptype = item.meta.get("problem_type")
        if pred is None or item.answer is None:
            return 0.0
        if ptype == "regression":
            return relative_score(pred, item.answer)
        if ptype == "numerical":
            p, g = _number(pred), _number(item.answer)
            return float(p is not None and g is not None and round(p, 2) == round(g, 2))
        if ptype == "OCR":
            return word_similarity(pred, item.answer)
        if ptype == "free-form":
            return ex.rouge_l(pred, item.answer)
        return float(pred.strip().upper() == item.answer)

    def breakdowns(self, item: Item) -> dict[str, str]:
        return {key: str(item.meta.get(key) or "") for key in self.breakdown_keys}
