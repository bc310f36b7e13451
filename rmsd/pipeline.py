"""Recipe-level glue shared by the CLI commands and the quickstart.

Each function takes a `Recipe` and does one box of the data-flow diagram with the paths
the recipe names: load the items, match a sample store, evaluate a checkpoint, get the
student folder. The work itself lives in the stage modules; this file only wires them.

    rmsd match --recipe recipes/synthvid/tiny_rmsd.yaml --samples runs/synthvid-tiny-rmsd/samples
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rmsd.config import Recipe
from rmsd.data.items import Item
from rmsd.errors import RmsdError
from rmsd.models.lora import is_adapter_folder
from rmsd.verbosity import quiet_libraries


def benchmark_of(recipe: Recipe) -> Any:
    from rmsd.data.benchmarks import get_benchmark

    return get_benchmark(recipe.dataset.benchmark)


def eval_benchmark(recipe: Recipe, out: Path) -> Any:
    """The benchmark that scores `rmsd eval`: with `eval.judge_teacher`, MathVerse asks that pool
    teacher (extract, then match; verdicts cached in OUT/judge_cache.jsonl), else its rule fallback."""
    name = recipe.eval.judge_teacher
    if name is None:
        return benchmark_of(recipe)
    if recipe.dataset.benchmark != "mathverse":
        raise RmsdError(f"eval.judge_teacher is for MathVerse's LLM judge; {recipe.dataset.benchmark} scores by rule")
    from rmsd.data.benchmarks.mathverse import MathVerse, MathVerseJudge
    from rmsd.teachers.pool import build_teacher, model_name

    pool = recipe.load_pool()
    configs = {t.name: t for t in pool.teachers}
    if name not in configs:
        raise RmsdError(f"eval.judge_teacher {name!r} is not in pool {pool.name}: choose one of {sorted(configs)}")
    teacher = build_teacher(configs[name], pool)
    judge = MathVerseJudge(teacher.ask, cache_path=out / "judge_cache.jsonl",
                           name=f"llm:{name}:{model_name(configs[name])}")
    return MathVerse(judge=judge)


def load_recipe_items(recipe: Recipe, split: str | None = None, limit: int | None = None) -> list[Item]:
    """The recipe's items of `split` (default: the training split)."""
    ds = recipe.dataset
    return benchmark_of(recipe).load_items(
        ds.path, split=split or ds.split, video_root=ds.video_root, limit=limit or ds.limit, config=ds.config
    )


def check_checkpoint(path: Path, what: str) -> None:
    """A from_pretrained folder whose config.json transformers can read, or one RmsdError saying what is wrong."""
    config = path / "config.json"
    if not config.is_file():
        raise RmsdError(f"{what} {path}: no config.json there; point it at a from_pretrained folder")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RmsdError(f"{what} {path}: config.json is not valid JSON ({e}); point it at a from_pretrained folder") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise RmsdError(f"{what} {path}: config.json is not a model's (no model_type); point it at a from_pretrained "
                        "folder, e.g. one written by `rmsd distill` or `rmsd build-student`")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path)
    except (ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RmsdError(f"{what} {path}: transformers cannot read its config.json ({first[:200]})") from None


def student_path(recipe: Recipe) -> Path:
    """The student checkpoint folder: `student.path`, or a built offline student (built once)."""
    s = recipe.student
    if s.path is not None:
        path = Path(s.path).expanduser()
        if not is_adapter_folder(path):  # a LoRA stage's folder holds adapters, not a config.json
            check_checkpoint(path, "student.path")
        return path
    from rmsd.models.offline.tiny import build_student

    path = recipe.path_of(s.build_out)
    if not (path / "config.json").is_file():
        build_student(path, size=s.build, seed=recipe.distill.sft.seed, family=s.build_family)
    else:
        from rmsd.models.family import family_of

        built = family_of(path).name
        if built != s.build_family:
            raise RmsdError(f"{path} holds a {built} student but the recipe builds {s.build_family}: "
                            "delete the folder or set student.build_out elsewhere")
    return path


def sample_recipe(recipe: Recipe, out: str | Path | None = None, limit: int | None = None,
                  shard: tuple[int, int] | None = None, progress: bool = True, *, cancel: bool = False,
                  batch_file: str | Path | None = None) -> dict[str, Any]:
    """`rmsd sample`: the recipe's items (limited, sharded) through its pool into its store; the summary.

    `cancel`: cancel the store's open batches instead; `batch_file`: write the missing requests of its
    openai teachers to that file instead, submitting nothing (`rmsd.sampling.batch`)."""
    quiet_libraries()
    from rmsd.sampling.runner import sample_into, shard_items

    pool = recipe.load_pool()
    items = load_recipe_items(recipe, limit=limit)
    if shard is not None:
        items = shard_items(items, shard)
    return sample_into(Path(out) if out is not None else recipe.path_of(recipe.sampling.out), items, pool,
                       recipe.sampling, recipe.dataset.num_frames, recipe.dataset.max_side, progress,
                       about={"recipe": recipe.name, "pool": pool.name,
                              "shard": f"{shard[0]}/{shard[1]}" if shard else None},
                       cancel=cancel, batch_file=Path(batch_file) if batch_file is not None else None)


def rekey_recipe(recipe: Recipe, samples: str | Path, out: str | Path) -> dict[str, int]:
    """`rmsd sample rekey`: an older store's records this recipe plans, under today's keys, in a new folder."""
    from rmsd.sampling.keys import rekey_store

    return rekey_store(Path(samples), Path(out), load_recipe_items(recipe), recipe.load_pool(),
                       recipe.dataset.num_frames, recipe.dataset.max_side)


def match_recipe(recipe: Recipe, samples: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Match a sample store into weighted training targets; returns the report's statistics.

    Where the items have ground truth, the report also carries the pool's error statistics
    (`teacher_quality`: rmsd.matching.teacher_stats) and their figure."""
    quiet_libraries()
    from rmsd.matching.dataset import write_matched
    from rmsd.matching.matcher import match_samples
    from rmsd.matching.report import write_report
    from rmsd.matching.teacher_stats import teacher_statistics

    records = _records(samples)
    items = load_recipe_items(recipe)
    benchmark = benchmark_of(recipe)
    rows, stats = match_samples(items, records, benchmark, recipe.matching)
    if any(it.answer is not None for it in items):
        stats["teacher_quality"] = teacher_statistics(items, records, benchmark)
    out = Path(out) if out is not None else recipe.path_of(recipe.matching.out)
    write_matched(rows, out)
    write_report(stats, out)
    return stats


def teacher_stats_recipe(recipe: Recipe, samples: str | Path, out: str | Path | None = None,
                         split: str | None = None) -> tuple[dict[str, Any], Path]:
    """The pool's error statistics on a store whose items have ground truth (`rmsd match stats`).

    Writes OUT/teacher_stats.json and .png (OUT: the recipe's matching.out); returns (stats, json path)."""
    from rmsd.matching.report import write_teacher_stats
    from rmsd.matching.teacher_stats import teacher_statistics

    records = _records(samples)
    items = load_recipe_items(recipe, split=split)
    if not any(it.answer is not None for it in items):
        raise RmsdError(f"no item of {recipe.dataset.path} ({split or recipe.dataset.split}) has a known answer: "
                        "teacher statistics need ground truth")
    stats = teacher_statistics(items, records, benchmark_of(recipe))
    if not stats["teachers"]:
        raise RmsdError(f"{samples}: no record belongs to an item with a known answer of this recipe's split")
    out = Path(out) if out is not None else recipe.path_of(recipe.matching.out)
    json_path, _ = write_teacher_stats(stats, out)
    return stats, json_path


def _records(samples: str | Path) -> list[dict[str, Any]]:
    from rmsd.sampling.store import read_records

    samples = Path(samples)
    if not samples.is_dir():
        raise RmsdError(f"{samples}: no sample store there; run `rmsd sample --recipe ...` first")
    records = read_records(samples)
    if not records:
        raise RmsdError(f"{samples}: the sample store holds no records")
    return records


def distill_recipe(recipe: Recipe, matched_dir: str | Path, out: str | Path | None = None,
                   resume: bool = False, callbacks: list[Any] | None = None, progress: bool = True) -> dict[str, Path]:
    """Run the recipe's enabled stages; returns {stage: checkpoint folder}."""
    quiet_libraries()
    from accelerate import PartialState

    from rmsd.matching.dataset import read_matched
    from rmsd.train.distill import DistillContext, run_stages
    from rmsd.train.model_card import run_info

    matched = read_matched(matched_dir)
    items = {it.item_id: it for it in load_recipe_items(recipe)}
    with PartialState().main_process_first():  # build the offline student once, not once per process
        student = student_path(recipe)
    s = recipe.student
    base = (str(Path(s.path).expanduser()) if s.path is not None else
            f"built from config: `rmsd build-student --size {s.build} --seed {recipe.distill.sft.seed}` "
            f"(random weights, local tokenizer) into {student}")
    ctx = DistillContext(
        items=items, matched=matched, out=Path(out) if out is not None else recipe.path_of(recipe.distill.out),
        dataset=recipe.dataset, student=recipe.student, report_to=list(recipe.distill.report_to), resume=resume,
        shared_prefix=recipe.distill.shared_prefix,
        benchmark=benchmark_of(recipe), callbacks=list(callbacks or []),
        pool=recipe.load_pool() if recipe.distill.adversarial.visd.judge == "llm" else None, progress=progress,
        card=run_info(base, recipe.name, recipe.source),
    )
    return run_stages(recipe.distill.sft, recipe.distill.adversarial, ctx, student)


def eval_recipe(
    recipe: Recipe, model: str | Path, limit: int | None = None, out: str | Path | None = None, show: bool = True
) -> dict[str, Any]:
    """Evaluate a checkpoint on the recipe's eval split with the benchmark's scorer."""
    quiet_libraries()
    from rmsd.eval.evaluate import evaluate

    model = Path(model)
    if not is_adapter_folder(model):
        check_checkpoint(model, "--model")
    ev, ds = recipe.eval, recipe.dataset
    items = load_recipe_items(recipe, split=ds.eval_split, limit=limit or ev.limit)
    # runs/a/sft and runs/b/sft must not overwrite each other's results
    out = Path(out) if out is not None else recipe.path_of(ev.out) / f"{model.parent.name}-{model.name}"
    results = evaluate(
        model, items, eval_benchmark(recipe, out), out, extraction=ev.extraction, batch_size=ev.batch_size,
        max_new_tokens=ev.max_new_tokens, num_frames=ds.num_frames, max_side=ds.max_side,
        device=recipe.student.device, max_pixels=recipe.student.max_pixels, show=show,
    )
    from rmsd.train.model_card import add_results

    add_results(model, results, f"{ds.benchmark} `{ds.eval_split}` split ({len(items)} items, {ev.extraction} "
                                f"extraction, greedy decoding); predictions and results in {out}")
    return results
