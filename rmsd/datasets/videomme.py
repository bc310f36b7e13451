"""Video-MME: 900 videos (short / medium / long), 2,700 four-option questions.

Rows keep the public schema (`lmms-lab/Video-MME`, parquet): `video_id, duration, domain,
sub_category, videoID, question_id, task_type, question, options ["A. …", …], answer`; the
video is `{videoID}.mp4` (or .MP4/.mkv) under the video root. The prompt is lmms-eval's
default (`videomme` task, no subtitles): its option prompt (which mentions subtitles even
without them, as the harness does), the question, the lettered options, a blank line and
"Answer with the option's letter from the given choices directly."

Extraction modes: `harness` = lmms-eval's current ranked extractor over A–D after removing
`<think>` blocks; `legacy` = the first-capital extractor many published numbers used (reads
"A" out of "According to…"); `strict` = rmsd's conservative reader for teacher samples.
Accuracy is reported overall and by duration, domain, sub_category and Video-MME's own
task_type ("Temporal Reasoning", …); `Item.task_type` is "mcq".

    rmsd eval --recipe recipes/videomme/qwen2_5_vl_3b_rmsd.yaml --model runs/.../student
"""

from __future__ import annotations

from pathlib import Path

from rmsd import scoring as ex
from rmsd.datasets.benchmark import (
    VIDEO_SUFFIXES,
    Benchmark,
    default_video_roots,
    find_media,
    missing_media_error,
    read_rows,
    require_fields,
    strip_option_letters,
)
from rmsd.items import Item

FIELDS = ("video_id", "duration", "domain", "sub_category", "videoID", "question_id", "task_type", "question",
          "options", "answer")
OPTION_PROMPT = ("Select the best answer to the following multiple-choice question based on the video and the "
                 "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
CHOICES = "ABCD"


def build_prompt(question: str, options: list[str]) -> str:
    """lmms-eval's `videomme_doc_to_text` with its default post prompt."""
    return OPTION_PROMPT + "\n" + question + "\n" + "\n".join(options) + "\n" + POST_PROMPT


class VideoMME(Benchmark):
    name = "videomme"
    default_split = "test"
    breakdown_keys = ("duration", "domain", "sub_category", "task_type")
    breakdown_order = {"duration": ("short", "medium", "long")}
    modes = ("harness", "strict", "legacy")

    def load_items(self, path: str | Path, split: str | None = None, video_root: str | Path | None = None,
                   limit: int | None = None, config: str | None = None, on_bad_row: str = "error") -> list[Item]:
        """Items of `split` (default "test"), videos found under `video_root` (default: `data/`
        or `videos/` beside the data, or the data folder itself)."""
        rows, data_dir = read_rows(path, split or self.default_split, config, self.name)
        require_fields(rows, FIELDS, self.name, path)
        rows = rows[:limit] if limit is not None else rows
        roots = [Path(video_root)] if video_root is not None else default_video_roots(data_dir)
        items, missing = [], []
        for row in rows:
            video = find_media(roots, [f"{row['videoID']}{suffix}" for suffix in VIDEO_SUFFIXES])
            if video is None:
                missing.append(f"{row['videoID']}.mp4")
            options = [str(o) for o in row["options"]]
            items.append(Item(item_id=str(row["question_id"]), benchmark=self.name, task_type="mcq",
                              question=row["question"], prompt=build_prompt(row["question"], options),
                              options=strip_option_letters(options), answer=str(row["answer"]).strip(),
                              video=str(video) if video else None, meta={**row, "options": options}))
        if missing:
            raise missing_media_error(self.name, missing, roots)
        return items

    def extract(self, text: str | None, item: Item, mode: str = "harness") -> str | None:
        self.check_mode(mode)
        if mode == "legacy":
            return ex.letter_legacy(text, CHOICES)
        if mode == "harness":
            return ex.letter_harness(ex.strip_reasoning(text or ""), CHOICES)
        return ex.letter_strict(text, item.letters or CHOICES)

    def score(self, pred: str | None, item: Item, mode: str | None = None) -> float:
        return float(pred is not None and item.answer is not None and pred.lower() == item.answer.lower())

    def breakdowns(self, item: Item) -> dict[str, str]:
        return {key: str(item.meta[key]) for key in self.breakdown_keys}
