"""The shipped accelerate configs: all four load in accelerate, and the DDP one runs `rmsd distill`'s SFT stage in 2 CPU processes.

FSDP and ZeRO need GPUs (NCCL): here they are only parsed, as `accelerate launch` would read them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "recipes" / "accelerate"

SCRIPT = textwrap.dedent('''
    import hashlib, json, sys
    from pathlib import Path
    import torch
    import torch.distributed as dist
    from accelerate import PartialState
    from rmsd.config import AdversarialStageConfig, DatasetConfig, SFTStageConfig, StudentConfig
    from rmsd.datasets.synthvid import load_items
    from rmsd.train.distill import DistillContext, run_stages

    torch.set_num_threads(1)
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    items = {it.item_id: it for it in load_items(root / "data", split="train")}
    matched = [json.loads(line) for line in (root / "matched.jsonl").open()]
    ctx = DistillContext(items=items, matched=matched, out=out, dataset=DatasetConfig(benchmark="synthvid", path="-"),
                         student=StudentConfig(path=str(root / "student")), report_to=[], shared_prefix=True,
                         progress=False)
    sft = SFTStageConfig(max_steps=2, batch_size=1, save_steps=2, logging_steps=1)
    paths = run_stages(sft, AdversarialStageConfig(enabled=False), ctx, root / "student")
    from transformers import AutoModelForImageTextToText
    model = AutoModelForImageTextToText.from_pretrained(paths["sft"])
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    state = PartialState()
    (out / f"rank{state.process_index}.json").write_text(json.dumps({
        "world": state.num_processes, "backend": dist.get_backend() if dist.is_initialized() else None,
        "device": str(state.device), "digest": digest}))
''')


@pytest.mark.parametrize("name,kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero2", "DEEPSPEED"),
                                       ("zero3", "DEEPSPEED")])
def test_each_shipped_config_loads_in_accelerate(name, kind):
    from accelerate.commands.config.config_args import ClusterConfig

    from rmsd.validation import validate_file

    config = ClusterConfig.from_yaml_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type.value == kind and validate_file(CONFIGS / f"{name}.yaml") == []
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # stage folders stay from_pretrained
    readme = (REPO / "README.md").read_text()
    assert f"recipes/accelerate/{name}.yaml" in readme  # each one is named in the recipe guide


def test_the_ddp_config_runs_the_sft_stage_in_two_cpu_processes(tmp_path):
    from rmsd.datasets.synthvid import load_items
    from rmsd.models.offline.tiny import build_student
    from rmsd.synthvid.generator import generate

    torch.set_num_threads(1)
    generate(tmp_path / "data", n=4, seed=0)
    rows = []
    for it in load_items(tmp_path / "data", split="train"):
        answer = f"({it.answer})" if it.task_type == "mcq" else str(it.answer)
        rows.append({"item_id": it.item_id, "teacher": "sim", "sample_index": 0, "format_ok": True, "weight": 1.0,
                     "kept": True, "text": f"<think>Seen.</think><answer>{answer}</answer>", "task_type": it.task_type})
    (tmp_path / "matched.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_student(tmp_path / "student", seed=0)
    (tmp_path / "script.py").write_text(SCRIPT)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
           "--num_processes", "2", str(tmp_path / "script.py"), str(tmp_path), str(out)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["backend"] == "gloo"
    assert ranks[0]["device"].startswith("cpu") and ranks[0]["digest"] == ranks[1]["digest"]
    assert json.loads((out / "sft" / "stage.json").read_text())["global_step"] == 2
