"""Video-R1 as a training corpus: Video-R1-260k / Video-R1-COT-165k rows into `Item`s.

Rows keep the public schema (`Video-R1/Video-R1-data`, one JSON list per file): `problem_id,
problem, data_type (video|image), problem_type, options ["A. …", …], solution
"<answer>…</answer>", path, data_source` (the COT file adds `process`, the teacher's reasoning,
kept in `meta`). `path` is relative to the data folder ("./LLaVA-Video-178K/…"); media resolve
under `dataset.video_root`, default the folder of the JSON file. Image rows become image items.
A folder holding both releases (Video-R1-260k.json, Video-R1-COT-165k.json) reads the one
`dataset.config` names; an id seen twice is a broken row (`dataset.on_bad_row`).

Scoring reproduces Video-R1's own (`rmsd/datasets/videor1_reward.py`, read from
tulerfeng/Video-R1); the extraction mode picks one of three readings:

- `strict` (`rmsd match`, the RL `correctness` reward, and `extract` / `score` called without a
  mode): `accuracy_reward` of Video-R1's GRPO training, quirks included;
- `harness` (`rmsd eval`'s default extraction): `reward_fn` of Video-R1's `eval_bench.py`
  (regression by mean relative accuracy; OCR and free-form, which it leaves at 0, by the training formulas);
- `lenient` (only when asked for): rmsd's earlier reading, a letter or number read out of free
  text, ROUGE-L for free-form (the README lists where it differs).

`VideoR1().reward(reply, item)` is the training reward of one reply, in one call.

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
from rmsd.datasets import videor1_reward as vr
from rmsd.datasets.benchmark import (
    BadRows,
    Benchmark,
    all_data_files,
    extract_answer,
    located_rows,
    read_data_file,
)
from rmsd.errors import RmsdError
from rmsd.items import OPTION_LETTERS, Item

FIELDS = ("problem_id", "problem", "data_type", "problem_type", "solution", "path")
TASK_OF = {"multiple choice": "mcq", "numerical": "numeric", "regression": "numeric", "OCR": "open",
           "free-form": "open"}
PROBLEM_TYPE_OF = {"mcq": "multiple choice", "numeric": "numerical", "open": "free-form", "grounding": "free-form"}
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


# ----------------------------------------------------------------------------- the lenient reading
def relative_score(pred: str | None, gold: str | None) -> float:
    """Lenient regression: 1 − |pred − gold| / |gold|, clipped to [0, 1] (numbers read by rmsd)."""
    p, g = _number(pred), _number(gold)
    if p is None or g is None:
        return 0.0
    return 1.0 - min(1.0, (abs(p - g) + 1e-9) / (abs(g) + 1e-9))


def word_similarity(pred: str | None, gold: str | None) -> float:
    """Lenient OCR: 1 − word error rate of `pred` against `gold` in lower case, clipped to [0, 1]."""
    return max(0.0, 1.0 - vr.word_error_rate((gold or "").lower(), (pred or "").lower()))


def lenient_score(pred: str | None, item: Item) -> float:
    """rmsd's earlier score of an answer read by `ex` (its strict extraction) against `item.answer`."""
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


# ----------------------------------------------------------------------------- which file of a folder
def _group(file: Path) -> str:
    """The data set a file belongs to: its name without extension, shard numbers dropped ("train-00000-of-00002")."""
    return re.sub(r"-\d{5}-of-\d{5}$", "", file.stem)


def corpus_files(root: Path, config: str | None) -> list[Path]:
    """The data files of a Video-R1 folder: the ones at its top (the media folders beside them are not searched),
    or, without any there, every one below it. A folder holding several (Video-R1-260k.json and
    Video-R1-COT-165k.json: the same problem_ids twice) reads the one `config` names."""
    files = all_data_files(root)
    top = [f for f in files if f.parent == root]
    files = top or files
    groups = sorted({_group(f) for f in files})
    if config is not None:
        chosen = [f for f in files if _group(f).lower() == config.lower()
                  or config.lower() in (d.lower() for d in f.relative_to(root).parts[:-1])]
        if not chosen:
            raise RmsdError(f"videor1: dataset.config {config!r} names no data file under {root}: use one of "
                            f"{', '.join(groups)}")
        return chosen
    if len(groups) > 1:
        raise RmsdError(f"videor1: {root} holds {len(groups)} data sets ({', '.join(groups)}): set dataset.config to "
                        "the one to read")
    if not files:
        raise RmsdError(f"videor1: no data file (.json, .jsonl, .parquet) under {root}")
    return files


class VideoR1(Benchmark):
    """The Video-R1 corpus (video and image reasoning questions of five problem types)."""

    name = "videor1"
    default_split = "train"
    breakdown_keys = ("problem_type", "data_type", "data_source")
    media = "mixed"
    corpus = True
    modes = ("strict", "harness", "lenient")

    def load_items(self, path: str | Path, split: str | None = None, video_root: str | Path | None = None,
                   limit: int | None = None, config: str | None = None, on_bad_row: str = "error",
                   check_media: bool = True) -> list[Item]:
        """Items of every row (a file, a folder of them, or a hub id's `split`); a broken row raises or,
        with `on_bad_row="skip"`, is counted in `self.skipped`. `check_media=False` trusts the paths."""
        if Path(path).expanduser().is_dir():
            data_dir = Path(path).expanduser()
            located = [(f, i, row) for f in corpus_files(data_dir, config) for i, row in enumerate(read_data_file(f))]
        else:
            located, data_dir = located_rows(path, split or self.default_split, config, self.name)
        bad = BadRows(on_bad_row)
        items: list[Item] = []
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
            if bad.repeated(item.item_id, file, index, path, "problem_id", "duplicate problem_id"):
                continue
            item.origin = (str(file), index) if file is not None else None
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
        answer_text, options = answer.group(1).strip(), []
        if ptype == "multiple choice":
            options = parse_options(row.get("options"))
            if options is None:
                return bad("options", "unparseable options", f"{str(row.get('options'))[:80]} (expected "
                                                             "[\"A. …\", \"B. …\", …])")
            if answer_text.upper() not in OPTION_LETTERS[: len(options)]:
                return bad("solution", "answer not an option", f"{answer_text!r} with {len(options)} options")
            answer_text = answer_text.upper()
        elif TASK_OF[ptype] == "numeric":
            if _number(answer_text) is None:
                return bad("solution", "answer not a number", repr(answer_text))
            # the value, canonical ("1,200" → "1200"), for votes and judges; scoring reads `solution` as written
            answer_text = ex.format_number(_number(answer_text))
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

    def extract(self, text: str | None, item: Item, mode: str = "strict") -> str | None:
        """The answer `mode` reads (module docstring); strict and harness give None where Video-R1 reads ""."""
        self.check_mode(mode)
        if mode == "lenient":
            return extract_answer(text, item, "strict")
        return (vr.first_answer(text) if mode == "strict" else vr.eval_answer(text)) or None

    def score(self, pred: str | None, item: Item, mode: str | None = None) -> float:
        """The score of an answer read in `mode` (default strict): Video-R1's training reward, its evaluation
        script's score, or the lenient one. None scores as Video-R1 scores an empty answer."""
        mode = mode or "strict"
        if mode == "lenient":
            return lenient_score(pred, item)
        reference, ptype = self.reference(item), str(item.meta.get("problem_type") or PROBLEM_TYPE_OF[item.task_type])
        scorer = vr.training_score if mode == "strict" else vr.eval_score
        return scorer(pred or "", reference, ptype)

    def reward(self, reply: str | None, item: Item) -> float:
        """Video-R1's `accuracy_reward` of one reply on `item`, in one call (`score(extract(reply))`, strict)."""
        return self.score(self.extract(reply, item, "strict"), item, "strict")

    @staticmethod
    def reference(item: Item) -> str:
        """The reference Video-R1 reads: the first `<answer>` of the row's `solution` as written, else `answer`."""
        solution = item.meta.get("solution")
        return vr.first_answer(solution) if isinstance(solution, str) else (item.answer or "")

    def aggregate(self, per_item: list[dict[str, Any]]) -> dict[str, Any]:
        """The mean per item and per group, plus `eval_bench.py`'s two numbers: `mean_acc` over the items that
        are not regression, `mean_mra` over the regression items (0 when there are none, as there)."""
        result = super().aggregate(per_item)
        acc = [float(r["score"]) for r in per_item if r.get("problem_type") != "regression"]
        mra = [float(r["score"]) for r in per_item if r.get("problem_type") == "regression"]
        result["mean_acc"] = sum(acc) / len(acc) if acc else 0.0
        result["mean_mra"] = sum(mra) / len(mra) if mra else 0.0
        return result

    def breakdowns(self, item: Item) -> dict[str, str]:
        return {key: str(item.meta.get(key) or "") for key in self.breakdown_keys}
