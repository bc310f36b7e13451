"""`rmsd run`: a tiny synthvid recipe from its data to its report, the same run again as a no-op that writes
nothing, each kind of knob re-running exactly its stage and the later ones, `--dry-run` against a real local
server (no request, nothing written), and bad input refused in one line with nothing changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from fake_openai import FakeOpenAIServer
from run_recipes import POOL, tiny_recipe
from run_recipes import snapshot as files
from typer.testing import CliRunner

import rmsd
import rmsd.errors
from rmsd.cli import app
from rmsd.synthvid.generator import generate
from rmsd.workflow.runner import format_report

TRAINED = ("sample", "match", "sft", "adversarial", "eval")


def run(path, *overrides, **options):
    lines: list[str] = []
    report = rmsd.run(path, overrides=list(overrides), progress=False, echo=lines.append, **options)
    return report, lines


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A fresh run of a recipe with both training stages (the Python API, as `rmsd run` does)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("finished")
    generate(folder / "data", n=20, seed=0, frame_size=56)
    path = tiny_recipe(folder, adversarial=True)
    report, lines = run(path)
    return folder, path, report, lines


def copy_of(finished, tmp_path) -> Path:
    """The finished run in a folder of its own (modification times kept: identities are unchanged)."""
    folder = tmp_path / "copy"
    shutil.copytree(finished[0], folder, symlinks=True)
    return tiny_recipe(folder, adversarial=True)


def test_a_fresh_run_goes_from_data_to_report(finished):
    folder, _, report, lines = finished
    assert report.status() == {"validate": "checked", **dict.fromkeys(TRAINED, "ran")}
    results = report.results["synthvid"]
    assert 0.0 <= results["overall"] <= 1.0 and results["n_items"] == 4
    runs = folder / "runs"
    for stage in ("sft", "adversarial"):
        recorded = json.loads((runs / "distilled" / stage / "stage.json").read_text())
        assert recorded["recipe"] == "tiny-run" and recorded["inputs"]["stage"] == stage
    assert report.paths["store"] == str(runs / "samples") and report.paths["matched"] == str(runs / "matched")
    assert Path(report.paths["model card"]) == runs / "distilled" / "adversarial" / "README.md"
    assert json.loads(Path(report.paths["results"]).read_text())["overall"] == results["overall"]
    for record in (runs / "matched", runs / "distilled" / "sft", Path(report.paths["results"]).parent):
        assert json.loads((record / "fingerprint.json").read_text())["recipe"] == "tiny-run"
    # tokens per teacher and mode: what the store's summary says the three simulated teachers produced
    summary = json.loads((runs / "samples" / "summary.json").read_text())
    assert set(report.sampling) == set(summary["teachers"])
    assert all(modes["online"]["completion_tokens"] > 0 for modes in report.sampling.values())
    text = format_report(report)
    assert "sft          ran" in text and "synthvid: overall" in text and str(runs / "samples") in text
    assert any(line.startswith("adversarial: ran") for line in lines)


def test_the_same_run_again_is_up_to_date_and_writes_nothing(finished):
    folder, path, first, _ = finished
    before = files(folder)
    report, lines = run(path)
    assert report.status() == {"validate": "checked", **dict.fromkeys(TRAINED, "up to date")}
    assert files(folder) == before
    assert report.results == first.results and "sft: up to date" in "\n".join(lines)


def pool_with_other_temperature(folder: Path) -> dict:
    pool = yaml.safe_load(POOL.read_text())
    pool["teachers"][2]["params"]["temperature"] = 0.7  # the third teacher's answers can change: new keys
    return pool


@pytest.mark.parametrize(("knob", "reruns"), [
    ("eval.max_new_tokens=6", ("eval",)),
    ("distill.adversarial.lr=5e-5", ("adversarial", "eval")),
    ("distill.sft.lr=5e-4", ("sft", "adversarial", "eval")),
    ("dataset.num_frames=6", ("sft", "adversarial", "eval")),  # the simulated teachers see no frames: no new keys
    ("matching.min_weight=0.6", ("match", "sft", "adversarial", "eval")),
    ("pool", ("sample", "match", "sft", "adversarial", "eval")),
])
def test_a_changed_knob_reruns_its_stage_and_the_later_ones_only(finished, tmp_path, knob, reruns):
    torch.set_num_threads(1)
    path = copy_of(finished, tmp_path)
    overrides = [knob]
    if knob == "pool":
        overrides = []
        pool = pool_with_other_temperature(path.parent)
        tiny_recipe(path.parent, adversarial=True, pool=pool)
    report, lines = run(path, *overrides)
    expected = {s: ("resumed" if s == "sample" else "ran") if s in reruns else "up to date" for s in TRAINED}
    assert report.status() == {"validate": "checked", **expected}, "\n".join(lines)
    if knob == "pool":  # only the changed teacher's samples were asked for
        summary = json.loads((path.parent / "runs" / "samples" / "summary.json").read_text())
        assert summary["new_records"] == summary["teachers"]["t3-open7b-class"]["records"] > 0
        assert summary["teachers"]["t1-gemini-class"]["requests"] == 0
    else:
        first_changed = next(line for line in report.stages if line.stage == reruns[0])
        assert knob.split("=")[0] in first_changed.why  # says which knob changed


def test_from_and_until_run_only_their_stages(finished, tmp_path):
    torch.set_num_threads(1)
    path = copy_of(finished, tmp_path)
    report, _ = run(path, "distill.sft.lr=5e-4", stop="sft")
    assert [s.stage for s in report.stages] == ["validate", "sample", "match", "sft"]
    assert report.status()["sft"] == "ran" and not report.results
    report, _ = run(path, "distill.sft.lr=5e-4", start="eval")  # earlier outputs are taken as they are
    assert [s.stage for s in report.stages] == ["validate", "eval"] and report.status()["eval"] == "up to date"
    with pytest.raises(rmsd.errors.RmsdError, match="--from adversarial: stage sft is not up to date"):
        run(path, "distill.sft.lr=1e-4", start="adversarial")


def test_bad_input_is_one_line_and_changes_nothing(finished, tmp_path):
    path = copy_of(finished, tmp_path)
    folder = path.parent
    before = files(folder)
    other = tiny_recipe(tmp_path, adversarial=True, name="other-recipe", distill__out=str(folder / "runs" / "distilled"))
    cases = [
        (["--recipe", str(path), "--from", "distil"], "--from distil: no such stage"),
        (["--recipe", str(path), "--until", "adversarial", "--set", "distill.adversarial.enabled=false"],
         "--until adversarial: the recipe disables that stage (distill.adversarial.enabled: false)"),
        (["--recipe", str(path), "--from", "eval", "--until", "sample"], "nothing would run"),
        (["--recipe", str(other), "--set", f"dataset.path={folder / 'data'}",
          "--set", f"sampling.out={folder / 'runs' / 'samples'}", "--set", f"matching.out={tmp_path / 'matched'}"],
         f"{folder / 'runs' / 'distilled' / 'sft'} holds recipe tiny-run's sft stage: set distill.out to another "
         "folder for recipe other-recipe"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, ["run", *args])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: ") and message in result.stderr and len(result.stderr.splitlines()) == 1
        assert "sample:" not in result.stdout
    assert files(folder) == before


def test_dry_run_sends_no_request_and_writes_nothing(tmp_path):
    torch.set_num_threads(1)
    generate(tmp_path / "data", n=12, seed=1, frame_size=56)
    with FakeOpenAIServer(latency_s=0.0) as srv:
        price = {"input_per_1m": 2.5, "output_per_1m": 10.0}
        api = {"backend": "openai", "samples": 3, "params": {"max_tokens": 64}, "price": price}
        pool = {"name": "priced", "teachers": [
            {**api, "name": "online-api", "openai": {"model": "fake-vlm", "base_url": srv.url, "use_n": "never"}},
            {**api, "name": "batch-api", "openai": {"model": "fake-vlm", "base_url": srv.url, "mode": "batch"}}]}
        path = tiny_recipe(tmp_path, pool=pool)
        before = files(tmp_path)
        result = CliRunner().invoke(app, ["run", "--recipe", str(path), "--dry-run"])
        assert result.exit_code == 0, result.output
        assert srv.stats.requests == 0
    assert files(tmp_path) == before
    text = result.stdout
    for stage in TRAINED[:3]:
        assert f"{stage}: would run" in text
    assert "(dry run: nothing was written or sent)" in text and "stage sft" in text  # rmsd plan's memory plan
    report, _ = run(path, dry_run=True)
    online, batch = report.estimate["online-api"], report.estimate["batch-api"]
    train_items = 9  # the 12 items' training split (the same count every teacher serves)
    assert online["samples"] == batch["samples"] == 3 * online["items"] and online["items"] >= train_items - 3
    assert online["requests"] == online["samples"]  # use_n: never, one sample per request
    assert batch["requests"] == batch["items"]  # n honoured: one request per item
    assert online["completion_tokens"] == batch["completion_tokens"] == 64 * online["samples"]
    full = (online["prompt_tokens"] * 2.5 + online["completion_tokens"] * 10.0) / 1e6
    assert online["cost_usd"] == pytest.approx(full)
    batch_full = (batch["prompt_tokens"] * 2.5 + batch["completion_tokens"] * 10.0) / 1e6
    assert batch["cost_usd"] == pytest.approx(0.5 * batch_full)  # the pool's default batch_discount
    assert files(tmp_path) == before


def test_a_recipe_that_generates_its_data_goes_from_nothing(tmp_path):
    """`dataset.generate`: the data stage writes the synthvid set unless the folder holds it; a benchmark that
    cannot generate its data is refused when the recipe loads."""
    path = tiny_recipe(tmp_path, dataset__generate=20)
    report, _ = run(path, stop="data")
    assert report.status() == {"validate": "checked", "data": "ran"}
    assert json.loads((tmp_path / "data" / "info.json").read_text())["n"] == 20
    before = files(tmp_path)
    report, _ = run(path, stop="sample")
    assert report.status() == {"validate": "checked", "data": "up to date", "sample": "ran"}
    assert {k: v for k, v in files(tmp_path).items() if k.startswith("data")} == {
        k: v for k, v in before.items() if k.startswith("data")}
    result = CliRunner().invoke(app, ["run", "--recipe", str(path), "--from", "data", "--set", "dataset.generate=null"])
    assert result.exit_code == 2 and "--from data: the recipe disables that stage (dataset.generate is not set)" in \
        result.stderr
    result = CliRunner().invoke(app, ["validate", str(tiny_recipe(tmp_path, dataset__benchmark="videomme",
                                                                  dataset__generate=20))])
    assert result.exit_code == 2 and "generate: videomme cannot generate its data" in result.stderr


def test_a_killed_evaluation_generates_only_what_it_had_not_reached(finished, tmp_path, monkeypatch):
    import rmsd.models.processing

    torch.set_num_threads(1)
    path = copy_of(finished, tmp_path)
    folder = path.parent / "runs" / "eval" / "distilled-adversarial"
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    key = json.loads((folder / "fingerprint.json").read_text())["digest"]
    for name in ("results.json", "fingerprint.json", "predictions.jsonl"):
        (folder / name).unlink()
    kept = [json.dumps({"resume_key": key})] + [json.dumps({"item_id": r["item_id"], "response": r["response"]})
                                                for r in rows[:2]]
    (folder / "predictions.partial.jsonl").write_text("\n".join(kept) + '\n{"item_id": "cut by the ki')
    asked: list[str] = []
    generate = rmsd.models.processing.generate

    def counting(model, processor, prompts, *args, **kwargs):
        asked.extend(prompts)
        return generate(model, processor, prompts, *args, **kwargs)

    monkeypatch.setattr(rmsd.models.processing, "generate", counting)
    report, _ = run(path)
    assert report.status()["eval"] == "ran" and len(asked) == len(rows) - 2
    again = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert [r["response"] for r in again[:2]] == [r["response"] for r in rows[:2]]
    assert not (folder / "predictions.partial.jsonl").exists() and (folder / "fingerprint.json").is_file()
