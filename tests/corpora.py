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
VIDEO_DIR = "LLaVA-Video-178K/liwei_youtube_videos/videos/youtube_video_2024"  # a Video-R1 source folder


def write_mp4(path: Path, seed: int = 0, frames: int = 8, side: int = 32, fps: int = 4) -> Path:
    """A short real H.264 clip whose bytes depend on `seed`."""
    from rmsd.synthvid.generator import encode_mp4

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
    """A Video-R1-data folder as its hub repository unpacks: Video-R1-260k.json beside one folder per source, the
    rows' paths "./<source>/…" (one row of every problem type on videos, two image rows); (json file, rows)."""
    data = root / "Video-R1-data"
    for k in range(4):
        write_mp4(data / VIDEO_DIR / f"ytb_clip{k}.mp4", seed=100 + k)
    write_png(data / "ChartQA" / "images" / "chart.png", seed=7)
    video = f"./{VIDEO_DIR}/ytb_clip{{}}.mp4"
    rows = [
        videor1_row(1, "multiple choice", video.format(0), "B", options=CHOICES),
        videor1_row(2, "numerical", video.format(1), "3"),
        videor1_row(3, "regression", video.format(2), "12.5"),
        videor1_row(4, "OCR", video.format(3), "open the door"),
        videor1_row(5, "free-form", video.format(0), "a person walks to the left"),
        videor1_row(6, "multiple choice", "./ChartQA/images/chart.png", "C", data_type="image", options=CHOICES,
                    source="ChartQA"),
        videor1_row(7, "numerical", "./ChartQA/images/chart.png", "1,200", data_type="image", source="ChartQA"),
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


ACADEMIC, YOUTUBE = "0_30_s_academic_v0_1", "0_30_s_youtube_v0_1"
CHARADES = "academic_source/Charades/AB12C.mp4"
YTB = "liwei_youtube_videos/videos/youtube_video_2024/ytb_Xy7.mp4"
LETTER_ONLY = "\nPlease respond with only the letter of the correct answer."


def llava_dataset(root: Path) -> Path:
    """A LLaVA-Video-178K folder in the hub's layout: two subset folders of `*_mc_v0_1_qa_processed.json`,
    `*_oe_v0_1_qa_processed.json` and `*_v0_1_cap_processed.json` (plus the captions' parquet copy), the videos
    extracted under each subset, one video asked about in every file (7 questions in all)."""
    from schemas import write_parquet

    write_mp4(root / ACADEMIC / CHARADES, seed=11)
    write_mp4(root / YOUTUBE / YTB, seed=12)
    files = {
        f"{ACADEMIC}/0_30_s_academic_mc_v0_1_qa_processed.json": [
            llava_row("AB12C", CHARADES, [("<image>\nWhat does the person hold?\nA. a cup\nB. a book\nC. a phone\n"
                                           "D. a bag" + LETTER_ONLY, "A.")], ACADEMIC),
            # the same video again, its question's options inline
            llava_row("AB12C", CHARADES, [("<image>\nWhat does the person do next? A. run B. walk C. sit D. jump"
                                           + LETTER_ONLY, "B")], ACADEMIC)],
        f"{ACADEMIC}/0_30_s_academic_oe_v0_1_qa_processed.json": [
            llava_row("AB12C", CHARADES, [("<image>\nWhat is the person doing?", "The person is holding a cup."),
                                          ("Where is the cup?", "On the table.")], ACADEMIC)],
        f"{ACADEMIC}/0_30_s_academic_v0_1_cap_processed.json": [
            llava_row("AB12C", CHARADES, [("<image>\nDescribe the video in detail.", "A person holds a cup.")],
                      ACADEMIC)],
        f"{YOUTUBE}/0_30_s_youtube_mc_v0_1_qa_processed.json": [
            llava_row("ytb_Xy7", YTB, [("<image>\nWhich object appears first?\nOptions:\n(A) a dog\n(B) a cat\n"
                                        "(C) a car", "(C) a car")], YOUTUBE)],
        f"{YOUTUBE}/0_30_s_youtube_oe_v0_1_qa_processed.json": [
            llava_row("ytb_Xy7", YTB, [("<image>\nWhat colour is the car?", "Red.")], YOUTUBE)],
    }
    for name, rows in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(rows, indent=2))
    # the hub also stores the academic captions as parquet: the same rows must not be read twice
    write_parquet(root / ACADEMIC / "0_30_s_academic_v0_1_cap-00000-of-00001.parquet",
                  json.loads((root / ACADEMIC / "0_30_s_academic_v0_1_cap_processed.json").read_text()))
    return root
