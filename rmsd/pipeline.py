"""Recipe-level glue shared by the CLI commands and the quickstart.

Each function takes a `Recipe` and does one box of the data-flow diagram with the paths
the recipe names: load the items, match a sample store, evaluate a checkpoint, get the
student folder. The work itself lives in the stage modules; this file only wires them.

    rmsd match --recipe recipes/synthvid/tiny_rmsd.yaml --samples runs/synthvid-tiny-rmsd/samples
"""

from __future__ import annotations

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


def student_path(recipe: Recipe) -> Path:
    """The student checkpoint folder: `student.path`, or a built offline student (built once)."""
    s = recipe.student
    if s.path is not None:
        path = Path(s.path).expanduser()
        if not (path / "config.json").is_file() and not is_adapter_folder(path):
            raise RmsdError(f"student.path {path}: no config.json there; point it at a from_pretrained folder "
                            "(or a LoRA adapter folder a LoRA stage wrote)")
        return path
    from rmsd.models.tiny import build_student

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


def match_recipe(recipe: Recipe, samples: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Match a sample store into weighted training targets; returns the report's statistics."""
    quiet_libraries()
    from rmsd.matching.matcher import match_samples, write_matched
    from rmsd.matching.report import write_report
    from rmsd.sampling.store import read_records

    samples = Path(samples)
    if not samples.is_dir():
        raise RmsdError(f"{samples}: no sample store there; run `rmsd sample --recipe ...` first")
    records = read_records(samples)
    if not records:
        raise RmsdError(f"{samples}: the sample store holds no records")
    items = load_recipe_items(recipe)
    rows, stats = match_samples(items, records, benchmark_of(recipe), recipe.matching)
    out = Path(out) if out is not None else recipe.path_of(recipe.matching.out)
    write_matched(rows, out)
    write_report(stats, out)
    return stats


def distill_recipe(recipe: Recipe, matched_dir: str | Path, out: str | Path | None = None,
                   resume: bool = False, callbacks: list[Any] | None = None, progress: bool = True) -> dict[str, Path]:
    """Run the recipe's enabled stages; returns {stage: checkpoint folder}."""
    quiet_libraries()
    from accelerate import PartialState

    from rmsd.matching.matcher import read_matched
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
    if not (model / "config.json").is_file() and not is_adapter_folder(model):
        raise RmsdError(f"--model {model}: no config.json there; point it at a from_pretrained folder "
                        "(or a LoRA adapter folder a LoRA stage wrote)")
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
