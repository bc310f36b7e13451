"""synthvid: determinism, schema, answers recomputed from the scene, pixels where the scene says."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from rmsd.datasets.synthvid import breakdowns, load_items
from rmsd.errors import RmsdError
from rmsd.items import OPTION_LETTERS, TASK_TYPES
from rmsd.synthvid.generator import BACKGROUND, PALETTE, TASK_MIX, TIER_MIX, build_items, generate, scene_at


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthvid") / "d"
    return out, generate(out, n=40, seed=0)


@pytest.fixture(scope="module")
def many_items():
    splits = build_items(400, seed=11)
    return splits["train"] + splits["test"]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def decode(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as container:
        return [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def nearest_colour(pixel: np.ndarray) -> str:
    named = {**PALETTE, "background": BACKGROUND}
    return min(named, key=lambda c: float(np.sum((pixel.astype(float) - named[c]) ** 2)))


# ----------------------------------------------------------------------------- files and determinism
def test_layout_and_info(dataset):
    out, info = dataset
    train, test = rows(out / "train.jsonl"), rows(out / "test.jsonl")
    assert info["counts"] == {"total": 40, "train": len(train), "test": len(test)}
    assert len(train) + len(test) == 40 and len(test) > 0
    assert json.loads((out / "info.json").read_text()) == info
    assert info["seed"] == 0 and info["version"]
    assert sum(info["breakdown"]["train"]["difficulty"].values()) == len(train)
    videos = {r["meta"]["video_id"] for r in train + test}
    assert {p.stem for p in (out / "videos").glob("*.mp4")} == videos
    assert all(r["video"] == f"videos/{r['meta']['video_id']}.mp4" for r in train + test)  # relative paths


def test_same_seed_same_bytes_and_frames(dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    generate(again, n=40, seed=0)
    for name in ("train.jsonl", "test.jsonl", "info.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes()
    for video in sorted((out / "videos").glob("*.mp4"))[:3]:
        a, b = decode(video), decode(again / "videos" / video.name)
        assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
        assert video.read_bytes() == (again / "videos" / video.name).read_bytes()
    other = tmp_path / "other"
    generate(other, n=40, seed=1)
    assert (other / "train.jsonl").read_bytes() != (out / "train.jsonl").read_bytes()


def test_rerun_into_same_folder_replaces_it(tmp_path):
    generate(tmp_path / "d", n=12, seed=0)
    generate(tmp_path / "d", n=6, seed=5)
    ids = {r["meta"]["video_id"] for s in ("train", "test") for r in rows(tmp_path / "d" / f"{s}.jsonl")}
    assert {p.stem for p in (tmp_path / "d" / "videos").glob("*.mp4")} == ids


def test_refuses_a_foreign_folder_and_bad_arguments(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(RmsdError, match="not empty"):
        generate(tmp_path, n=4)
    with pytest.raises(RmsdError, match="even"):
        build_items(4, frame_size=85)
    with pytest.raises(RmsdError, match="test_fraction"):
        build_items(4, test_fraction=1.0)
    with pytest.raises(RmsdError, match="tier_mix"):
        build_items(4, tier_mix={"easy": 1.0, "expert": 1.0})


# ----------------------------------------------------------------------------- schema
def signature(value):
    """The JSON type tree of a value; None and [] match anything (nullable, empty list)."""
    if isinstance(value, dict):
        return {k: signature(v) for k, v in value.items()}
    if isinstance(value, list):
        sigs = [signature(v) for v in value]
        assert all(s == sigs[0] for s in sigs), f"mixed list {value}"
        return ["*"] if not sigs else [sigs[0]]
    return "*" if value is None else type(value).__name__


def compatible(a, b) -> bool:
    if a == "*" or b == "*" or a == ["*"] or b == ["*"]:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(compatible(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return compatible(a[0], b[0])
    return a == b


def test_every_row_has_the_same_schema(dataset):
    out, _ = dataset
    all_rows = rows(out / "train.jsonl") + rows(out / "test.jsonl")
    first = signature(all_rows[0])
    assert list(all_rows[0]) == ["item_id", "benchmark", "task_type", "question", "prompt", "options", "answer",
                                 "video", "image", "meta"]
    assert list(all_rows[0]["meta"]) == ["video_id", "duration", "fps", "width", "height", "num_frames",
                                         "difficulty", "question_kind", "target", "objects"]
    for row in all_rows:
        assert compatible(signature(row), first), row["item_id"]
        assert isinstance(row["answer"], str) and row["answer"]


def test_datasets_reads_the_same_rows(dataset, tmp_path):
    import datasets

    out, _ = dataset
    files = {s: str(out / f"{s}.jsonl") for s in ("train", "test")}
    ds = datasets.load_dataset("json", data_files=files, cache_dir=str(tmp_path / "cache"))
    for split in ("train", "test"):
        assert ds[split].to_list() == rows(out / f"{split}.jsonl")


# ----------------------------------------------------------------------------- answers from the scene
def expected_answer(row: dict) -> str:
    """Recompute the ground truth from the scene alone (independent of the generator's code)."""
    meta, kind = row["meta"], row["meta"]["question_kind"]
    objs = meta["objects"]
    by_id = {o["id"]: o for o in objs}
    target = by_id.get(meta["target"])

    def name(obj: dict) -> str:
        return f"{obj['colour']} {obj['shape']}"

    def letter(text: str) -> str:
        return OPTION_LETTERS[row["options"].index(text)]

    if kind == "colour":
        return letter(target["colour"])
    if kind == "direction":
        (x0, y0), (x1, y1) = target["start"], target["end"]
        direction = ("right" if x1 > x0 else "left") if x1 != x0 else ("down" if y1 > y0 else "up")
        assert direction == target["direction"]
        return letter(direction)
    if kind in ("order", "last"):
        times = sorted(o["appear_s"] for o in objs)
        wanted = times[0] if kind == "order" else times[-1]
        (winner,) = [o for o in objs if o["appear_s"] == wanted]
        return letter(name(winner))
    if kind == "count":
        return str(len(objs))
    if kind == "max_visible":
        steps = np.arange(meta["num_frames"]) / meta["fps"]
        return str(max(sum(o["appear_s"] <= t < o["disappear_s"] for o in objs) for t in steps))
    if kind == "when":
        return f"[{target['appear_s']:.1f}, {target['disappear_s']:.1f}]"
    assert kind == "describe"
    return row["answer"]  # checked word by word in the test below


def test_answers_follow_from_the_scene(many_items):
    for item in many_items:
        row = item.to_dict()
        assert item.answer == expected_answer(row), item.item_id
        meta = item.meta
        if meta["difficulty"] != "easy" and meta["question_kind"] in ("direction", "when"):
            target = next(o for o in meta["objects"] if o["id"] == meta["target"])
            assert target["colour"] in item.question  # the question names its target
        if meta["question_kind"] == "describe":
            for obj in meta["objects"]:
                motion = "stays still" if obj["direction"] == "none" else f"moves {obj['direction']}"
                assert f"The {obj['colour']} {obj['shape']} " in item.answer and motion in item.answer
        if meta["question_kind"] == "when" and meta["difficulty"] == "hard":  # the late object
            assert meta["target"] == max(meta["objects"], key=lambda o: o["appear_s"])["id"]


def test_scenes_are_answerable(many_items):
    """Distinct colours, whole shapes in frame, visible >= 1.5 s, no overlap while both are visible."""
    for item in many_items:
        meta, objs = item.meta, item.meta["objects"]
        assert len({o["colour"] for o in objs}) == len(objs)
        assert {"easy": (1, 1), "medium": (2, 3), "hard": (3, 4)}[meta["difficulty"]][0] <= len(objs)
        assert len(objs) <= {"easy": 1, "medium": 3, "hard": 4}[meta["difficulty"]]
        assert all(o["disappear_s"] - o["appear_s"] >= 1.5 for o in objs)
        if meta["difficulty"] == "hard":
            assert len({o["appear_s"] for o in objs}) == len(objs)  # staggered
        for t in np.arange(meta["num_frames"]) / meta["fps"]:
            seen = scene_at(meta, t)
            for o in seen:
                assert o["size"] / 2 <= o["x"] <= meta["width"] - o["size"] / 2
                assert o["size"] / 2 <= o["y"] <= meta["height"] - o["size"] / 2
            for i, a in enumerate(seen):
                for b in seen[i + 1 :]:
                    assert abs(a["x"] - b["x"]) >= a["size"] or abs(a["y"] - b["y"]) >= a["size"]


def test_prompts_list_options_and_the_format(many_items):
    for item in many_items:
        lines = item.prompt.splitlines()
        assert lines[0] == item.question
        assert lines[1 : 1 + len(item.options)] == [f"- {o} ({OPTION_LETTERS[i]})" for i, o in enumerate(item.options)]
        assert "<think>" in lines[-1] and "<answer>" in lines[-1]
        if item.task_type == "mcq":
            assert len(item.options) == 4 and len(set(item.options)) == 4 and item.answer in "ABCD"
        else:
            assert item.options == []


def test_difficulty_and_task_mix(many_items, dataset):
    n = len(many_items)
    tasks = Counter(it.task_type for it in many_items)
    tiers = Counter(it.meta["difficulty"] for it in many_items)
    assert all(abs(tasks[t] / n - TASK_MIX[t]) <= 0.05 for t in TASK_TYPES)
    assert all(abs(tiers[t] / n - TIER_MIX[t]) <= 0.05 for t in TIER_MIX)
    assert {it.meta["question_kind"] for it in many_items} == {
        "colour", "direction", "order", "last", "count", "max_visible", "when", "describe"}
    out, _ = dataset  # even the 40-item set holds every task type and tier
    small = rows(out / "train.jsonl") + rows(out / "test.jsonl")
    assert {r["task_type"] for r in small} == set(TASK_TYPES)
    assert {r["meta"]["difficulty"] for r in small} == set(TIER_MIX)
    skewed = build_items(200, seed=2, task_mix={"mcq": 0.4, "open": 0.6})
    assert Counter(it.task_type for s in skewed.values() for it in s)["open"] == 120


def test_splits_do_not_share_videos(many_items):
    splits = build_items(400, seed=11)
    train = {it.meta["video_id"] for it in splits["train"]}
    test = {it.meta["video_id"] for it in splits["test"]}
    assert not train & test
    assert abs(len(test) / (len(train) + len(test)) - 0.2) < 0.03
    assert len({it.item_id for it in many_items}) == len(many_items)


# ----------------------------------------------------------------------------- pixels
def test_decoded_frames_show_the_scene(dataset):
    out, _ = dataset
    items = load_items(out, "train")
    videos = {it.meta["video_id"]: it for it in items}
    checked = 0
    for item in list(videos.values())[:6]:
        meta = item.meta
        frames = decode(Path(item.video))
        assert len(frames) == meta["num_frames"]
        for i in range(0, meta["num_frames"], 3):
            t, array = frames[i]
            assert abs(t - i / meta["fps"]) < 1e-6
            seen = scene_at(meta, t)
            for obj in seen:
                assert nearest_colour(array[round(obj["y"]), round(obj["x"])]) == obj["colour"]
                checked += 1
            far = [(y, x) for y in range(4, meta["height"] - 4, 8) for x in range(4, meta["width"] - 4, 8)
                   if all(max(abs(y - o["y"]), abs(x - o["x"])) > o["size"] / 2 + 3 for o in seen)]
            assert far and all(nearest_colour(array[y, x]) == "background" for y, x in far)
    assert checked > 20


# ----------------------------------------------------------------------------- loader
def test_loader_makes_paths_absolute_and_limits(dataset):
    out, _ = dataset
    items = load_items(out, "test")
    assert len(items) == len(rows(out / "test.jsonl"))
    assert all(Path(it.video).is_absolute() and Path(it.video).is_file() for it in items)
    assert [it.item_id for it in load_items(out, "train", limit=3)] == [r["item_id"] for r in rows(out / "train.jsonl")[:3]]
    assert load_items(out / "train.jsonl")[0].item_id == rows(out / "train.jsonl")[0]["item_id"]
    assert breakdowns(items[0]) == {"task_type": items[0].task_type, "difficulty": items[0].meta["difficulty"],
                                    "question_kind": items[0].meta["question_kind"]}


def test_loader_errors_say_what_to_run(dataset, tmp_path):
    out, _ = dataset
    with pytest.raises(RmsdError, match="rmsd synthvid --out"):
        load_items(tmp_path / "nowhere")
    with pytest.raises(RmsdError, match="'validation' not found.*rmsd synthvid --out"):
        load_items(out, "validation")
    with pytest.raises(RmsdError, match="videos missing"):
        load_items(out, "train", video_root=tmp_path)


def test_cli_writes_a_dataset(tmp_path):
    from typer.testing import CliRunner

    from rmsd.cli import app

    result = CliRunner().invoke(app, ["synthvid", "--out", str(tmp_path / "cli"), "--n", "6", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "wrote 6 items" in result.output
    assert len(load_items(tmp_path / "cli", "train")) + len(load_items(tmp_path / "cli", "test")) == 6


def test_easy_objects_cross_most_of_the_frame(many_items):
    """The easy tier's moving object travels 55-70% of the frame side; medium and hard 30-50%."""
    from rmsd.synthvid.generator import TRAVEL

    seen = set()
    for item in many_items:
        meta = item.meta
        lo, hi = TRAVEL[meta["difficulty"]]
        for o in meta["objects"]:
            trip = abs(o["end"][0] - o["start"][0]) + abs(o["end"][1] - o["start"][1])
            if o["direction"] == "none":
                assert trip == 0
                continue
            assert round(lo * meta["width"]) <= trip <= round(hi * meta["width"]), (item.item_id, trip)
            seen.add(meta["difficulty"])
    assert seen == {"easy", "medium", "hard"}


def test_no_scene_is_drawn_twice_and_earlier_sets_are_unchanged():
    """A one-object scene lies on a coarse grid, so 8,400 items (regime v4's) once drew one twice: the same video in
    both splits, which the contamination guard refused. The generator draws such a scene again; the sets used
    before that rule (regime v3's, the temporal experiment's, the quickstart's, the base's captions) had no repeat
    and stay item for item what they were (digests taken before the change)."""
    import hashlib

    def scenes(splits):
        return [json.dumps(it.meta["objects"], sort_keys=True) for items in splits.values() for it in items
                if it.item_id.endswith("_q0")]

    v4 = build_items(8400, 1234)
    assert len(scenes(v4)) == len(set(scenes(v4))) and (len(v4["train"]), len(v4["test"])) == (6711, 1689)
    pinned = {(1000, 1234, 0.2): "1f3f6534cba0998a", (400, 0, 0.2): "28c559f25f2dfef8",
              (2000, 1234, 0.2): "84f02935ae1ff0ce", (3000, 9001, 0.0): "e2eb7824ebd19842"}
    for (n, seed, test_fraction), digest in pinned.items():
        splits = build_items(n, seed, test_fraction)
        text = json.dumps({k: [it.to_dict() for it in v] for k, v in splits.items()}, sort_keys=True, default=str)
        assert hashlib.sha256(text.encode()).hexdigest()[:16] == digest, (n, seed)
