"""`rmsd plan`: what each training stage of a recipe holds in GPU memory, before any weight is loaded.

Per stage it lists the models held (student; for the adversarial stage the discriminator, a
reference model when beta > 0 and the VISD EMA teacher when visd is enabled), their
parameter and trainable counts and the bytes of weights, gradients and AdamW states at the
recipe's dtype, an activation estimate from the recipe's sequence lengths, the total, whether
it fits the GPU, and when it does not, the first knob to turn (LoRA, gradient checkpointing,
fewer frames, ZeRO) with what it would bring the stage to.

How it differs from a generic calculator: the counts come from the student's own config
built on the meta device (`rmsd.models.memory`), the sequence lengths from the recipe (frames
x visual tokens per frame, the pool's reply budget, `max_length`, `num_generations`), and the
phases are the ones rmsd's trainers run: the peak is all weights and optimizer states plus the
largest of {student step: its gradients + activations + the pixels on the device;
discriminator step: its gradients + activations on text-only rows whose prompt is read once
per item; generation: the KV cache; optimizer step: the gradients + AdamW's temporary}.
Weights, gradients and optimizer states are exact; activations are an estimate (see
`rmsd.models.memory`; benchmarks/results/plan.md measures both on the CPU).

The memory knobs are read as the stages run them: student.lora (`rmsd.models.lora`: adapters
on the text backbone's `target_modules`, and with `vision: adapted` on the vision tower's linears;
the frozen base keeps no gradients or AdamW states, a frozen vision tower no activations, the
frozen LM head no fp32 weight gradient, and dropout > 0 a dropped copy of each adapted layer's
input), distill.adversarial.discriminator ("full": a copy of the text backbone; "lora": an adapter
and head on the student's frozen base), the reference (beta > 0: a second model in full
fine-tuning; with LoRA nothing for fresh adapters, a frozen adapter copy when the adversarial stage
continues the SFT stage's adapters), the VISD EMA teacher (the whole student, or its adapter),
student.gradient_checkpointing (the student and the discriminator alike) and
distill.shared_prefix (an item's prompt runs once for its K samples / G rollouts, which
hold gathered copies of its keys and values instead).

    rmsd plan --recipe recipes/videomme/qwen3_vl_4b_rmsd.yaml --config recipes/models/qwen3_vl_4b_instruct
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmsd.config import (
    AdversarialStageConfig,
    DatasetConfig,
    DistillConfig,
    LoRAConfig,
    Recipe,
    SFTStageConfig,
    StudentConfig,
)
from rmsd.datasets import benchmark_class
from rmsd.errors import RmsdError
from rmsd.models.memory import (
    DTYPE_BYTES,
    Adapters,
    Architecture,
    Step,
    StepBytes,
    architecture,
    lora_parameters,
    step_bytes,
)

GIB = 1024**3
USABLE = 0.9  # of the GPU's memory: the CUDA context, the allocator's fragmentation and NCCL buffers take the rest
DEFAULT_SIDE = 448  # frame side assumed when dataset.max_side is unset (Qwen's usual video resolution)


@dataclass(frozen=True)
class Settings:
    """Every input of the estimate: the recipe's own sections, read under their recipe names, and what
    no recipe says. A knob is a recipe key (`with_keys(s, {"student.gradient_checkpointing": True})`),
    so what the plan suggests is what a user sets.
    """

    dataset: DatasetConfig  # num_frames (benchmark: image or video)
    student: StudentConfig  # dtype, max_pixels, gradient_checkpointing, lora
    distill: DistillConfig  # sft, adversarial, shared_prefix
    side: int  # frames taken as side x side (the upper bound for a frame whose longer side is `side`)
    prompt_tokens: int  # text of the prompt (question, options, template)
    response_tokens: int  # a teacher reply (SFT targets)
    pool_samples: int  # samples per item over the pool: SFT's sequences per item when samples_per_item is null
    adapter_student: bool = False  # student.path is an adapter folder: its adapters continue (a frozen copy as reference)
    gpus: int = 1
    zero: int = 0  # DeepSpeed ZeRO stage over `gpus` (0: plain DDP replicas)

    @property
    def sft(self) -> SFTStageConfig:
        return self.distill.sft

    @property
    def adversarial(self) -> AdversarialStageConfig:
        return self.distill.adversarial

    @property
    def lora(self) -> LoRAConfig | None:
        return self.student.lora

    @property
    def frames(self) -> int:
        """Frames per clip the student sees: one for an image benchmark (padded to one temporal patch), else
        dataset.num_frames (a corpus mixing images and videos is sized by its videos)."""
        return 1 if benchmark_class(self.dataset.benchmark).media == "image" else self.dataset.num_frames

    @property
    def samples_per_item(self) -> int:
        """SFT sequences per item: distill.sft.samples_per_item, null meaning every sample of the pool."""
        return self.sft.samples_per_item or self.pool_samples

    @property
    def disc_rollouts_per_item(self) -> int:
        """Rollouts per item D trains on: distill.adversarial.disc_rollouts_per_item, null meaning all G."""
        return self.adversarial.disc_rollouts_per_item or self.adversarial.num_generations

    @property
    def reference_adapter(self) -> bool:
        """The adversarial stage continues trained adapters (the SFT stage's or student.path's): TRL's frozen copy."""
        return self.lora is not None and (self.sft.enabled or self.adapter_student)


def with_keys(s: Settings, keys: dict[str, Any]) -> Settings:
    """`s` with recipe keys set (`{"distill.sft.batch_size": 1}`); a key without a dot is a Settings field."""
    for dotted, value in keys.items():
        head, *rest = dotted.split(".")
        s = dataclasses.replace(s, **{head: _set(getattr(s, head), rest, value) if rest else value})
    return s


def _set(model: Any, path: list[str], value: Any) -> Any:
    """A copy of the pydantic `model` with the key at `path` set to `value`, validated as the recipe would be."""
    inner = _set(getattr(model, path[0]), path[1:], value) if len(path) > 1 else value
    return type(model).model_validate({**dict(model), path[0]: inner})


@dataclass(frozen=True)
class ModelHeld:
    role: str  # student | discriminator | reference | ema_teacher
    params: int
    trainable: int
    weight_bytes: int
    grad_bytes: int
    optimizer_bytes: int


@dataclass(frozen=True)
class StagePlan:
    stage: str  # sft | adversarial
    models: tuple[ModelHeld, ...]
    rows: int  # sequences in one forward of the student
    tokens_per_row: int
    visual_tokens: int  # per clip, what the LM sees
    activation_bytes: int  # of the peak phase: what the forward keeps, the KV cache, the pixels on the device
    peak_phase: str
    total_bytes: int
    usable_bytes: int
    knob: str | None  # the first knob to turn when it does not fit

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.usable_bytes


@dataclass(frozen=True)
class Plan:
    recipe: str
    family: str
    params: int
    settings: Settings
    gpu_bytes: int
    stages: tuple[StagePlan, ...]


# ----------------------------------------------------------------------------- inputs
def _pool_sizes(recipe: Recipe) -> tuple[int, int]:
    """(samples per item over the pool, the largest reply budget).

    Without a pool that loads: one teacher at the pool's defaults (`TeacherConfig.samples`) and
    the student's own reply budget (distill.adversarial.max_completion_length).
    """
    from rmsd.config.pools import TeacherConfig

    try:
        pool = recipe.load_pool()
    except RmsdError:
        return TeacherConfig.model_fields["samples"].default, recipe.distill.adversarial.max_completion_length
    return sum(t.samples for t in pool.teachers), max(t.params.max_tokens for t in pool.teachers)


def settings_from_recipe(recipe: Recipe, prompt_tokens: int = 128, side: int | None = None) -> Settings:
    """The estimate's inputs from a recipe: its sections as they are, and the sizes its pool sets."""
    from rmsd.models.lora import is_adapter_folder

    samples, reply = _pool_sizes(recipe)
    path = recipe.student.path
    return Settings(dataset=recipe.dataset, student=recipe.student, distill=recipe.distill,
                    side=side or recipe.dataset.max_side or DEFAULT_SIDE, prompt_tokens=prompt_tokens,
                    response_tokens=reply, pool_samples=samples,
                    adapter_student=path is not None and is_adapter_folder(path))


def _frame_hw(s: Settings) -> tuple[int, int]:
    h = w = s.side
    max_pixels = s.student.max_pixels
    if max_pixels is not None and h * w > max_pixels:
        h = w = int(max_pixels**0.5)
    return h, w


# ----------------------------------------------------------------------------- models
def _held(role: str, params: int, trainable: int, s: Settings, sharded: bool) -> ModelHeld:
    """Bytes of one model: weights at the dtype, gradients and AdamW's two states for its trainable part.

    Under ZeRO over N GPUs, stage >= 1 splits optimizer states, >= 2 gradients, 3 weights;
    `sharded` is False for what accelerate does not wrap (the discriminator).
    """
    b = DTYPE_BYTES[s.student.dtype]
    n = s.gpus if sharded and s.zero else 1
    split = {k: (n if s.zero >= stage else 1) for k, stage in (("opt", 1), ("grad", 2), ("weight", 3))}
    return ModelHeld(role, params, trainable, -(-params * b // split["weight"]),
                     -(-trainable * b // split["grad"]), -(-2 * trainable * b // split["opt"]))


def models_held(stage: str, arch: Architecture, s: Settings) -> tuple[ModelHeld, ...]:
    """The models a stage keeps on the GPU, with their trainable parts."""
    lora = _adapters(arch, s.lora, vision=True)
    student = _held("student", arch.params + lora, lora or arch.params, s, sharded=True)
    if stage == "sft":
        return (student,)
    adv, head = s.adversarial, arch.hidden + 1
    if adv.discriminator == "lora":  # adapter + head on the student's frozen base: no second backbone
        d_lora = _adapters(arch, s.lora or LoRAConfig(), vision=False)
        held = [student, _held("discriminator", d_lora + head, d_lora + head, s, sharded=False)]
    else:
        held = [student, _held("discriminator", arch.text_params + head, arch.text_params + head, s, sharded=False)]
    if adv.beta > 0:  # with fresh LoRA adapters the reference is the base with adapters off: nothing extra
        held.append(_held("reference", (lora if s.reference_adapter else 0) if lora else arch.params, 0, s,
                          sharded=True))
    if adv.visd.enabled:  # the EMA teacher copies what trains: the adapters with LoRA, else the whole student
        held.append(_held("ema_teacher", lora or arch.params, 0, s, sharded=False))
    return tuple(held)


def _adapters(arch: Architecture, lora: LoRAConfig | None, vision: bool) -> int:
    """Parameters of `lora`'s adapters (0 without LoRA); `vision`: with the vision tower's when lora.vision adapts it."""
    if lora is None:
        return 0
    return lora_parameters(arch, lora.r, tuple(lora.target_modules), vision=vision and lora.vision == "adapted")


# ----------------------------------------------------------------------------- phases
def _step(stage: str, s: Settings) -> Step:
    """One step of `stage` as its trainer runs it, in the sizes `rmsd.models.memory.step_bytes` reads."""
    h, w = _frame_hw(s)
    lora = s.lora
    common = {"frames": s.frames, "height": h, "width": w, "prompt_text": s.prompt_tokens,
              "dtype_bytes": DTYPE_BYTES[s.student.dtype], "checkpointing": s.student.gradient_checkpointing,
              "shared_prefix": s.distill.shared_prefix,
              "adapters": None if lora is None else Adapters(lora.r, tuple(lora.target_modules),
                                                             lora.vision == "adapted", lora.dropout > 0)}
    if stage == "sft":  # the collated batch carries each item's pixels once, and the forward concatenates them again
        items = s.sft.batch_size
        return Step(items=items, rows=items * s.samples_per_item, reply=s.response_tokens,
                    max_length=s.sft.max_length, pixel_copies=2, **common)
    adv = s.adversarial  # D reads text only: each item's prompt once, then its teacher sample and trained rollouts
    return Step(items=adv.batch_size, rows=adv.batch_size * adv.num_generations, reply=adv.max_completion_length,
                disc_text=s.prompt_tokens + (1 + s.disc_rollouts_per_item) * adv.max_completion_length,
                generates=True, shuffled=adv.shuffled_generations if adv.temporal.enabled else 0, **common)


def _phases(stage: str, arch: Architecture, s: Settings,
            models: tuple[ModelHeld, ...]) -> tuple[dict[str, int], StepBytes]:
    """Bytes beyond weights and optimizer states in each phase of a step (gradients + what the forward keeps),
    and the step's memory by holder."""
    m = step_bytes(arch, _step(stage, s))
    grads = {held.role: held.grad_bytes for held in models}
    phases = {"student step": grads["student"] + m.student + m.pixels}
    if stage == "adversarial":  # one vision dict per item, shared by its G rollouts, also while generating
        phases.update({"discriminator step": grads["discriminator"] + m.discriminator,
                       "generation": m.generation + m.pixels})
    phases["optimizer step"] = _adamw_step(models[0])
    return phases, m


def _adamw_step(model: ModelHeld) -> int:
    """torch's foreach AdamW step: the gradients plus one temporary of their size (sqrt of exp_avg_sq)."""
    return 2 * model.grad_bytes


def stage_plan(stage: str, arch: Architecture, s: Settings, usable: int, suggest: bool = True) -> StagePlan:
    models = models_held(stage, arch, s)
    phases, held = _phases(stage, arch, s, models)
    peak = max(phases, key=phases.get)
    static = sum(m.weight_bytes + m.optimizer_bytes for m in models)
    vis = held.visual_tokens
    adv = s.adversarial
    rows = s.sft.batch_size * s.samples_per_item if stage == "sft" else adv.batch_size * adv.num_generations
    seq = (min(s.sft.max_length, vis + s.prompt_tokens + s.response_tokens) if stage == "sft"
           else vis + s.prompt_tokens + adv.max_completion_length)
    total = static + phases[peak]
    act = phases[peak] - (models[0].grad_bytes if peak in ("student step", "optimizer step") else
                          models[1].grad_bytes if peak == "discriminator step" else 0)  # activations + inputs
    knob = first_knob(stage, arch, s, usable) if suggest and total > usable else None
    return StagePlan(stage, models, rows, seq, vis, act, peak, total, usable, knob)


# ----------------------------------------------------------------------------- knobs
def _knobs(stage: str, arch: Architecture, s: Settings) -> list[tuple[str, dict[str, Any]]]:
    """Candidate changes as recipe keys, most effective kind first: the larger of (states, activations) decides
    LoRA vs checkpointing. LoRA is the recipe's default adapter (`LoRAConfig()`)."""
    models = models_held(stage, arch, s)
    phases = _phases(stage, arch, s, models)[0]
    states = sum(m.grad_bytes + m.optimizer_bytes for m in models)
    with_lora = {} if s.lora else {"student.lora": LoRAConfig()}
    lora = [] if s.lora else [(f"student.lora: {{r: {LoRAConfig().r}}} (LoRA adapters)", with_lora)]
    gc = [] if s.student.gradient_checkpointing else [("student.gradient_checkpointing: true",
                                                       {"student.gradient_checkpointing": True})]
    first = gc + lora if max(phases.values()) > states else lora + gc
    if stage == "adversarial" and s.adversarial.discriminator == "full":  # D's adapter sits on a LoRA student's base
        first.append((("" if s.lora else "student.lora + ") + "distill.adversarial.discriminator: lora "
                      "(no second backbone)", {**with_lora, "distill.adversarial.discriminator": "lora"}))
    items = getattr(s.distill, stage).batch_size
    smaller = [] if items == 1 else [(f"distill.{stage}.batch_size: 1 (grad_accum x{items} keeps the items per step)",
                                      {f"distill.{stage}.batch_size": 1})]
    fewer = [(f"dataset.num_frames: {n}", {"dataset.num_frames": n}) for n in (s.frames // 2, s.frames // 4) if n >= 2]
    zero = [(f"ZeRO-3 over {g} GPUs (recipes/accelerate/zero3.yaml)", {"zero": 3, "gpus": g})
            for g in sorted({max(s.gpus, 2), 4, 8}) if g >= s.gpus and (g, 3) != (s.gpus, s.zero)]
    return first + smaller + fewer + zero


def first_knob(stage: str, arch: Architecture, s: Settings, usable: int) -> str:
    """The first change (tried one at a time, then added up in order) that makes the stage fit."""
    tried, together = [], {}
    for label, keys in _knobs(stage, arch, s):
        alone = stage_plan(stage, arch, with_keys(s, keys), usable, suggest=False)
        if alone.fits:
            return f"{label} -> {_size(alone.total_bytes)}" + (f" (after {', '.join(tried)})" if tried else "")
        together.update(keys)
        both = stage_plan(stage, arch, with_keys(s, together), usable, suggest=False)
        tried.append(label.split(" (")[0])
        if both.fits:
            return f"{' + '.join(tried)} -> {_size(both.total_bytes)}"
    total = stage_plan(stage, arch, with_keys(s, together), usable, suggest=False).total_bytes
    return (f"none is enough, alone or together ({_size(total)} with all): more GPUs, a smaller student or "
            "shorter sequences")


# ----------------------------------------------------------------------------- the plan
def plan_recipe(recipe: Recipe, gpu_memory_gib: float = 80.0, config: str | Path | None = None,
                prompt_tokens: int = 128, side: int | None = None, gpus: int = 1, zero: int = 0) -> Plan:
    """The plan of every enabled stage; `config` is a folder with the student's config.json (default: the recipe's)."""
    if zero not in (0, 2, 3) or gpus < 1 or gpu_memory_gib <= 0:
        raise RmsdError("plan: --zero must be 0, 2 or 3, --gpus >= 1 and --gpu-memory > 0")
    arch = architecture(config if config is not None else _student_folder(recipe))
    s = dataclasses.replace(settings_from_recipe(recipe, prompt_tokens, side), gpus=gpus, zero=zero)
    usable = int(gpu_memory_gib * GIB * USABLE)
    stages = [stage_plan("sft", arch, s, usable)] if recipe.distill.sft.enabled else []
    if s.adversarial.enabled:
        stages.append(stage_plan("adversarial", arch, s, usable))
    if not stages:
        raise RmsdError("no stage is enabled: set distill.sft.enabled or distill.adversarial.enabled")
    return Plan(recipe.name, arch.family, arch.params, s, int(gpu_memory_gib * GIB), tuple(stages))


def _student_folder(recipe: Recipe) -> Path:
    s = recipe.student
    from rmsd.models.lora import is_adapter_folder, model_folder

    if s.path is not None and is_adapter_folder(s.path):  # a LoRA stage's folder: its base's config
        return model_folder(s.path)
    if s.path is not None and not (Path(s.path).expanduser() / "config.json").is_file():
        raise RmsdError(f"student.path {s.path}: no config.json there; download the checkpoint or pass "
                        "--config DIR (a folder with its config.json, e.g. recipes/models/qwen3_vl_4b_instruct)")
    from rmsd.pipeline import student_path

    return student_path(recipe)  # builds an offline student once, as distill would


# ----------------------------------------------------------------------------- text
def _size(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 1024**2:.1f} MiB"


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def format_plan(plan: Plan) -> str:
    """The plan as lines of at most 80 columns."""
    s = plan.settings
    h, w = _frame_hw(s)
    lines = [f"rmsd plan: {plan.recipe} ({plan.family}, {_count(plan.params)} params, {s.student.dtype})",
             f"GPU {plan.gpu_bytes / GIB:.0f} GiB, {USABLE:.0%} usable"
             + (f"; ZeRO-{s.zero} over {s.gpus} GPUs" if s.zero else ""),
             f"assumed: {s.frames} frame{'s' if s.frames > 1 else ''} of {h}x{w} px, prompt {s.prompt_tokens} + reply "
             f"{s.response_tokens} tokens",
             "training: " + ", ".join([f"LoRA r={s.lora.r}" if s.lora else "full fine-tuning", "AdamW",
                                       "gradient checkpointing" if s.student.gradient_checkpointing
                                       else "no checkpointing"])]
    for st in plan.stages:
        lines += ["", f"stage {st.stage}: {st.rows} sequences x {st.tokens_per_row} tokens "
                      f"({st.visual_tokens} visual per clip)",
                  f"  {'model':<14}{'params':>9}{'trainable':>10}{'weights':>11}{'grads':>11}{'AdamW':>11}"]
        for m in st.models:
            lines.append(f"  {m.role:<14}{_count(m.params):>9}{_count(m.trainable):>10}"
                         f"{_size(m.weight_bytes):>11}{_size(m.grad_bytes):>11}{_size(m.optimizer_bytes):>11}")
        lines.append(f"  activations and inputs ({st.peak_phase}): {_size(st.activation_bytes)}")
        verdict = "fits" if st.fits else "does NOT fit"
        lines.append(f"  total {_size(st.total_bytes)} of {_size(st.usable_bytes)} usable: {verdict}")
        if st.knob:
            lines.append(f"  first knob: {st.knob}")
    return "\n".join(_wrap(line) for line in lines)


def _wrap(line: str, width: int = 80) -> str:
    import textwrap

    indent = " " * (len(line) - len(line.lstrip()) + 2)
    return "\n".join(textwrap.wrap(line, width, subsequent_indent=indent)) if len(line) > width else line
