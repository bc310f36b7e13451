"""Training corpora in their public schemas, written by tests with real media (mp4 by PyAV, png by PIL).

Video-R1 (`Video-R1/Video-R1-data`: one JSON list, media paths "./…" under the data folder) and
LLaVA-Video-178K (`lmms-lab/LLaVA-Video-178K`: JSON lists of conversations per subset folder):
the field names the loaders must read, with made-up content.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CHOICES = ["A. red", "B. blue", "C. green", "D. yellow"]


def write_mp4(path: Path, seed: int = 0, frames: int = 8, side: int = 32, fps: int = 4) -> Path:
    """A short real H.264 clip whose bytes depend on `seed`."""
    from rmsd.data.synthvid import encode_mp4

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_mp4(rng.integers(0, 255, (frames, side, side, 3), dtype=np.uint8), path, fps)
    return path


def write_png(path: Path, seed: int = 0, side: int = 28) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def videor1_row(pid: int, problem_type: str, path: str, solution: str, data_type: str = "video",
                options: list[str] | None = None, problem: str | None = None, source: str = "LLaVA-Video-178K") -> dict:
    return {"problem_id": pid, "problem": problem or f"Question {pid} about the clip?", "data_type": data_type,
            "problem_type": problem_type, "options": options if options is not None else [],
            "process": "<think>Let me think.</think>", "solution": f"<answer>{solution}</answer>", "path": path,
            "data_source": source}


def videor1_corpus(root: Path) -> tuple[Path, list[dict]]:
    """A Video-R1-data folder: one row of every problem type on videos, two image rows; (json file, rows)."""
    data = root / "Video-R1-data"
    for k in range(4):
        write_mp4(data / "videos" / f"clip{k}.mp4", seed=100 + k)
    write_png(data / "images" / "chart.png", seed=7)
    rows = [
        videor1_row(1, "multiple choice", "./videos/clip0.mp4", "B", options=CHOICES),
        videor1_row(2, "numerical", "./videos/clip1.mp4", "3"),
        videor1_row(3, "regression", "./videos/clip2.mp4", "12.5"),
        videor1_row(4, "OCR", "./videos/clip3.mp4", "open the door"),
        videor1_row(5, "free-form", "./videos/clip0.mp4", "a person walks to the left"),
        videor1_row(6, "multiple choice", "./images/chart.png", "C", data_type="image", options=CHOICES,
                    source="ChartQA"),
        videor1_row(7, "numerical", "./images/chart.png", "1,200", data_type="image", source="ChartQA"),
    ]
    file = data / "Video-R1-260k.json"
    file.write_text(json.dumps(rows, indent=2))
    return file, rows


def llava_row(rid: str, video: str, turns: list[tuple[str, str]], source: str = "0_30_s_academic_v0_1") -> dict:
    conversations = []
    for human, gpt in turns:
        conversations += [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
    return {"id": rid, "video": video, "conversations": conversations, "data_source": source}


def mc_question(text: str, options: list[str] = CHOICES) -> str:
    return "<image>\n" + text + "\n" + "\n".join(options) + "\nAnswer with the option's letter from the given choices directly."
