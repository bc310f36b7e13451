"""The `hf` backend: the tiny offline student as a local teacher, batched, off the event loop."""

from __future__ import annotations

import asyncio

import pytest

from rmsd.config.pools import HFOptions, PoolConfig
from rmsd.datasets.synthvid import load_items
from rmsd.sampling.sample import run_sampling
from rmsd.sampling.store import SampleStore, read_records
from rmsd.synthvid.generator import generate
from rmsd.teachers.hf_local import HFTeacher

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    from rmsd.models.offline.tiny import build_student

    torch.set_num_threads(1)
    return build_student(tmp_path_factory.mktemp("student") / "tiny")


def test_local_teacher_batches_items_with_k_samples_each_off_the_event_loop(student, tmp_path):
    generate(tmp_path / "data", n=8, seed=1, frame_size=56)
    items = load_items(tmp_path / "data", split="train")[:5]
    pool = PoolConfig.model_validate({"name": "local", "system_prompt": "Answer briefly.", "teachers": [
        {"name": "tiny", "backend": "hf", "samples": 3, "concurrency": 8, "params": {"max_tokens": 6, "seed": 0},
         "hf": {"model_path": str(student), "batch_size": 4}}]})
    teacher = HFTeacher("tiny", pool.teachers[0].hf)
    teacher.system_prompt = pool.system_prompt
    ticks_during_generate = []

    async def go():
        async def ticker():
            while True:
                ticks_during_generate.append(teacher.running)
                await asyncio.sleep(0.005)

        tick = asyncio.create_task(ticker())
        with SampleStore(tmp_path / "store") as store:
            summary = await run_sampling(items, pool, {"tiny": teacher}, store, num_frames=4, progress=False)
        tick.cancel()
        model = teacher._state.model
        answers = await asyncio.gather(teacher.ask("Is the sky blue?"), teacher.ask("Count to three.", system="Be brief."))
        assert teacher._state.model is model and all(isinstance(a, str) for a in answers)  # same model, no reload
        await teacher.aclose()
        return summary

    summary = asyncio.run(go())
    recs = read_records(tmp_path / "store")
    assert summary["missing"] == 0 and len(recs) == 15
    assert sum(teacher.batches[:-2]) == 5 and max(teacher.batches) > 1  # batched calls, num_return_sequences=3 each
    assert teacher.batches[-2:] == [1, 1]  # the two asks: different system prompts never share a generate call
    assert any(ticks_during_generate)  # the event loop kept running while the model generated
    assert all(isinstance(r["text"], str) and r["finish_reason"] in ("stop", "length") for r in recs)
    assert all(r["model"] == str(student) and r["completion_tokens"] <= 6 for r in recs)


def test_a_missing_checkpoint_is_a_config_error(tmp_path):
    from rmsd.errors import RmsdError

    with pytest.raises(RmsdError, match="no config.json"):
        HFTeacher("t", HFOptions(model_path=str(tmp_path)))


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_a_qwen3_vl_teacher_samples_video_items_with_their_frame_times(tmp_path, family):
    """The same backend on the other families: their prompts carry the clip's measured <t seconds>."""
    from rmsd.media.video import load_frames
    from rmsd.models.family import frame_times
    from rmsd.models.offline.tiny import build_student
    from rmsd.models.processing import encode

    torch.set_num_threads(1)
    path = build_student(tmp_path / "q3", family=family)
    generate(tmp_path / "data", n=6, seed=2, frame_size=56)
    items = load_items(tmp_path / "data", split="train")[:3]
    pool = PoolConfig.model_validate({"name": "local", "teachers": [
        {"name": "q3", "backend": "hf", "samples": 2, "params": {"max_tokens": 5, "seed": 0},
         "hf": {"model_path": str(path), "batch_size": 3}}]})
    teacher = HFTeacher("q3", pool.teachers[0].hf)

    async def go():
        with SampleStore(tmp_path / "store") as store:
            summary = await run_sampling(items, pool, {"q3": teacher}, store, num_frames=4, progress=False)
        processor = teacher._state.processor
        await teacher.aclose()
        return summary, processor

    summary, processor = asyncio.run(go())
    recs = read_records(tmp_path / "store")
    assert summary["missing"] == 0 and len(recs) == 6 and teacher.batches[0] == 3
    assert all(isinstance(r["text"], str) and r["completion_tokens"] <= 5 for r in recs)
    frames = load_frames(items[0].video, num_frames=4)
    text = processor.tokenizer.decode(encode(processor, [items[0].prompt], [frames])["input_ids"][0])
    assert frame_times(text) == pytest.approx([sum(frames.timestamps[:2]) / 2, sum(frames.timestamps[2:]) / 2],
                                              abs=0.051)
