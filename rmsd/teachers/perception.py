"""What a SIMULATED teacher perceives of a synthvid scene: systematic, scene-dependent weaknesses.

Real teachers are not wrong at random: one mixes up two directions, another undercounts
crowded scenes, misses an object that is on screen for a moment, or places events too
early; some lean on an option letter. `rmsd.teachers.simulated.SimulatedTeacher` models
this by distorting the scene it "sees" (`perceive`) and answering the question from that
perceived scene (`answer_from_scene`), so a weakness changes the answer exactly when it
matters to the question (a missed short-lived object changes a count, not the colour of
another object) and the reasoning cites what the teacher saw. Which questions a weakness
fires on is fixed per teacher (its error_seed) and question, so the teacher is wrong on
those questions in every sample, as a real model is.

The weakness types and their fields are declared once, in `rmsd.config` (ConfuseDirections,
Miscount, MissShortObjects, EarlySpan, PreferLetter); this module reads them as dicts.

    rmsd sample --recipe recipes/synthvid/experiment_base.yaml   # with teachers/experiment_pool_v2.yaml
"""

from __future__ import annotations

import copy
from typing import Any

from rmsd.items import OPTION_LETTERS, Item
from rmsd.synthvid.generator import describe_objects, format_span, max_visible, object_name

SCENE_WEAKNESSES = ("confuse_directions", "miss_short_objects", "early_span")  # they change the perceived scene
KINDS_AFFECTED = {  # question kinds whose answer a weakness can change (the rest it leaves alone)
    "confuse_directions": {"colour", "direction", "describe"},
    "miss_short_objects": {"colour", "direction", "order", "last", "count", "max_visible", "when", "describe"},
    "early_span": {"when", "describe"},
    "miscount": {"count", "max_visible"},
}


def applies(weakness: dict[str, Any], item: Item) -> bool:
    """Whether the weakness can change this item's answer (its question kind, and the scene it needs)."""
    kind = weakness["kind"]
    if kind == "prefer_letter":
        return item.task_type == "mcq" and weakness["letter"] in item.letters
    objects = item.meta.get("objects") or []
    if item.meta.get("question_kind") not in KINDS_AFFECTED[kind] or not objects:
        return False
    if kind == "confuse_directions":
        return any(o["direction"] == weakness["directions"][0] for o in objects)
    if kind == "miss_short_objects":
        return any(_duration(o) <= weakness["max_seconds"] + 1e-9 for o in objects)
    if kind == "miscount":
        value = _as_int(item.answer or "")
        return value is not None and value > weakness["above"]
    return True


def perceive(objects: list[dict[str, Any]], weaknesses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scene as a teacher with these (fired) weaknesses sees it; the input is not changed."""
    seen = copy.deepcopy(objects)
    for w in weaknesses:
        if w["kind"] == "confuse_directions":
            source, target = w["directions"]
            for o in seen:
                if o["direction"] == source:
                    o["direction"] = target
        elif w["kind"] == "miss_short_objects":
            seen = [o for o in seen if _duration(o) > w["max_seconds"] + 1e-9]
        elif w["kind"] == "early_span":
            for o in seen:
                o["appear_s"] = max(0.0, o["appear_s"] - w["shift_s"])
                o["disappear_s"] = max(o["appear_s"] + 0.5, o["disappear_s"] - w["shift_s"])
    return seen


def answer_from_scene(item: Item, objects: list[dict[str, Any]]) -> str | None:
    """The answer to the item's question in a (perceived) scene, or None when that scene cannot answer it."""
    kind, meta = item.meta.get("question_kind"), item.meta
    target = next((o for o in objects if o["id"] == meta.get("target")), None)
    if kind == "colour":
        if meta.get("difficulty") != "easy":  # "the object that moves X": X is the true target's direction
            true = next(o for o in meta["objects"] if o["id"] == meta["target"])
            movers = [o for o in objects if o["direction"] == true["direction"]]
            target = movers[0] if len(movers) == 1 else None
        return _letter(item, target["colour"]) if target else None
    if kind == "direction":
        return _letter(item, target["direction"]) if target else None
    if kind in ("order", "last"):
        if not objects:
            return None
        pick = (min if kind == "order" else max)(objects, key=lambda o: o["appear_s"])
        tied = sum(o["appear_s"] == pick["appear_s"] for o in objects) > 1
        return None if tied else _letter(item, object_name(pick))
    if kind == "count":
        return str(len(objects)) if objects else None
    if kind == "max_visible":
        return str(max_visible({**meta, "objects": objects})) if objects else None
    if kind == "when":
        return format_span(target["appear_s"], target["disappear_s"]) if target else None
    if kind == "describe":
        return describe_objects(objects, timed=meta.get("difficulty") == "hard") if objects else None
    return item.answer


def believed_answer(item: Item, fired: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(answer the teacher believes, the scene it perceived) given the weaknesses that fired on this item.

    None as the answer: the perceived scene cannot answer the question (e.g. the target was
    missed); the teacher then gives its wrong answer for the question."""
    objects = item.meta["objects"]
    scene = [w for w in fired if w["kind"] in SCENE_WEAKNESSES]
    seen = perceive(objects, scene) if scene else objects
    answer = answer_from_scene(item, seen) if scene else item.answer
    for w in fired:
        if w["kind"] == "miscount" and answer is not None and _as_int(answer) is not None:
            if _as_int(answer) > w["above"]:
                answer = str(max(1, _as_int(answer) + w["by"]))
        elif w["kind"] == "prefer_letter" and w["letter"] in item.letters:
            answer = w["letter"]
    return answer, seen


def _letter(item: Item, option: str) -> str | None:
    return OPTION_LETTERS[item.options.index(option)] if option in item.options else None


def _duration(obj: dict[str, Any]) -> float:
    return obj["disappear_s"] - obj["appear_s"]


def _as_int(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value == int(value) else None


# ----------------------------------------------------------------------------- signatures
# What each weakness looks like in answers, at the thresholds of teachers/experiment_pool_v2.yaml,
# so a teacher's (or a student's) answers can be checked for it without knowing its config.
SHORT_S, CROWDED, EARLY_S = 1.5, 3, 1.0
SIGNATURES = {
    "vertical_flip": "direction items whose object moves up or down, answered with the opposite direction",
    "horizontal_flip": "direction items whose object moves left or right, answered with the opposite direction",
    "undercount_crowded": f"count / max-visible items with more than {CROWDED} objects, answered one less",
    "short_object_missed": f"count items with objects visible <= {SHORT_S} s, answered as if those were absent",
    "early_span": f"when items answered with a start >= {EARLY_S} s before the true one",
    "letter_A": "mcq items whose answer is not (A), answered (A)",
}
_OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left"}


def signature(item: Item, answer: str) -> dict[str, bool]:
    """For each SIGNATURES kind this item can show, whether `answer` (as extracted) shows it."""
    meta, kind, out = item.meta, item.meta.get("question_kind"), {}
    objects = meta.get("objects") or []
    if item.task_type == "mcq" and item.answer != "A" and "A" in item.letters:
        out["letter_A"] = answer == "A"
    if kind == "direction" and objects:
        true = next(o for o in objects if o["id"] == meta["target"])["direction"]
        said = item.options[OPTION_LETTERS.index(answer)] if answer in item.letters else None
        out["vertical_flip" if true in ("up", "down") else "horizontal_flip"] = said == _OPPOSITE.get(true)
    truth, said_n = _as_int(item.answer or ""), _as_int(answer)
    if kind in ("count", "max_visible") and truth is not None and truth > CROWDED:
        out["undercount_crowded"] = said_n == truth - 1
    short = sum(_duration(o) <= SHORT_S + 1e-9 for o in objects)
    if kind == "count" and short and truth is not None:
        out["short_object_missed"] = said_n == truth - short
    if kind == "when" and item.answer:
        spans = [_span(x) for x in (item.answer, answer)]
        if spans[0] and spans[1]:
            out["early_span"] = spans[1][0] <= spans[0][0] - EARLY_S + 1e-9
    return out


def _span(text: str) -> tuple[float, float] | None:
    import re

    values = re.findall(r"-?\d+(?:\.\d+)?", text)
    return (float(values[0]), float(values[1])) if len(values) >= 2 else None
