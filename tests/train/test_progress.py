"""Stage progress: plain lines when stdout is not a terminal (a log), labels that say what a stage trains."""

from __future__ import annotations

import io
import re

from trainers import sft_trainer

from rmsd.config import AdversarialStageConfig, SFTStageConfig
from rmsd.train.progress import StageProgress, stage_label


def _matched(items) -> list[dict]:
    return [{"item_id": it.item_id, "teacher": "sim", "sample_index": 0, "format_ok": True, "weight": 1.0,
             "kept": True, "task_type": it.task_type, "text": "<think>I look.</think><answer>(A)</answer>"}
            for it in items]


def test_labels_say_what_the_stage_trains():
    assert stage_label("sft", SFTStageConfig(samples_per_item=1)) == "sft · single-sample"
    assert stage_label("sft", SFTStageConfig(weighting="uniform")) == "sft · multi-sample (uniform)"
    rl = AdversarialStageConfig(reward_weights={"correctness": 1.0, "format": 0.5, "discriminator": 0.0},
                                visd={"enabled": True})
    assert stage_label("adversarial", rl) == "rl · correctness + format + VISD"
    assert stage_label("adversarial", AdversarialStageConfig()) == "adversarial · D"


def test_a_log_gets_plain_lines_with_step_rate_and_eta(make_env, tmp_path):
    env = make_env(n=4, seed=0, matched=_matched)
    trainer = sft_trainer(env, tmp_path, max_steps=4, logging_steps=1)
    log = io.StringIO()  # not a terminal, like nohup or a Slurm log
    trainer.add_callback(StageProgress("sft · multi-sample (matched)", stream=log, every_s=3600.0))
    trainer.train()
    lines = log.getvalue().splitlines()
    # the first and the last step always print; the hour-long interval prints nothing in between
    assert [re.search(r"step (\d+)/4", line).group(1) for line in lines] == ["1", "4"]
    assert lines[-1].startswith("[sft · multi-sample (matched)] step 4/4 (100%)")
    assert "step/s" in lines[-1] and "ETA 0m00s" in lines[-1] and "loss " in lines[-1]
