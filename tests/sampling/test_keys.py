"""Record keys: every setting that can change an answer changes the key, every other one does not
(knob by knob, both directions, and through real runs against the fake server); defaults
are dropped so new knobs leave keys alone; a store written by the previous key scheme (the
committed fixture, written by that code) is refused with what to do, and `rekey` carries it over.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from fake_openai import FakeOpenAIServer
from typer.testing import CliRunner

from rmsd.cli import app
from rmsd.config.pools import (
    GenParamsConfig,
    HFOptions,
    OpenAIOptions,
    PoolConfig,
    SimulatedOptions,
    TeacherConfig,
    output_settings,
)
from rmsd.items import Item
from rmsd.sampling.keys import key_maker
from rmsd.sampling.sample import run_sampling
from rmsd.sampling.store import SampleStore, key_version, read_records
from rmsd.teachers.build import build_teachers

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"
VIDEO = Item(item_id="q1", benchmark="t", task_type="mcq", question="Which colour?", prompt="Which colour? (A) red",
             options=["red"], video="/videos/clip.mp4")
IMAGE = Item(item_id="q2", benchmark="t", task_type="mcq", question="Which?", prompt="Which? (A) x", options=["x"],
             image="/images/a.png")
TEXT = Item(item_id="q3", benchmark="t", task_type="open", question="Why?", prompt="Why?")
TEACHERS = {
    "openai": {"name": "t", "backend": "openai", "openai": {"model": "gpt-x", "base_url": "http://127.0.0.1:9/v1"}},
    "hf": {"name": "t", "backend": "hf", "hf": {"model_path": "/models/qwen"}},
    "simulated": {"name": "t", "backend": "simulated", "simulated": {}},
    "custom": {"name": "t", "backend": "key_test_teachers:Framed", "options": {"style": "terse"}},
}

# (backend, dotted setting, new value, changes the key?)
KNOBS = [
    ("openai", "openai.model", "gpt-y", True),
    ("openai", "openai.extra_body", {"top_k": 5}, True),
    ("openai", "openai.extra_body", {"temperature": 0.2}, True),
    ("openai", "openai.image_detail", "high", True),
    ("openai", "openai.video_mode", "video_url", True),
    ("openai", "params.temperature", 0.3, True),
    ("openai", "params.top_p", 0.9, True),
    ("openai", "params.max_tokens", 99, True),
    ("openai", "params.seed", 7, True),
    ("openai", "name", "other", True),
    ("openai", "pool.system_prompt", "Be brief.", True),
    ("openai", "pool.prompt_template", "Q: {prompt}", True),
    ("openai", "dataset.num_frames", 16, True),
    ("openai", "dataset.max_side", 128, True),
    ("openai", "openai.base_url", ["http://10.0.0.2/v1", "http://127.0.0.1:9/v1"], False),
    ("openai", "openai.api_key_env", "OTHER_KEY", False),
    ("openai", "openai.use_n", "never", False),
    ("openai", "openai.logprobs", True, False),
    ("openai", "openai.top_logprobs", 5, False),
    ("openai", "openai.image_detail", "low", False),  # set to its default: the same as unset
    ("openai", "openai.mode", "batch", False),  # how requests travel, not what they ask: stores mix modes
    ("openai", "openai.batch_fallback", "online", False),
    ("openai", "openai.batch_max_requests", 100, False),
    ("openai", "openai.batch_max_bytes", 10_000, False),
    ("openai", "openai.batch_window", "48h", False),
    ("openai", "openai.batch_poll_s", 1.0, False),
    ("openai", "openai.batch_poll_max_s", 10.0, False),
    ("openai", "price", {"input_per_1m": 2.5, "batch_discount": 0.4}, False),
    ("openai", "concurrency", 99, False),
    ("openai", "requests_per_minute", 10, False),
    ("openai", "tokens_per_minute", 1000, False),
    ("openai", "max_retries", 0, False),
    ("openai", "timeout_s", 5.0, False),
    ("openai", "price", {"input_per_1m": 2.5, "output_per_1m": 10}, False),
    ("openai", "samples", 8, False),  # more samples: new indices, the first ones keep their keys
    ("openai", "task_types", ["mcq"], False),
    ("openai", "pool.name", "renamed", False),
    ("hf", "hf.model_path", "/models/other", True),
    ("hf", "hf.dtype", "bfloat16", True),
    ("hf", "hf.max_pixels", 50176, True),
    ("hf", "dataset.num_frames", 16, True),
    ("hf", "hf.device", "cuda", False),
    ("hf", "hf.batch_size", 16, False),
    ("simulated", "simulated.accuracy", {"mcq": 0.5}, True),
    ("simulated", "simulated.difficulty_penalty", {"hard": 0.2}, True),
    ("simulated", "simulated.bias_letter", "B", True),
    ("simulated", "simulated.bias_strength", 0.5, True),
    ("simulated", "simulated.format_error_rate", 0.1, True),
    ("simulated", "simulated.inconsistency_rate", 0.1, True),
    ("simulated", "simulated.verbosity", "long", True),
    ("simulated", "simulated.seed", 1, True),
    ("simulated", "simulated.error_seed", 4, True),
    ("simulated", "dataset.num_frames", 16, False),  # it never looks at the frames
    ("simulated", "dataset.max_side", 128, False),
    ("custom", "options.style", "verbose", True),
    ("custom", "options.endpoint", "http://elsewhere", False),  # listed in the class's options_not_in_key
    ("custom", "dataset.num_frames", 16, True),  # the class asks for jpeg frames
]


@pytest.fixture(autouse=True)
def custom_teachers(tmp_path, monkeypatch):
    (tmp_path / "key_test_teachers.py").write_text(textwrap.dedent("""
        from rmsd.teachers.teacher import Response, Teacher

        class Framed(Teacher):
            media_needs = frozenset({"jpeg"})
            options_not_in_key = frozenset({"endpoint"})

            def __init__(self, name, style="terse", endpoint="http://here"):
                super().__init__(name)

            async def generate(self, item, media, n, params, start_index=0):
                return [Response(text="x") for _ in range(n)]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("key_test_teachers", None)


def _set(data: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for k in path:
        data = data.setdefault(k, {})
    data[last] = value


def keys_of(backend: str, change: tuple[str, object] | None = None, items: tuple[Item, ...] = (VIDEO, IMAGE, TEXT)):
    teacher, pool, dataset = copy.deepcopy(TEACHERS[backend]), {"name": "p"}, {"num_frames": 8, "max_side": None}
    if change is not None:
        dotted, value = change
        scope, _, rest = dotted.partition(".")
        target = {"pool": pool, "dataset": dataset}.get(scope)
        if target is not None:
            target[rest] = value
        else:
            _set(teacher, dotted, value)
    p = PoolConfig.model_validate({**pool, "teachers": [teacher]})
    maker = key_maker(p.teachers[0], p, dataset["num_frames"], dataset["max_side"])
    return [maker.keys(it)[i] for it in items for i in range(4)]


@pytest.mark.parametrize(("backend", "dotted", "value", "in_key"), KNOBS,
                         ids=[f"{b}:{d}={v}" for b, d, v, _ in KNOBS])
def test_each_knob_changes_the_key_exactly_when_it_can_change_answers(backend, dotted, value, in_key):
    base, changed = keys_of(backend), keys_of(backend, (dotted, value))
    if in_key:
        # frame settings matter for items that have frames; a text-only item keeps its keys
        media_only = dotted.startswith("dataset.")
        differ = [a != b for a, b in zip(base, changed, strict=True)]
        expect = [it is not TEXT and (dotted != "dataset.num_frames" or it.video is not None)
                  for it in (VIDEO, IMAGE, TEXT) for _ in range(4)] if media_only else [True] * len(base)
        assert differ == expect
    else:
        assert changed == base


def test_the_item_and_the_sample_index_are_in_the_key():
    keys = keys_of("openai")
    assert len(set(keys)) == len(keys)  # every item and index its own key
    renamed = Item(**{**TEXT.to_dict(), "prompt": "Why not?"})  # same id, another question (a regenerated dataset)
    assert keys_of("openai", items=(renamed,)) != keys_of("openai", items=(TEXT,))


def test_a_new_knob_with_its_default_leaves_every_key_alone():
    class Extended(SimulatedOptions):  # what a new simulator knob looks like to the key
        typo_rate: float = 0.0

    assert output_settings(Extended()) == output_settings(SimulatedOptions()) == {}
    assert output_settings(Extended(typo_rate=0.1)) == {"typo_rate": 0.1}


# The defaults of in-key knobs are frozen: a key leaves a knob out when it is at its default, so
# changing a default would change answers without changing keys. Change one only with KEY_VERSION.
FROZEN_DEFAULTS = {
    GenParamsConfig: {"temperature": 1.0, "top_p": 1.0, "max_tokens": 512, "seed": None},
    OpenAIOptions: {"video_mode": "frames", "image_detail": "low", "extra_body": {}},
    HFOptions: {"dtype": "float32", "max_pixels": None},
    SimulatedOptions: {"accuracy": {"mcq": 0.8, "numeric": 0.8, "open": 0.8, "grounding": 0.8},
                       "difficulty_penalty": {}, "bias_letter": None, "bias_strength": 0.0, "format_error_rate": 0.0,
                       "inconsistency_rate": 0.0, "verbosity": "short", "seed": 0, "error_seed": None},
    TeacherConfig: {"options": {}},
}


@pytest.mark.parametrize("model", FROZEN_DEFAULTS, ids=lambda m: m.__name__)
def test_defaults_of_in_key_knobs_are_frozen(model):
    for name, default in FROZEN_DEFAULTS[model].items():
        assert model.model_fields[name].get_default(call_default_factory=True) == default, (
            f"{model.__name__}.{name}: its default is part of every record key; bump KEY_VERSION to change it")


# ----------------------------------------------------------------------------- through real runs
def sample(path: Path, pool: dict, items: list[Item], num_frames: int = 8) -> dict:
    p = PoolConfig.model_validate(pool)

    async def go() -> dict:
        teachers = build_teachers(p)
        try:
            with SampleStore(path) as store:
                return await run_sampling(items, p, teachers, store, num_frames=num_frames, progress=False)
        finally:
            await asyncio.gather(*(t.aclose() for t in teachers.values()))

    return asyncio.run(go())


def test_a_rerun_resamples_after_an_output_knob_and_resumes_after_plumbing(tmp_path, monkeypatch):
    from rmsd.sampling import online
    from rmsd.teachers.teacher import Media

    monkeypatch.setattr(online, "build_media", lambda item, needs, n, side: Media(jpeg_b64=["AAAA"] * n))
    items = [Item(**{**VIDEO.to_dict(), "item_id": f"v{i}"}) for i in range(3)]
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        def pool(**openai) -> dict:
            return {"name": "p", "teachers": [{"name": "api", "backend": "openai", "samples": 2,
                                               "openai": {"model": "m", "base_url": [a.url, b.url], **openai}}]}

        assert sample(tmp_path, pool(), items)["new_records"] == 6
        plumbing = {"name": "p", "teachers": [{**pool()["teachers"][0], "concurrency": 1, "max_retries": 0,
                                               "openai": {"model": "m", "base_url": [b.url, a.url], "use_n": "never"}}]}
        assert sample(tmp_path, plumbing, items)["new_records"] == 0  # resumed: nothing to ask
        assert sample(tmp_path, pool(extra_body={"top_k": 5}), items)["new_records"] == 6  # re-sampled
        assert sample(tmp_path, pool(), items, num_frames=4)["new_records"] == 6
        served = a.stats.requests + b.stats.requests
    assert served == 3 + 3 + 3 and len(read_records(tmp_path)) == 18


# ----------------------------------------------------------------------------- the previous key scheme
def invoke(*args: str):
    return CliRunner().invoke(app, list(args), prog_name="rmsd", env={"COLUMNS": "100"})


@pytest.fixture
def v1_store(tmp_path):
    """The committed key-version-1 store, its dataset and a recipe pointing the API teacher at `url`."""
    shutil.copytree(FIXTURE, tmp_path / "fx")

    def recipe(url: str) -> Path:
        pool = yaml.safe_load((tmp_path / "fx" / "pool.yaml").read_text())
        pool["teachers"][1]["openai"]["base_url"] = url  # not in any key
        (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump({
            "name": "v1", "dataset": {"benchmark": "synthvid", "path": str(tmp_path / "fx" / "dataset"),
                                      "num_frames": 4},
            "pool": str(tmp_path / "pool.yaml"), "student": {"build": "tiny"}}))
        return path

    return tmp_path / "fx" / "samples", recipe


def test_a_store_from_the_previous_key_scheme_is_refused_then_rekeyed(v1_store, tmp_path):
    old, recipe = v1_store
    before = sorted(p.read_bytes() for p in old.rglob("*") if p.is_file())
    assert key_version(old) == 1 and len(read_records(old)) == 40
    with FakeOpenAIServer() as srv:
        r = recipe(srv.url)
        refused = invoke("sample", "--recipe", str(r), "--out", str(old))
        assert refused.exit_code == 2 and len(refused.stderr.splitlines()) == 1
        assert "older rmsd" in refused.stderr and f"rmsd sample rekey --recipe RECIPE --samples {old}" in refused.stderr
        assert srv.stats.requests == 0
        new = tmp_path / "rekeyed"
        done = invoke("sample", "rekey", "--recipe", str(r), "--samples", str(old), "--out", str(new))
        assert done.exit_code == 0, done.output
        assert "copied 40 records" in done.output and "0 records this recipe does not plan" in done.output
        assert key_version(new) == 2 and len(read_records(new)) == 40
        resumed = invoke("sample", "--recipe", str(r), "--out", str(new))
        assert resumed.exit_code == 0, resumed.output
        assert srv.stats.requests == 0  # every planned key was carried over: nothing paid twice
        again = invoke("sample", "rekey", "--recipe", str(r), "--samples", str(new), "--out", str(tmp_path / "x"))
        assert again.exit_code == 2 and "already use key version 2" in again.stderr
    texts = {(row["item_id"], row["teacher"], row["sample_index"]): row["text"] for row in read_records(old)}
    assert {(row["item_id"], row["teacher"], row["sample_index"]): row["text"] for row in read_records(new)} == texts
    assert sorted(p.read_bytes() for p in old.rglob("*") if p.is_file()) == before  # the old store is untouched
    matched = invoke("match", "--recipe", str(r), "--samples", str(old), "--out", str(tmp_path / "matched"))
    assert matched.exit_code == 0, matched.output  # match reads a version-1 store as it is
    summary = json.loads((new / "summary.json").read_text())
    assert summary["new_records"] == 0


def test_rekey_leaves_out_records_the_recipe_would_sample_differently(v1_store, tmp_path):
    old, recipe = v1_store
    r = recipe("http://127.0.0.1:9/v1")
    # another simulator accuracy: its version-1 keys differ, so its old records are not this recipe's
    done = invoke("sample", "rekey", "--recipe", str(r), "--samples", str(old), "--out", str(tmp_path / "n"),
                  "--set", "dataset.limit=5")
    assert done.exit_code == 0, done.output
    assert "copied 20 records" in done.output and "20 records this recipe does not plan" in done.output
    pool = yaml.safe_load((tmp_path / "pool.yaml").read_text())
    pool["teachers"][0]["simulated"]["accuracy"]["mcq"] = 0.9
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
    done = invoke("sample", "rekey", "--recipe", str(r), "--samples", str(old), "--out", str(tmp_path / "m"))
    assert "copied 20 records" in done.output  # the API teacher's 20; the changed simulator's are left out

