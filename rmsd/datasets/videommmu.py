"""Video-MMMU: lecture videos in 30 subjects, three tracks (configs) of 300 questions each:
Perception, Comprehension, Adaptation.

Rows keep the public schema (`lmms-lab/VideoMMMU`, one parquet per config): `id, question,
options, answer, question_type` ("multiple-choice", or an open question). The video is
`{id}.mp4` in a subject folder; the subject is the text between the first and last `_` of
`id` ("validation_Art_Theory_3" → "Art_Theory"). Folders are looked up as the harness lays
them out (its discipline groups: Art/, Science/, Humanities/, Engineering/, Medicine/,
Business/), then by subject name, then flat. Ids repeat across tracks (one video, three
questions), so `Item.item_id` is "<config>/<id>".

Prompts are lmms-eval's (`videommmu` tasks): Perception and Comprehension append "Please
ignore the Quiz question…" to the question and options; Adaptation prefixes "You should
watch and learn…" with a multiple-choice or open-ended instruction. Options get "A. "
prefixes unless every option already has its letter.

Harness scoring is MMMU's: multiple choice by `choice_mmmu` (brackets, "A " / "A.", option
text, else a random letter — random upstream, seeded by the item id here so a run is
reproducible); open answers by the shortest tail after indicator words, numbers rounded to
two decimals, substring match. Accuracy per subject, discipline and track; the overall
number is instance-weighted, as the harness's "Overall". Strict mode returns None for an
unreadable choice. Newer upstream revisions parse Adaptation answers with an LLM (Gemini)
instead; this module keeps the rule parser, which needs no API.

    rmsd eval --recipe recipes/videommmu/qwen2_5_vl_3b_rmsd.yaml --model runs/.../student
"""

from __future__ import annotations

from pathlib import Path

from rmsd import scoring as ex
from rmsd.datasets.benchmark import (
    Benchmark,
    default_video_roots,
    find_media,
    missing_media_error,
    read_rows,
    require_fields,
    strip_option_letters,
)
from rmsd.errors import RmsdError
from rmsd.items import Item

CONFIGS = ("Perception", "Comprehension", "Adaptation")
FIELDS = ("id", "question", "options", "answer", "question_type")
PRE_PROMPT = "You should watch and learn the video content. Then apply what you learned to "
MCQ_PROMPT = "answer the following multi-choice question. The image for this question is at the end of the video.\n"
OPEN_PROMPT = "answer the following open-ended question. The image for this question is at the end of the video.\n"
QUIZ_POST_PROMPT = "\nPlease ignore the Quiz question in last frame of the video."
# lmms-eval's answer-tail indicators for Video-MMMU: MMMU's eight plus these
INDICATORS = ex.MMMU_INDICATORS + (
    "are ", "in total ", "total ", "identify ", "recognize ", "calculated as ", "counted as ", "measured as ",
    "observed as ", "concluded as ", "found to be ", "equals ", "determined to be ", "number of ", "value is ",
    "adds up to ", "have ", "has ")
DISCIPLINES = {
    "Art and Design": ("Art", ("Art", "Art_Theory", "Design", "Music")),
    "Business": ("Business", ("Accounting", "Economics", "Finance", "Manage", "Marketing")),
    "Science": ("Science", ("Biology", "Chemistry", "Geography", "Math", "Physics")),
    "Health and Medicine": ("Medicine", ("Basic_Medical_Science", "Clinical_Medicine",
                                         "Diagnostics_and_Laboratory_Medicine", "Pharmacy", "Public_Health")),
    "Humanities and Social Science": ("Humanities", ("History", "Literature", "Sociology", "Psychology")),
    "Tech and Engineering": ("Engineering", ("Agriculture", "Architecture_and_Engineering", "Computer_Science",
                                             "Electronics", "Energy_and_Power", "Materials", "Mechanical_Engineering")),
}  # discipline -> (video folder in the harness layout, subjects)


def subject_of(item_id: str) -> str:
    return "_".join(item_id.split("_")[1:-1])


def discipline_of(subject: str) -> tuple[str, str | None]:
    """(discipline name, harness video folder) of a subject; ("Other", None) when unknown."""
    for discipline, (folder, subjects) in DISCIPLINES.items():
        if subject in subjects:
            return discipline, folder
    return "Other", None


def format_options(options: list[str]) -> str:
    """Options one per line as "A. text", unless every option already starts with its letter."""
    letters = [chr(ord("A") + i) for i in range(len(options))]
    if all(o.startswith(f"{x}.") for o, x in zip(options, letters, strict=True)):
        return "\n".join(options)
    return "\n".join(f"{x}. {o}" for x, o in zip(letters, options, strict=True))


def build_prompt(config: str, question: str, options: list[str], question_type: str) -> str:
    """lmms-eval's `doc_to_text` of the track (perception/comprehension, or adaptation)."""
    if config != "Adaptation":
        return f"{question}\n{format_options(options)}{QUIZ_POST_PROMPT}"
    if question_type == "multiple-choice":
        return f"{PRE_PROMPT}{MCQ_PROMPT}{question}\n{format_options(options)}"
    return f"{PRE_PROMPT}{OPEN_PROMPT}{question}"


def _canonical_config(config: str) -> str:
    for name in CONFIGS:
        if config.lower() == name.lower():
            return name
    raise RmsdError(f"videommmu: unknown config {config!r}; use one of {', '.join(CONFIGS)} (or none for all three)")


class VideoMMMU(Benchmark):
    name = "videommmu"
    default_split = "test"
    breakdown_keys = ("config", "discipline", "subject", "question_type")
    breakdown_order = {"config": CONFIGS, "discipline": tuple(DISCIPLINES)}

    def load_items(self, path: str | Path, split: str | None = None, video_root: str | Path | None = None,
                   limit: int | None = None, config: str | None = None, on_bad_row: str = "error") -> list[Item]:
        """Items of one track (`config`) or, with config None, of every track found under `path`."""
        split = split or self.default_split
        if config is None and Path(path).expanduser().is_file():
            config = Path(path).expanduser().parent.name  # e.g. Perception/test-00000-of-00001.parquet
            if config.lower() not in (c.lower() for c in CONFIGS):
                raise RmsdError(f"videommmu: cannot tell the track of {path}: pass config (one of {', '.join(CONFIGS)})")
        configs = [_canonical_config(config)] if config else list(CONFIGS)
        items: list[Item] = []
        errors: list[str] = []
        for cfg in configs:
            try:
                rows, data_dir = read_rows(path, split, cfg, self.name)
            except RmsdError as e:
                if config:
                    raise
                errors.append(str(e))  # with no config asked for, a track that is not there is skipped
                continue
            require_fields(rows, FIELDS, self.name, f"{path} ({cfg})")
            items += self._items(rows, cfg, video_root, data_dir)
        if not items:
            raise RmsdError(f"videommmu: no track ({', '.join(CONFIGS)}) with split {split!r} found under {path} "
                            f"(first error: {errors[0] if errors else 'no rows'})")
        return items[:limit] if limit is not None else items

    def _items(self, rows: list[dict], config: str, video_root: str | Path | None, data_dir: Path | None) -> list[Item]:
        roots = [Path(video_root)] if video_root is not None else default_video_roots(data_dir)
        items, missing = [], []
        for row in rows:
            vid, qtype = str(row["id"]), str(row["question_type"])
            subject = subject_of(vid)
            discipline, folder = discipline_of(subject)
            options = [str(o) for o in (row.get("options") or [])]
            names = [f"{d}/{vid}.mp4" for d in (folder, subject) if d] + [f"{vid}.mp4"]
            video = find_media(roots, names)
            if video is None:
                missing.append(names[0])
            answer = str(row["answer"]).strip()
            task = "mcq" if qtype == "multiple-choice" else "numeric" if _is_number(answer) else "open"
            items.append(Item(item_id=f"{config}/{vid}", benchmark=self.name, task_type=task, question=row["question"],
                              prompt=build_prompt(config, row["question"], options, qtype),
                              options=strip_option_letters(options) if task == "mcq" else [], answer=answer,
                              video=str(video) if video else None,
                              meta={**row, "options": options, "config": config, "subject": subject,
                                    "discipline": discipline}))
        if missing:
            raise missing_media_error(self.name, missing, roots)
        return items

    def extract(self, text: str | None, item: Item, mode: str = "harness") -> str | None:
        """A letter (multiple choice), or the open answer's key tails joined by newlines (what
        `score` matches; a tail never holds a newline, so the join is lossless)."""
        self.check_mode(mode)
        if item.task_type == "mcq":
            if mode == "strict":
                return ex.letter_strict(text, item.letters)
            return ex.choice_mmmu(ex.strip_reasoning(text or ""), item.meta["options"], seed=item.item_id) or None
        if mode == "strict" and item.task_type == "numeric":
            return ex.number_strict(text)  # one canonical number, so teachers' answers vote by value
        region = ex.answer_region(text) if mode == "strict" else ex.strip_reasoning(text or "")
        if not region:
            return None
        return "\n".join(ex.open_key_responses(region, INDICATORS))

    def score(self, pred: str | None, item: Item, mode: str | None = None) -> float:
        if pred is None or item.answer is None:
            return 0.0
        if item.task_type == "mcq":
            return float(pred == item.answer)
        return float(ex.open_mmmu_correct(item.answer, pred.split("\n")))

    def breakdowns(self, item: Item) -> dict[str, str]:
        return {"config": item.meta["config"], "discipline": item.meta["discipline"], "subject": item.meta["subject"],
                "question_type": str(item.meta["question_type"])}


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True
