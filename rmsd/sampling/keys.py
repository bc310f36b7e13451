"""Record keys: what makes one stored teacher response what it is, and old stores carried over.

A record's key (key version 2) is the sha256 of
`[2, item_id, teacher name, teacher identity, item part, sample_index]`:
- teacher identity: every pool setting of the teacher that can change its answers —
  the backend; the model; generation params; `openai.extra_body` (it can override
  temperature, top_p, seed); `openai.image_detail` / `video_mode`; an hf teacher's `dtype`
  and `max_pixels`; every simulator knob; a custom teacher's `options` (minus the names its
  class lists in `options_not_in_key`) — and the pool's system prompt and prompt template;
- item part: a hash of the item's prompt text (a regenerated dataset with the same ids
  re-samples), and, for a teacher whose `media_needs` asks for pixels, the dataset's
  `num_frames` (videos) and `max_side` (videos and images). A teacher that never looks at
  the frames (the simulator, a `video_url` teacher) keeps its keys when they change.
Settings that cannot change an answer stay out (`NOT_IN_KEY` in `rmsd.config`):
concurrency, rate limits, timeouts, retries, the list and order of `base_url`s, the key's
variable name, `use_n`, logprobs, price, `openai.mode` and the batch knobs (a store mixes modes), hf device and batch size, K (raising it adds
indices). Settings enter only when they differ from their default
(`rmsd.config.pools.output_settings`), so adding a knob whose default keeps the old behaviour
changes no key; changing an in-key default needs a KEY_VERSION bump.

How it differs from hashing the request (lm-eval's cache): a request body also holds
plumbing (seeds derived per request, `n`) and media bytes; the key names the settings and
the sample index instead, so K samples asked in one request or in K requests get the same
keys, and resume asks only for the missing indices.

Stores written before key version 2 (no `store.json`) keyed only the model, params and
prompts, so they cannot tell which `extra_body` or frame count made their records; sampling
refuses them, and `rekey_store` copies their records under today's keys into a new folder,
for a user who knows they were made with the recipe's current settings:

    rmsd sample rekey --recipe recipes/videomme/qwen2_5_vl_3b_rmsd.yaml --samples OLD --out NEW
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from rmsd.config.pools import BACKENDS, PoolConfig, TeacherConfig, output_settings
from rmsd.errors import RmsdError
from rmsd.items import Item
from rmsd.sampling.store import KEY_VERSION, SampleStore, iter_records, key_version, write_card
from rmsd.teachers.build import backend_class, model_name

PIXEL_NEEDS = frozenset({"frames", "jpeg"})


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


_string = json.encoder.encode_basestring  # the C encoder json.dumps uses for a str (no encoder object per call)


def teacher_identity(cfg: TeacherConfig, pool: PoolConfig, not_in_key: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The settings of one pool teacher that can change its answers (see the module docstring)."""
    settings = output_settings(cfg)
    if "options" in settings:
        settings["options"] = {k: v for k, v in settings["options"].items() if k not in not_in_key}
        if not settings["options"]:
            del settings["options"]
    ident: dict[str, Any] = {"settings": settings}
    if pool.system_prompt is not None:
        ident["system_prompt"] = pool.system_prompt
    if pool.prompt_template != "{prompt}":
        ident["prompt_template"] = pool.prompt_template
    return ident


class KeyMaker:
    """The keys of one teacher of a pool, for a dataset's frame settings."""

    def __init__(self, cfg: TeacherConfig, pool: PoolConfig, needs: frozenset[str], num_frames: int,
                 max_side: int | None, not_in_key: frozenset[str] = frozenset()):
        self.cfg = cfg
        self.sees_pixels = bool(needs & PIXEL_NEEDS)
        self.num_frames, self.max_side = num_frames, max_side
        # the constant part is serialised once: planning 100k keys stays a fraction of a second
        self._head = f"[{KEY_VERSION},"
        self._teacher = f",{_json(cfg.name)},{_json(teacher_identity(cfg, pool, not_in_key))},"

    def item_part(self, item: Item) -> str:
        """`_json` of {"max_side"?, "num_frames"?, "prompt": hash}, written out (keys sorted) for speed."""
        fields = []
        if self.sees_pixels and (item.video or item.image) and self.max_side is not None:
            fields.append(f'"max_side":{int(self.max_side)}')
        if self.sees_pixels and item.video:
            fields.append(f'"num_frames":{int(self.num_frames)}')
        fields.append(f'"prompt":"{hashlib.sha256(item.prompt.encode()).hexdigest()[:32]}"')
        return "{" + ",".join(fields) + "}"

    def key(self, item_id: str, item_part: str, index: int) -> str:
        payload = f"{self._head}{_string(item_id)}{self._teacher}{item_part},{int(index)}]"
        return hashlib.sha256(payload.encode()).hexdigest()

    def keys(self, item: Item) -> dict[int, str]:
        """Sample index -> key, for every index 0..K-1 of this teacher."""
        part = self.item_part(item)
        return {i: self.key(item.item_id, part, i) for i in range(self.cfg.samples)}


def key_maker(cfg: TeacherConfig, pool: PoolConfig, num_frames: int, max_side: int | None) -> KeyMaker:
    """A KeyMaker from the config alone (no client built, no API key needed): the backend's class answers."""
    cls = backend_class(cfg)
    return KeyMaker(cfg, pool, cls.needs_of(cfg), num_frames, max_side, frozenset(cls.options_not_in_key))


# ----------------------------------------------------------------------------- key version 1
_V1_SIMULATED = ("accuracy", "difficulty_penalty", "bias_letter", "bias_strength", "format_error_rate",
                 "inconsistency_rate", "verbosity", "seed", "error_seed")
_V1_PARAMS = ("temperature", "top_p", "max_tokens", "seed")


def key_v1(cfg: TeacherConfig, pool: PoolConfig, item_id: str, index: int) -> str | None:
    """The key rmsd gave this record before key version 2, or None where no such key can exist
    (a knob that version did not have is set)."""
    params = cfg.params.model_dump()
    if set(output_settings(cfg.params)) - set(_V1_PARAMS):
        return None
    if cfg.simulated is not None:  # version 1 named the simulator's knobs, not a model
        dumped = cfg.simulated.model_dump()
        if set(output_settings(cfg.simulated)) - set(_V1_SIMULATED):
            return None
        identity: Any = {"model": "simulated", **{k: dumped[k] for k in _V1_SIMULATED if k in dumped}}
    elif cfg.backend in BACKENDS:  # a built-in with its options section: the model it names
        identity = {"model": model_name(cfg)}
    else:  # a custom class: its import path and options
        identity = {"model": cfg.backend, "options": cfg.options}
    payload = [1, item_id, cfg.name, identity, {k: params[k] for k in _V1_PARAMS}, pool.system_prompt,
               pool.prompt_template, int(index)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def legacy_store_error(path: Path, version: int) -> RmsdError:
    if version > KEY_VERSION:
        return RmsdError(f"{path}: written by a newer rmsd (record key version {version}, this one knows "
                         f"{KEY_VERSION}); upgrade rmsd or sample into a new folder with --out")
    return RmsdError(f"{path}: written by an older rmsd whose record keys (version {version}) miss settings that "
                     "change answers (extra_body, frames, ...), so resuming could mix samples made with other "
                     f"settings; sample into a new folder with --out, or, if its records were made with this "
                     f"recipe's settings, carry them over: rmsd sample rekey --recipe RECIPE --samples {path} "
                     "--out NEW")


def rekey_store(samples: Path, out: Path, items: list[Item], pool: PoolConfig, num_frames: int,
                max_side: int | None) -> dict[str, int]:
    """Copy the records of a key-version-1 store that `pool` plans for `items`, under today's keys, into the
    new folder `out` (atomic, like merge). Returns {"records": copied, "left_out": not planned here}."""
    samples, out = Path(samples), Path(out)
    version = key_version(samples) if (samples / "data").is_dir() else None
    if version is None:
        raise RmsdError(f"{samples}: not a sample store with records; pass a folder written by `rmsd sample`")
    if version != 1:
        raise RmsdError(f"{samples}: its records already use key version {version}; nothing to rekey")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RmsdError(f"--out {out}: already exists; rekey into a new folder")
    old = {row["key"]: row for row in iter_records(samples)}
    tmp = out.parent / f".{out.name}.rekeying-{secrets.token_hex(4)}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with SampleStore(tmp) as store:
            for cfg in pool.teachers:
                maker = key_maker(cfg, pool, num_frames, max_side)
                for item in (it for it in items if it.task_type in cfg.task_types):
                    for index, key in maker.keys(item).items():
                        row = old.get(key_v1(cfg, pool, item.item_id, index) or "")
                        if row is not None:
                            store.append({**row, "key": key})
            copied = len(store)
            store.write_summary({"rekeyed_from": str(samples), "records": copied, "left_out": len(old) - copied})
        (tmp / ".lock").unlink(missing_ok=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_card(out)  # the card names the final folder
    return {"records": copied, "left_out": len(old) - copied}
