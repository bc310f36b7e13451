"""Our Dawid–Skene (rmsd.matching.consensus) against crowd-kit's on the same votes: speed,
agreement, and what gold items do in each.

Votes: I items with 4 options, five simulated workers of accuracy 0.85 / 0.7 / 0.5 / 0.4 /
0.6 (the last puts 80% of its mistakes on "B"), each seeing 80% of the items and voting twice
on each (K = 2 samples per teacher, as in rmsd). Reported:
- time to convergence with each library's own defaults, and per EM round (both run the same
  fixed number of rounds), best of REPEATS, one thread;
- agreement: with the models made to coincide (tests/matching/test_crowdkit.py: global label
  set, negligible pseudo-votes, crowd-kit's plain class prior), and with our defaults;
- gold items on a pool where two weak workers share their mistakes: crowd-kit's `true_labels`
  (gold posteriors clamped inside EM, error models from every item) against our `clamp`
  (error models from the gold items alone).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_consensus.py               # 25,000 items
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_consensus.py --items 2000  # quick look

Writes benchmarks/results/consensus.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from crowdkit.aggregation import DawidSkene, OneCoinDawidSkene

from rmsd.matching import consensus
from rmsd.matching.consensus import build_votes, dawid_skene

RESULTS = Path(__file__).parent / "results" / "consensus.md"
LETTERS = ("A", "B", "C", "D")
REPEATS = 2
FIXED_ROUNDS = 20
WORKERS = {"strong": 0.85, "good": 0.7, "weak": 0.5, "noisy": 0.4, "biased": 0.6}


def simulate(n_items: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(4, size=n_items)
    frames = []
    for name, acc in WORKERS.items():
        seen = np.flatnonzero(rng.random(n_items) < 0.8)
        for _ in range(2):
            wrong = (truth[seen] + rng.integers(1, 4, size=len(seen))) % 4
            if name == "biased":
                wrong = np.where((rng.random(len(seen)) < 0.8) & (truth[seen] != 1), 1, wrong)
            answer = np.where(rng.random(len(seen)) < acc, truth[seen], wrong)
            frames.append(pd.DataFrame({"task": seen, "worker": name, "label": np.array(LETTERS)[answer]}))
    return pd.concat(frames, ignore_index=True), truth


def shared_mistakes(n_items: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A strong worker (0.75) and two weak ones (0.4, 0.55) that err together on the item's decoy."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(4, size=n_items)
    decoy = (truth + rng.integers(1, 4, size=n_items)) % 4
    frames = []
    for _ in range(2):  # two votes per worker and item
        own = np.where(rng.random(n_items) < 0.75, truth, (truth + rng.integers(1, 4, size=n_items)) % 4)
        u = rng.random(n_items)
        for name, answer in (("strong", own), ("weak_a", np.where(u < 0.4, truth, decoy)),
                             ("weak_b", np.where(u < 0.55, truth, decoy))):
            frames.append(pd.DataFrame({"task": np.arange(n_items), "worker": name, "label": np.array(LETTERS)[answer]}))
    return pd.concat(frames, ignore_index=True), truth


def table_of(df: pd.DataFrame):
    return build_votes(df.task.tolist(), df.worker.tolist(), df.label.tolist(),
                       candidates={t: LETTERS for t in df.task.unique()}, classes=LETTERS)


def dense(votes, posterior) -> np.ndarray:
    """[items sorted by id, 4] posterior, crowd-kit's layout."""
    out = np.zeros((votes.n_items, len(LETTERS)))
    out[votes.cand_item, votes.cand_class] = posterior
    return out[np.argsort(votes.item_keys)]


def theirs(df, model, **kw) -> tuple[np.ndarray, object]:
    agg = (DawidSkene if model == "full" else OneCoinDawidSkene)(**kw)
    probas = agg.fit_predict_proba(df)
    return probas.reindex(columns=list(LETTERS)).sort_index().to_numpy(), agg


def best_of(fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def plain_prior(votes, posterior):
    mass = np.bincount(votes.cand_class, weights=posterior, minlength=len(votes.classes))
    return mass / mass.sum()


def speed_and_agreement(df: pd.DataFrame, truth: np.ndarray) -> list[str]:
    lines = ["| model | library | build table (s) | to convergence (s) | rounds | per round (ms) | accuracy |",
             "|---|---|---:|---:|---:|---:|---:|"]
    agree = ["| model | setting | max abs posterior gap | mean gap | same winner |", "|---|---|---:|---:|---:|"]
    build_s, votes = best_of(lambda: table_of(df))
    order = np.sort(df.task.unique())
    for model in ("full", "one_coin"):
        ck_model = "DawidSkene" if model == "full" else "OneCoinDawidSkene"
        ours_s, ours_r = best_of(lambda m=model: dawid_skene(votes, model=m))
        fixed_s, _ = best_of(lambda m=model: dawid_skene(votes, model=m, tol=0.0, max_iter=FIXED_ROUNDS))
        ck_s, (ck_p, ck) = best_of(lambda m=model: theirs(df, m))
        ck_fixed_s, _ = best_of(lambda m=model: theirs(df, m, n_iter=FIXED_ROUNDS, tol=-np.inf))
        mine = dense(votes, ours_r.posterior)
        acc = lambda p: float((p.argmax(1) == truth[order]).mean())  # noqa: E731
        lines.append(f"| {model} | rmsd | {build_s:.2f} | {ours_s:.2f} | {ours_r.n_iter} | "
                     f"{1000 * fixed_s / FIXED_ROUNDS:.1f} | {acc(mine):.4f} |")
        lines.append(f"| {model} | crowd-kit {ck_model} | (DataFrame) | {ck_s:.2f} | {len(ck.loss_history_)} | "
                     f"{1000 * ck_fixed_s / FIXED_ROUNDS:.1f} | {acc(ck_p):.4f} |")
        gap = np.abs(mine - ck_p)
        agree.append(f"| {model} | each library's defaults, converged | {gap.max():.4f} | {gap.mean():.2e} | "
                     f"{(mine.argmax(1) == ck_p.argmax(1)).mean():.4%} |")
        original = consensus._class_prior
        consensus._class_prior = plain_prior  # the one hard-coded difference (add-one class prior)
        try:
            same = dense(votes, dawid_skene(votes, model=model, prior_right=1e-10, prior_wrong=3e-10, tol=0.0,
                                            max_iter=FIXED_ROUNDS).posterior)
        finally:
            consensus._class_prior = original
        ref, _ = theirs(df, model, n_iter=FIXED_ROUNDS, tol=-np.inf)
        gap = np.abs(same - ref)
        agree.append(f"| {model} | models made to coincide, {FIXED_ROUNDS} rounds each | {gap.max():.1e} | "
                     f"{gap.mean():.1e} | {(same.argmax(1) == ref.argmax(1)).mean():.4%} |")
    return lines + [""] + agree


def gold(n_items: int) -> list[str]:
    df, truth = shared_mistakes(n_items)
    votes = table_of(df)
    keys = np.array(votes.item_keys)
    is_gold = np.random.default_rng(1).random(n_items) < 0.1
    on_gold = is_gold[keys[votes.cand_item]]
    clamp = np.full(len(votes.labels), np.nan)  # 1 on a gold item's truth, 0 on its other candidates
    clamp[on_gold] = np.array(votes.labels)[on_gold] == np.array(LETTERS)[truth[keys[votes.cand_item]]][on_gold]
    true_labels = pd.Series(np.array(LETTERS)[truth[is_gold]], index=np.flatnonzero(is_gold))
    runs = {
        "rmsd, label-free": lambda: dense(votes, dawid_skene(votes, model="full").posterior),
        "rmsd, clamp: error models from the gold items alone":
            lambda: dense(votes, dawid_skene(votes, model="full", clamp=clamp).posterior),
        "crowd-kit DawidSkene, label-free": lambda: theirs(df, "full")[0],
        "crowd-kit DawidSkene, true_labels: gold fixed inside EM over all items":
            lambda: DawidSkene().fit_predict_proba(df, true_labels).reindex(columns=list(LETTERS)).sort_index()
            .to_numpy(),
    }
    rows = ["| method | accuracy on the non-gold items | votes agreeing with the winner: strong / weak_a |",
            "|---|---:|---|"]
    for name, run in runs.items():
        winner = run().argmax(1)  # items 0..n-1 in order
        share = {w: float((winner[df.task[df.worker == w]] == pd.Index(LETTERS).get_indexer(df.label[df.worker == w]))
                          .mean()) for w in ("strong", "weak_a")}
        rows.append(f"| {name} | {(winner == truth)[~is_gold].mean():.3f} | "
                    f"{share['strong']:.2f} / {share['weak_a']:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=25_000)
    args = parser.parse_args()
    load = os.getloadavg()
    df, truth = simulate(args.items)
    body = speed_and_agreement(df, truth)
    gold_rows = gold(min(args.items, 5000))
    text = "\n".join([
        f"# Dawid–Skene: rmsd against crowd-kit {version('crowd-kit')} ({args.items:,} items, {len(df):,} votes)",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_consensus.py --items {args.items}`  ",
        f"Machine: {platform.machine()}, python {platform.python_version()}, numpy {np.__version__}, "
        f"pandas {pd.__version__}; load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(1 / 5 / 15 min; 2 cores shared with other jobs: timings vary by ~±30%).  ",
        f"Votes: 5 simulated workers (accuracy {', '.join(f'{w} {a}' for w, a in WORKERS.items())}; `biased` "
        "puts 80% of its mistakes on B), each on 80% of the items, 2 votes per item. Times are the best of "
        f"{REPEATS}; 'to convergence' uses each library's own defaults (rmsd: max posterior change < 1e-6, "
        "at most 200 rounds; crowd-kit: ELBO change < 1e-5, at most 100 rounds); 'per round' is the time of "
        f"{FIXED_ROUNDS} rounds with early stopping off, divided by {FIXED_ROUNDS}. Accuracy: winners against "
        "the simulated truth.",
        "", *body, "",
        f"Gold items ({min(args.items, 5000):,} items, 10% gold; a strong worker 0.75 and two weak ones 0.4 / "
        "0.55 that give the same wrong answer together, 2 votes each):",
        "", *gold_rows, "",
    ])
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
