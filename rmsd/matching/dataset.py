"""The matched dataset on disk: `DIR/matched.jsonl`, one row per sample, written atomically.

`write_matched` writes what `rmsd.matching.matcher.match_samples` returns (and its report)
with a card (`README.md`: what the rows are and the lines that load them);
`read_matched` is the one reader (`rmsd distill`, `rmsd match export`), with a one-line error
for anything that is not such a file. The rows carry the same keys, so
`datasets.load_dataset("json", data_files=...)` reads them too.

    rmsd match --recipe recipes/synthvid/tiny_rmsd.yaml --samples runs/synthvid-tiny-rmsd/samples
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rmsd.errors import RmsdError


def matched_file(matched: str | Path) -> Path:
    """`DIR/matched.jsonl` of a matched-dataset folder, or a JSONL file named directly."""
    path = Path(matched)
    return path / "matched.jsonl" if path.is_dir() else path


def unusable_summary(stats: dict[str, Any]) -> str:
    """"11 of 320 items have no usable sample (9: no format-valid answer, 2: ...); distill skips them", or ""."""
    n = stats.get("items_without_usable_sample", 0)
    if not n:
        return ""
    why = ", ".join(f"{count}: {reason}" for reason, count in stats.get("unusable_reasons", {}).items())
    return f"{n} of {stats['n_items']} items have no usable sample ({why}); distill leaves them out"


def read_matched(matched: str | Path) -> list[dict[str, Any]]:
    """The rows `write_matched` wrote (one per sample); one-line errors for anything else."""
    file = matched_file(matched)
    if not file.is_file():
        raise RmsdError(f"{matched}: no matched dataset there (no matched.jsonl); run `rmsd match --recipe ...` first")
    rows = []
    with file.open() as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise RmsdError(f"{file}:{n} is not valid JSON ({e.msg}): re-run `rmsd match`") from None
    missing = sorted({"item_id", "teacher", "text", "weight", "kept"} - set(rows[0])) if rows else []
    if not rows or missing or not all(isinstance(r, dict) for r in rows):
        raise RmsdError(f"{file}: not a matched dataset (empty, or rows lack {missing or 'fields'}): "
                        "re-run `rmsd match`")
    return rows


def matched_card(path: Path) -> str:
    """The matched set's card: what a row is, and the lines that load `path` (tests/test_cards.py runs them)."""
    path = path.resolve()
    return ("# rmsd matched set\n\n"
            "Written by `rmsd match`: one row per teacher sample, its sample-store record plus a quality weight\n"
            "in [0, 1] and a `kept` flag (and `task_type`, `answer`, `format_ok`, `agreement`, `difficulty`).\n"
            "`rmsd distill` trains on the kept rows with a weight above 0.\n\n"
            f'```python\nimport datasets\nrows = datasets.load_dataset("json", data_files="{path}")["train"]\n```\n\n'
            f"`rmsd.matching.dataset.read_matched(\"{path.parent}\")` reads the same rows as a list of dicts, as\n"
            "`rmsd distill` does. The match statistics, when `rmsd match` wrote them, are in `match_report.json`\n"
            "(and `.png`) beside this card.\n")


def write_matched(rows: list[dict[str, Any]], out_dir: str | Path, stats: dict[str, Any] | None = None) -> Path:
    """Write `out_dir/matched.jsonl` (one row per sample, the same keys in every row, so
    `datasets.load_dataset("json", data_files=...)` reads it); with `stats`, also the report
    (`match_report.json` and `.png`, see `rmsd.matching.report.write_report`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "matched.jsonl"
    partial = path.with_suffix(".jsonl.partial")
    with partial.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, path)  # a killed match, or a reader meanwhile, never sees half a file
    (out / "README.md").write_text(matched_card(path))
    if stats is not None:
        from rmsd.matching.report import write_report

        write_report(stats, out)
    return path
