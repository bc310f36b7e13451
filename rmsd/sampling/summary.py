"""Progress bar and run summary of `rmsd sample`: counts, tokens, cost, wall time, throughput.

Batches (`rmsd.sampling.batch`) report their progress per batch instead: status, completed
and failed requests, as a bar per batch on a terminal and one line per change off one.

The summary has this run's figures per teacher and overall (records written, failures,
HTTP requests, retries, `short` = requests answered with fewer samples than asked, whose
missing samples were asked again), beside the store's totals; it is saved as summary.json
and printed as a table.

    rmsd sample --recipe recipes/synthvid/tiny_rmsd.yaml
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from rmsd.config.pools import TeacherConfig
from rmsd.sampling.ledger import Ledger
from rmsd.sampling.store import SampleStore
from rmsd.sampling.work import Lane


class Progress:
    """A rich progress bar (done/total, rate, errors, tokens) on stderr; counters only when disabled."""

    def __init__(self, total: int, enabled: bool, description: str):
        self.done = self.errors = self.tokens = 0
        self.started = time.perf_counter()
        self._bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
                                 console=Console(stderr=True))
            self._task = self._bar.add_task(description, total=total, stats="")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, n: int, errors: int = 0, tokens: int = 0) -> None:
        self.done += n
        self.errors += errors
        self.tokens += tokens
        if self._bar is not None:
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            self._bar.update(self._task, advance=n,
                             stats=f"{rate:.1f}/s · {self.errors} errors · {self.tokens:,} tokens")


class BatchProgress:
    """Per batch: status, completed and failed requests; a rich bar on a terminal, a line per change off one."""

    def __init__(self, enabled: bool):
        self.enabled, self.tty = enabled, sys.stderr.isatty()
        self.last: dict[str, tuple] = {}
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def note(self, text: str) -> None:
        if self.enabled:
            (self._bar.console.print if self._bar is not None else lambda t: print(t, file=sys.stderr, flush=True))(text)

    def update(self, tag: str, teacher: str, batch: Any) -> bool:
        c = batch.request_counts
        done, failed, total = (c.completed, c.failed, c.total) if c is not None else (0, 0, 0)
        state = (batch.status, done, failed, total)
        changed, self.last[tag] = self.last.get(tag) != state, state
        if not (self.enabled and changed):
            return changed
        if not self.tty:
            self.note(f"batch {batch.id} ({teacher}): {batch.status}, {done}/{total} completed, {failed} failed")
            return changed
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), console=Console(stderr=True))
            self._bar.start()
        if tag not in self._tasks:
            self._tasks[tag] = self._bar.add_task(f"{teacher} {batch.id}", total=total or None, stats="")
        self._bar.update(self._tasks[tag], completed=done + failed, total=total or None,
                         stats=f"{batch.status} · {failed} failed")
        return changed

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def cost_usd(prompt_tokens: int, completion_tokens: int, cfg: TeacherConfig, batch: bool = False) -> float | None:
    if cfg.price is None:
        return None
    share = cfg.price.batch_discount if batch else 1.0
    return round((prompt_tokens * cfg.price.input_per_1m + completion_tokens * cfg.price.output_per_1m) * share / 1e6, 6)


def _modes(online: tuple[int, int], batch: tuple[int, int], cfg: TeacherConfig) -> dict[str, dict[str, Any]]:
    """Tokens and cost per mode; batch tokens are priced at `price.batch_discount`."""
    return {mode: {"prompt_tokens": p, "completion_tokens": c, "cost_usd": cost_usd(p, c, cfg, batch=mode == "batch")}
            for mode, (p, c) in (("online", online), ("batch", batch))}


def _teacher(lane: Lane, store: SampleStore, batch: dict[str, Any] | None, billed: dict[str, int]) -> dict[str, Any]:
    """One teacher's figures: this run's (online + batch) and the store's, tokens and cost per mode."""
    name, cfg = lane.cfg.name, lane.cfg
    s: dict[str, Any] = dict(lane.stats)
    b = batch or {}
    run_batch = (b.get("billed_prompt_tokens", 0), b.get("billed_completion_tokens", 0))
    s["modes"] = _modes((s["prompt_tokens"], s["completion_tokens"]), run_batch, cfg)
    for k in ("records", "truncated", "flagged"):
        s[k] += b.get(k, 0)
    s["prompt_tokens"] += run_batch[0]
    s["completion_tokens"] += run_batch[1]
    s["mode"] = cfg.openai.mode if cfg.openai is not None else "online"
    if batch is not None:
        s["batch"] = batch
    total: dict[str, Any] = dict(store.totals.get(name, {"records": 0, "prompt_tokens": 0, "completion_tokens": 0}))
    # the store's batch share: what its batches billed (ledger); the rest of its records were sampled online
    stored_batch = (billed.get("billed_prompt_tokens", 0), billed.get("billed_completion_tokens", 0))
    stored_online = (max(0, total["prompt_tokens"] - stored_batch[0]), max(0, total["completion_tokens"] - stored_batch[1]))
    total["modes"] = _modes(stored_online, stored_batch, cfg)
    costs = [m["cost_usd"] for m in s["modes"].values()]
    s["cost_usd"] = None if None in costs else round(sum(costs), 6)
    costs = [m["cost_usd"] for m in total["modes"].values()]
    total["cost_usd"] = None if None in costs else round(sum(costs), 6)
    return {**s, "store": total}


def summarize(lanes: dict[str, Lane], store: SampleStore, planned: list[str], wall_s: float,
              batch: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """This run's figures (records, tokens, cost, throughput) and the store's totals, per teacher and overall;
    `batch`: the batch figures of each teacher in batch mode (`BatchRun.summary`)."""
    ledger = Ledger(store.path)
    billed = ledger.billed() if ledger.exists() else {}
    teachers = {name: _teacher(lane, store, (batch or {}).get(name), billed.get(name, {}))
                for name, lane in lanes.items()}

    def add(key: str, where: str | None = None) -> Any:
        vals = [(t[where] if where else t)[key] for t in teachers.values()]
        vals = [v for v in vals if v is not None]
        return round(sum(vals), 6) if vals else None

    failures = store.open_failures()
    new = add("records")
    out = {
        "store": str(store.path), "planned": len(planned), "records": len(store), "new_records": new,
        "missing": sum(k not in store for k in planned),
        "failures": len(failures), "failed_samples": sum(len(f["keys"]) for f in failures),
        "failures_this_run": store.failures_this_run, "truncated": add("truncated"), "flagged": add("flagged"),
        "requests": add("requests"), "retries": add("retries"), "short": add("short"),
        "prompt_tokens": add("prompt_tokens"), "completion_tokens": add("completion_tokens"),
        "cost_usd": add("cost_usd"), "wall_s": round(wall_s, 3),
        "responses_per_s": round(new / wall_s, 3) if wall_s > 0 else None,
        "tokens_per_s": round((add("prompt_tokens") + add("completion_tokens")) / wall_s, 1) if wall_s > 0 else None,
        "totals": {"records": len(store), "prompt_tokens": add("prompt_tokens", "store"),
                   "completion_tokens": add("completion_tokens", "store"), "cost_usd": add("cost_usd", "store")},
        "teachers": teachers,
    }
    if batch:
        out["batch"] = _batch_totals(batch)
    return out


def _batch_totals(batch: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The batch figures of all teachers: lines, bytes per request, billed lines, failed lines by reason."""
    lines = sum(b["lines"] for b in batch.values())
    size = sum(b["bytes"] for b in batch.values())
    reasons: dict[str, int] = {}
    for b in batch.values():
        for k, v in b["failed_lines"].items():
            reasons[k] = reasons.get(k, 0) + v
    return {"batches": sum(b["batches"] for b in batch.values()), "lines": lines, "bytes": size,
            "bytes_per_request": round(size / lines, 1) if lines else None,
            "billed_lines": sum(b["billed_lines"] for b in batch.values()),
            "records": sum(b["records"] for b in batch.values()), "failed_lines": reasons,
            "unknown_lines": sum(b["unknown_lines"] for b in batch.values())}


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rmsd sample: {summary['store']}", show_edge=False)
    for col in ("teacher", "mode", "new", "failed", "retries", "cut", "in tok", "out tok", "cost $"):
        table.add_column(col, justify="left" if col in ("teacher", "mode") else "right")
    for name, t in summary["teachers"].items():
        cost = "-" if t["cost_usd"] is None else f"{t['cost_usd']:.4f}"
        table.add_row(name, t.get("mode", "online"), str(t["records"]), str(t["failed"]), str(t["retries"]),
                      str(t["truncated"]),
                      f"{t['prompt_tokens']:,}", f"{t['completion_tokens']:,}", cost)
    console = Console()
    console.print(table)
    console.print("new: records written by this run; cut: responses ended by max_tokens (kept, finish_reason=length)")
    console.print(f"{summary['new_records']} new records in {summary['wall_s']:.1f} s "
                  f"({summary['responses_per_s'] or 0:.1f}/s); store holds {summary['records']} of "
                  f"{summary['planned']} planned, {summary['missing']} missing")
    b = summary.get("batch")
    if b and (b["lines"] or b["records"]):
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(b["failed_lines"].items())) or "none"
        console.print(f"batch: {b['batches']} batches, {b['lines']} lines ({b['bytes_per_request'] or 0:,.0f} bytes "
                      f"per request), {b['billed_lines']} billed, {b['records']} records stored; failed lines: "
                      f"{reasons}; {b['unknown_lines']} unknown ids ignored")
    if summary["failures"]:
        console.print(f"[yellow]{summary['failures']} item/teacher pairs failed ({summary['failed_samples']} samples): "
                      f"see {Path(summary['store']) / 'failures.jsonl'}; re-run the same command to retry them")
