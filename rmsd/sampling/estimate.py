"""What `rmsd sample` would ask for, worked out without asking: the planned keys of a recipe's items, those
its store lacks, and the requests, tokens and cost they would take (`rmsd run --dry-run`).

Keys come from the pool's config alone (`rmsd.sampling.keys.key_maker`), the store is read without being
opened for writing (`rmsd.sampling.store.stored_keys`), and the requests are grouped as the runner groups
them: one per run of consecutive missing sample indices, split at the teacher's samples per request.
Tokens are the teacher's own pre-request guess (`Teacher.estimate_tokens`, what the rate limits spend):
its prompt share from the prompt text and the frames it would be sent, its completion share the reply
budget (`params.max_tokens` per sample, an upper bound). Cost uses the pool's prices, a batch-mode
teacher's at `price.batch_discount`.

    rmsd run --recipe recipes/videomme/qwen2_5_vl_3b_rmsd.yaml --dry-run
"""

from __future__ import annotations

from typing import Any

from rmsd.config.pools import PoolConfig
from rmsd.items import Item
from rmsd.sampling.keys import key_maker
from rmsd.sampling.summary import cost_usd
from rmsd.sampling.work import chunks
from rmsd.teachers.build import gen_params
from rmsd.teachers.teacher import Media, Teacher


def planned_keys(items: list[Item], pool: PoolConfig, num_frames: int, max_side: int | None
                 ) -> dict[str, list[tuple[Item, dict[int, str]]]]:
    """Per teacher, each item it serves with its {sample index: key}."""
    out: dict[str, list[tuple[Item, dict[int, str]]]] = {}
    for cfg in pool.teachers:
        maker = key_maker(cfg, pool, num_frames, max_side)
        out[cfg.name] = [(it, maker.keys(it)) for it in items if it.task_type in cfg.task_types]
    return out


def all_keys(planned: dict[str, list[tuple[Item, dict[int, str]]]]) -> list[str]:
    return [k for rows in planned.values() for _, keys in rows for k in keys.values()]


def _placeholder(item: Item, teacher: Teacher, num_frames: int) -> Media:
    """Media with as many frames as the teacher would be sent (contents are not needed to count tokens)."""
    needs = teacher.media_needs
    if item.video and "video" in needs:
        return Media(video_b64="-")
    if item.video and "jpeg" in needs:
        return Media(jpeg_b64=["-"] * num_frames)
    if item.image and needs & {"jpeg", "video"}:
        return Media(jpeg_b64=["-"])
    return Media()


def estimate(planned: dict[str, list[tuple[Item, dict[int, str]]]], have: set[str], pool: PoolConfig,
             teachers: dict[str, Teacher], num_frames: int) -> dict[str, dict[str, Any]]:
    """Per teacher: its mode, the items and samples still missing, the requests, tokens and cost they would take."""
    out = {}
    for cfg in pool.teachers:
        teacher, params = teachers[cfg.name], gen_params(cfg)
        mode = cfg.openai.mode if cfg.openai is not None else "online"
        row = {"mode": mode, "items": 0, "samples": 0, "requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        for item, keys in planned[cfg.name]:
            missing = [i for i, k in keys.items() if k not in have]
            if not missing:
                continue
            row["items"] += 1
            row["samples"] += len(missing)
            media = _placeholder(item, teacher, num_frames)
            for part in chunks(missing, teacher.max_n_per_request()):
                total = teacher.estimate_tokens(item, media, len(part), params)
                row["requests"] += 1
                row["completion_tokens"] += params.max_tokens * len(part)
                row["prompt_tokens"] += total - params.max_tokens * len(part)
        row["cost_usd"] = cost_usd(row["prompt_tokens"], row["completion_tokens"], cfg, batch=mode == "batch")
        out[cfg.name] = row
    return out
