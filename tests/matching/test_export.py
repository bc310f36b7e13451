"""`rmsd match export`: the matched, weighted targets as TRL, ms-swift, LLaMA-Factory and
ShareGPT conversations, each read back the way its framework documents.

A real chain runs once through the CLI (synthvid -> sample with the simulated pool ->
`rmsd match --recipe --samples`, unchanged by `match` becoming a command group -> `rmsd match
export` in every format). TRL's rows are loaded with `datasets.load_dataset("json")` and
checked with TRL's own `is_conversational` and a Qwen2.5-VL processor's chat template; the
other formats are checked against validators written here from each framework's documented
schema (keys, types, role order, one media tag per media file, the dataset_info.json entry).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from rmsd.cli import app
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.matching.export import export_matched, repeats

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ("trl", "swift", "llamafactory", "sharegpt")
SYSTEM = "You are a careful video analyst."


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), prog_name="rmsd", env={"COLUMNS": "100"})


def run_ok(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, f"rmsd {' '.join(args)} failed:\n{result.output}\n{result.exception!r}"
    return result


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A matched dataset made by the real CLI, and its export in every format (one with a system message)."""
    root = tmp_path_factory.mktemp("export")
    recipe = root / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "include": str(ROOT / "recipes" / "synthvid" / "tiny_rmsd.yaml"), "name": "export-test",
        "dataset": {"path": str(root / "data")}, "pool": str(ROOT / "teachers" / "synthvid_sim.yaml"),
        "sampling": {"out": str(root / "samples")}, "matching": {"out": str(root / "matched")},
        "student": {"build_out": str(root / "student")}}))
    run_ok("synthvid", "--out", str(root / "data"), "--n", "24", "--frame-size", "56", "--seed", "3")
    run_ok("sample", "--recipe", str(recipe))
    matched = run_ok("match", "--recipe", str(recipe), "--samples", str(root / "samples"))
    outputs = {}
    for fmt in FORMATS:
        outputs[fmt] = run_ok("match", "export", "--recipe", str(recipe), "--matched", str(root / "matched"),
                              "--format", fmt, "--out", str(root / fmt)).output
    run_ok("match", "export", "--recipe", str(recipe), "--matched", str(root / "matched"), "--format", "swift",
           "--out", str(root / "swift-system"), "--system", SYSTEM, "--rows-per-item", "1")
    return {"root": root, "recipe": recipe, "match_output": matched.output, "outputs": outputs,
            "matched": read_jsonl(root / "matched" / "matched.jsonl")}


def kept(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kept"] and r["weight"] > 0]


# ----------------------------------------------------------------------------- the CLI
def test_rmsd_match_with_recipe_and_samples_still_matches(chain):
    rows = chain["matched"]
    assert f"matched {len(rows)} samples of" in chain["match_output"]
    assert kept(rows) and len(kept(rows)) < len(rows)  # the noisy pool leaves some samples out


def test_every_format_exports_each_kept_sample_and_says_so(chain):
    n_kept, n_items = len(kept(chain["matched"])), len({r["item_id"] for r in kept(chain["matched"])})
    for fmt in FORMATS:
        manifest = json.loads((chain["root"] / fmt / "export.json").read_text())
        weights = read_jsonl(chain["root"] / fmt / "weights.jsonl")
        data = (chain["root"] / fmt / "train.jsonl").read_text().splitlines()
        assert manifest["samples"] == len(weights) == n_kept and manifest["items"] == n_items
        assert manifest["rows"] == len(data) == sum(w["rows"] for w in weights)
        assert (f"exported {n_kept} samples of {n_items} items as {len(data)} rows "
                f"(up to {manifest['rows_per_item']} per item, by weight) in {fmt} format") in chain["outputs"][fmt]
        assert {(w["item_id"], w["teacher"], w["sample_index"]) for w in weights} == {
            (r["item_id"], r["teacher"], r["sample_index"]) for r in kept(chain["matched"])}


def test_weights_become_repeated_rows_by_the_documented_rule(chain):
    root = chain["root"] / "swift"
    weights, data = read_jsonl(root / "weights.jsonl"), read_jsonl(root / "train.jsonl")
    r = json.loads((root / "export.json").read_text())["rows_per_item"]
    assert r == max(Counter(w["item_id"] for w in weights).values())  # the default R
    text_of = {(m["item_id"], m["teacher"], m["sample_index"]): m["text"] for m in chain["matched"]}
    for w in weights:  # each sample's rows are contiguous copies of its text, as many as the rule says
        block = data[w["first_row"]: w["first_row"] + w["rows"]]
        assert {row["messages"][-1]["content"] for row in block} == {text_of[(w["item_id"], w["teacher"],
                                                                               w["sample_index"])]}
        assert w["rows"] == max(1, int(r * w["share"] + 0.5))
    by_item = Counter()
    for w in weights:
        by_item[w["item_id"]] += w["rows"]
    assert all(abs(n - r) <= max(1, r // 2) for n in by_item.values())  # every item weighs about R rows
    single = read_jsonl(chain["root"] / "swift-system" / "weights.jsonl")
    assert all(w["rows"] == 1 for w in single)  # --rows-per-item 1: each kept sample once


def test_repeats_rule_on_hand_made_weights():
    assert repeats([1.0, 1.0, 1.0], 6) == [2, 2, 2]  # equal weights, equal rows
    assert repeats([1.0, 0.5], 3) == [2, 1]
    assert repeats([0.9, 0.05], 4) == [4, 1]  # every kept sample appears at least once
    assert repeats([1.0, 1.0, 1.0], 1) == [1, 1, 1]


# ----------------------------------------------------------------------------- TRL
def test_trl_export_loads_with_datasets_in_sfttrainers_conversational_vlm_format(chain):
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    from rmsd.models.offline.tiny import build_processor

    ds = load_dataset("json", data_files=str(chain["root"] / "trl" / "train.jsonl"), split="train")
    assert set(ds.column_names) == {"messages", "videos"}
    assert len(ds) == json.loads((chain["root"] / "trl" / "export.json").read_text())["rows"]
    texts = [r["text"] for r in kept(chain["matched"])]
    processor = build_processor(texts + [json.dumps(r) for r in ds.select(range(4))])
    for row in ds:
        assert is_conversational(row)
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        user, assistant = row["messages"]
        assert all(isinstance(block["type"], str) for m in row["messages"] for block in m["content"])
        assert sum(block["type"] == "video" for block in user["content"]) == len(row["videos"]) == 1
        assert Path(row["videos"][0]).is_file() and Path(row["videos"][0]).is_absolute()
        assert assistant["content"][0]["text"] in texts
    rendered = processor.apply_chat_template(ds[0]["messages"], tokenize=False)
    assert rendered.count("<|video_pad|>") == 1 and ds[0]["messages"][1]["content"][0]["text"] in rendered


# ----------------------------------------------------------------------------- ms-swift
def check_swift_row(row: dict) -> None:
    """ms-swift's standard dataset format (docs: Customization/Custom-dataset, "Multimodal")."""
    assert set(row) <= {"messages", "images", "videos", "audios", "tools", "objects"}, set(row)
    messages = row["messages"]
    assert isinstance(messages, list) and messages
    roles = [m["role"] for m in messages]
    start = 1 if roles[0] == "system" else 0  # an optional system message comes first
    assert roles[start:] == ["user", "assistant"]
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in messages)
    for kind, tag in (("videos", "<video>"), ("images", "<image>")):
        paths = row.get(kind, [])
        assert isinstance(paths, list) and all(isinstance(p, str) for p in paths)
        assert sum(m["content"].count(tag) for m in messages) == len(paths)


def test_swift_export_follows_its_documented_schema(chain):
    rows = read_jsonl(chain["root"] / "swift" / "train.jsonl")
    for row in rows:
        check_swift_row(row)
        assert row["messages"][0]["role"] == "user" and row["messages"][0]["content"].startswith("<video>")
    with_system = read_jsonl(chain["root"] / "swift-system" / "train.jsonl")
    for row in with_system:
        check_swift_row(row)
        assert row["messages"][0] == {"role": "system", "content": SYSTEM}


def test_the_recipes_student_system_prompt_is_the_default_system(chain, tmp_path):
    run_ok("match", "export", "--recipe", str(chain["recipe"]), "--matched", str(chain["root"] / "matched"),
           "--format", "trl", "--out", str(tmp_path), "--set", f"student.system_prompt={SYSTEM}")
    row = read_jsonl(tmp_path / "train.jsonl")[0]
    assert row["messages"][0] == {"role": "system", "content": [{"type": "text", "text": SYSTEM}]}
    run_ok("match", "export", "--recipe", str(chain["recipe"]), "--matched", str(chain["root"] / "matched"),
           "--format", "trl", "--out", str(tmp_path), "--set", f"student.system_prompt={SYSTEM}", "--system", "")
    assert read_jsonl(tmp_path / "train.jsonl")[0]["messages"][0]["role"] == "user"


# ----------------------------------------------------------------------------- LLaMA-Factory / ShareGPT
def check_sharegpt_row(row: dict, columns: dict[str, str] | None = None) -> None:
    """LLaMA-Factory's ShareGPT format (data/README.md): human/observation at odd positions,
    gpt/function_call at even ones; one `<video>` / `<image>` tag per media file."""
    columns = columns or {"messages": "conversations", "system": "system", "videos": "videos", "images": "images"}
    turns = row[columns["messages"]]
    assert isinstance(turns, list) and len(turns) % 2 == 0 and turns
    for i, turn in enumerate(turns):
        assert set(turn) == {"from", "value"} and isinstance(turn["value"], str)
        assert turn["from"] in (("human", "observation") if i % 2 == 0 else ("gpt", "function_call"))
    assert isinstance(row.get(columns["system"], ""), str)
    for kind, tag in (("videos", "<video>"), ("images", "<image>")):
        paths = row.get(columns.get(kind, kind), [])
        assert isinstance(paths, list) and all(isinstance(p, str) for p in paths)
        assert sum(t["value"].count(tag) for t in turns) == len(paths)


def test_llamafactory_export_is_a_dataset_dir_with_its_dataset_info_entry(chain):
    folder = chain["root"] / "llamafactory"
    info = json.loads((folder / "dataset_info.json").read_text())
    assert list(info) == ["rmsd_matched"]
    entry = info["rmsd_matched"]
    assert set(entry) <= {"file_name", "formatting", "columns", "tags", "ranking", "subset", "split", "num_samples"}
    assert entry["formatting"] == "sharegpt" and (folder / entry["file_name"]).is_file()
    rows = read_jsonl(folder / entry["file_name"])
    assert all(set(entry["columns"].values()) <= set(row) for row in rows)  # every named column is there
    for row in rows:
        check_sharegpt_row(row, entry["columns"])
        assert len(row["videos"]) == 1 and row["conversations"][0]["value"].startswith("<video>")


def test_sharegpt_export_has_the_same_rows_without_dataset_info(chain):
    folder = chain["root"] / "sharegpt"
    assert not (folder / "dataset_info.json").exists()
    rows = read_jsonl(folder / "train.jsonl")
    for row in rows:
        check_sharegpt_row(row)
    assert rows == read_jsonl(chain["root"] / "llamafactory" / "train.jsonl")


# ----------------------------------------------------------------------------- images, mistakes
def image_items(tmp_path: Path) -> list[Item]:
    image = tmp_path / "fig.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    return [Item(item_id=f"m{i}", benchmark="mathverse", task_type="numeric", question="x?",
                 prompt=f"Find x in figure {i}.", answer="3", image=str(image)) for i in range(2)]


def write_matched(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "matched.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def matched_row(item_id: str, teacher: str, weight: float, kept: bool = True, index: int = 0) -> dict:
    return {"key": f"{item_id}-{teacher}-{index}", "item_id": item_id, "teacher": teacher, "sample_index": index,
            "text": f"<think>{teacher}</think><answer>3</answer>", "weight": weight, "kept": kept}


def test_image_items_get_image_tags_and_an_images_column(tmp_path):
    folder = write_matched(tmp_path / "matched", [matched_row("m0", "a", 1.0), matched_row("m0", "b", 0.2, False),
                                                  matched_row("m1", "a", 0.0, True)])
    manifest = export_matched(image_items(tmp_path), folder, "swift", tmp_path / "out", system="Be exact.")
    assert manifest["samples"] == 1 and manifest["items_without_kept_sample"] == 1 and manifest["media"] == ["images"]
    (row,) = read_jsonl(tmp_path / "out" / "train.jsonl")
    check_swift_row(row)
    assert row["messages"][1]["content"] == "<image>Find x in figure 0." and row["images"] == [str(tmp_path / "fig.png")]
    export_matched(image_items(tmp_path), folder, "trl", tmp_path / "trl")
    (trl,) = read_jsonl(tmp_path / "trl" / "train.jsonl")
    assert trl["messages"][0]["content"][0] == {"type": "image"} and "videos" not in trl


def test_trls_sfttrainer_trains_on_an_image_export_as_written(tmp_path):
    """TRL's stock vision collator reads `images` paths and the typed messages: two real steps."""
    import torch
    from datasets import load_dataset
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    from rmsd.models.offline.tiny import build_student

    torch.set_num_threads(1)
    items = image_items(tmp_path)
    Image.new("RGB", (56, 56), (200, 30, 30)).save(items[0].image)
    folder = write_matched(tmp_path / "matched", [matched_row("m0", "a", 1.0), matched_row("m1", "a", 1.0),
                                                  matched_row("m1", "b", 0.5, index=1)])
    export_matched(items, folder, "trl", tmp_path / "trl", system="Be exact.")
    ds = load_dataset("json", data_files=str(tmp_path / "trl" / "train.jsonl"), split="train")
    student = build_student(tmp_path / "student")
    model, processor = AutoModelForImageTextToText.from_pretrained(student), AutoProcessor.from_pretrained(student)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, report_to=[],
                     use_cpu=True, learning_rate=1e-2, gradient_checkpointing=False, save_strategy="no")
    result = SFTTrainer(model=model, processing_class=processor, train_dataset=ds, args=args).train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_prompt_holding_a_media_tag_is_refused_before_anything_is_written(tmp_path):
    items = image_items(tmp_path)
    items[0].prompt = "Compare <image> with the figure."
    folder = write_matched(tmp_path / "matched", [matched_row("m0", "a", 1.0)])
    with pytest.raises(RmsdError, match="already contains '<image>'.*--format trl"):
        export_matched(items, folder, "llamafactory", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert export_matched(items, folder, "trl", tmp_path / "trl")["rows"] == 1  # typed blocks: no tags to confuse


@pytest.mark.parametrize(("setup", "says"), [
    (lambda p: p.mkdir(), "no matched dataset there (no matched.jsonl)"),
    (lambda p: write_matched(p, [{"item_id": "m0", "text": "x"}]), "not a matched dataset"),
    (lambda p: (p.mkdir(), (p / "matched.jsonl").write_text("{not json\n")), "is not valid JSON"),
    (lambda p: write_matched(p, [matched_row("elsewhere", "a", 1.0)]), "belong to items the recipe's dataset"),
    (lambda p: write_matched(p, [matched_row("m0", "a", float("nan"))]), "has weight nan"),
    (lambda p: write_matched(p, [matched_row("m0", "a", 1.0, kept=False)]), "no kept sample"),
])
def test_bad_matched_input_is_a_user_error_and_writes_nothing(setup, says, tmp_path):
    setup(tmp_path / "matched")
    with pytest.raises(RmsdError) as err:
        export_matched(image_items(tmp_path), tmp_path / "matched", "swift", tmp_path / "out")
    assert says in str(err.value)
    assert not (tmp_path / "out").exists()


def test_cli_mistakes_are_one_error_line_and_status_2(chain, tmp_path):
    args = ["match", "export", "--recipe", str(chain["recipe"]), "--out", str(tmp_path / "out")]
    line = one_line_error(invoke(*args, "--matched", str(chain["root"] / "samples"), "--format", "trl"))
    assert f"{chain['root'] / 'samples'}: no matched dataset there" in line
    line = one_line_error(invoke(*args, "--matched", str(chain["root"] / "matched"), "--format", "axolotl"))
    assert line == "error: --format 'axolotl' is unknown: use one of trl, swift, llamafactory, sharegpt"
    assert one_line_error(invoke("match")).startswith("error: --recipe and --samples are required")
    assert not (tmp_path / "out").exists()


def test_help_of_the_match_group_and_of_export():
    group = run_ok("match", "--help").output
    assert "Usage: rmsd match [OPTIONS] COMMAND" in group and "--samples" in group and "export" in group
    export = run_ok("match", "export", "--help").output
    assert "Usage: rmsd match export [OPTIONS]" in export
    assert all(name in export for name in ("--matched", "--format", "--system", "--rows-per-item", "sharegpt"))
