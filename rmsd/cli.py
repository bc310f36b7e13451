"""The `rmsd` command line: one small function per command, nothing else.

Each command parses its options and calls one function of the library; heavy imports
(torch, transformers) happen inside the command so `rmsd --help` stays fast. A user
mistake (`RmsdError`) prints one `error: ...` line and exits with status 2; `rmsd validate`
does the same for every problem it finds (one `error:` line each, then a count on stdout).

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
    rich_markup_mode=None,  # plain click help: flags read --resume/--no-resume, not "--resume <bool>"
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
    from rmsd.synthvid.generator import generate

    info = generate(out, n=n, seed=seed, test_fraction=test_fraction, frame_size=frame_size)
    typer.echo(f"wrote {info['counts']['total']} items to {out} ({info['counts']['train']} train, {info['counts']['test']} test)")


@app.command("build-student")
def build_student(
    out: Path = typer.Option(..., "--out", help="folder for the from_pretrained checkpoint"),
    size: str = typer.Option("tiny", "--size", help="tiny (~1.4M params, CPU) | small | base (GPU)"),
    seed: int = typer.Option(0, "--seed", help="weight initialisation seed"),
    family: str = typer.Option("qwen2_5_vl", "--family", help="architecture: qwen2_5_vl (default) | qwen3_vl | qwen3_5"),
    pretrain: bool = typer.Option(False, "--pretrain", help="pre-train it on format drills and captions "
                                  "(rmsd.models.offline.pretrain: what an Instruct checkpoint brings)"),
    steps: int = typer.Option(None, "--pretrain-steps", min=1, help="pre-training steps (default: the recipe's)"),
    videos: int = typer.Option(None, "--pretrain-videos", min=1, help="caption videos (default: the recipe's)"),
    cache: Path = typer.Option(None, "--cache", help="folder for the caption videos (default: beside --out)"),
    rebuild: bool = typer.Option(False, "--rebuild", help="train the base even where the shipped one matches"),
) -> None:
    """Build an offline Qwen2.5-VL-, Qwen3-VL- or Qwen3.5-architecture student with random weights and a local tokenizer."""
    if pretrain:
        from rmsd.models.offline.pretrain import PretrainConfig, pretrained_base

        given = {k: v for k, v in (("steps", steps), ("videos", videos)) if v is not None}
        config = PretrainConfig(seed=seed, **given)
        path = pretrained_base(out, size=size, seed=seed, config=config, cache=cache, rebuild=rebuild, log=typer.echo)
        typer.echo(f"wrote a pre-trained {size} student to {path} ({config.steps} steps; see {path / 'pretrain.json'})")
        return
    from rmsd.models.offline.tiny import build_student as build

    path = build(out, size=size, seed=seed, family=family)
    typer.echo(f"wrote a {size} {family} student to {path}")


@app.command()
def validate(paths: list[Path] = typer.Argument(..., help="recipe or pool YAML files, or folders of them")) -> None:
    """Check recipes and teacher pools; report every problem with its YAML path (one `error:` line each, exit 2)."""
    from rmsd.validation import validate_file

    files = [f for p in paths for f in (sorted(p.rglob("*.yaml")) if p.is_dir() else [p])]
    if not files:
        raise RmsdError(f"no YAML files under {', '.join(map(str, paths))}")
    problems = [line for f in files for line in validate_file(f)]
    for line in problems:  # like every command's user mistakes, except that all of them are listed
        typer.echo(f"error: {line}", err=True)
    typer.echo(f"{len(files)} files checked, {len(problems)} problems")
    if problems:
        raise typer.Exit(2)


def _recipe(path: Path, overrides: list[str]):
    from rmsd.config import load_recipe

    return load_recipe(path, overrides)


RECIPE = typer.Option(..., "--recipe", "-r", help="recipe YAML (recipes/<benchmark>/*.yaml)")
SET = typer.Option([], "--set", metavar="KEY=VALUE", help="override a recipe key: --set distill.sft.lr=1e-4 (repeatable)")

sample_app = typer.Typer(cls=_Group, help="Query the teacher pool K times per item into a resumable sample store.",
                         rich_markup_mode=None)
app.add_typer(sample_app, name="sample")


@sample_app.callback(invoke_without_command=True)
def sample(
    ctx: typer.Context,
    recipe: Path = typer.Option(None, "--recipe", "-r", help="recipe YAML (recipes/<benchmark>/*.yaml)"),
    out: Path = typer.Option(None, "--out", help="sample store folder (default: the recipe's sampling.out)"),
    limit: int = typer.Option(None, "--limit", min=1, help="only the first N items"),
    shard: str = typer.Option(None, "--shard", help="I/N: this machine's share of the items (0-based I)"),
    cancel: bool = typer.Option(False, "--cancel", help="cancel this store's open batches (what they finished is kept)"),
    batch_file: Path = typer.Option(None, "--batch-file", help="write the missing requests as one batch file "
                                    "(e.g. for vllm run-batch) without submitting; then `rmsd sample import`"),
    overrides: list[str] = SET,
) -> None:
    """Sample every item from every teacher K times. Re-running the same command resumes."""
    if ctx.invoked_subcommand is not None:
        return
    if recipe is None:
        raise RmsdError("--recipe is required: rmsd sample --recipe recipes/<benchmark>/<recipe>.yaml")
    if cancel and batch_file is not None:
        raise RmsdError("--cancel and --batch-file do different things: pass one of them")
    from rmsd.pipeline import data_lines, sample_recipe
    from rmsd.sampling.sample import parse_shard

    done = sample_recipe(_recipe(recipe, overrides), out=out, limit=limit, shard=parse_shard(shard) if shard else None,
                         cancel=cancel, batch_file=batch_file)
    if cancel:
        typer.echo(f"cancelled {done['cancelled']} open batches; what they had finished is stored")
    elif batch_file is not None:
        typer.echo(f"wrote {done['exported']} requests to {batch_file}; after running them (vllm run-batch -i "
                   f"{batch_file} -o results.jsonl): rmsd sample import --samples STORE results.jsonl")
    else:
        for line in data_lines(done):
            typer.echo(line)


@sample_app.command("import")
def sample_import(
    results: Path = typer.Argument(..., help="result lines: OpenAI batch output or `vllm run-batch -o` output"),
    samples: Path = typer.Option(..., "--samples", help="the store whose --batch-file requests these answer"),
) -> None:
    """Store batch results produced elsewhere (vllm run-batch on a cluster) in the store that wrote the requests."""
    from rmsd.sampling.batch_files import import_results

    done = import_results(samples, results)
    failed = ", ".join(f"{k} {v}" for k, v in sorted(done["failed_lines"].items())) or "none"
    typer.echo(f"stored {done['records']} records in {samples}; failed lines: {failed}; {done['unknown']} lines with "
               f"unknown ids ignored; re-run rmsd sample to ask the missing samples again")


@sample_app.command("merge")
def sample_merge(
    stores: list[Path] = typer.Argument(..., help="shard stores to join"),
    out: Path = typer.Option(..., "--out", help="merged store folder"),
) -> None:
    """Join shard stores (from --shard I/N runs) into one, without duplicates."""
    from rmsd.sampling.store import merge_stores

    n = merge_stores(stores, out)
    typer.echo(f"merged {n} records into {out}")


@sample_app.command("rekey")
def sample_rekey(
    recipe: Path = RECIPE,
    samples: Path = typer.Option(..., "--samples", help="a store written by an older rmsd (record key version 1)"),
    out: Path = typer.Option(..., "--out", help="new store folder with today's keys"),
    overrides: list[str] = SET,
) -> None:
    """Carry an older store's records over to today's record keys (only if they were made with this recipe's settings)."""
    from rmsd.pipeline import rekey_recipe

    counts = rekey_recipe(_recipe(recipe, overrides), samples, out)
    typer.echo(f"copied {counts['records']} records into {out} under today's keys; {counts['left_out']} records "
               f"this recipe does not plan were left out; {samples} is unchanged")


match_app = typer.Typer(cls=_Group, help="Weight every teacher sample by quality (rmsd match --recipe R --samples S); "
                        "`rmsd match export` writes the weighted targets for TRL, ms-swift or LLaMA-Factory; `rmsd match stats` measures how the pool errs.",
                        rich_markup_mode=None)
app.add_typer(match_app, name="match")


@match_app.callback(invoke_without_command=True)
def match(
    ctx: typer.Context,
    recipe: Path = typer.Option(None, "--recipe", "-r", help="recipe YAML (recipes/<benchmark>/*.yaml)"),
    samples: Path = typer.Option(None, "--samples", help="sample store written by rmsd sample"),
    out: Path = typer.Option(None, "--out", help="matched dataset folder (default: the recipe's matching.out)"),
    overrides: list[str] = SET,
) -> None:
    """Weight every teacher sample by quality (correctness or Dawid–Skene consensus; uniform for open-ended)."""
    if ctx.invoked_subcommand is not None:
        return
    if recipe is None or samples is None:
        raise RmsdError("--recipe and --samples are required: rmsd match --recipe R --samples runs/<name>/samples")
    from rmsd.pipeline import data_lines, match_recipe

    r = _recipe(recipe, overrides)
    from rmsd.matching.dataset import unusable_summary

    stats = match_recipe(r, samples, out)
    typer.echo(f"matched {stats['n_samples']} samples of {stats['n_items']} items; wrote {out or r.path_of(r.matching.out)}")
    for line in data_lines(stats):
        typer.echo(line)
    if unusable_summary(stats):
        typer.echo(unusable_summary(stats))


@match_app.command("export")
def match_export(
    recipe: Path = RECIPE,
    matched: Path = typer.Option(..., "--matched", help="matched dataset written by rmsd match"),
    fmt: str = typer.Option(..., "--format", help="trl | swift | llamafactory | sharegpt"),
    out: Path = typer.Option(..., "--out", help="folder for train.jsonl, weights.jsonl, export.json"),
    system: str = typer.Option(None, "--system", help='system message of every row (default: the recipe\'s '
                               'student.system_prompt; "" for none)'),
    rows_per_item: int = typer.Option(None, "--rows-per-item", min=1, help="R: rows an item gets, shared by "
                                      "weight (default: the most kept samples of any item; 1 = ignore weights)"),
    overrides: list[str] = SET,
) -> None:
    """Write the kept, weighted samples as TRL / ms-swift / LLaMA-Factory / ShareGPT conversations."""
    from rmsd.matching.export import check_format, export_matched
    from rmsd.pipeline import load_recipe_items

    check_format(fmt)  # before loading a dataset
    r = _recipe(recipe, overrides)
    done = export_matched(load_recipe_items(r), matched, fmt, out,
                          system=r.student.system_prompt if system is None else system, rows_per_item=rows_per_item)
    typer.echo(f"exported {done['samples']} samples of {done['items']} items as {done['rows']} rows "
               f"(up to {done['rows_per_item']} per item, by weight) in {fmt} format to {out}")


@match_app.command("stats")
def match_stats(
    recipe: Path = RECIPE,
    samples: Path = typer.Option(..., "--samples", help="sample store written by rmsd sample"),
    out: Path = typer.Option(None, "--out", help="folder for teacher_stats.json/.png (default: matching.out)"),
    split: str = typer.Option(None, "--split", help="the items' split (default: the recipe's dataset.split)"),
    overrides: list[str] = SET,
) -> None:
    """Measure how each teacher errs against ground truth: accuracy, quality spreads, format, correlation."""
    from rmsd.pipeline import teacher_stats_recipe

    stats, path = teacher_stats_recipe(_recipe(recipe, overrides), samples, out, split)
    typer.echo(f"{'teacher':<16} {'task':<10} {'items':>6} {'format viol.':>12} {'accuracy':>9} {'quality':>8} "
               f"{'sigma cross':>12} {'sigma within':>13}")
    for teacher, per_task in stats["teachers"].items():
        for task, row in per_task.items():
            cells = [_fmt(row[k]) for k in ("format_violation_rate", "accuracy", "quality", "sigma_cross",
                                            "sigma_within")]
            typer.echo(f"{teacher:<16} {task:<10} {row['items']:>6} {cells[0]:>12} {cells[1]:>9} {cells[2]:>8} "
                       f"{cells[3]:>12} {cells[4]:>13}")
    typer.echo(f"wrote {path} and {path.with_suffix('.png')}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command()
def distill(
    recipe: Path = RECIPE,
    matched: Path = typer.Option(..., "--matched", help="matched dataset written by rmsd match"),
    out: Path = typer.Option(None, "--out", help="checkpoints folder (default: the recipe's distill.out)"),
    resume: bool = typer.Option(False, "--resume/--no-resume",
                                help="continue a killed stage from its last checkpoint (finished stages are skipped)"),
    overrides: list[str] = SET,
) -> None:
    """Train the student: multi-sample weighted SFT, then adversarial distillation (+ VISD)."""
    from rmsd.pipeline import distill_recipe

    ckpts = distill_recipe(_recipe(recipe, overrides), matched, out=out, resume=resume)
    for stage, path in ckpts.items():
        typer.echo(f"{stage}: {path}")


@app.command("eval")
def eval_(
    recipe: Path = RECIPE,
    model: Path = typer.Option(..., "--model", help="checkpoint folder (from_pretrained)"),
    limit: int = typer.Option(None, "--limit", min=1, help="only the first N items"),
    out: Path = typer.Option(None, "--out", help="predictions + results folder"),
    overrides: list[str] = SET,
) -> None:
    """Score a checkpoint with the benchmark's prompt, greedy decoding and the harness's scorer."""
    from rmsd.pipeline import eval_recipe

    eval_recipe(_recipe(recipe, overrides), model, limit=limit, out=out)


@app.command()
def export(
    model: Path = typer.Option(..., "--model", help="a LoRA stage folder (OUT/<stage> of a run with student.lora)"),
    merge: bool = typer.Option(False, "--merge", help="fold the adapters into the base weights (required: the "
                               "adapter folder itself is already what peft loads)"),
    out: Path = typer.Option(..., "--out", help="new folder for the merged from_pretrained model + processor"),
) -> None:
    """Write a LoRA student as a plain from_pretrained folder (AutoModelForImageTextToText + AutoProcessor)."""
    if not merge:
        raise RmsdError("rmsd export writes a merged model: pass --merge (the adapter folder loads with peft as it is)")
    from rmsd.models.lora import merge_folder

    typer.echo(f"wrote {merge_folder(model, out)} ({model} merged into its base)")


@app.command()
def plan(
    recipe: Path = RECIPE,
    gpu_memory: float = typer.Option(80.0, "--gpu-memory", help="GiB of memory per GPU"),
    config: Path = typer.Option(None, "--config", help="folder with the student's config.json (default: student.path)"),
    prompt_tokens: int = typer.Option(128, "--prompt-tokens", min=1, help="text tokens of a prompt"),
    side: int = typer.Option(None, "--frame-side", min=16, help="frame side in px (default: dataset.max_side, else 448)"),
    gpus: int = typer.Option(1, "--gpus", min=1, help="GPUs that ZeRO shards over"),
    zero: int = typer.Option(0, "--zero", help="DeepSpeed ZeRO stage: 0 (none), 2 or 3"),
    overrides: list[str] = SET,
) -> None:
    """Memory per training stage (models, weights, gradients, AdamW, activations) and whether it fits the GPU."""
    from rmsd.plan import format_plan, plan_recipe

    result = plan_recipe(_recipe(recipe, overrides), gpu_memory, config=config, prompt_tokens=prompt_tokens,
                         side=side, gpus=gpus, zero=zero)
    typer.echo(format_plan(result))


@app.command("run")
def run_(
    recipe: Path = RECIPE,
    start: str = typer.Option(None, "--from", help="first stage: validate, data, sample, match, sft, adversarial (or "
                              "distill), eval; earlier outputs are taken as they are"),
    stop: str = typer.Option(None, "--until", help="last stage (same names)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print what would run, the requests, tokens and cost of "
                                 "the missing samples and the memory plan; write and send nothing"),
    gpu_memory: float = typer.Option(80.0, "--gpu-memory", help="GiB per GPU for the dry run's memory plan"),
    overrides: list[str] = SET,
) -> None:
    """The whole recipe, stage by stage, skipping what is up to date and resuming what was cut short."""
    from rmsd.workflow.runner import format_report, run_recipe

    report = run_recipe(_recipe(recipe, overrides), start=start, stop=stop, dry_run=dry_run, echo=typer.echo,
                        gpu_memory=gpu_memory)
    typer.echo(format_report(report))


@app.command()
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="folder for every artifact"),
    n: int = typer.Option(400, "--n", min=20, help="synthvid items to generate"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    overrides: list[str] = SET,
) -> None:
    """Run the whole pipeline on the embedded default (synthvid, simulated pool, tiny student)."""
    from rmsd.quickstart import run_quickstart

    run_quickstart(out, n=n, overrides=[f"student.device={device}", *overrides])


def main() -> None:
    from rmsd.verbosity import quiet_libraries

    quiet_libraries()  # rmsd reports its own progress; RMSD_VERBOSE=1 shows every library message
    app(prog_name="rmsd")


if __name__ == "__main__":
    main()
