"""Rows in the public benchmarks' schemas, for tests that write small dataset files.

Video-MME (`lmms-lab/Video-MME`, parquet) and MathVerse (`AI4Math/MathVerse`, JSON): the
field names the loaders must read, with made-up content.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def videomme_row(n: int, duration: str, task_type: str, answer: str, domain: str = "Knowledge") -> dict:
    """One Video-MME row; its video is `vid{n}.mp4`."""
    return {"video_id": f"{n:03d}", "duration": duration, "domain": domain, "sub_category": "Astronomy",
            "url": f"https://www.youtube.com/watch?v=vid{n}", "videoID": f"vid{n}", "question_id": f"{n:03d}-1",
            "task_type": task_type, "question": f"What happens in clip {n}?",
            "options": ["A. A rocket launches.", "B. A star explodes.", "C. A comet passes.", "D. Nothing."],
            "answer": answer}


def mathverse_row(index: int, version: str, qtype: str, answer: str, image: object, question: str) -> dict:
    """One MathVerse row (testmini); `image` is a relative path, embedded bytes or ""."""
    return {"sample_index": str(index), "problem_index": str(index), "problem_version": version,
            "question": question, "image": image, "answer": answer, "question_type": qtype,
            "metadata": {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Length"},
            "query_wo": f"  Please directly answer the question. Question: {question}\n",
            "query_cot": f"Please first conduct reasoning. Question: {question}", "question_for_eval": question}
