"""The benchmark interface: load items, build the harness prompt, extract, score, aggregate.

One `Benchmark` subclass per benchmark or training corpus (`videomme.py`, `videommmu.py`,
`mathverse.py`, `synthvid.py`; the corpora `videor1.py`, `llava_video.py`, `items_file.py`), each
one entry of the registry (`rmsd/datasets/__init__.py`). Loaders read a local dataset folder or file in the
public schema (parquet, JSON, JSONL, as the hub stores them) or, for a hub id, go through
`datasets.load_dataset`; the benchmark's own fields stay in `Item.meta` under their public
names. Unlike lmms-eval, which wires a task from YAML + `!function` hooks, a benchmark here is
one class, and the same object serves `rmsd sample` (prompts), `rmsd match` (strict
extraction) and `rmsd eval` (harness extraction, the benchmark's own aggregation).

    rmsd eval --recipe recipes/videomme/qwen2_5_vl_3b_rmsd.yaml --model runs/.../student
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rmsd import scoring as ex
from rmsd.errors import RmsdError
from rmsd.items import Item

DATA_SUFFIXES = (".parquet", ".jsonl", ".json")
VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv")  # the harness falls back to .MP4 and .mkv


class Benchmark:
    """One benchmark: its items, prompt, extractor, scorer and aggregation.

    name: registry name; default_split: the split `load_items` reads when none is given;
    breakdown_keys: the groups `aggregate` reports (keys of `breakdowns(item)`);
    breakdown_order: display order of known group values (others follow, sorted);
    modes: extraction modes this benchmark accepts;
    media: what an item shows ("video", "image", or "mixed"): `rmsd plan` sizes a step by it;
    corpus: a training corpus (no test split of its own; broken rows may be skipped);
    llm_judge: whether `with_judge` can score it with an LLM judge (`eval.judge_teacher`);
    generates: whether `generate_data` can write its data (`dataset.generate`, `rmsd run`'s data stage).
    After `load_items`, `skipped` counts the rows left out, by reason (`dataset.on_bad_row: skip`).
    """

    name = "base"
    default_split = "test"
    breakdown_keys: tuple[str, ...] = ()
    breakdown_order: dict[str, tuple[str, ...]] = {}
    modes: tuple[str, ...] = ex.MODES
    media = "video"
    corpus = False
    llm_judge = False  # `with_judge` gives a copy scored by an LLM judge (eval.judge_teacher)
    generates = False  # `generate_data` writes its data (a procedural benchmark)

    def __init__(self) -> None:
        self.skipped: dict[str, int] = {}

    def load_items(self, path: str | Path, split: str | None = None, video_root: str | Path | None = None,
                   limit: int | None = None, config: str | None = None, on_bad_row: str = "error") -> list[Item]:
        """Items of `split`. `on_bad_row` is honoured by training corpora; an evaluation benchmark's broken
        row is always an error, since leaving it out would change the number it reports."""
        raise NotImplementedError

    def generated(self, path: str | Path, n: int) -> bool:
        """Whether `path` holds this benchmark's data as `generate_data(path, n)` would write it."""
        raise RmsdError(f"dataset.generate: {self.name} cannot generate its data; download it to dataset.path")

    def generate_data(self, path: str | Path, n: int) -> dict[str, Any]:
        """Write `n` items of this benchmark to `path` (a procedural benchmark only); what was written."""
        raise RmsdError(f"dataset.generate: {self.name} cannot generate its data; download it to dataset.path")

    def with_judge(self, ask: Any, cache_path: Path, name: str) -> Benchmark:
        """This benchmark scored by an LLM judge (`ask(prompt) -> reply`, verdicts cached at `cache_path`)."""
        raise RmsdError(f"eval.judge_teacher is for benchmarks scored by an LLM judge (MathVerse); "
                        f"{self.name} scores by rule")

    def extract(self, text: str | None, item: Item, mode: str = "harness") -> str | None:
        """The answer read from `text` (None: nothing readable). Default: by task type."""
        self.check_mode(mode)
        return extract_answer(text, item, mode)

    def score(self, pred: str | None, item: Item, mode: str | None = None) -> float:
        """Score in [0, 1] of an answer `extract` read in `mode` (None: the benchmark's default reading). Default:
        by task type (`score` below); a benchmark whose scores differ by reading (Video-R1's evaluation script
        scores regression unlike its training reward) looks at `mode`."""
        return score(pred, item)

    def breakdowns(self, item: Item) -> dict[str, str]:
        """The groups this item is reported in ({"duration": "short", ...})."""
        return {}

    def aggregate(self, per_item: list[dict[str, Any]]) -> dict[str, Any]:
        """Overall accuracy (the mean per-item score) and the mean per breakdown group."""
        return aggregate_scores(per_item, self.breakdown_keys, self.breakdown_order)

    def prefetch(self, items: list[Item], texts: list[str], mode: str = "harness") -> None:
        """Warm any slow scorer for a batch before per-item `extract`/`score` (an LLM judge
        runs concurrently here); a no-op for rule-based benchmarks."""

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise RmsdError(f"{self.name}: extraction mode {mode!r} is not available; use one of {', '.join(self.modes)}")

    def __repr__(self) -> str:
        return f"<benchmark {self.name}>"


# ----------------------------------------------------------------------------- by task type
def extract_answer(text: str | None, item: Item, mode: str = "strict") -> str | None:
    """The answer in the rmsd answer format for `item`'s task type (synthvid and any item
    whose ground truth is a letter, a number, "[start, end]" or free text)."""
    if mode not in ex.MODES:
        raise ValueError(f"extraction mode {mode!r}: use one of {ex.MODES}")
    strict = mode == "strict"
    if item.task_type == "mcq":
        letters = item.letters or "ABCD"
        return ex.letter_strict(text, letters) if strict else ex.letter_harness(ex.harness_region(text), letters)
    if item.task_type == "numeric":
        return ex.number_strict(text) if strict else ex.number_harness(text)
    if item.task_type == "grounding":
        return ex.span_strict(text) if strict else ex.span_harness(text)
    region = ex.answer_region(text) if strict else ex.harness_region(text)
    return region or None


def score(pred: str | None, item: Item) -> float:
    """Exact letter (mcq), number within tolerance (numeric), temporal IoU (grounding), ROUGE-L F (open)."""
    if pred is None or item.answer is None:
        return 0.0
    if item.task_type == "mcq":
        return float(pred.strip().upper() == item.answer.strip().upper())
    if item.task_type == "numeric":
        return float(ex.numbers_match(pred, item.answer, rel_tol=1e-6))
    if item.task_type == "grounding":
        return ex.temporal_iou(ex.parse_span(pred), ex.parse_span(item.answer))
    return ex.rouge_l(pred, item.answer)


# ----------------------------------------------------------------------------- aggregation
def aggregate_scores(rows: list[dict[str, Any]], keys: Iterable[str],
                     order: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """{"overall", "n", "breakdowns": {key: {value: mean score}}, "counts": {key: {value: n}}}.

    The overall number is instance-weighted (every item counts once), which is how the
    harness reports Video-MME and Video-MMMU (the latter's "Overall" weights subjects by size).
    """
    rows = list(rows)
    overall = sum(float(r["score"]) for r in rows) / len(rows) if rows else 0.0
    breakdowns: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    for key in keys:
        totals: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            if r.get(key) is not None:
                totals[str(r[key])].append(float(r["score"]))
        known = (order or {}).get(key, ())
        values = [v for v in known if v in totals] + sorted(v for v in totals if v not in known)
        breakdowns[key] = {v: sum(totals[v]) / len(totals[v]) for v in values}
        counts[key] = {v: len(totals[v]) for v in values}
    return {"overall": overall, "n": len(rows), "breakdowns": breakdowns, "counts": counts}


# ----------------------------------------------------------------------------- reading data
HUB_ID = re.compile(r"[\w.\-]+/[\w.\-]+")  # owner/name of a dataset on the Hugging Face hub


def is_hub_id(path: str) -> bool:
    """A dataset `path` that names a hub dataset (owner/name) rather than a local file or folder."""
    return HUB_ID.fullmatch(path) is not None


def read_rows(path: str | Path, split: str, config: str | None, benchmark: str) -> tuple[list[dict], Path | None]:
    """Rows of one split (and config) and the folder they came from (None for a hub dataset).

    `path` is a data file, a folder holding data files (searched recursively; a file belongs
    to `split` when its name is `split` or starts with `split-`/`split_`/`split.`, or a parent
    folder is named `split`; with `config`, a parent folder must be named `config`), or a hub
    id read with `datasets.load_dataset(path, config, split=split)`.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return read_data_file(p), p.parent
    if p.is_dir():
        return [row for f in data_files(p, split, config, benchmark) for row in read_data_file(f)], p
    if is_hub_id(str(path)):
        return _load_hub(str(path), split, config, benchmark), None
    raise RmsdError(f"{benchmark}: dataset {path} not found: pass a local folder/file in the public schema "
                    f"or a hub id (owner/name)")


def all_data_files(root: Path) -> list[Path]:
    """Every .parquet/.jsonl/.json file under `root`, sorted, hidden folders and files left out."""
    return sorted(f for f in root.rglob("*") if f.suffix in DATA_SUFFIXES and f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(root).parts))


def data_files(root: Path, split: str, config: str | None, benchmark: str) -> list[Path]:
    everything = all_data_files(root)
    files = everything
    if config:
        files = [f for f in files if config.lower() in (d.lower() for d in f.relative_to(root).parts[:-1])]
    pattern = re.compile(rf"{re.escape(split)}(?:[-_.].*)?", re.I)
    files = [f for f in files if pattern.fullmatch(f.stem) or split in f.relative_to(root).parts[:-1]]
    if not files:
        present = ", ".join(str(f.relative_to(root)) for f in everything[:6]) or "none"
        wanted = f"split {split!r}" + (f", config {config!r}" if config else "")
        raise RmsdError(f"{benchmark}: no data file for {wanted} under {root} (data files present: {present}); "
                        f"pass the right split/config or point path at the file")
    return files


def read_data_file(file: Path) -> list[dict[str, Any]]:
    """Rows of a .parquet, .jsonl or .json (a list of rows) file."""
    try:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(file).to_pylist()
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = json.loads(text)
    except (OSError, ValueError) as e:
        raise RmsdError(f"cannot read {file}: {e}") from None
    if not isinstance(rows, list):
        raise RmsdError(f"{file}: expected a JSON list of rows, got {type(rows).__name__}")
    return rows


def _load_hub(path: str, split: str, config: str | None, benchmark: str) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(path, config, split=split)
    except Exception as e:  # network, auth, missing config: all mean "cannot get the data"
        raise RmsdError(f"{benchmark}: could not load hub dataset {path!r} (config {config!r}, split {split!r}): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; download it and pass "
                        f"the local folder instead") from None
    return [dict(row) for row in ds]


def require_fields(rows: list[dict], fields: Iterable[str], benchmark: str, source: Any) -> None:
    """Every row is a mapping with every field (the first row that is not names itself: row N, field F)."""
    fields = list(fields)
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise RmsdError(f"{benchmark}: row {i} of {source} is a {type(row).__name__}, not a row of fields: "
                            f"expected the public {benchmark} schema")
        missing = [f for f in fields if f not in row]
        if missing:
            raise RmsdError(f"{benchmark}: row {i} of {source} lacks the field(s) {', '.join(missing)}: "
                            f"expected the public {benchmark} schema")


def find_media(roots: Iterable[Path | None], names: Iterable[str]) -> Path | None:
    """The first existing `root / name` (roots and names tried in order)."""
    names = list(names)
    for root in roots:
        if root is None:
            continue
        for name in names:
            candidate = Path(root) / name
            if candidate.is_file():
                return candidate.resolve()
    return None


def default_video_roots(data_dir: Path | None) -> list[Path]:
    """Where videos usually sit when no video_root is given: `data/` or `videos/` beside the
    data files (or beside their folder, for hub layouts with the parquet in a subfolder)."""
    roots: list[Path] = []
    for d in (data_dir, data_dir.parent) if data_dir is not None else ():
        roots += [d / "data", d / "videos", d]
    return roots


def missing_media_error(benchmark: str, missing: list[str], roots: list[Path | None]) -> RmsdError:
    looked = ", ".join(str(r) for r in roots if r is not None) or "nowhere (no folder known)"
    return RmsdError(f"{benchmark}: {len(missing)} media file(s) missing, e.g. {missing[0]} (looked under {looked}): "
                     f"pass the folder holding them as video_root")


def strip_option_letters(options: list[str]) -> list[str]:
    """Option texts without their "A. " prefixes when every option carries its own letter."""
    letters = [chr(ord("A") + i) for i in range(len(options))]
    if options and all(str(o).startswith(f"{x}.") for o, x in zip(options, letters, strict=True)):
        return [str(o)[2:].strip() for o in options]
    return [str(o) for o in options]


class BadRows:
    """What a corpus loader does with a broken row: `error` raises one line naming the file, the row's
    line and the field; `skip` leaves the row out and counts it by reason (`counts`)."""

    def __init__(self, policy: str = "error"):
        if policy not in ("error", "skip"):
            raise ValueError(f"on_bad_row {policy!r}: use error or skip")
        self.policy = policy
        self.counts: dict[str, int] = {}
        self._first: dict[str, tuple[Path | None, int]] = {}  # item id -> the row that gave it first

    def __call__(self, where: str, field: str, reason: str, detail: str) -> None:
        """Report one broken row: `reason` is the short kind counted ("missing media"), `detail` the rest."""
        if self.policy == "error":
            raise RmsdError(f"{where}: field {field}: {reason}: {detail} (fix the row, or set dataset.on_bad_row: "
                            f"skip to leave such rows out)")
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def repeated(self, item_id: str, file: Path | None, index: int, source: Any, field: str, reason: str,
                 hint: str = "") -> bool:
        """Whether an earlier row gave `item_id`: then this row is reported broken (`reason` on `field`), naming
        where both are; the first row that gives an id is remembered."""
        first = self._first.setdefault(item_id, (file, index))
        if first == (file, index):
            return False
        self(where_of(file, index, source), field, reason,
             f"{item_id} appears twice (first at {where_of(*first, source)}){hint}")
        return True

    def at(self, file: Path | None, index: int, source: Any) -> Any:
        """A reporter for one row: `report(field, reason, detail)`, its location worked out only if used."""
        return lambda field, reason, detail: self(where_of(file, index, source), field, reason, detail)


def row_location(file: Path, index: int) -> str:
    """`file:line` of row `index` (0-based) of a data file: the line of a JSONL row, the line where a JSON
    list's element starts, the row number of a parquet file. Computed only for a row being reported."""
    if file.suffix == ".jsonl":
        with file.open(encoding="utf-8") as f:
            seen = -1
            for line_no, line in enumerate(f, 1):
                seen += bool(line.strip())
                if seen == index:
                    return f"{file}:{line_no}"
    if file.suffix == ".json":
        text = file.read_text(encoding="utf-8")
        decoder, pos = json.JSONDecoder(), text.index("[") + 1
        for _ in range(index + 1):
            while text[pos] in " \t\r\n,":
                pos += 1
            start = pos
            _, pos = decoder.raw_decode(text, pos)
        return f"{file}:{text.count(chr(10), 0, start) + 1}"
    return f"{file} row {index + 1}"


def located_rows(path: str | Path, split: str, config: str | None, benchmark: str,
                 select: Any = None) -> tuple[list[tuple[Path | None, int, dict]], Path | None]:
    """Like `read_rows`, each row with its file and index (for `row_location`); a folder yields every data
    file under it for which `select(file)` holds (default: all), a hub id its split."""
    p = Path(path).expanduser()
    if p.is_dir():
        files = [f for f in all_data_files(p) if select is None or select(f)]
        if not files:
            raise RmsdError(f"{benchmark}: no data file (.json, .jsonl, .parquet) for split {split!r} under {p}")
        return [(f, i, row) for f in files for i, row in enumerate(read_data_file(f))], p
    rows, folder = read_rows(path, split, config, benchmark)
    file = p if p.is_file() else None
    return [(file, i, row) for i, row in enumerate(rows)], folder


def where_of(file: Path | None, index: int, source: Any) -> str:
    return row_location(file, index) if file is not None else f"{source} row {index + 1}"


def origin_text(item: Item) -> str | None:
    """`file:line` (or `file row N`) of the row an item was read from, when its loader recorded it."""
    if item.origin is None:
        return None
    file, index = item.origin
    try:
        return row_location(Path(file), index)
    except (OSError, ValueError, IndexError):  # the file changed since: the row number still says where
        return f"{file} row {index + 1}"


def repeated_id(first: Item, again: Item) -> str:
    """The one line for an item id that two items share, naming the rows they were read from where known."""
    where = [w for w in (origin_text(first), origin_text(again)) if w]
    rows = f" (rows {where[0]} and {where[1]})" if len(where) == 2 else f" (row {where[0]})" if where else ""
    return (f"item id {again.item_id!r} appears twice in the dataset{rows}: item ids must be unique; fix the rows, or "
            "set dataset.on_bad_row: skip where the loader reports repeated ids")
