"""The paper's setting, small: distil on a Video-R1-style corpus (a teacher behind a real HTTP server on
127.0.0.1), score the tiny student on two held-out benchmarks (Video-MME and MathVerse fixtures in their public
schemas) with one `rmsd eval`; every output states what was checked against what."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from corpora import llava_dataset, videor1_corpus, write_mp4, write_png
from fake_openai import FakeOpenAIServer
from schemas import mathverse_row, videomme_row, write_parquet
from typer.testing import CliRunner

from rmsd.cli import app
from rmsd.models.offline.tiny import build_student
from rmsd.sampling.store import read_records


def run_ok(*args: str):
    result = CliRunner().invoke(app, list(args), prog_name="rmsd", env={"COLUMNS": "120"})
    assert result.exit_code == 0, f"rmsd {' '.join(args)} failed:\n{result.output}\n{result.exception!r}"
    return result


def held_out_sets(root: Path) -> list[dict]:
    videomme = root / "videomme"
    for n in range(3):
        write_mp4(videomme / "data" / f"vid{n}.mp4", seed=500 + n)
    write_parquet(videomme / "test.parquet", [videomme_row(n, "short", "Counting Problem", "ABC"[n]) for n in range(3)])
    mathverse = root / "mathverse"
    write_png(mathverse / "images" / "a.png", seed=9)
    (mathverse / "testmini.json").write_text(json.dumps(
        [mathverse_row(i, "Vision Only", "free-form", "3", "images/a.png", f"Find x{i}.") for i in range(2)]))
    return [{"benchmark": "videomme", "path": str(videomme)},
            {"benchmark": "mathverse", "path": str(mathverse), "split": "testmini"}]


def test_distil_on_a_video_r1_corpus_and_score_two_held_out_benchmarks(tmp_path):
    torch.set_num_threads(1)
    corpus, rows = videor1_corpus(tmp_path / "corpus")
    rows.append(rows[0] | {"problem_id": 70, "path": "./videos/gone.mp4"})  # a broken row, skipped
    corpus.write_text(json.dumps(rows))
    student = build_student(tmp_path / "student", size="tiny", seed=0)
    with FakeOpenAIServer() as server:
        pool = tmp_path / "pool.yaml"
        pool.write_text(yaml.safe_dump({"name": "api", "teachers": [
            {"name": "t1", "backend": "openai", "samples": 2, "openai": {"model": "fake-vlm", "base_url": server.url}}]}))
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(yaml.safe_dump({
            "name": "corpus-run", "pool": str(pool),
            "dataset": {"benchmark": "videor1", "path": str(corpus), "num_frames": 4, "max_side": 32,
                        "on_bad_row": "skip"},
            "sampling": {"out": str(tmp_path / "samples")}, "matching": {"out": str(tmp_path / "matched"),
                                                                           "require_format": False},
            "student": {"path": str(student)},
            "distill": {"out": str(tmp_path / "distilled"), "report_to": [],
                        "sft": {"max_steps": 2, "batch_size": 2, "warmup_steps": 0}},
            "eval": {"out": str(tmp_path / "eval"), "max_new_tokens": 4, "batch_size": 4,
                     "benchmarks": held_out_sets(tmp_path)}}))
        run_ok("validate", str(recipe))
        sampled = run_ok("sample", "--recipe", str(recipe))
        assert "left out 1 broken rows (dataset.on_bad_row: skip): missing media 1" in sampled.output
        assert "no training item overlaps the evaluation sets (videomme, mathverse)" in sampled.output
        assert server.stats.requests == len(rows) - 1  # one request per item (n=2), the broken row never asked
    summary = json.loads((tmp_path / "samples" / "summary.json").read_text())
    assert summary["skipped_rows"] == {"missing media": 1}
    assert summary["contamination"] == {"eval_sets": ["videomme", "mathverse"], "overlapping_items": 0,
                                        "allowed": False, "example": None}

    run_ok("match", "--recipe", str(recipe), "--samples", str(tmp_path / "samples"))
    report = json.loads((tmp_path / "matched" / "match_report.json").read_text())
    assert report["skipped_rows"] == {"missing media": 1} and report["contamination"]["overlapping_items"] == 0

    run_ok("distill", "--recipe", str(recipe), "--matched", str(tmp_path / "matched"))
    sft = tmp_path / "distilled" / "sft"
    assert "no training item overlaps the evaluation sets (videomme, mathverse)" in (sft / "README.md").read_text()

    result = run_ok("eval", "--recipe", str(recipe), "--model", str(sft))
    out = tmp_path / "eval" / "distilled-sft"
    for name, n in (("videomme", 3), ("mathverse", 2)):
        results = json.loads((out / name / "results.json").read_text())
        assert results["benchmark"] == name and results["n_items"] == n and 0.0 <= results["overall"] <= 1.0
        assert len((out / name / "predictions.jsonl").read_text().splitlines()) == n
    totals = json.loads((out / "summary.json").read_text())["sets"]
    assert list(totals) == ["videomme", "mathverse"] and totals["mathverse"]["n"] == 2
    table = result.output
    assert "2 evaluation sets" in table and "videomme" in table and "mathverse" in table
    assert "duration" in table and "problem_version" in table  # each set's own breakdowns in the one table
    card = (sft / "README.md").read_text()
    assert "### videomme" in card and "### mathverse" in card and "`testmini` split" in card


def test_a_corpus_only_recipe_samples_every_question_once_and_eval_says_what_to_add(tmp_path):
    # LLaVA-Video-178K in its hub layout, split train (its caption, open-ended and multiple-choice files ask about
    # the same videos), no eval.benchmarks: nothing to compare, every question sampled under its own id
    torch.set_num_threads(1)
    root = llava_dataset(tmp_path / "LLaVA-Video-178K")
    videor1, rows = videor1_corpus(tmp_path / "corpus")
    student = build_student(tmp_path / "student", size="tiny", seed=0)
    with FakeOpenAIServer() as server:
        pool = tmp_path / "pool.yaml"
        pool.write_text(yaml.safe_dump({"name": "api", "teachers": [
            {"name": "t1", "backend": "openai", "samples": 2, "openai": {"model": "fake-vlm", "base_url": server.url}}]}))
        recipes = {}
        for name, dataset in (("llava", {"benchmark": "llava_video", "path": str(root), "split": "train",
                                         "video_root": str(root)}),
                              ("videor1", {"benchmark": "videor1", "path": str(videor1.parent)})):
            recipes[name] = tmp_path / f"{name}.yaml"
            recipes[name].write_text(yaml.safe_dump({
                "name": name, "pool": str(pool), "dataset": {**dataset, "num_frames": 4, "max_side": 32},
                "sampling": {"out": str(tmp_path / name / "samples")}, "student": {"path": str(student)},
                "eval": {"out": str(tmp_path / name / "eval")}}))
            run_ok("validate", str(recipes[name]))
            sampled = run_ok("sample", "--recipe", str(recipes[name]))
            assert "no evaluation set to compare the training items with" in sampled.output
        assert server.stats.requests == 7 + len(rows)  # one request (n=2) per question, none refused
    records = read_records(tmp_path / "llava" / "samples")
    ids = {r["item_id"] for r in records}
    assert len(ids) == 7 and len(records) == 14
    summary = json.loads((tmp_path / "llava" / "samples" / "summary.json").read_text())
    assert summary["contamination"]["eval_sets"] == [] and summary["contamination"]["overlapping_items"] == 0
    result = CliRunner().invoke(app, ["eval", "--recipe", str(recipes["llava"]), "--model", str(student)],
                                prog_name="rmsd")
    assert result.exit_code == 2
    assert result.output.startswith("error: nothing to score: dataset llava_video is a training corpus with no "
                                    "evaluation split and eval.benchmarks is empty; add a held-out benchmark")
