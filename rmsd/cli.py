"""The `rmsd` command line: one small function per command, nothing else.

Each command parses its options and calls one function of the library; heavy imports
(torch, transformers) happen inside the command so `rmsd --help` stays fast. A user
mistake (`RmsdError`) prints one line and exits with status 2.

    rmsd --help
"""

from __future__ import annotations

from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from rmsd.errors import RmsdError


class _Group(TyperGroup):
    """Turns `RmsdError` into one line on stderr and exit status 2 (internal errors keep tracebacks)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RmsdError as e:
            typer.echo(f"error: {e}", err=True)
            ctx.exit(2)


app = typer.Typer(
    cls=_Group,
    name="rmsd",
    help="Black-box multi-sample distillation of video LLMs: sample a teacher pool, match by quality, distil.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def synthvid(
    out: Path = typer.Option(..., "--out", help="folder to write videos/, train.jsonl, test.jsonl, info.json"),
    n: int = typer.Option(200, "--n", min=1, help="number of items (questions)"),
    seed: int = typer.Option(0, "--seed", help="same seed, same dataset (byte for byte)"),
    test_fraction: float = typer.Option(0.2, "--test-fraction", min=0.0, max=0.9, help="share of videos held out"),
    frame_size: int = typer.Option(84, "--frame-size", min=28, help="frame side in pixels (even)"),
) -> None:
    """Generate the synthvid benchmark: procedural mp4 videos with questions of all four task types."""
    from rmsd.data.synthvid import generate

    info = generate(out, n=n, seed=seed, test_fraction=test_fraction, frame_size=frame_size)
    typer.echo(f"wrote {info['counts']['total']} items to {out} ({info['counts']['train']} train, {info['counts']['test']} test)")


@app.command("build-student")
def build_student(
    out: Path = typer.Option(..., "--out", help="folder for the from_pretrained checkpoint"),
    size: str = typer.Option("tiny", "--size", help="tiny (~1.4M params, CPU) | small | base (GPU)"),
    seed: int = typer.Option(0, "--seed", help="weight initialisation seed"),
) -> None:
    """Build an offline Qwen2.5-VL-architecture student with random weights and a local tokenizer."""
    from rmsd.models.tiny import build_student as build

    path = build(out, size=size, seed=seed)
    typer.echo(f"wrote a {size} student to {path}")


@app.command()
def validate(paths: list[Path] = typer.Argument(..., help="recipe or pool YAML files, or folders of them")) -> None:
    """Check recipes and teacher pools; report every problem with its YAML path."""
    from rmsd.config import validate_file

    files = [f for p in paths for f in (sorted(p.rglob("*.yaml")) if p.is_dir() else [p])]
    if not files:
        raise RmsdError(f"no YAML files under {', '.join(map(str, paths))}")
    problems = [line for f in files for line in validate_file(f)]
    for line in problems:
        typer.echo(line, err=True)
    typer.echo(f"{len(files)} files checked, {len(problems)} problems")
    if problems:
        raise typer.Exit(1)


def main() -> None:
    app(prog_name="rmsd")


if __name__ == "__main__":
    main()
