"""The student families: build, load, the frames' real times in the model input, generation, gradients.

Clips are real mp4 files written with PyAV and decoded by rmsd.media.video.load_frames, so
the times checked are the ones rmsd measured, not numbers the test made up.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rmsd.errors import RmsdError
from rmsd.media.video import load_frames
from rmsd.models.family import (
    copy_vision_span,
    family_of,
    frame_times,
    rope_index,
    select_encoder_outputs,
    vision_keys,
)
from rmsd.models.offline.tiny import build_student
from rmsd.models.processing import encode, generate, load_student, to_model, video_metadata
from rmsd.synthvid.generator import encode_mp4


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("families")
    return {f: build_student(root / f, family=f, seed=0) for f in ("qwen2_5_vl", "qwen3_vl", "qwen3_5")}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two real mp4 files: 6 s at 10 fps and 3 s at 25 fps, a square crossing the frame."""
    root = tmp_path_factory.mktemp("clips")
    out = {}
    for name, seconds, fps in (("slow", 6, 10), ("fast", 3, 25)):
        n = seconds * fps
        frames = np.zeros((n, 84, 84, 3), dtype=np.uint8)
        for t in range(n):
            x = 4 + t * 56 // (n - 1)
            frames[t, 30:50, x: x + 20] = (220, 60, 30)
        encode_mp4(frames, root / f"{name}.mp4", fps)
        out[name] = root / f"{name}.mp4"
    return out


def test_every_family_loads_with_the_auto_classes(students):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    for family, cls, proc in (("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
                              ("qwen3_vl", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor"),
                              ("qwen3_5", "Qwen3_5ForConditionalGeneration", "Qwen3VLProcessor")):
        path = students[family]
        config = json.loads((path / "config.json").read_text())
        assert config["model_type"] == family and family_of(path).name == family
        model = AutoModelForImageTextToText.from_pretrained(path)
        processor = AutoProcessor.from_pretrained(path)
        assert type(model).__name__ == cls and type(processor).__name__ == proc
        assert processor.chat_template and "<|im_start|>" in processor.chat_template
        assert 1.2e6 < sum(p.numel() for p in model.parameters()) < 1.7e6
    q3 = json.loads((students["qwen3_vl"] / "config.json").read_text())
    assert q3["vision_config"]["deepstack_visual_indexes"] == [0]
    assert q3["text_config"]["rope_parameters"]["mrope_interleaved"] is True
    q35 = json.loads((students["qwen3_5"] / "config.json").read_text())
    assert q35["text_config"]["layer_types"] == ["linear_attention"] * 3 + ["full_attention"]  # 3:1 as published
    assert "deepstack_visual_indexes" not in q35["vision_config"] and family_of(students["qwen3_5"]).hybrid
    with pytest.raises(RmsdError, match="family"):
        build_student(students["qwen3_vl"].parent / "x", family="llava")


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_qwen3_vl_timestamps_in_the_prompt_are_the_frames_real_times(students, clips, family):
    """Qwen3.5 checkpoints ship Qwen3-VL's processor: the same timestamps, written the same way."""
    _, processor = load_student(students[family])
    for name, n in (("slow", 8), ("fast", 6)):
        frames = load_frames(clips[name], num_frames=n)
        batch = encode(processor, ["When does the square move?"], [frames])
        written = frame_times(processor.tokenizer.decode(batch["input_ids"][0]))
        # One timestamp per temporal patch (2 frames): the mean of its two frames' real times.
        real = [(a + b) / 2 for a, b in zip(frames.timestamps[::2], frames.timestamps[1::2], strict=True)]
        assert len(written) == len(real) == n // 2
        assert written == pytest.approx(real, abs=0.051)  # the processor prints one decimal
        assert batch["video_grid_thw"].tolist() == [[n // 2, 6, 6]]
        assert "second_per_grid_ts" not in batch and set(vision_keys(students[family])) >= set(
            k for k in batch if k.startswith(("pixel", "video", "image")))
    # A checkpoint whose video processor resamples by default (real Qwen3-VL: 2 fps) keeps rmsd's frames.
    processor.video_processor.do_sample_frames = True
    frames = load_frames(clips["slow"], num_frames=8)
    batch = encode(processor, ["When?"], [frames])
    assert batch["video_grid_thw"].tolist() == [[4, 6, 6]]
    assert frame_times(processor.tokenizer.decode(batch["input_ids"][0])) == pytest.approx(
        [(a + b) / 2 for a, b in zip(frames.timestamps[::2], frames.timestamps[1::2], strict=True)], abs=0.051)
    processor.video_processor.do_sample_frames = False
    # What the processor writes when left to guess (frames without metadata): 24 fps, wrong times.
    frames = load_frames(clips["slow"], num_frames=8)
    guessed = processor(text=["<|vision_start|><|video_pad|><|vision_end|>"], videos=[np.array(frames.array)],
                        return_tensors="pt")
    assert frame_times(processor.tokenizer.decode(guessed["input_ids"][0]))[1] < 0.2  # vs 2.25 s measured


def test_qwen2_5_vl_seconds_per_grid_step_is_the_frames_real_rate(students, clips):
    _, processor = load_student(students["qwen2_5_vl"])
    for name, n in (("slow", 8), ("fast", 6)):
        frames = load_frames(clips[name], num_frames=n)
        batch = encode(processor, ["Which way?"], [frames])
        spacing = (frames.timestamps[-1] - frames.timestamps[0]) / (n - 1)  # measured seconds between frames
        assert batch["second_per_grid_ts"].tolist() == pytest.approx([2 * spacing], rel=0.02)
        assert video_metadata(frames)["fps"] == pytest.approx(1 / spacing, rel=0.02)


def test_frame_times_change_the_logits_of_every_family(students, clips):
    from types import SimpleNamespace

    frames = load_frames(clips["slow"], num_frames=8)
    later = SimpleNamespace(array=frames.array, fps=frames.fps / 2, duration=frames.duration * 2,
                            timestamps=tuple(2 * t for t in frames.timestamps))
    for family, path in students.items():
        model, processor = load_student(path)
        logits = []
        for clip in (frames, later, frames):
            batch = to_model(encode(processor, ["Which way does it move?"], [clip]), model)
            with torch.no_grad():
                logits.append(model(**batch).logits[0, -1])
        assert torch.allclose(logits[0], logits[2]), family
        assert not torch.allclose(logits[0], logits[1], atol=1e-5), f"{family}: time did not reach the model"


def test_rope_index_is_the_forwards_own_positions_and_continuations_follow_them(students, clips):
    frames = load_frames(clips["fast"], num_frames=6)
    for family, path in students.items():
        model, processor = load_student(path)
        batch = to_model(encode(processor, ["a", "a longer prompt"], [frames, frames], responses=["(A)", "(B)"]),
                         model)
        positions, deltas = rope_index(model, batch)
        with torch.no_grad():
            implicit = model(**batch).logits
            explicit = model(**batch, position_ids=positions).logits
        assert torch.allclose(implicit, explicit, atol=1e-5), family
        lengths = batch["attention_mask"].sum(dim=1)
        starts = positions.amax(dim=(0, 2)) + 1  # right padding has position 0
        assert torch.equal(starts, lengths + deltas.squeeze(1)), family


def test_one_shared_encoding_equals_per_row_pixels_for_every_family(students, clips):
    """What a trainer sharing an item's clip across its K rows must do: DeepStack rows move with the pooled ones."""
    frames = load_frames(clips["fast"], num_frames=6)
    for family, path in students.items():
        model, processor = load_student(path)
        batch = to_model(encode(processor, ["q"] * 3, [frames] * 3, responses=["(A)", "(B) no", "(C)"]), model)
        with torch.no_grad():
            plain = model(**batch).logits
            one = {k: v[: len(v) // 3] if k == "pixel_values_videos" else v[:1] for k, v in batch.items()
                   if k in ("pixel_values_videos", "video_grid_thw")}
            features = model.model.get_video_features(one["pixel_values_videos"], one["video_grid_thw"],
                                                      return_dict=True)
            shared = select_encoder_outputs(features, [0, 0, 0], family_of(model))
            rest = {k: v for k, v in batch.items() if k != "pixel_values_videos"}
            logits = model(**rest, mm_encoder_outputs={"video": shared}).logits
        assert torch.allclose(plain, logits, atol=1e-5), family


def test_copy_vision_span_rebuilds_the_processors_prompt_from_the_template(students, clips):
    from rmsd.models.processing import prompt_text

    frames = load_frames(clips["slow"], num_frames=8)
    for family, path in students.items():
        model, processor = load_student(path)
        student = encode(processor, ["What moves?"], [frames])["input_ids"][0].tolist()
        other = encode(processor, ["What moves? Feedback: look again."], [frames])["input_ids"][0].tolist()
        template = processor.tokenizer(prompt_text(processor, "What moves? Feedback: look again.", True, False),
                                       add_special_tokens=False)["input_ids"]
        assert copy_vision_span(template, student, model.config) == other, family


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3_5"])
def test_generation_and_a_training_step_reach_vision_text_and_deepstack(students, clips, family):
    model, processor = load_student(students[family])
    frames = [load_frames(clips["slow"], num_frames=8), load_frames(clips["fast"], num_frames=6)]
    out = generate(model, processor, ["What colour?", "Which way?"], frames, max_new_tokens=4, do_sample=True,
                   temperature=1.0, num_return_sequences=2)
    assert [len(o) for o in out] == [2, 2]
    model.train()
    batch = to_model(encode(processor, ["What colour?", "Which way?"], frames,
                            responses=["<answer>(A)</answer>", "<answer>(C)</answer>"]), model)
    model(**batch).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["model.visual.patch_embed.proj.weight"].abs().sum() > 0
    assert grads["model.language_model.embed_tokens.weight"].abs().sum() > 0
    if family == "qwen3_5":  # every linear-attention layer learns, its decay and time step included
        linear = {n: g for n, g in grads.items() if ".linear_attn." in n}
        assert linear and all(g is not None and g.abs().sum() > 0 for g in linear.values())
    if family == "qwen3_vl":
        deepstack = [g for n, g in grads.items() if "deepstack_merger_list" in n]
        assert deepstack and all(g is not None and g.abs().sum() > 0 for g in deepstack)


def test_max_pixels_is_a_per_frame_budget_for_every_family(students):
    from types import SimpleNamespace

    big = SimpleNamespace(array=np.zeros((8, 168, 168, 3), dtype=np.uint8), fps=2.0)
    for family, path in students.items():
        _, processor = load_student(path, max_pixels=56 * 56)
        assert encode(processor, ["a"], [big])["video_grid_thw"].tolist() == [[4, 4, 4]], family
        _, processor = load_student(path)
        assert encode(processor, ["a"], [big])["video_grid_thw"].tolist() == [[4, 8, 8]], family
    with pytest.raises(RmsdError, match="below"):
        load_student(students["qwen3_vl"], max_pixels=100)


def test_build_student_family_on_the_cli_and_as_a_recipe_knob(tmp_path):
    from typer.testing import CliRunner

    from rmsd.cli import app
    from rmsd.config import StudentConfig, load_recipe
    from rmsd.pipeline import student_path

    runner = CliRunner()
    ok = runner.invoke(app, ["build-student", "--out", str(tmp_path / "q3"), "--family", "qwen3_vl"])
    assert ok.exit_code == 0 and "qwen3_vl" in ok.stdout
    assert family_of(tmp_path / "q3").name == "qwen3_vl"
    ok = runner.invoke(app, ["build-student", "--out", str(tmp_path / "q35"), "--family", "qwen3_5"])
    assert ok.exit_code == 0 and family_of(tmp_path / "q35").name == "qwen3_5"
    bad = runner.invoke(app, ["build-student", "--out", str(tmp_path / "x"), "--family", "llava"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: unknown student family")

    assert StudentConfig(build="tiny").build_family == "qwen2_5_vl"  # the default family
    with pytest.raises(ValueError, match="read from its config.json"):
        StudentConfig(path="/models/x", family="qwen3_vl")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ndataset: {{benchmark: synthvid, path: {tmp_path}}}\n"
                      f"student: {{build: tiny, family: qwen3_vl, build_out: {tmp_path / 'built'}}}\n")
    assert family_of(student_path(load_recipe(recipe))).name == "qwen3_vl"
    hybrid = load_recipe(recipe, ["student.family=qwen3_5", f"student.build_out={tmp_path / 'b35'}"])
    assert family_of(student_path(hybrid)).name == "qwen3_5"
    with pytest.raises(RmsdError, match="holds a qwen3_vl student"):  # a built folder of the other family
        student_path(load_recipe(recipe, ["student.family=qwen2_5_vl"]))
