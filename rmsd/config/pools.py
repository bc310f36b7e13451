"""Typed configuration of teacher pools (`teachers/*.yaml`) and what recipes and pools share.

The teachers of a pool, their backends' options and a simulated teacher's error behaviour,
each knob declared, documented and range-checked once; `Strict` (no unknown key, no value in
an error message), the credential check every config runs, and which knobs enter the sample
store's record keys (`NOT_IN_KEY`, `output_settings`). Recipes are `rmsd.config.recipe`.

`BACKENDS` is the registry of teacher backends: one table, name → the `Teacher` class that
serves it, written as an import path, so a built-in name is short for what a custom backend
spells out (`backend: mypkg.module:MyTeacher`). Its options are the pool section of the same
name (`openai:`, `hf:`, `simulated:`). Config validation reads the table here; building a
teacher (`rmsd.teachers.build`) imports the class it names, and everything else asks the
class (`Teacher.from_config`, `record_model`, `needs_of`), never the name. Adding a backend
is its module plus one entry here (and its options section, if it takes one).

    rmsd validate teachers/experiment_pool_v2.yaml
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from rmsd.credentials import credential_problems
from rmsd.items import TASK_TYPES

TaskType = Literal["mcq", "numeric", "open", "grounding"]

# name → "module:Class" of its Teacher; the pool section of the same name holds its options
BACKENDS: dict[str, str] = {
    "openai": "rmsd.teachers.openai_api:OpenAITeacher",
    "hf": "rmsd.teachers.hf_local:HFTeacher",
    "simulated": "rmsd.teachers.simulated:SimulatedTeacher",
}
_KEY_LIKE = re.compile(r"^(sk-|sk_|AIza)[A-Za-z0-9_\-]{16,}$")


class Strict(BaseModel):
    # hide_input_in_errors: a ValidationError printed by a Python caller never shows a value (a key)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)


def refuse_credentials(data: Any) -> Any:
    """A pydantic before-validator body (pools and recipes): configs built in Python are scanned like YAML files."""
    problems = credential_problems(data, "config")
    if problems:
        raise ValueError(problems[0].removeprefix("config: "))
    return data


# A knob marked with this cannot change what a teacher answers (limits, retries, where the server is),
# so it stays out of the record key: changing it resumes a store instead of re-sampling it.
NOT_IN_KEY = {"in_key": False}


def output_settings(model: BaseModel) -> dict[str, Any]:
    """The settings of `model` that can change a teacher's answers, for the record key.

    Every field not marked NOT_IN_KEY whose value differs from its default, nested models
    alike. Dropping defaults keeps keys stable when a knob is added: a new knob whose
    default reproduces the old behaviour leaves every existing key as it was. The price of
    that rule: the default of an in-key knob is frozen (changing it changes answers without
    changing keys); change a default only together with `rmsd.sampling.store.KEY_VERSION`.
    """
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        if (field.json_schema_extra or {}).get("in_key") is False:
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            value = output_settings(value)
            if not value:
                continue
        elif value == field.get_default(call_default_factory=True):
            continue
        out[name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    """JSON-ready: models in a list or dict (a teacher's weaknesses) as their field values, not their repr."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- teacher pool
class GenParamsConfig(Strict):
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    seed: int | None = None


class PriceConfig(Strict):
    """USD per million tokens; used only for the cost line of the sampling summary."""

    input_per_1m: float = Field(0.0, ge=0.0)
    output_per_1m: float = Field(0.0, ge=0.0)
    batch_discount: float = Field(0.5, ge=0.0, le=1.0, description=(
        "share of the online price a batch request costs (OpenAI's Batch API: half price)"))


class OpenAIOptions(Strict):
    """Any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, transformers serve, Gemini)."""

    model: str
    base_url: str | list[str] = Field("https://api.openai.com/v1", description="several URLs spread the load",
                                      json_schema_extra=NOT_IN_KEY)
    api_key_env: str = Field("OPENAI_API_KEY", description="NAME of the environment variable holding the key",
                             json_schema_extra=NOT_IN_KEY)
    use_n: Literal["auto", "always", "never"] = Field(
        "auto", description="ask for K samples in one request (video billed once); auto detects servers that ignore n",
        json_schema_extra=NOT_IN_KEY)
    logprobs: bool = Field(False, description=(
        "request token logprobs where the endpoint offers them (not in the key: they describe the text, they do "
        "not change it; a store sampled without them keeps its records)"), json_schema_extra=NOT_IN_KEY)
    top_logprobs: int = Field(0, ge=0, le=20, json_schema_extra=NOT_IN_KEY)
    video_mode: Literal["frames", "video_url"] = Field(
        "frames", description="frames: base64 JPEG image_url parts (works everywhere); video_url: servers that take one"
    )
    image_detail: Literal["low", "high", "auto"] = "low"
    extra_body: dict[str, Any] = Field(default_factory=dict, description="passed through to the server")
    # ---- batch mode (rmsd.sampling.batch): the same requests through the files + batches endpoints
    mode: Literal["online", "batch"] = Field(
        "online", description="online: one HTTP request per call; batch: the Batch API (offline, cheaper, up to "
        "completion_window late); either resumes the other's store", json_schema_extra=NOT_IN_KEY)
    batch_fallback: Literal["batch", "online"] = Field(
        "batch", description="where failed batch lines are asked again: a new batch (up to max_retries rounds) or "
        "online", json_schema_extra=NOT_IN_KEY)
    batch_max_requests: int = Field(50_000, ge=1, description="request lines per batch file (OpenAI: 50,000)",
                                    json_schema_extra=NOT_IN_KEY)
    batch_max_bytes: int = Field(200_000_000, ge=1_000, description=(
        "bytes per batch file (OpenAI: 200 MB); base64 frames make video requests large"),
        json_schema_extra=NOT_IN_KEY)
    batch_window: str = Field("24h", pattern=r"^[1-9][0-9]*h$", description="completion_window of each batch",
                              json_schema_extra=NOT_IN_KEY)
    batch_poll_s: float = Field(30.0, gt=0.0, le=3600.0, description=(
        "first wait between polls of open batches; it grows 1.5x while nothing changes"), json_schema_extra=NOT_IN_KEY)
    batch_poll_max_s: float = Field(300.0, gt=0.0, le=3600.0, description="longest wait between polls",
                                    json_schema_extra=NOT_IN_KEY)

    @model_validator(mode="before")
    @classmethod
    def _no_keys_in_yaml(cls, data: Any) -> Any:
        if isinstance(data, dict) and "api_key" in data:
            raise ValueError("API keys are never read from a YAML file: export the key and name the variable in api_key_env")
        return data

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if _KEY_LIKE.match(v) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
        return v


class HFOptions(Strict):
    """A local transformers VLM (AutoModelForImageTextToText + AutoProcessor)."""

    model_path: str
    device: str = Field("cpu", json_schema_extra=NOT_IN_KEY)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = Field(4, ge=1, description="items per generate call (each with num_return_sequences=K)",
                            json_schema_extra=NOT_IN_KEY)
    max_pixels: int | None = Field(None, ge=784, description="pixel budget per frame given to the processor")


class ConfuseDirections(Strict):
    """Sees objects that move `directions[0]` as moving `directions[1]` (list both orders for a symmetric mix-up)."""

    kind: Literal["confuse_directions"]
    directions: tuple[Literal["left", "right", "up", "down"], Literal["left", "right", "up", "down"]]
    rate: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _two_directions(self) -> ConfuseDirections:
        if self.directions[0] == self.directions[1]:
            raise ValueError(f"confuse_directions needs two different directions, got {list(self.directions)}")
        return self


class Miscount(Strict):
    """Counts `by` off (count and max-visible questions) when the true number is above `above`."""

    kind: Literal["miscount"]
    above: int = Field(ge=0)
    by: int = Field(-1, ge=-3, le=3)
    rate: float = Field(ge=0.0, le=1.0)

    @field_validator("by")
    @classmethod
    def _nonzero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("miscount.by must not be 0 (that is no mistake)")
        return v


class MissShortObjects(Strict):
    """Does not see objects visible for at most `max_seconds`: they vanish from its counts, orders and captions."""

    kind: Literal["miss_short_objects"]
    max_seconds: float = Field(gt=0.0)
    rate: float = Field(ge=0.0, le=1.0)


class EarlySpan(Strict):
    """Places every appearance and disappearance `shift_s` seconds too early (clamped at 0)."""

    kind: Literal["early_span"]
    shift_s: float = Field(gt=0.0, le=10.0)
    rate: float = Field(ge=0.0, le=1.0)


class PreferLetter(Strict):
    """Answers `letter` whatever it saw (when the question offers it): a position bias."""

    kind: Literal["prefer_letter"]
    letter: str = Field(pattern=r"^[A-Z]$")
    rate: float = Field(ge=0.0, le=1.0)


Weakness = Annotated[ConfuseDirections | Miscount | MissShortObjects | EarlySpan | PreferLetter,
                     Field(discriminator="kind")]
# Fields added after record keys existed: at their defaults they are left out of model_dump
# (and so out of pool.identity()), so the stores of older pools keep their keys.
_LATER_FIELDS = {"question_difficulty": 0.0, "competence_spread": 0.0, "difficulty_seed": 0, "weaknesses": []}


class SimulatedOptions(Strict):
    """The synthvid noisy oracle (a SIMULATOR: it reads the ground truth).

    A sample is right with the teacher's competence on its question. With both spreads at
    0 that is `accuracy` (minus the tier's penalty) for every question and each sample's
    mistake is drawn anew: independent coin flips. With a spread, competence is
    sigmoid(b - question_difficulty * d + competence_spread * u): d ~ N(0, 1) per question,
    shared by every teacher with the same difficulty_seed; u ~ N(0, 1) per teacher and
    question (shared by teachers with the same error_seed); b is set so the mean over
    questions is still `accuracy`. The teacher is then reliably right on some questions
    and reliably wrong on others, and a wrong sample gives the question's one wrong answer.
    `weaknesses` act before that, on what the teacher perceives of the scene: each fires on
    a `rate` share of the questions (fixed per teacher and question) and changes the answer
    the teacher believes in whenever the distortion matters to the question.
    """

    accuracy: dict[TaskType, float] = Field(default_factory=lambda: {t: 0.8 for t in TASK_TYPES})
    difficulty_penalty: dict[Literal["easy", "medium", "hard"], float] = Field(default_factory=dict)
    bias_letter: str | None = Field(None, pattern=r"^[A-Z]$")
    bias_strength: float = Field(0.0, ge=0.0, le=1.0)
    format_error_rate: float = Field(0.0, ge=0.0, le=1.0)
    inconsistency_rate: float = Field(0.0, ge=0.0, le=1.0)
    verbosity: Literal["short", "long"] = "short"
    seed: int = Field(0, description="sample i of an item is a fixed function of (seed, name, item, i)")
    error_seed: int | None = Field(None, description="teachers sharing an error_seed make the same mistakes")
    question_difficulty: float = Field(0.0, ge=0.0, le=10.0, description=(
        "spread (logit scale) of the latent per-question difficulty shared by all teachers"))
    competence_spread: float = Field(0.0, ge=0.0, le=10.0, description=(
        "spread (logit scale) of this teacher's own per-question competence around its accuracy"))
    difficulty_seed: int = Field(0, description="teachers with the same difficulty_seed share question difficulties")
    weaknesses: list[Weakness] = Field(default_factory=list, description=(
        "systematic, scene-dependent mistakes: confuse_directions, miscount, miss_short_objects, early_span, "
        "prefer_letter"))

    @field_validator("accuracy")
    @classmethod
    def _probabilities(cls, v: dict[str, float]) -> dict[str, float]:
        for task, p in v.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"accuracy of {task} must be in [0, 1], got {p}")
        return v

    @model_serializer(mode="wrap")
    def _stable_keys(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}


class TeacherConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", description="id in records and keys; changing it re-samples",
                      json_schema_extra=NOT_IN_KEY)  # in the key on its own, not as a setting
    backend: str = Field(description=f"{' | '.join(BACKENDS)} | package.module:TeacherClass")
    samples: int = Field(4, ge=1, le=256, description="K: samples per item from this teacher",
                         json_schema_extra=NOT_IN_KEY)  # raising K adds sample indices; the others stay
    task_types: list[TaskType] = Field(default_factory=lambda: list(TASK_TYPES), description="task-adaptive pool",
                                       json_schema_extra=NOT_IN_KEY)
    params: GenParamsConfig = Field(default_factory=GenParamsConfig)
    concurrency: int = Field(8, ge=1, description="HTTP requests in flight for this teacher",
                             json_schema_extra=NOT_IN_KEY)
    requests_per_minute: float | None = Field(None, gt=0, description="HTTP requests (retries included) in any minute",
                                              json_schema_extra=NOT_IN_KEY)
    tokens_per_minute: float | None = Field(None, gt=0, description="tokens (estimated, then billed) in any minute",
                                            json_schema_extra=NOT_IN_KEY)
    max_retries: int = Field(5, ge=0, json_schema_extra=NOT_IN_KEY)
    timeout_s: float = Field(120.0, gt=0, description="per HTTP request", json_schema_extra=NOT_IN_KEY)
    price: PriceConfig | None = Field(None, json_schema_extra=NOT_IN_KEY)
    openai: OpenAIOptions | None = None
    hf: HFOptions | None = None
    simulated: SimulatedOptions | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of a custom Teacher class")

    @model_validator(mode="after")
    def _backend_section(self) -> TeacherConfig:
        if self.backend not in BACKENDS and ":" not in self.backend:
            raise ValueError(f"backend {self.backend!r} is unknown: use {', '.join(BACKENDS)} or package.module:Class")
        if self.backend in BACKENDS and getattr(self, self.backend) is None:
            raise ValueError(f"backend {self.backend} needs a `{self.backend}:` section")
        for other in (b for b in BACKENDS if b != self.backend):
            if getattr(self, other) is not None:
                raise ValueError(f"section `{other}:` does not apply to backend {self.backend}")
        return self


class PoolConfig(Strict):
    name: str
    description: str = ""
    system_prompt: str | None = Field(None, description="system message sent to every teacher")
    prompt_template: str = Field("{prompt}", description="user text; {prompt} is the benchmark's prompt")
    teachers: list[TeacherConfig] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _refuse_credentials(cls, data: Any) -> Any:
        return refuse_credentials(data)

    @model_validator(mode="after")
    def _unique_names(self) -> PoolConfig:
        names = [t.name for t in self.teachers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"teacher names must be unique; repeated: {', '.join(dupes)}")
        if "{prompt}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {prompt}")
        return self


