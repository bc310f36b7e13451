"""Typed recipes (`recipes/<benchmark>/*.yaml`), read by `load_recipe` through the YAML loading they share with
pools (`rmsd.config.loading`).

Every key is read by name into a pydantic model; unknown keys are errors (with the closest
known key), ranges are validated, and every problem is reported with its YAML path
(`rmsd.config.messages`). A recipe may `include:` other YAML files (paths relative to the
including file; the including file wins key by key) and any key can be overridden from the
command line: `--set distill.sft.lr=1e-4`. Anything that looks like a credential, anywhere
in a file or an override, is refused with its path and never shown (`rmsd.credentials`).
The teacher pool's models, and which knobs enter the sample store's record keys
(`NOT_IN_KEY`), are declared in `rmsd.config.pools`; import them from there.

    rmsd validate recipes/synthvid/tiny_rmsd.yaml teachers/synthvid_sim.yaml
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rmsd.config.loading import apply_overrides, load_pool, parse_config, read_yaml, resolve_path
from rmsd.config.pools import PoolConfig, Strict, refuse_credentials
from rmsd.datasets import BENCHMARKS, REGISTRY, benchmark_class, unknown_name
from rmsd.errors import RmsdError

REWARDS = ("discriminator", "format", "correctness")  # the adversarial stage's reward components
KNOWN = ", ".join(BENCHMARKS)  # help texts read the registry's names: a new entry shows up in them


# ----------------------------------------------------------------------------- dataset
def _known_benchmark(name: str) -> str:
    if name not in BENCHMARKS:
        raise ValueError(unknown_name(name))
    return name


class DatasetConfig(Strict):
    """What the teachers are asked about and the student trains on: a training corpus or a benchmark's split,
    read through the registry (`rmsd/datasets/__init__.py`)."""

    benchmark: str = Field(description=f"registry name, a training corpus or a benchmark: {KNOWN}")
    path: str = Field(description="local dataset folder/file, or a hub id read through `datasets`")
    split: str = Field("train", description="split sampled by the teachers and distilled on")
    eval_split: str = Field("test", description=(
        "split `rmsd eval` scores when eval.benchmarks is not set (a benchmark's; a training corpus has none)"))
    config: str | None = Field(None, description="dataset config (Video-MMMU: Perception, Comprehension, Adaptation)")
    video_root: str | None = Field(None, description="folder holding the videos/images; default: beside the data")
    num_frames: int = Field(8, ge=1, le=1024, description=(
        "frames sampled uniformly per video (in the record key of teachers that see frames)"))
    max_side: int | None = Field(None, ge=16, description=(
        "downscale frames so the longer side is at most this (in the record key of teachers that see pixels)"))
    limit: int | None = Field(None, ge=1, description="use only the first N items (debugging)")
    generate: int | None = Field(None, ge=1, description=(
        "a benchmark that makes its own data (synthvid): `rmsd run` writes this many items (seed 0) to path "
        "unless it holds them"))
    on_bad_row: Literal["error", "skip"] = Field("error", description=(
        "a broken corpus row (missing media, unparseable options, unknown type): error = one line naming "
        "file:line and field; skip = leave it out and count it by reason in the run summary and match report"))
    allow_eval_overlap: bool = Field(False, description=(
        "train on items that overlap an evaluation set (same media content, or same question on same-named "
        "media); every output then says so. Training on the split the recipe evaluates is refused regardless"))

    _benchmark = field_validator("benchmark")(_known_benchmark)

    @model_validator(mode="after")
    def _generates(self) -> DatasetConfig:
        if self.generate is not None and not benchmark_class(self.benchmark).generates:
            raise ValueError(f"generate: {self.benchmark} cannot generate its data; download it to dataset.path")
        return self


# ----------------------------------------------------------------------------- sampling
class SamplingConfig(Strict):
    out: str = Field("runs/{name}/samples", description="sample store folder; {name} is the recipe name")
    concurrency: int = Field(64, ge=1, description="HTTP requests in flight over the whole pool")
    # Every record is flushed to the OS as it completes (a kill -9 loses only requests in flight);
    # these two bound what a power loss can lose: the records since the last fsync.
    fsync_every: int = Field(256, ge=1, description="fsync the store after this many records ...")
    fsync_ms: float = Field(500.0, ge=0.0, description="... or this many milliseconds, whichever comes first")


# ----------------------------------------------------------------------------- matching
class MatchingConfig(Strict):
    """How `rmsd match` weighs samples (rmsd.matching.matcher reads this model directly).

    consensus "dawid_skene": a closed-ended sample's weight is the posterior of its answer
    under teacher reliabilities estimated by EM without labels; "majority": the vote share.
    ds_model "full" gives each teacher a confusion matrix over mcq letters (it sees a bias
    toward one letter); numeric and grounding always use one coin per teacher (their labels
    are item-specific). require_format false reads unformatted samples with the benchmark's
    lenient extractor. anchor_fraction: gold items — that share of the labelled items (a
    fixed subset, by a hash of the item id) keeps its truth, and the teachers' error models
    are measured on them alone: label-free EM cannot tell teachers that share mistakes from
    teachers that agree because they are right; a few labelled items can.
    """

    out: str = Field("runs/{name}/matched", description="matched dataset folder")
    use_ground_truth: bool = Field(True, description="closed-ended: weight by correctness where the answer is known")
    consensus: Literal["dawid_skene", "majority"] = Field("dawid_skene", description="label-free weighting")
    ds_model: Literal["one_coin", "full"] = Field("one_coin", description="full: per-teacher letter confusion (bias)")
    min_weight: float = Field(0.5, ge=0.0, le=1.0, description="closed-ended samples below this weight are dropped")
    grounding_iou: float = Field(0.5, gt=0.0, le=1.0, description="spans with tIoU above this count as one answer")
    open_weighting: Literal["uniform", "centrality"] = Field("uniform", description="R-MSD: uniform over valid samples")
    open_outlier_z: float | None = Field(None, gt=0.0, description="drop open samples this many std below mean centrality")
    require_format: bool = Field(True, description="drop samples without <think>…</think><answer>…</answer>")
    anchor_fraction: float = Field(0.0, ge=0.0, le=1.0, description=(
        "share of the items with a known answer used as gold items: Dawid–Skene measures the teachers on them"))


# ----------------------------------------------------------------------------- student
# The text backbone's linear layers LoRA adapts unless told otherwise (every projection of attention and MLP).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRAConfig(Strict):
    """LoRA adapters (peft) instead of full fine-tuning: the student's weights stay frozen, W + (alpha / r) B A trains.

    Every stage trains the same adapters (the adversarial stage continues the SFT stage's), the
    discriminator can be a second adapter on the same frozen base (`distill.adversarial.discriminator:
    lora`) and the VISD EMA teacher is an adapter too; `rmsd export --merge` folds them into the weights.
    """

    r: int = Field(16, ge=1, le=1024, description="adapter rank: trainable parameters (and their AdamW states) grow "
                                                  "linearly with it")
    alpha: float = Field(32.0, gt=0.0, description="the update is scaled by alpha / r (alpha = 2r is the usual choice)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description=(
        "dropout on each adapter's input while training (> 0 keeps a dropped copy of every adapted layer's input "
        "for the backward pass)"))
    target_modules: list[str] = Field(default_factory=lambda: list(LORA_TARGETS), min_length=1, description=(
        "names of the text backbone's linear layers that get an adapter (the last part of the module name)"))
    vision: Literal["frozen", "adapted"] = Field("frozen", description=(
        "frozen: the vision tower and its mergers stay as loaded (and keep no activations for the backward pass); "
        "adapted: every linear layer of the vision tower gets an adapter too"))

    @field_validator("target_modules")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t)]
        if bad:
            raise ValueError(f"target_modules are module names like q_proj, not paths or patterns: {', '.join(bad)}")
        return list(dict.fromkeys(v))


class StudentConfig(Strict):
    path: str | None = Field(None, description="checkpoint folder (from_pretrained); e.g. a Qwen2.5-VL-3B download")
    build: Literal["tiny", "tiny-pretrained", "small", "base"] | None = Field(None, description=(
        "build an offline student of this size from random weights; tiny-pretrained: the tiny student "
        "pre-trained on format drills and captions, shipped with rmsd (rmsd/assets/tiny-base; it reads the "
        "clip, as a real Instruct checkpoint does: start experiments from it)"))
    family: Literal["qwen2_5_vl", "qwen3_vl", "qwen3_5"] | None = Field(None, description=(
        "architecture of a built student (default qwen2_5_vl); only with build: a checkpoint's family "
        "is read from its config.json"))
    build_out: str = Field("runs/{name}/student", description="where a built student is written")
    max_pixels: int | None = Field(None, ge=784, description="pixel budget per frame (real checkpoints)")
    device: str = Field("cpu", description="cpu | cuda | cuda:0 ...")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    system_prompt: str | None = Field(None, description=(
        "system message before every student prompt, in training and evaluation alike (null: none)"))
    gradient_checkpointing: bool = Field(False, description=(
        "recompute activations in the backward pass: less memory for ~30% more compute (every stage, "
        "the discriminator included)"))
    lora: LoRAConfig | None = Field(None, description=(
        "train LoRA adapters (peft) in every stage instead of all weights; null: full fine-tuning"))

    @model_validator(mode="after")
    def _one_source(self) -> StudentConfig:
        if (self.path is None) == (self.build is None):
            raise ValueError("set exactly one of student.path (a checkpoint) or student.build "
                             "(tiny|tiny-pretrained|small|base)")
        if self.build == "tiny-pretrained" and self.family not in (None, "qwen2_5_vl"):
            raise ValueError("student.build tiny-pretrained is a qwen2_5_vl student: leave student.family out "
                             "(or build tiny with that family)")
        if self.path is not None and self.family is not None:
            raise ValueError("student.family applies to student.build only: a checkpoint's family is read from "
                             "its config.json")
        return self

    @property
    def build_family(self) -> str:
        """The family a built student gets (qwen2_5_vl unless `family` says otherwise)."""
        return self.family or "qwen2_5_vl"


# ----------------------------------------------------------------------------- distill
class TrainCommon(Strict):
    enabled: bool = True
    lr: float = Field(1e-3, gt=0.0, lt=1.0)
    max_steps: int = Field(200, ge=1)
    batch_size: int = Field(8, ge=1, description="items per step (all of an item's kept samples come along)")
    grad_accum: int = Field(1, ge=1)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.01, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    seed: int = 0
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(100, ge=1, description="checkpoint every N steps (resume point)")


class SFTStageConfig(TrainCommon):
    samples_per_item: int | None = Field(None, ge=1, description="1 = single-sample baseline (first valid sample)")
    single_from: Literal["valid", "kept"] = Field("valid", description=(
        "with samples_per_item 1, the sample taken: valid = the first format-valid one, whatever matching said "
        "(the paper's single-sample baseline); kept = the first one matching kept (with matching.use_ground_truth, "
        "one correct sample per item: filtering without more samples)"))
    weighting: Literal["matched", "uniform", "matched_conf"] = Field(
        "matched", description="matched: match weights normalised per item (R-MSD); uniform: 1 per kept sample; "
        "matched_conf: match weights over the item's pool samples, normalised over the batch, so an item the pool "
        "barely agrees on weighs less (docs/method.md)")
    max_length: int = Field(512, ge=16, description="tokens per sequence, prompt included")


class CurriculumConfig(Strict):
    enabled: bool = False
    source: Literal["agreement", "pass_rate"] = Field("agreement", description="difficulty = 1 - pool agreement, or pass rate")
    pacing: Literal["linear", "root"] = "linear"
    start_fraction: float = Field(0.3, gt=0.0, le=1.0, description="share of easiest items available at step 0")
    full_at: float = Field(0.7, gt=0.0, le=1.0, description="fraction of training after which all items are used")


class VISDConfig(Strict):
    enabled: bool = False
    judge: Literal["rules", "llm"] = Field("rules", description="rules: synthvid ground truth; llm: a pool teacher")
    judge_teacher: str | None = Field(None, description="pool teacher name used as the LLM judge")
    teacher: Literal["ema", "fixed"] = Field("ema", description="privileged teacher: EMA of the student, or frozen init")
    ema_decay: float = Field(0.99, ge=0.0, le=1.0)
    lam: float = Field(0.5, ge=0.0, le=1.0, description="lambda: 0 = plain GRPO update")
    lam_schedule: Literal["constant", "linear"] = Field("linear", description="linear decays lambda to 0")
    eps: float = Field(0.2, ge=0.0, lt=1.0, description="clip of the token magnitude factor exp(sign(A)*delta)")
    feedback_template: str | None = Field(None, description="teacher prompt with {prompt} {feedback} {reference}")
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)

    @model_validator(mode="after")
    def _judge_named(self) -> VISDConfig:
        if self.enabled and self.judge == "llm" and not self.judge_teacher:
            raise ValueError("judge: llm needs judge_teacher: the name of a teacher in the recipe's pool")
        return self


class TemporalConfig(Strict):
    """Video-R1's temporal contrast (T-GRPO, docs/method.md; the rule: `rmsd.losses.temporal_bonus`).

    Each item is also answered from its frames shuffled; a correct in-order rollout earns
    `bonus` when the in-order group scores at least `ratio` times the shuffled one. Needs the
    correctness reward and items with a ground truth; shuffled rollouts are never trained on.
    """

    enabled: bool = False
    bonus: float = Field(0.3, ge=0.0, le=10.0, description=(
        "alpha: added to the correctness reward of each correct in-order rollout when the rule fires (Video-R1: 0.3)"))
    ratio: float = Field(1.0, gt=0.0, le=10.0, description=(
        "mu: the bonus fires when in-order accuracy >= mu x shuffled accuracy; 1.0 is the paper's rule (its author, "
        "tulerfeng/Video-R1#74), Video-R1's code uses 0.8"))
    shuffled_generations: int | None = Field(None, ge=1, le=64, description=(
        "G': rollouts per item on the shuffled frames (generated and scored only); null: num_generations // 2, "
        "as Video-R1"))


class AdversarialStageConfig(TrainCommon):
    enabled: bool = False
    lr: float = Field(1e-4, gt=0.0, lt=1.0)
    disc_lr: float = Field(1e-4, gt=0.0, lt=1.0, description="AdamW learning rate of the discriminator")
    disc_weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay of the discriminator")
    num_generations: int = Field(8, ge=2, description="G rollouts per item (GAD: 8)")
    temperature: float = Field(0.8, gt=0.0, le=2.0, description="rollout temperature (GAD: 0.8)")
    max_completion_length: int = Field(64, ge=1)
    disc_warmup_steps: int = Field(10, ge=0, description="steps that train the discriminator alone")
    disc_rollouts_per_item: int | None = Field(None, ge=1, description=(
        "rollouts of each item the discriminator trains on per step (the rest are only scored); null: all G"))
    discriminator: Literal["full", "lora"] = Field("full", description=(
        "full: a copy of the student's text backbone (its own weights, gradients and AdamW states); lora: a LoRA "
        "adapter and the head on the student's frozen base, no second backbone (needs student.lora)"))
    beta: float = Field(0.0, ge=0.0, description=(
        "KL to the reference (0 = no reference model); with student.lora the reference is the student's base with "
        "the stage's starting adapters, not a second model"))
    epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="PPO ratio clip")
    reward_weights: dict[Literal[REWARDS], float] = Field(
        default_factory=lambda: {"discriminator": 1.0}, description="reward = sum of weight * component"
    )
    visd: VISDConfig = Field(default_factory=VISDConfig)
    temporal: TemporalConfig = Field(default_factory=TemporalConfig, description=(
        "Video-R1's T-GRPO temporal contrast: a bonus for correct answers from ordered frames over shuffled ones"))

    @model_validator(mode="after")
    def _some_reward(self) -> AdversarialStageConfig:
        if self.enabled and not any(self.reward_weights.values()):
            raise ValueError("reward_weights gives every reward weight 0: the student would learn nothing")
        return self

    @model_validator(mode="after")
    def _temporal_needs_correctness(self) -> AdversarialStageConfig:
        if self.temporal.enabled and not self.reward_weights.get("correctness"):
            raise ValueError("temporal needs the correctness reward (its bonus is paid on correct answers): set "
                             "reward_weights.correctness > 0, on a corpus with ground-truth answers")
        return self

    @property
    def shuffled_generations(self) -> int:
        """G′ of the temporal contrast: the recipe's, or Video-R1's num_generations // 2."""
        return self.temporal.shuffled_generations or max(1, self.num_generations // 2)

    def active_rewards(self) -> dict[str, float]:
        """The reward components with a non-zero weight, in the recipe's order."""
        return {name: float(w) for name, w in self.reward_weights.items() if w != 0.0}


class DistillConfig(Strict):
    out: str = Field("runs/{name}/student_distilled", description="stage checkpoints go to OUT/<stage>")
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    shared_prefix: bool = Field(True, description=(
        "run an item's prompt and video once for all its samples / rollouts (same losses and gradients); "
        "false: one full sequence each, for checking"))
    sft: SFTStageConfig = Field(default_factory=SFTStageConfig)
    adversarial: AdversarialStageConfig = Field(default_factory=AdversarialStageConfig)


# ----------------------------------------------------------------------------- eval
class EvalSetConfig(Strict):
    """One evaluation benchmark of `eval.benchmarks` (its data need not be the training data's)."""

    benchmark: str = Field(description=f"registry name: {KNOWN}")
    path: str = Field(description="local dataset folder/file, or a hub id read through `datasets`")
    split: str | None = Field(None, description="split scored; default the benchmark's own (test, testmini)")
    config: str | None = Field(None, description="dataset config (Video-MMMU track); null: all of them")
    video_root: str | None = Field(None, description="folder holding its videos/images; default: beside the data")
    extraction: Literal["harness", "strict", "legacy", "lenient"] | None = Field(None, description=(
        "answer extraction; default eval.extraction"))
    limit: int | None = Field(None, ge=1, description="score only the first N items (debugging); default eval.limit")
    label: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]+$", description=(
        "name of its row in the table and of its results folder; default the benchmark (and config)"))

    _benchmark = field_validator("benchmark")(_known_benchmark)

    @property
    def name(self) -> str:
        return self.label or (f"{self.benchmark}-{self.config}" if self.config else self.benchmark)


class EvalConfig(Strict):
    out: str = Field("runs/{name}/eval", description="predictions + results JSON")
    limit: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    extraction: Literal["harness", "strict", "legacy", "lenient"] = Field("harness", description=(
        "harness = comparable numbers; legacy: Video-MME's old extractor; lenient: videor1's earlier reading"))
    judge_teacher: str | None = Field(None, description=(
        "pool teacher used as the LLM judge of the benchmarks scored by one (MathVerse)"))
    benchmarks: list[EvalSetConfig] = Field(default_factory=list, description=(
        "held-out benchmarks `rmsd eval` scores, each on its own data; empty: the dataset's eval_split, or none "
        "for a training corpus"))

    def sets(self, dataset: DatasetConfig) -> list[EvalSetConfig]:
        """`benchmarks`, or the one set they default to: the dataset's benchmark on its `eval_split`. A training
        corpus (its registry class's `corpus`) has no evaluation split: without `benchmarks` there is no set, so
        nothing is compared with its items and `rmsd eval` has nothing to score."""
        if self.benchmarks:
            return list(self.benchmarks)
        if dataset.benchmark in REGISTRY and benchmark_class(dataset.benchmark).corpus:
            return []
        return [EvalSetConfig(benchmark=dataset.benchmark, path=dataset.path, split=dataset.eval_split,
                              config=dataset.config, video_root=dataset.video_root)]

    @field_validator("benchmarks")
    @classmethod
    def _distinct(cls, v: list[EvalSetConfig]) -> list[EvalSetConfig]:
        names = [b.name for b in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two evaluation sets are named {twice[0]!r}: give one a label")
        return v


# ----------------------------------------------------------------------------- recipe
class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    dataset: DatasetConfig
    pool: str | None = Field(None, description="teacher pool YAML (relative to the recipe file or the cwd)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    student: StudentConfig
    distill: DistillConfig = Field(default_factory=DistillConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    source: str | None = Field(None, exclude=True, description="(set by the loader) path of the recipe file")

    @model_validator(mode="after")
    def _fill_paths(self) -> Recipe:
        """`{name}` in an output path is the recipe's name: filled in once, so `recipe.sampling.out` is the path."""
        for section, field in (("sampling", "out"), ("matching", "out"), ("distill", "out"), ("eval", "out"),
                               ("student", "build_out")):
            owner = getattr(self, section)
            value = getattr(owner, field)
            if "{name}" in value:
                object.__setattr__(owner, field, value.replace("{name}", self.name))
        return self

    @model_validator(mode="before")
    @classmethod
    def _refuse_credentials(cls, data: Any) -> Any:
        return refuse_credentials(data)

    @model_validator(mode="after")
    def _lora_discriminator_needs_a_lora_student(self) -> Recipe:
        if self.distill.adversarial.discriminator == "lora" and self.student.lora is None:
            raise ValueError("distill.adversarial.discriminator: lora puts D's adapter on the student's frozen base, "
                             "so it needs student.lora (set student.lora: {r: 16}, or discriminator: full)")
        return self

    def path_of(self, template: str) -> Path:
        """A path of the recipe as a Path (any `{name}` left in it filled with the recipe's name)."""
        return Path(template.replace("{name}", self.name))

    def load_pool(self) -> PoolConfig:
        if self.pool is None:
            raise RmsdError(f"recipe {self.name} names no teacher pool: set `pool: teachers/<pool>.yaml`")
        return load_pool(resolve_path(self.pool, self.source))


# ----------------------------------------------------------------------------- loading
def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    data = apply_overrides(read_yaml(path), overrides or [])
    if "teachers" in data:
        raise RmsdError(f"{path}: this is a teacher pool, not a recipe; pass it as `pool:` in a recipe")
    recipe = parse_config(Recipe, path, data, overrides or [])
    recipe.source = str(path)
    return recipe
