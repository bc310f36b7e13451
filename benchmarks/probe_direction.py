"""Where does the tiny student lose synthvid's easy motion questions: vision or language? (issue 2)

1. A linear probe on the *untrained* vision tower: the merged video tokens of each easy
   direction clip, concatenated in token order (so the probe knows where each token is),
   and a softmax regression onto the four directions, trained on 75% of the clips and
   scored on the rest. High accuracy means the pixels reach the language model with the
   direction recoverable from them.
2. With `--predictions` (the `predictions.jsonl` bench_learning writes next to its data),
   how often the student's reply names the right option *word* ("moves up", "is red")
   against how often its answer letter is right: a right word with a wrong letter is the
   word-to-shuffled-letter lookup still missing; a wrong word is perception.

    python benchmarks/probe_direction.py --data runs/bench_learning/synthvid-v2-n2000-s0-easy=1 \\
        --predictions runs/bench_learning/predictions.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import torch

DIRECTIONS = {"left": 0, "right": 1, "up": 2, "down": 3}
WORDS = {"direction": r"moves (\w+)", "colour": r"object is (\w+)"}


def probe(data: Path, clips: int, seed: int) -> tuple[float, float, int]:
    """(train accuracy, held-out accuracy, clips) of a linear probe for the direction."""
    from rmsd.datasets.synthvid import load_items
    from rmsd.media.video import load_frames
    from rmsd.models.offline.tiny import build_student
    from rmsd.models.processing import encode, load_student

    items = [it for it in load_items(data, "train") if it.meta["question_kind"] == "direction"][:clips]
    with tempfile.TemporaryDirectory() as tmp:
        model, processor = load_student(build_student(Path(tmp) / "student", seed=seed))
    features, labels = [], []
    with torch.no_grad():
        for it in items:
            batch = encode(processor, [it.prompt], [load_frames(it.video, num_frames=8)])
            out = model.model.visual(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"])
            tokens = out.pooler_output if hasattr(out, "pooler_output") else out
            features.append(tokens.flatten())
            labels.append(DIRECTIONS[it.options[ord(it.answer) - ord("A")]])
    x, y = torch.stack(features), torch.tensor(labels)
    n = int(0.75 * len(y))
    x = (x - x[:n].mean(0)) / (x[:n].std(0) + 1e-6)
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], len(DIRECTIONS))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-3)
    for _ in range(500):
        loss = torch.nn.functional.cross_entropy(head(x[:n]), y[:n])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = [(head(x[s]).argmax(1) == y[s]).float().mean().item() for s in (slice(0, n), slice(n, None))]
    return accuracy[0], accuracy[1], len(y)


def words_and_letters(data: Path, predictions: Path) -> dict[str, Counter]:
    """Per question kind: counts of (word right?, letter right?) in the student's replies."""
    from rmsd.datasets.synthvid import load_items

    items = {it.item_id: it for it in load_items(data, "test")}
    counts: dict[str, Counter] = {kind: Counter() for kind in WORDS}
    for line in predictions.read_text().splitlines():
        row = json.loads(line)
        item = items.get(row["item_id"])
        if item is None or row["kind"] not in WORDS:
            continue
        said = re.search(WORDS[row["kind"]], row["response"])
        truth = item.options[ord(item.answer) - ord("A")]
        counts[row["kind"]][(bool(said) and said.group(1) == truth, row["score"] > 0)] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a synthvid folder with easy-tier items")
    ap.add_argument("--clips", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0, help="the student's init seed")
    ap.add_argument("--predictions", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train_acc, test_acc, n = probe(args.data, args.clips, args.seed)
    print(f"linear probe on the untrained vision tower, {n} direction clips: train {train_acc:.2f}, "
          f"held out {test_acc:.2f} (chance 0.25)")
    if args.predictions:
        for kind, c in words_and_letters(args.data, args.predictions).items():
            total = sum(c.values()) or 1
            word = sum(v for (w, _), v in c.items() if w) / total
            letter = sum(v for (_, ok), v in c.items() if ok) / total
            print(f"{kind}: {total} replies, right word {word:.2f}, right letter {letter:.2f}")


if __name__ == "__main__":
    main()
