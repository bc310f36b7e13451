"""`rmsd plan`: exact weights, gradients and AdamW bytes of built students, counts by part, LoRA, the printout.

The activation estimate is measured against real training steps in benchmarks/bench_plan.py
(benchmarks/results/plan.md); here only the parts that must be exact are checked exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from rmsd.cli import app
from rmsd.config import DatasetConfig, DistillConfig, StudentConfig, load_recipe
from rmsd.errors import RmsdError
from rmsd.models.memory import (
    architecture,
    generation_cache_bytes,
    kv_cache_bytes,
    lora_parameters,
    prefix_handover_bytes,
    recurrent_cache_bytes,
)
from rmsd.models.offline.tiny import build_student
from rmsd.models.processing import encode, load_student, to_model
from rmsd.plan import Settings, models_held, plan_recipe, with_keys

ROOT = Path(__file__).resolve().parents[1]
Q3_4B = ROOT / "recipes" / "models" / "qwen3_vl_4b_instruct"


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("plan")
    return {f: build_student(root / f, family=f) for f in ("qwen2_5_vl", "qwen3_vl", "qwen3_5")}


def _settings(keys: dict | None = None) -> Settings:
    """A small recipe's settings, `keys` (recipe keys) changed."""
    base = Settings(dataset=DatasetConfig(benchmark="synthvid", path="data", num_frames=8),
                    student=StudentConfig(build="tiny"),
                    distill=DistillConfig(sft={"batch_size": 2, "samples_per_item": 2},
                                          adversarial={"enabled": True, "batch_size": 1, "num_generations": 2,
                                                       "max_completion_length": 8}),
                    side=84, prompt_tokens=40, response_tokens=20, pool_samples=2)
    return with_keys(base, keys or {})


def test_settings_speak_the_recipes_names():
    s = _settings({"distill.adversarial.beta": 0.1, "student.lora": {"r": 4}, "zero": 2})
    assert s.adversarial.beta == 0.1 and s.lora.r == 4 and s.lora.dropout == 0.05 and s.zero == 2
    assert _settings().lora is None and _settings().adversarial.beta == 0.0  # the copy, not the base, changed
    assert s.disc_rollouts_per_item == 2  # null: all G rollouts, as the stage reads it
    unset = _settings({"distill.sft.samples_per_item": None})
    assert unset.samples_per_item == unset.pool_samples  # null: every sample the pool gave


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("family,dtype", [("qwen2_5_vl", "float32"), ("qwen3_vl", "float32"), ("qwen3_vl", "bfloat16"),
                                          ("qwen3_5", "float32")])
def test_weights_grads_and_adamw_states_are_the_bytes_torch_allocates(students, family, dtype):
    path = students[family]
    model, processor = load_student(path, dtype=dtype)
    model.train()
    clip = type("F", (), {"array": np.random.default_rng(0).integers(0, 255, (8, 84, 84, 3), dtype=np.uint8),
                          "fps": 2.0})()
    batch = to_model(encode(processor, ["What colour?"], [clip], responses=["<answer>(A)</answer>"]), model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(**batch).loss.backward()
    grads = _nbytes(p.grad for p in model.parameters() if p.grad is not None)
    optimizer.step()
    states = _nbytes(t for s in optimizer.state.values() for k, t in s.items() if k in ("exp_avg", "exp_avg_sq"))

    (student,) = models_held("sft", architecture(path), _settings({"student.dtype": dtype}))
    assert student.params == student.trainable == sum(p.numel() for p in model.parameters())
    assert student.weight_bytes == _nbytes(model.parameters())
    assert student.grad_bytes == grads  # every parameter gets a gradient (vision, DeepStack, text)
    assert student.optimizer_bytes == states


def test_counts_by_part_and_the_discriminators_copy(students):
    from rmsd.train.discriminator import Discriminator

    for family, path in students.items():
        arch = architecture(path)
        model, _ = load_student(path)
        assert arch.vision_params == sum(p.numel() for p in model.model.visual.parameters())
        assert arch.vision_params + arch.text_params + arch.head_params == arch.params, family
        held = {m.role: m for m in models_held("adversarial", arch, _settings(
            {"distill.adversarial.beta": 0.1, "distill.adversarial.visd.enabled": True}))}
        disc = Discriminator.from_student(model)
        assert held["discriminator"].params == sum(p.numel() for p in disc.parameters()), family
        assert held["reference"].params == held["ema_teacher"].params == arch.params
        assert held["reference"].trainable == held["ema_teacher"].trainable == 0


@pytest.mark.parametrize("vision", ["frozen", "adapted"])
def test_lora_counts_are_what_the_lora_stages_hold(students, vision):
    """The planner's LoRA counts against the adapters rmsd's stages really add: the student's (text, and the
    vision tower's when adapted), the discriminator's adapter + head, the EMA teacher's adapter."""
    from rmsd.config import StudentConfig
    from rmsd.train.discriminator import AdapterDiscriminator
    from rmsd.train.distill import load_for_training
    from rmsd.train.ema import AdapterEMATeacher

    targets = ("q_proj", "v_proj", "down_proj")
    for family, path in students.items():
        cfg = StudentConfig(path=str(path), lora={"r": 4, "alpha": 8.0, "target_modules": list(targets),
                                                  "vision": vision})
        model, _ = load_for_training(path, cfg)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        disc = AdapterDiscriminator(model)
        teacher = AdapterEMATeacher(model)
        arch = architecture(path)
        settings = _settings({"student.lora": cfg.lora, "distill.sft.enabled": False,
                              "distill.adversarial.discriminator": "lora", "distill.adversarial.beta": 0.1,
                              "distill.adversarial.visd.enabled": True})
        held = {m.role: m for m in models_held("adversarial", arch, settings)}
        assert held["student"].trainable == trainable == lora_parameters(arch, 4, targets, vision=vision == "adapted")
        assert held["student"].params == arch.params + trainable
        assert held["reference"].params == 0  # fresh adapters: the base with adapters disabled
        assert held["ema_teacher"].params == sum(t.numel() for t in teacher.state_dict()["model"].values())
        assert held["discriminator"].params == sum(p.numel() for p in disc.trainable_parameters())  # no backbone
        assert held["discriminator"].params == lora_parameters(arch, 4, targets) + arch.hidden + 1, family
        continued = {m.role: m for m in models_held("adversarial", arch, with_keys(
            settings, {"distill.sft.enabled": True}))}
        assert continued["reference"].params == trainable  # a stage that continues adapters: TRL's frozen copy


def _nbytes_of(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def test_a_hybrid_students_generation_cache_is_keys_for_full_layers_and_fixed_states_for_linear_ones(students):
    """Qwen3.5: the planner's cache bytes against the DynamicCache transformers fills in a prefill."""
    path = students["qwen3_5"]
    arch = architecture(path)
    model, processor = load_student(path)
    assert (arch.linear_layers, arch.attention_layers) == (3, 1)  # 3:1, as the published configs
    clip = type("F", (), {"array": np.zeros((8, 84, 84, 3), dtype=np.uint8), "fps": 2.0})()
    batch = to_model(encode(processor, ["What colour?", "Which way?"], [clip, clip], padding_side="left"), model)
    with torch.no_grad():
        cache = model(**batch, use_cache=True)["cache"]
    linear = [layer for layer in cache.layers if hasattr(layer, "recurrent_states")]
    states = sum(_nbytes_of([*layer.conv_states.values(), *layer.recurrent_states.values()]) for layer in linear)
    keys = sum(_nbytes_of([layer.keys, layer.values]) for layer in cache.layers if hasattr(layer, "keys"))
    rows, width = batch["input_ids"].shape
    assert states == recurrent_cache_bytes(arch, rows, 4) and keys == kv_cache_bytes(arch, rows * width, 4)
    assert generation_cache_bytes(arch, rows, width, 4) == states + keys
    # the states do not grow with the sequence; the full layers' keys do
    longer = generation_cache_bytes(arch, rows, 2 * width, 4) - generation_cache_bytes(arch, rows, width, 4)
    assert longer == keys
    # the shared prefix hands each row its prompt's keys (1 layer) and states (3 layers), not 4 layers of keys
    plain = architecture(students["qwen3_vl"])
    assert prefix_handover_bytes(arch, 1, 4, 100, 4, False) < prefix_handover_bytes(plain, 1, 4, 100, 4, False)


def test_the_published_qwen3_vl_4b_config_builds_on_meta():
    arch = architecture(Q3_4B)
    assert arch.family == "qwen3_vl" and arch.params == 4_437_815_808
    assert (arch.hidden, arch.layers, arch.q_dim, arch.kv_dim, arch.vision_depth) == (2560, 36, 4096, 1024, 24)
    assert f"{arch.params:,}" in (Q3_4B / "README.md").read_text()


def test_the_qwen3_5_planning_config_builds_on_meta():
    """recipes/models/qwen3_5_9b (transformers' Qwen3_5Config defaults); the headers of the recipes planned on it
    are held to `rmsd plan` by test_every_recipe_header_shows_the_plan_rmsd_plan_gives_it_now."""
    folder = ROOT / "recipes" / "models" / "qwen3_5_9b"
    arch = architecture(folder)
    assert arch.family == "qwen3_5" and arch.params == 9_407_453_936
    assert (arch.linear_layers, arch.attention_layers, arch.linear_state) == (24, 8, 32 * 128 * 128)
    assert f"{arch.params:,}" in (folder / "README.md").read_text()


def _recipe(tmp_path, **student) -> Path:
    out = tmp_path / f"student-{student.get('family', 'default')}"
    data = {"name": "p", "dataset": {"benchmark": "synthvid", "path": str(tmp_path / "data"), "num_frames": 8},
            "student": {"build": "tiny", "build_out": str(out), **student},
            "distill": {"sft": {"batch_size": 2, "samples_per_item": 2},
                        "adversarial": {"enabled": True, "batch_size": 1, "num_generations": 2, "beta": 0.05,
                                        "visd": {"enabled": True}}}}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_plan_prints_each_stages_models_in_80_columns_and_a_knob_when_it_does_not_fit(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["plan", "--recipe", str(_recipe(tmp_path, family="qwen3_vl")), "--frame-side", "84"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # stderr has the student build's progress bars
    assert max(len(line) for line in lines) <= 80
    assert "qwen3_vl" in lines[0] and "stage sft" in result.stdout and "stage adversarial" in result.stdout
    for role in ("student", "discriminator", "reference", "ema_teacher"):
        assert any(line.split()[:1] == [role] for line in lines), role
    assert result.stdout.count(": fits") == 2 and "first knob" not in result.stdout

    small = runner.invoke(app, ["plan", "--recipe", str(_recipe(tmp_path)), "--gpu-memory", "0.05",
                                "--frame-side", "84"])
    assert small.exit_code == 0 and "does NOT fit" in small.stdout and "first knob:" in small.stdout


def test_checkpointing_and_the_shared_prefix_are_planned_as_the_stages_run_them(tmp_path):
    from rmsd.plan import stage_plan
    from rmsd.train.trl_args import RunSettings, sft_config

    recipe = load_recipe(_recipe(tmp_path))
    run = RunSettings(output_dir=tmp_path / "o", device="cpu", dtype="float32", report_to=[],
                      gradient_checkpointing=recipe.student.gradient_checkpointing)
    assert sft_config(recipe.distill.sft, run).activation_checkpointing is False  # the recipe's default, not TRL's
    plan = plan_recipe(recipe, gpu_memory_gib=0.05, side=84)
    sft = plan.stages[0]
    assert not plan.settings.student.gradient_checkpointing and plan.settings.distill.shared_prefix and not sft.fits
    assert sft.knob is not None
    arch = architecture(recipe.path_of(recipe.student.build_out))
    checkpointed = stage_plan("sft", arch, with_keys(plan.settings, {"student.gradient_checkpointing": True}),
                              sft.usable_bytes)
    assert checkpointed.activation_bytes < sft.activation_bytes
    naive = stage_plan("sft", arch, with_keys(plan.settings, {"distill.shared_prefix": False}), sft.usable_bytes)
    assert naive.activation_bytes > sft.activation_bytes  # K whole sequences keep more than one prompt + K replies
    # the knob it names, applied, fits
    fitted = plan_recipe(load_recipe(_recipe(tmp_path), ["student.lora={r: 16}", "distill.sft.batch_size=1"]),
                         gpu_memory_gib=0.05, side=84)
    assert fitted.stages[0].total_bytes < sft.total_bytes


def test_plan_mistakes_are_one_line_errors(tmp_path):
    recipe = load_recipe(_recipe(tmp_path))
    with pytest.raises(RmsdError, match="zero"):
        plan_recipe(recipe, zero=1)
    path = tmp_path / "real.yaml"
    data = yaml.safe_load(_recipe(tmp_path).read_text())
    data["student"] = {"path": str(tmp_path / "not-downloaded")}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RmsdError, match="--config"):
        plan_recipe(load_recipe(path))
    assert plan_recipe(load_recipe(path), config=Q3_4B).family == "qwen3_vl"


def test_a_lora_recipe_is_planned_as_its_stages_hold_it(tmp_path):
    """student.lora and distill.adversarial.discriminator read from the recipe: the adversarial stage after a
    LoRA SFT stage keeps TRL's frozen copy of the adapters as its reference; without that stage, nothing."""
    path = _recipe(tmp_path, lora={"r": 8, "dropout": 0.0})
    recipe = load_recipe(path, ["distill.adversarial.discriminator=lora"])
    plan = plan_recipe(recipe, side=84)
    arch = architecture(recipe.path_of(recipe.student.build_out))
    adapters = lora_parameters(arch, 8)
    held = {m.role: m for m in plan.stages[1].models}
    assert plan.settings.adversarial.discriminator == "lora" and plan.settings.lora.dropout == 0
    assert held["student"].trainable == adapters and held["ema_teacher"].params == adapters
    assert held["reference"].params == adapters  # the SFT stage's adapters, continued
    assert held["discriminator"].params == adapters + arch.hidden + 1
    alone = plan_recipe(load_recipe(path, ["distill.sft.enabled=false", "distill.adversarial.discriminator=lora"]),
                        side=84)
    assert {m.role: m for m in alone.stages[0].models}["reference"].params == 0  # fresh adapters: the bare base
    full_d = {m.role: m for m in plan_recipe(load_recipe(path), side=84).stages[1].models}
    assert full_d["discriminator"].params == arch.text_params + arch.hidden + 1


# ----------------------------------------------------------------------------- recipe headers
HEADER = re.compile(r"^# `rmsd plan --recipe (\S+) --config (\S+)` \((\d+) GiB GPU\):\n((?:#(?:   .*)?\n)+)", re.M)


def plan_headers() -> list[tuple[Path, str, str]]:
    """(recipe file, the plan its header shows, the plan `rmsd plan` gives now) for every shipped recipe with one."""
    from rmsd.config import load_recipe
    from rmsd.plan import format_plan, plan_recipe

    found = []
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        m = HEADER.search(path.read_text())
        if m is None:
            continue
        recipe_file, config, gib, shown = m.groups()
        assert (ROOT / recipe_file).resolve() == path.resolve(), f"{path}: its plan header names {recipe_file}"
        now = format_plan(plan_recipe(load_recipe(path), float(gib), config=ROOT / config))
        found.append((path, "\n".join(line[4:] for line in shown.rstrip("\n").splitlines()).strip(), now.strip()))
    return found


def test_every_recipe_header_shows_the_plan_rmsd_plan_gives_it_now():
    headers = plan_headers()
    assert len(headers) >= 8  # the 4B and Qwen3.5 recipes, full and LoRA
    stale = [str(path.relative_to(ROOT)) for path, shown, now in headers if shown != now]
    assert not stale, f"re-run the `rmsd plan` command in these headers and paste its output: {stale}"


def test_the_temporal_contrast_is_planned_as_its_extra_generation(students):
    """Its shuffled rollouts are generated in a call of their own, with a second clip per item on the device."""
    from rmsd.plan import _phases

    arch = architecture(students["qwen2_5_vl"])
    base = _settings({"distill.adversarial.reward_weights": {"correctness": 1.0}})

    def generation(temporal: dict) -> int:
        s = with_keys(base, {"distill.adversarial.temporal": temporal})
        return _phases("adversarial", arch, s, models_held("adversarial", arch, s))["generation"]

    plain = generation({"enabled": False})
    half = generation({"enabled": True})  # G' = G // 2 = 1 rows: only the shuffled clip adds
    wide = generation({"enabled": True, "shuffled_generations": 6})  # G' = 6 > G = 2 rows: a larger cache too
    assert plain < half < wide
    assert generation({"enabled": True, "shuffled_generations": 2}) == half  # G' <= G: the ordered call's cache
