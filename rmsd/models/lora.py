"""LoRA students (peft): which layers get adapters, adapter folders, switching adapters on one base, merging.

With `student.lora` set, the student's weights stay frozen and peft LoRA adapters train in every
stage (W x -> W x + (alpha / r) B A x). This module holds everything rmsd needs of peft:

- **Targets** (`lora_config`): the text backbone's linear layers whose names `target_modules`
  lists, and with `vision: adapted` every linear layer of the vision tower (its blocks, patch
  merger and Qwen3-VL's DeepStack mergers); the LM head and embeddings never. The targets are
  written as one regex of the model's own module names (digits generalised), so an adapter
  config stays short and a name that matches nothing is a one-line error.
- **One base, several adapters.** The student trains the adapter `default` (`STUDENT`); the
  discriminator can be a second adapter (`rmsd.train.discriminator`, named `discriminator`) and
  the VISD EMA teacher a third (`rmsd.train.ema`, named `visd_teacher`), all on the same frozen
  base. `use_adapter` switches the active one for a forward *and its backward* (a checkpointed
  layer recomputes with whatever adapter is active then); peft's `set_adapter` makes only the
  active adapter trainable, and each party's optimizer holds its own tensors only, so no step of
  one can move another's adapter or the base (tests/train/test_lora.py).
- **Wrapping before the trainer, not TRL's `peft_config`.** The discriminator's and the
  teacher's adapters must exist on the student's base before TRL's trainer starts (the
  discriminator is built in the trainer's constructor, the teacher before it), so rmsd wraps
  the model itself (`adapt`) and hands TRL a `PeftModel`. TRL then does for it what it does
  for any peft model: its fused LM head goes on `model.get_base_model()`, and with `beta > 0`
  its reference is the base with the adapters disabled, or, when the stage continues trained
  adapters, a frozen copy of them (TRL's `ref` adapter, adapter-sized).
- **Stages keep training the same adapters** (no merge between stages). `OUT/<stage>` is a peft
  adapter folder (adapter_config.json + adapter_model.safetensors, on the same base checkpoint,
  with the processor); the next stage loads the base and that adapter and goes on training it.
  Every stage folder thus loads with `PeftModel.from_pretrained(base, folder)` (or vLLM's LoRA
  serving) without a merged copy written in between, and no rounding of a bf16 merge creeps into
  the base. The cost: the adversarial stage's reference (`beta > 0`) is the base plus a frozen
  copy of the SFT adapter, not the bare base. Other adapters of the base (the discriminator's,
  the teacher's, TRL's `ref`) are written by peft in subfolders named after them.
- `load_adapted` opens an adapter folder (base from its `base_model_name_or_path`), `merge_folder`
  writes a merged `from_pretrained` folder (`rmsd export --model DIR --merge --out DIR`), and
  `rmsd.models.processing.load_student` reads adapter folders through here (merged by default).

    rmsd export --model runs/videomme-4b-rmsd-lora/student_distilled/adversarial --merge --out runs/merged
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmsd.errors import RmsdError

if TYPE_CHECKING:
    from torch import nn

STUDENT = "default"  # peft's name of the first adapter: the student's
ADAPTER_CONFIG = "adapter_config.json"
_TEXT_PREFIX = "model.language_model."
_VISION_PREFIX = "model.visual."


# ----------------------------------------------------------------------------- which layers
def _linears(model: nn.Module, prefix: str) -> list[str]:
    """Names of the model's own linear layers under `prefix` (of an adapted layer: the layer's name, not its parts)."""
    from torch import nn

    return [name.removesuffix(".base_layer") for name, m in model.named_modules()
            if name.startswith(prefix) and isinstance(m, nn.Linear) and ".lora_" not in name]


def _pattern(names: list[str]) -> list[str]:
    """Distinct regexes of module names, layer numbers generalised: 36 layers x 7 projections -> 7 patterns."""
    return sorted({re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(n)) for n in names})


def target_regex(model: nn.Module, target_modules: list[str], vision: bool) -> str:
    """peft's `target_modules` (a regex peft full-matches against module names) for the text backbone's linears
    named in `target_modules`, and with `vision` every linear layer of the vision tower."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = _linears(base, _TEXT_PREFIX)
    if not text:
        raise RmsdError(f"{type(base).__name__} has no linear layers under {_TEXT_PREFIX!r}: rmsd's LoRA knows "
                        "Qwen2.5-VL and Qwen3-VL students")
    leaves = {n.rsplit(".", 1)[-1] for n in text}
    missing = [t for t in target_modules if t not in leaves]
    if missing:
        raise RmsdError(f"student.lora.target_modules: {', '.join(missing)} is no linear layer of the text backbone "
                        f"(it has {', '.join(sorted(leaves))})")
    chosen = [n for n in text if n.rsplit(".", 1)[-1] in target_modules]
    if vision:
        chosen += _linears(base, _VISION_PREFIX)
    return "|".join(_pattern(chosen))


def lora_config(model: nn.Module, cfg: Any, text_only: bool = False, dropout: float | None = None) -> Any:
    """`peft.LoraConfig` of a `rmsd.config.LoRAConfig` for `model` (text_only: leave the vision tower out)."""
    from peft import LoraConfig

    regex = target_regex(model, list(cfg.target_modules), vision=cfg.vision == "adapted" and not text_only)
    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout if dropout is None else dropout,
                      target_modules=regex, bias="none")


# ----------------------------------------------------------------------------- wrapping
def is_peft(model: Any) -> bool:
    """True for a peft model (under DDP / accelerate wrappers too)."""
    from peft import PeftModel

    return isinstance(getattr(model, "module", model), PeftModel)


def adapt(model: Any, cfg: Any) -> Any:
    """The student ready to train adapters: fresh ones on a plain model, or the loaded ones continued.

    A `PeftModel` (an adapter folder loaded unmerged) keeps its adapter when it was trained with
    the same rank, alpha and targets; anything else is a one-line error (merge it first with
    `rmsd export --merge` and point student.path at the merged folder).
    """
    from peft import get_peft_model

    wanted = lora_config(model, cfg)
    if is_peft(model):
        have = model.peft_config[STUDENT]
        same = (have.r, have.lora_alpha, have.target_modules) == (wanted.r, wanted.lora_alpha, wanted.target_modules)
        if not same:
            raise RmsdError(f"the student's adapters have r={have.r}, alpha={have.lora_alpha} and targets "
                            f"{have.target_modules!r}; student.lora asks for r={wanted.r}, alpha={wanted.lora_alpha}, "
                            f"targets {wanted.target_modules!r}: merge them first (rmsd export --merge) or keep "
                            "student.lora as it was")
        model.set_adapter(STUDENT)
        return model
    wanted.base_model_name_or_path = str(Path(model.config._name_or_path).expanduser().resolve())
    return get_peft_model(model, wanted)


def is_identity(model: Any, name: str = STUDENT) -> bool:
    """True when adapter `name` adds nothing yet (every lora_B is zero, peft's initialisation)."""
    return all(bool(p.detach().eq(0).all()) for n, p in adapter_parameters(model, name).items() if ".lora_B." in n)


def adapter_parameters(model: Any, name: str) -> dict[str, nn.Parameter]:
    """The parameters of adapter `name`, by their names in the peft model."""
    model = getattr(model, "module", model)
    tag = f".{name}."
    return {n: p for n, p in model.named_parameters() if tag in n and (".lora_A." in n or ".lora_B." in n)}


def add_adapter_copy(model: Any, name: str, text_only: bool = False, dropout: float = 0.0) -> None:
    """A new adapter `name` with the student adapter's rank, alpha and targets (its text part when `text_only`),
    starting as a copy of it.

    The copy starts where the student is: the discriminator as a copy of the student's text
    backbone (what its full-copy variant is), the EMA teacher as the student itself. Its
    dropout is 0: the full-copy discriminator and teacher drop nothing either (Qwen's layers have no dropout).
    """
    import torch
    from peft import LoraConfig

    model = getattr(model, "module", model)
    have = model.peft_config[STUDENT]
    targets = have.target_modules
    if text_only:
        targets = "|".join(p for p in str(targets).split("|") if p.startswith(re.escape(_TEXT_PREFIX)))
    model.add_adapter(name, LoraConfig(r=have.r, lora_alpha=have.lora_alpha, lora_dropout=dropout,
                                       target_modules=targets, bias="none"))
    source = adapter_parameters(model, STUDENT)
    with torch.no_grad():
        for n, p in adapter_parameters(model, name).items():
            p.copy_(source[n.replace(f".{name}.", f".{STUDENT}.")])
    model.set_adapter(STUDENT)  # only the student's adapter trains unless a party switches to its own


@contextlib.contextmanager
def use_adapter(model: Any, name: str | None) -> Iterator[Any]:
    """Run the peft model with adapter `name` active (None: adapters disabled, the bare base), then restore.

    Use it around a forward and its backward: a checkpointed layer recomputes in the backward
    pass with the adapter that is active then.
    """
    peft_model = getattr(model, "module", model)
    previous = peft_model.active_adapter
    if name is None:
        with peft_model.disable_adapter():
            yield model
        return
    peft_model.set_adapter(name)
    try:
        yield model
    finally:
        peft_model.set_adapter(previous)


def merged_copy(module: nn.Module, adapter: str = STUDENT) -> nn.Module:
    """A plain, fully trainable copy of `module` (part of a peft model) with `adapter` merged into its weights."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = copy.deepcopy(module)
    for name, layer in list(out.named_modules()):
        if isinstance(layer, BaseTunerLayer):
            if adapter in getattr(layer, "lora_A", {}):
                layer.merge(adapter_names=[adapter])
            parent, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent) if parent else out, child, layer.get_base_layer())
    return out.requires_grad_(True)


# ----------------------------------------------------------------------------- folders
def is_adapter_folder(path: str | Path) -> bool:
    folder = Path(path).expanduser()
    return (folder / ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file()


def base_of(path: str | Path) -> Path:
    """The base checkpoint an adapter folder was trained on (its adapter_config.json's base_model_name_or_path)."""
    folder = Path(path).expanduser()
    base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base or not (Path(base).expanduser() / "config.json").is_file():
        raise RmsdError(f"{folder} holds LoRA adapters of {base!r}, which is not a from_pretrained folder here: "
                        f"put the base checkpoint back or edit base_model_name_or_path in {folder / ADAPTER_CONFIG}")
    return Path(base).expanduser()


def model_folder(path: str | Path) -> Path:
    """The folder with the model's config.json: `path` itself, or an adapter folder's base."""
    return base_of(path) if is_adapter_folder(path) else Path(path).expanduser()


def load_adapted(folder: str | Path, dtype: Any, trainable: bool = False) -> Any:
    """The base of an adapter folder with its student adapter loaded (`PeftModel`)."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(base_of(folder), dtype=dtype)
    return PeftModel.from_pretrained(base, Path(folder).expanduser(), is_trainable=trainable)


def merge_folder(folder: str | Path, out: str | Path) -> Path:
    """Write adapter folder `folder` merged into its base as a `from_pretrained` folder (model + processor) in `out`."""
    from transformers import AutoProcessor

    folder, out = Path(folder).expanduser(), Path(out).expanduser()
    if not is_adapter_folder(folder):
        raise RmsdError(f"--model {folder}: no LoRA adapters there (no {ADAPTER_CONFIG}); a full checkpoint is "
                        "already a from_pretrained folder")
    if out.exists() and any(out.iterdir()):
        raise RmsdError(f"--out {out} is not empty: choose a new folder")
    model = load_adapted(folder, dtype="auto").merge_and_unload()
    model.save_pretrained(out)
    processor_source = folder if (folder / "tokenizer_config.json").is_file() else base_of(folder)
    AutoProcessor.from_pretrained(processor_source).save_pretrained(out)
    return out
