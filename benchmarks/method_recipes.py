"""The experiment's methods as recipes: what `reproduce.py`, `pilot.py`, `targets.py` and `time_regime.py` share.

A method of the synthvid experiment is a recipe `recipes/synthvid/experiment_<method>.yaml`
(or a regime's own recipes folder); `load_method` reads it with every path under one work
folder and the seed applied, and `budget_overrides` turns a step budget into its overrides.

    python benchmarks/reproduce.py --quick --seeds 0 --methods single matched --work /tmp/repro_smoke
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "synthvid"


def load_method(method: str, work: Path, seed: int, overrides: list[str], recipes: Path = RECIPES,
                runs: Path | None = None) -> Any:
    """The method's recipe (from the `recipes` folder) with every path under `work` and the seed applied; the run
    itself under `runs` (default `work`: a pilot keeps each rung's runs apart while sharing data and samples)."""
    from rmsd.config import load_recipe

    path = recipes / f"experiment_{method}.yaml"
    own = load_recipe(path, overrides)
    samples_name = Path(own.sampling.out).name  # the noise-free methods sample another pool into another store
    matched_name = Path(own.matching.out).name  # methods with another filter (or store) differ here
    run = (runs or work) / method / f"seed{seed}"
    paths = [
        f"dataset.path={work / 'data'}", f"sampling.out={work / samples_name}", f"matching.out={work / matched_name}",
        f"student.build_out={work / f'student_seed{seed}'}", f"distill.out={run}", f"eval.out={run / 'eval'}",
        f"distill.sft.seed={seed}", f"distill.adversarial.seed={seed}",
    ]
    return load_recipe(path, overrides + paths)


def budget_overrides(method: str, sft_steps: int | None, adv_steps: int | None,
                     recipes: Path = RECIPES) -> list[str]:
    """--sft-steps S --adv-steps R for one method: S + R SFT steps without an adversarial stage."""
    if sft_steps is None and adv_steps is None:
        return []
    from rmsd.config import load_recipe

    base = load_recipe(recipes / f"experiment_{method}.yaml").distill
    s = base.sft.max_steps if sft_steps is None else sft_steps
    r = base.adversarial.max_steps if adv_steps is None else adv_steps
    if base.adversarial.enabled:
        return [f"distill.sft.max_steps={s}", f"distill.adversarial.max_steps={r}"]
    return [f"distill.sft.max_steps={s + r}"]
