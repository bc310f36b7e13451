"""The declared regimes of benchmarks/reproduce.py and what pins them: the hash of what a regime runs, and the
S a regime's pilot (benchmarks/pilot.py) fixed.

A regime is declared in benchmarks/results/regime_<name>.md with its hash and committed before its first run;
`reproduce.py --regime NAME` runs exactly it (every method, every seed; finished runs come from the cache). It is
never tuned on its results: a change makes another regime, with another hash.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from reproduce_report import DATA_SEED

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# "results": where --regime writes its reproduce.md/.json (the newest regime's at the top of benchmarks/results,
# the earlier ones in synthvid-v<N>/). A regime with a "pilot" has no S of its own: `benchmarks/pilot.py` runs the pilot's methods and seeds at each
# rung of sft_steps and fixes S by the rule declared with the regime (benchmarks/results/pilot_<name>.json).
REGIMES: dict[str, dict[str, Any]] = {
    "v3": {"n": 1000, "seeds": [0, 1, 2], "points": 4, "recipes": "recipes/synthvid",
           "results": "benchmarks/results/synthvid-v3", "methods": [
        "ceiling", "single", "ceiling_multi", "uniform", "matched", "matched_conf", "sanity_matched",
        "anchored", "gt", "rmsd", "sft_rl", "visd_rl"]},
    "v4": {"n": 8400, "seeds": [0, 1, 2], "points": 1, "recipes": "recipes/synthvid/v4", "adv_steps": 50,
           "results": "benchmarks/results",
           "methods": ["ceiling", "single", "uniform", "gt", "single_gt", "matched", "rmsd", "sft_rl", "visd_rl"],
           "pilot": {"methods": ["ceiling", "single"], "seeds": [0, 1], "sft_steps": [600, 900, 1200]}},
}


DEFAULT_METHODS = tuple(REGIMES["v3"]["methods"])  # visd and the lr-2e-4 pair are follow-ups, run on their own


def regime_hash(recipes: dict[int, dict[str, Any]], n: int, points: list[int], work: Path) -> str:
    """sha256 of what defines a run of the experiment: the data (generator version, item count, data seed), the
    curve points, and every (seed, method)'s recipe with its pool's content in place of the pool's path, the
    folders under `work` written WORK/..., and the recipe's name and description (prose) left out.

    Settings at their defaults are left out (as `run_cache` does): a config field added later, whose default
    keeps the old behaviour, does not change a declared regime's hash."""
    from rmsd.synthvid.generator import GENERATOR_VERSION

    def under_work(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: under_work(v) for k, v in value.items()}
        if isinstance(value, list):
            return [under_work(v) for v in value]
        if isinstance(value, str):
            for root in {str(work), str(work.resolve())}:
                if value == root or value.startswith(root + "/"):
                    return "WORK" + value[len(root):]
        return value

    runs = {f"{seed}/{method}": {**under_work(r.model_dump(mode="json", exclude={"name", "description"},
                                                          exclude_defaults=True)),
                                 "pool": r.load_pool().model_dump(mode="json", exclude_defaults=True)}
            for seed, by_method in recipes.items() for method, r in by_method.items()}
    regime = {"data": {"benchmark": "synthvid", "generator_version": GENERATOR_VERSION, "n": n, "seed": DATA_SEED},
              "points": points, "runs": runs}
    if any(r.student.build == "tiny-pretrained" for by_method in recipes.values() for r in by_method.values()):
        regime["student_base"] = shipped_base_digest()  # the weights the alias names, not just its name
    return hashlib.sha256(json.dumps(regime, sort_keys=True).encode()).hexdigest()[:16]


def shipped_base_digest() -> str:
    """sha256 of the shipped pre-trained base's weights (student.build: tiny-pretrained)."""
    from rmsd.models.offline.pretrain import SHIPPED

    return hashlib.sha256((SHIPPED / "model.safetensors").read_bytes()).hexdigest()[:16]


def pilot_decision(regime: str) -> int:
    """The S the regime's pilot fixed (benchmarks/results/pilot_<regime>.json); stops when it has not, or found none."""
    path = RESULTS / f"pilot_{regime}.json"
    decision = json.loads(path.read_text()).get("chosen_sft_steps") if path.is_file() else None
    if decision is None:
        sys.exit(f"regime {regime} takes its S from its pilot, which has not decided: run "
                 f"python benchmarks/pilot.py --regime {regime} --commit first")
    if decision == "none":
        sys.exit(f"regime {regime}'s pilot found no S that meets its rule ({path}): the regime is not run")
    return int(decision)


def pilot_rung(regime: str, sft_steps: int) -> dict[str, Any] | None:
    """The pilot's record of one rung ({"regime_hash", "runs", "verdict"}), or None: the regime's runs of the
    pilot's methods and seeds at the chosen S are the pilot's own (reproduce.py reuses them)."""
    path = RESULTS / f"pilot_{regime}.json"
    return json.loads(path.read_text())["rungs"].get(str(sft_steps)) if path.is_file() else None
