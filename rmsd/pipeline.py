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
from rmsd.datasets import get_benchmark
from rmsd.datasets.benchmark import Benchmark
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.models.lora import is_adapter_folder
from rmsd.verbosity import quiet_libraries


def benchmark_of(recipe: Recipe) -> Benchmark:
    """A new instance of the recipe's training benchmark (`dataset.benchmark`)."""
    return get_benchmark(recipe.dataset.benchmark)


def judged(recipe: Recipe, benchmark: Benchmark, out: Path) -> Benchmark:
    """`benchmark` scored by `eval.judge_teacher` where it takes an LLM judge (MathVerse: extract, then match;
    verdicts cached in OUT/judge_cache.jsonl), else as it is."""
    name = recipe.eval.judge_teacher
    if name is None or not benchmark.llm_judge:
        return benchmark
    from rmsd.teachers.build import build_teacher, model_name

    pool = recipe.load_pool()
    configs = {t.name: t for t in pool.teachers}
    if name not in configs:
        raise RmsdError(f"eval.judge_teacher {name!r} is not in pool {pool.name}: choose one of {sorted(configs)}")
    teacher = build_teacher(configs[name], pool)
    return benchmark.with_judge(teacher.ask, out / "judge_cache.jsonl", f"llm:{name}:{model_name(configs[name])}")


def load_recipe_items(recipe: Recipe, split: str | None = None, limit: int | None = None,
                      benchmark: Benchmark | None = None) -> list[Item]:
    """The recipe's items of `split` (default: the training split); broken corpus rows as `dataset.on_bad_row`
    says (what was skipped is then in `benchmark.skipped`)."""
    ds = recipe.dataset
    return (benchmark or benchmark_of(recipe)).load_items(
        ds.path, split=split or ds.split, video_root=ds.video_root, limit=limit or ds.limit, config=ds.config,
        on_bad_row=ds.on_bad_row)


def training_items(recipe: Recipe, limit: int | None = None,
                   benchmark: Benchmark | None = None) -> tuple[list[Item], dict[str, Any]]:
    """The training items (read by `benchmark`, default a new one), checked against every evaluation set
    (`rmsd.eval.sets`), and what to report about them: {"skipped_rows": {reason: n}, "contamination": {...}}."""
    from rmsd.eval.sets import check_training_items

    benchmark = benchmark or benchmark_of(recipe)
    items = load_recipe_items(recipe, limit=limit, benchmark=benchmark)
    report = {"skipped_rows": dict(benchmark.skipped),
              "contamination": check_training_items(items, recipe.dataset, recipe.eval)}
    return items, report


def data_lines(report: dict[str, Any]) -> list[str]:
    """What `rmsd sample` and `rmsd match` print about their training items (from `training_items`'s report)."""
    from rmsd.eval.sets import overlap_note

    lines = []
    if report.get("skipped_rows"):
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(report["skipped_rows"].items()))
        lines.append(f"left out {sum(report['skipped_rows'].values())} broken rows (dataset.on_bad_row: skip): {reasons}")
    if report.get("contamination"):
        lines.append(overlap_note(report["contamination"]))
    if report.get("other_pool_samples"):
        lines.append(f"left out {report['other_pool_samples']} samples of these items that this recipe's pool does "
                     "not plan (other teachers, sample counts or settings)")
    return lines


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


def student_path(recipe: Recipe, build: bool = True) -> Path:
    """The student checkpoint folder: `student.path`, or a built offline student (built once; `build=False`: its
    folder, built or not). A built student records what built it (size, seed, family); a folder built otherwise
    is refused, never reused for another student."""
    from rmsd import fingerprint

    s = recipe.student
    if s.path is not None:
        path = Path(s.path).expanduser()
        if not is_adapter_folder(path):  # a LoRA stage's folder holds adapters, not a config.json
            check_checkpoint(path, "student.path")
        return path
    from rmsd.models.offline.pretrain import copy_shipped, is_shipped_copy
    from rmsd.models.offline.tiny import build_student

    path = recipe.path_of(s.build_out)
    asked = {"stage": "student", "recipe": {"student.build": s.build, "student.family": s.build_family,
                                            "distill.sft.seed": recipe.distill.sft.seed}}
    pretrained = s.build == "tiny-pretrained"
    if not (path / "config.json").is_file():
        if build:
            if pretrained:
                copy_shipped(path)
            else:
                build_student(path, size=s.build, seed=recipe.distill.sft.seed, family=s.build_family)
            fingerprint.write(path, recipe.name, asked)
        return path
    from rmsd.models.family import family_of

    built = family_of(path).name
    if built != s.build_family:
        raise RmsdError(f"{path} holds a {built} student but the recipe builds {s.build_family}: "
                        "delete the folder or set student.build_out elsewhere")
    if pretrained != is_shipped_copy(path):  # a random-weight student where the shipped base is asked, or back
        held = "the shipped pre-trained base" if not pretrained else "another student"
        raise RmsdError(f"{path} holds {held} but the recipe builds {s.build}: delete the folder or set "
                        "student.build_out elsewhere")
    record = fingerprint.read(path)
    stale = fingerprint.why_stale(record["inputs"], asked) if record is not None else None
    if stale is not None:
        raise RmsdError(f"{path} holds a student built otherwise ({stale}): set student.build_out to another "
                        "folder (or delete this one)")
    return path


def sample_recipe(recipe: Recipe, out: str | Path | None = None, limit: int | None = None,
                  shard: tuple[int, int] | None = None, progress: bool = True, *, cancel: bool = False,
                  batch_file: str | Path | None = None) -> dict[str, Any]:
    """`rmsd sample`: the recipe's items (limited, sharded) through its pool into its store; the summary.

    `cancel`: cancel the store's open batches instead; `batch_file`: write the missing requests of its
    openai teachers to that file instead, submitting nothing (`rmsd.sampling.batch`)."""
    quiet_libraries()
    from rmsd.sampling.sample import sample_into, shard_items

    pool = recipe.load_pool()
    # cancelling asks no teacher anything: the check guards what is sampled, not what is stopped
    items, data = (load_recipe_items(recipe, limit=limit), {}) if cancel else training_items(recipe, limit=limit)
    if shard is not None:
        items = shard_items(items, shard)
    return sample_into(Path(out) if out is not None else recipe.path_of(recipe.sampling.out), items, pool,
                       recipe.sampling, recipe.dataset.num_frames, recipe.dataset.max_side, progress,
                       about={"recipe": recipe.name, "pool": pool.name,
                              "shard": f"{shard[0]}/{shard[1]}" if shard else None, **data},
                       cancel=cancel, batch_file=Path(batch_file) if batch_file is not None else None)


def rekey_recipe(recipe: Recipe, samples: str | Path, out: str | Path) -> dict[str, int]:
    """`rmsd sample rekey`: an older store's records this recipe plans, under today's keys, in a new folder."""
    from rmsd.sampling.keys import rekey_store

    return rekey_store(Path(samples), Path(out), load_recipe_items(recipe), recipe.load_pool(),
                       recipe.dataset.num_frames, recipe.dataset.max_side)


def match_recipe(recipe: Recipe, samples: str | Path, out: str | Path | None = None,
                 keys: set[str] | None = None) -> dict[str, Any]:
    """Match a sample store into weighted training targets; returns the report's statistics.

    Only the samples the recipe's pool plans for its items are matched (`keys`, else `pool_keys`): a store that
    also holds another pool's samples, or this pool's under other settings, gives this pool's, as `rmsd run` does.
    Where the items have ground truth, the report also carries the pool's error statistics (`teacher_quality`:
    rmsd.matching.teacher_stats) and their figure. The records and settings it read are recorded in OUT/fingerprint.json (`rmsd.fingerprint`)."""
    quiet_libraries()
    from rmsd import fingerprint
    from rmsd.matching.dataset import write_matched
    from rmsd.matching.matcher import match_samples
    from rmsd.matching.report import write_report
    from rmsd.matching.teacher_stats import teacher_statistics

    records = _records(samples)
    benchmark = benchmark_of(recipe)
    items, data = training_items(recipe, benchmark=benchmark)
    records, other = pool_records(recipe, items, records, samples, keys)
    rows, stats = match_samples(items, records, benchmark, recipe.matching)
    stats.update(data, other_pool_samples=other)
    if any(it.answer is not None for it in items):
        stats["teacher_quality"] = teacher_statistics(items, records, benchmark)
    out = Path(out) if out is not None else recipe.path_of(recipe.matching.out)
    ids = {it.item_id for it in items}
    inputs = fingerprint.match_inputs(recipe, (r["key"] for r in records if r["item_id"] in ids), items)
    (out / fingerprint.FILE).unlink(missing_ok=True)  # no record while the set is rewritten: a kill leaves none
    write_matched(rows, out)
    write_report(stats, out)
    fingerprint.write(out, recipe.name, inputs)
    return stats


def teacher_stats_recipe(recipe: Recipe, samples: str | Path, out: str | Path | None = None,
                         split: str | None = None) -> tuple[dict[str, Any], Path]:
    """The pool's error statistics on a store whose items have ground truth (`rmsd match stats`), from the
    samples the recipe's pool plans for them (`pool_records`).

    Writes OUT/teacher_stats.json and .png (OUT: the recipe's matching.out); returns (stats, json path)."""
    from rmsd.matching.report import write_teacher_stats
    from rmsd.matching.teacher_stats import teacher_statistics

    records = _records(samples)
    benchmark = benchmark_of(recipe)
    items = load_recipe_items(recipe, split=split, benchmark=benchmark)
    if not any(it.answer is not None for it in items):
        raise RmsdError(f"no item of {recipe.dataset.path} ({split or recipe.dataset.split}) has a known answer: "
                        "teacher statistics need ground truth")
    stats = teacher_statistics(items, pool_records(recipe, items, records, samples)[0], benchmark)
    if not stats["teachers"]:
        raise RmsdError(f"{samples}: no record belongs to an item with a known answer of this recipe's split")
    out = Path(out) if out is not None else recipe.path_of(recipe.matching.out)
    json_path, _ = write_teacher_stats(stats, out)
    return stats, json_path


def pool_records(recipe: Recipe, items: list[Item], records: list[dict[str, Any]], samples: str | Path,
                 keys: set[str] | None = None) -> tuple[list[dict[str, Any]], int]:
    """The records the recipe's pool plans for `items` (`keys`, else `pool_keys`), and how many records of these
    items it left out (other teachers, sample counts or settings); none of the pool's at all is an RmsdError."""
    keys = keys if keys is not None else pool_keys(recipe, items, samples)
    if keys is None:
        return records, 0
    ids = {it.item_id for it in items}
    other = [r for r in records if r["item_id"] in ids and r["key"] not in keys]
    mine = [r for r in records if r["key"] in keys]
    if other and not mine:
        raise RmsdError(f"{samples}: none of its {len(other)} samples of this recipe's items is one its pool plans "
                        f"(made by {', '.join(sorted({r['teacher'] for r in other}))} with other teachers, sample "
                        "counts or settings): match with the recipe that sampled them, or sample this one first")
    return mine, len(other)


def pool_keys(recipe: Recipe, items: list[Item], samples: str | Path) -> set[str] | None:
    """The record keys the recipe's pool plans for `items`; None for a store of key version 1, whose keys predate
    the settings in today's and which is read as it is (`rmsd sample rekey` carries one over)."""
    from rmsd.sampling.estimate import all_keys, planned_keys
    from rmsd.sampling.store import key_version

    if key_version(samples) == 1:
        return None
    ds = recipe.dataset
    return set(all_keys(planned_keys(items, recipe.load_pool(), ds.num_frames, ds.max_side)))


def _records(samples: str | Path) -> list[dict[str, Any]]:
    from rmsd.sampling.store import read_records

    samples = Path(samples)
    if not samples.is_dir():
        raise RmsdError(f"{samples}: no sample store there; run `rmsd sample --recipe ...` first")
    records = read_records(samples)
    if not records:
        raise RmsdError(f"{samples}: the sample store holds no records")
    return records


def matched_identity(matched_dir: str | Path) -> str:
    """A matched set as a training stage sees it: the digest of the inputs `rmsd match` recorded, else its file."""
    from rmsd import fingerprint
    from rmsd.matching.dataset import matched_file

    record = fingerprint.read(Path(matched_dir))
    if record is not None:
        return record["digest"]
    return fingerprint.digest(fingerprint.file_identity(matched_file(matched_dir)))


def distill_inputs(recipe: Recipe, matched_dir: str | Path, student: Path, items: list[Item]) -> dict[str, Any]:
    """{stage: inputs} of every enabled training stage (`rmsd.fingerprint.training_inputs`), each later stage
    starting from the one before it."""
    from rmsd import fingerprint

    common = {"matched": matched_identity(matched_dir), "student": fingerprint.folder_identity(student),
              "items": fingerprint.items_identity(items), "media": fingerprint.media_identity(items)}
    inputs, previous = {}, None
    for stage in ("sft", "adversarial"):
        if getattr(recipe.distill, stage).enabled:
            inputs[stage] = fingerprint.training_inputs(recipe, stage, previous=previous, **common)
            previous = fingerprint.digest(inputs[stage])
    return inputs


def distill_recipe(recipe: Recipe, matched_dir: str | Path, out: str | Path | None = None,
                   resume: bool = False, callbacks: list[Any] | None = None, progress: bool = True,
                   note: Any = print, report: dict[str, Any] | None = None) -> dict[str, Path]:
    """Run the recipe's enabled stages; returns {stage: checkpoint folder}. A stage is skipped (resume) only when
    it was trained with the same inputs, and resumed only from checkpoints of them (`rmsd.train.distill`);
    `note` gets what happened to each stage, `report` (filled) its status and seconds."""
    quiet_libraries()
    from accelerate import PartialState

    from rmsd.eval.sets import overlap_note
    from rmsd.matching.dataset import read_matched
    from rmsd.train.distill import DistillContext, run_stages
    from rmsd.train.model_card import run_info

    matched = read_matched(matched_dir)
    benchmark = benchmark_of(recipe)
    loaded, data = training_items(recipe, benchmark=benchmark)
    items = {it.item_id: it for it in loaded}
    with PartialState().main_process_first():  # build the offline student once, not once per process
        student = student_path(recipe)
    s = recipe.student
    base = (str(Path(s.path).expanduser()) if s.path is not None else
            "built from config: the pre-trained base shipped with rmsd (rmsd/assets/tiny-base, rebuilt by `rmsd "
            f"build-student --pretrain --rebuild`; its pretrain.json records how) copied into {student}"
            if s.build == "tiny-pretrained" else
            f"built from config: `rmsd build-student --size {s.build} --seed {recipe.distill.sft.seed}` "
            f"(random weights, local tokenizer) into {student}")
    ctx = DistillContext(
        items=items, matched=matched, out=Path(out) if out is not None else recipe.path_of(recipe.distill.out),
        dataset=recipe.dataset, student=recipe.student, report_to=list(recipe.distill.report_to), resume=resume,
        shared_prefix=recipe.distill.shared_prefix,
        benchmark=benchmark, callbacks=list(callbacks or []),
        pool=recipe.load_pool() if recipe.distill.adversarial.visd.judge == "llm" else None, progress=progress,
        card=run_info(base, recipe.name, recipe.source, data=f"{recipe.dataset.benchmark} {recipe.dataset.path} "
                      f"(split {recipe.dataset.split}); {overlap_note(data['contamination'])}"),
        inputs=distill_inputs(recipe, matched_dir, student, loaded), recipe=recipe.name, note=note,
        report=report if report is not None else {},
    )
    return run_stages(recipe.distill.sft, recipe.distill.adversarial, ctx, student)


def eval_recipe(
    recipe: Recipe, model: str | Path, limit: int | None = None, out: str | Path | None = None, show: bool = True,
    skip_current: bool = False,
) -> dict[str, dict[str, Any]]:
    """Score a checkpoint on every evaluation set of the recipe (`eval.benchmarks`, else the dataset's
    `eval_split`), each with its benchmark's scorer; returns {set name: results}. A set's predictions and results
    go to OUT/<set> (OUT itself for the dataset's own split) with the inputs they answer (fingerprint.json), and
    every set's numbers into the model's card. `skip_current`: a set whose recorded inputs are the ones asked for
    is read back, not scored again; when every set is, nothing is written."""
    quiet_libraries()
    from rmsd import fingerprint
    from rmsd.eval.evaluate import evaluate_jobs
    from rmsd.train.model_card import add_results

    model = Path(model)
    if not is_adapter_folder(model):
        check_checkpoint(model, "--model")
    out = Path(out) if out is not None else eval_folder(recipe, model)
    jobs, provenance, inputs = eval_jobs(recipe, model, out, limit)
    current = {job.name: json.loads((job.out / "results.json").read_text()) for job in jobs
               if skip_current and eval_is_current(job.out, inputs[job.name])}
    if len(current) == len(jobs):
        return {job.name: current[job.name] for job in jobs}
    todo = [job for job in jobs if job.name not in current]
    for job in todo:  # no record while a set is rescored: a kill leaves none
        (job.out / fingerprint.FILE).unlink(missing_ok=True)
    ev, ds = recipe.eval, recipe.dataset
    scored = {**current, **evaluate_jobs(model, todo, batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens,
                                         num_frames=ds.num_frames, max_side=ds.max_side, device=recipe.student.device,
                                         max_pixels=recipe.student.max_pixels, show=show)}
    for job in todo:
        fingerprint.write(job.out, recipe.name, inputs[job.name])
    scored = {job.name: scored[job.name] for job in jobs}
    note = jobs[0].note
    (out / "summary.json").write_text(json.dumps({"model": str(model), "sets": {
        job.name: {"benchmark": job.benchmark.name, "overall": scored[job.name]["overall"], "n": len(job.items),
                   "extraction": job.extraction, "results": str(job.out / "results.json")} for job in jobs},
        **({"note": note} if note else {})}, indent=2))
    add_results(model, {name: (scored[name], where) for name, where in provenance.items()})
    return scored


def eval_folder(recipe: Recipe, model: Path) -> Path:
    """Where `rmsd eval` writes a model's results by default: runs/a/sft and runs/b/sft must not overwrite each
    other's results."""
    return recipe.path_of(recipe.eval.out) / f"{model.parent.name}-{model.name}"


def eval_jobs(recipe: Recipe, model: Path, out: Path, limit: int | None = None
              ) -> tuple[list[Any], dict[str, str], dict[str, dict[str, Any]]]:
    """The evaluation sets as jobs, where each one's numbers come from, and the inputs each set's results answer."""
    from rmsd import fingerprint
    from rmsd.eval.evaluate import EvalJob
    from rmsd.eval.sets import load_set, scored_sets

    ev, ds = recipe.eval, recipe.dataset
    note = ("trained by a recipe that sets dataset.allow_eval_overlap: its training data may overlap this set"
            if ds.allow_eval_overlap else None)
    jobs, provenance, inputs = [], {}, {}
    identity = fingerprint.model_identity(model)
    for s in scored_sets(ds, ev):
        folder = out / s.name if ev.benchmarks else out
        benchmark, items = load_set(s, ev, limit)
        jobs.append(EvalJob(s.name, judged(recipe, benchmark, out), items, folder, s.extraction or ev.extraction,
                            note))
        provenance[s.name] = (f"{s.benchmark} `{s.split or benchmark.default_split}` split of {s.path} ({len(items)} "
                              f"items, {jobs[-1].extraction} extraction, greedy decoding); predictions and results "
                              f"in {folder}" + (f". {note}" if note else ""))
        inputs[s.name] = {**fingerprint.eval_inputs(recipe, s, identity, items), "limit": limit}
        jobs[-1].resume_key = fingerprint.digest(inputs[s.name])  # a killed scoring of the same inputs goes on
    if ev.judge_teacher is not None and not any(job.benchmark.llm_judge for job in jobs):
        raise RmsdError(f"eval.judge_teacher is for benchmarks scored by an LLM judge (MathVerse); none of "
                        f"{', '.join(job.name for job in jobs)} is")
    return jobs, provenance, inputs


def eval_is_current(folder: Path, inputs: dict[str, Any]) -> bool:
    """Whether a set's results folder holds results of exactly these inputs."""
    from rmsd import fingerprint

    record = fingerprint.read(folder)
    return record is not None and record["inputs"] == inputs and (folder / "results.json").is_file()
