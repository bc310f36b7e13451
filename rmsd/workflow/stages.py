"""The stages of `rmsd run`, one function each: is its output current, and if not, run it (or say it would).

Each returns (status, why): "up to date" when the inputs its output records equal the ones it
would read now (`rmsd.fingerprint`), else "ran" / "resumed" after running the stage's own
pipeline entry point (`rmsd.pipeline`), or "would run" in a dry run, which reads the store, the
records and the recipe but writes and sends nothing. Once a stage ran (or would), a dry run
reports every later one as "would run": its inputs are the earlier stage's new output.

    rmsd run --recipe recipes/synthvid/tiny_rmsd.yaml --dry-run
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from rmsd import fingerprint
from rmsd.errors import RmsdError
from rmsd.workflow.state import TRAINING, enabled_stages, sampling_totals

AFTER = "after the stages before it"


def validate(run: Any) -> None:
    """The recipe as a whole (its --set overrides applied): its pool, the teachers it names, its splits."""
    from rmsd.validation import recipe_problems

    problems = recipe_problems(run.recipe, run.recipe.source or run.recipe.name)
    if problems:
        raise RmsdError("; ".join(problems))
    run.line("validate", "checked", "recipe and pool")  # whatever --from says: a recipe with problems runs nothing


def data(run: Any) -> tuple[str, str]:
    """A benchmark that makes its own data (synthvid) writes `dataset.generate` items, unless they are there."""
    from rmsd.pipeline import benchmark_of

    ds = run.recipe.dataset
    benchmark = benchmark_of(run.recipe)
    if benchmark.generated(ds.path, ds.generate):
        return "up to date", f"{ds.generate} {benchmark.name} items in {ds.path}"
    if run.dry_run:
        return "would run", f"{ds.generate} {benchmark.name} items to write to {ds.path}"
    info = benchmark.generate_data(ds.path, ds.generate)
    run.forget_items()
    return "ran", f"{info['counts']['train']} train / {info['counts']['test']} test items in {ds.path}"


def sample(run: Any) -> tuple[str, str]:
    """Every planned sample in the store: up to date; else ask for the missing ones (only those)."""
    from rmsd.sampling.store import stored_keys

    recipe = run.recipe
    if run.dry_run and run.changed:
        return "would run", AFTER
    per_teacher, keys = run.planned()
    have = stored_keys(run.store) if (run.store / "data").is_dir() else set()
    missing = sum(k not in have for k in keys)
    if not missing:
        return "up to date", f"all {len(keys)} samples in {run.store}"
    if run.dry_run:
        run.report.estimate = _estimate(run, per_teacher, have)
        return "would run", f"{missing} of {len(keys)} samples missing from {run.store}"
    from rmsd.pipeline import sample_recipe

    summary = sample_recipe(recipe, progress=run.progress)
    held = len(keys) - missing
    why = f"{summary['new_records']} new samples" + (f", {held} were in the store" if held else "")
    if summary["missing"]:
        why += f"; {summary['missing']} still missing (see {run.store / 'failures.jsonl'}; a re-run retries them)"
    return ("resumed" if held else "ran"), why


def _estimate(run: Any, per_teacher: Any, have: set[str]) -> dict[str, dict[str, Any]]:
    """Requests, tokens and cost of the missing samples, from teachers built but never asked."""
    from rmsd.sampling.estimate import estimate
    from rmsd.teachers.build import build_teachers

    pool = run.recipe.load_pool()
    teachers = build_teachers(pool)
    try:
        return estimate(per_teacher, have, pool, teachers, run.recipe.dataset.num_frames)
    finally:
        async def close() -> None:
            await asyncio.gather(*(t.aclose() for t in teachers.values()), return_exceptions=True)

        asyncio.run(close())


def match(run: Any) -> tuple[str, str]:
    """The matched set of the pool's samples in the store, matched with the recipe's settings."""
    if run.dry_run and run.changed:
        return "would run", AFTER
    present = run.present()
    inputs = fingerprint.match_inputs(run.recipe, present, run.items())
    record = fingerprint.read(run.matched)
    if record is not None and record["inputs"] == inputs and (run.matched / "matched.jsonl").is_file():
        return "up to date", f"{run.matched}: matched from the same samples and settings"
    why = fingerprint.why_stale(record["inputs"], inputs) if record is not None else "no matched set yet"
    if run.dry_run:
        return "would run", why
    if not present:
        raise RmsdError(f"{run.store}: holds no sample of this recipe's pool: run from sample")
    from rmsd.pipeline import match_recipe

    match_recipe(run.recipe, run.store, run.matched, keys=set(present))
    return "ran", why


def sft(run: Any) -> tuple[str, str]:
    return _train(run, "sft")


def adversarial(run: Any) -> tuple[str, str]:
    return _train(run, "adversarial")


def _status(run: Any, stage: str) -> tuple[str | None, str | None, Path]:
    """(resume point: None | checkpoint | "finished", why stale, stage folder) of a training stage, or a line
    saying why it cannot be known yet (the student or matched set missing) as the second element."""
    from rmsd.models.lora import is_adapter_folder
    from rmsd.pipeline import distill_inputs, student_path
    from rmsd.train.resume import resume_point

    out = run.distill_out / stage
    student = student_path(run.recipe, build=not run.dry_run)
    if not ((student / "config.json").is_file() or is_adapter_folder(student)):
        return None, f"the student is not built yet ({student})", out
    if not (run.matched / "matched.jsonl").is_file():
        if run.dry_run:
            return None, "no matched set yet", out
        raise RmsdError(f"{run.matched}: no matched set there: run from match")
    inputs = distill_inputs(run.recipe, run.matched, student, run.items())[stage]
    point, stale = resume_point(out, True, inputs)
    return point, stale, out


def _train(run: Any, stage: str) -> tuple[str, str]:
    if run.dry_run and run.changed:
        return "would run", AFTER
    point, stale, out = _status(run, stage)
    if point == "finished":
        return "up to date", f"{out}: trained with the same inputs"
    if run.dry_run:
        return "would run", stale or (f"resuming from {point}" if point else "not trained yet")
    enabled = enabled_stages(run.recipe)
    earlier = [s for s in TRAINING[:TRAINING.index(stage)] if s in enabled]
    for before in (s for s in earlier if s not in run.chosen):  # --from adversarial: sft is taken as it is
        if _status(run, before)[0] != "finished":
            raise RmsdError(f"--from {stage}: stage {before} is not up to date with this recipe: run from {before}")
    from rmsd.pipeline import distill_recipe

    only = run.recipe.model_copy(deep=True)
    for later in TRAINING[TRAINING.index(stage) + 1:]:  # this stage alone (earlier ones are up to date by now)
        getattr(only.distill, later).enabled = False
    report: dict[str, Any] = {}
    distill_recipe(only, run.matched, resume=True, progress=run.progress, note=run.echo, report=report)
    done = report[stage]
    if done["status"] == "resumed":
        return "resumed", f"from {done['from']}"
    return done["status"], done.get("why") or ("not trained yet" if point is None else "")


def eval(run: Any) -> tuple[str, str]:  # noqa: A001 - the stage's name
    """Every evaluation set of the final model; a set whose results answer the same inputs is read, not rescored."""
    from rmsd.pipeline import eval_folder, eval_is_current, eval_jobs, eval_recipe

    if run.dry_run and run.changed:
        return "would run", AFTER
    model = run.final_model()
    if not (model / "stage.json").is_file():
        if run.dry_run:
            return "would run", f"{model} is not trained yet"
        raise RmsdError(f"{model}: no trained stage there: run from {model.name}")
    folder = eval_folder(run.recipe, model)
    jobs, _, inputs = eval_jobs(run.recipe, model, folder)
    stale = [job.name for job in jobs if not eval_is_current(job.out, inputs[job.name])]
    if not stale:
        run.report.results = {job.name: json.loads((job.out / "results.json").read_text()) for job in jobs}
        return "up to date", f"{len(jobs)} set(s) scored with the same model and settings"
    if run.dry_run:
        return "would run", f"no current results for {', '.join(stale)}"
    first = next(job for job in jobs if job.name in stale)
    record = fingerprint.read(first.out)
    why = fingerprint.why_stale(record["inputs"], inputs[first.name]) if record is not None else "no results yet"
    run.report.results = eval_recipe(run.recipe, model, out=folder, show=False, skip_current=True)
    kept = len(jobs) - len(stale)
    return ("resumed" if kept else "ran"), f"scored {', '.join(stale)}: {why}" + (
        f"; {kept} set(s) kept" if kept else "")


def collect(run: Any) -> None:
    """The report's paths and the store's tokens and cost; in a dry run, the memory plan."""
    from rmsd.pipeline import eval_folder

    recipe, report = run.recipe, run.report
    training = [s for s in enabled_stages(recipe) if s in TRAINING]
    model = run.final_model()
    folder = eval_folder(recipe, model)
    sets = recipe.eval.sets(recipe.dataset)
    report.paths = {"store": str(run.store), "matched": str(run.matched),
                    **{s: str(run.distill_out / s) for s in training}, "model card": str(model / "README.md"),
                    "results": ", ".join(str((folder / s.name if recipe.eval.benchmarks else folder) / "results.json")
                                         for s in sets)}
    report.sampling = sampling_totals(run.store, [t.name for t in recipe.load_pool().teachers])
    if run.dry_run:
        report.plan = memory_plan(recipe, run.gpu_memory)


def memory_plan(recipe: Any, gpu_memory: float) -> str:
    """`rmsd plan`'s text for the recipe; an offline student not built yet is built in a temporary folder."""
    from rmsd.pipeline import student_path
    from rmsd.plan import format_plan, plan_recipe

    try:
        student = student_path(recipe, build=False)
        if recipe.student.path is not None or (student / "config.json").is_file():
            return format_plan(plan_recipe(recipe, gpu_memory))
        if recipe.student.build == "tiny-pretrained":  # the shipped base, read where it ships
            from rmsd.models.offline.pretrain import SHIPPED

            return format_plan(plan_recipe(recipe, gpu_memory, config=SHIPPED))
        from rmsd.models.offline.tiny import build_student

        with tempfile.TemporaryDirectory() as tmp:
            s = recipe.student
            config = build_student(Path(tmp) / "student", size=s.build, seed=recipe.distill.sft.seed,
                                   family=s.build_family)
            return format_plan(plan_recipe(recipe, gpu_memory, config=config))
    except RmsdError as e:
        return f"(no memory plan: {e})"
