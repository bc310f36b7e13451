"""Video-R1's scoring, case for case: a table of replies over every problem type with the score Video-R1 gives.

Every expected score is derived by hand from Video-R1's own definitions in tulerfeng/Video-R1 at commit
59d65c347e44efa71be27abf9d89b4a2bb7d1c05: `src/r1-v/src/open_r1/grpo.py` (`accuracy_reward`: the first
`<answer>\\s*(.*?)\\s*</answer>` of reply and solution, stripped, "" without one; multiple choice by string
equality; numerical 0 when exactly one side has "." or ",", else `float` after dropping commas, equal at
`round(·, 2)`; OCR 1 − word error rate over `str.split()` words divided by max(1, reference words), clipped;
free-form the mean of rouge_score's ROUGE-1/2/L F-measures with `use_stemmer=True`, clipped; regression
1 − min(1, max(0, (|a − g| + 1e-9) / (|g| + 1e-9))); anything failing 0) and `src/eval_bench.py` (`reward_fn`:
the whole reply when it has no `<answer>`, regression by `mean_relative_accuracy` in float32 over thresholds
0.50…0.95; it has no branch for OCR and free-form, which rmsd scores by the training formulas). rmsd must give the
same number on every row, through every public path: the one-call functions, the `videor1` benchmark's
extract + score on items loaded from a Video-R1 JSON, and the RL stage's `correctness` reward. (Every row was also
checked once against Video-R1's own `accuracy_reward`, run from that commit's source: equal on all of them.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from corpora import CHOICES, videor1_row, write_mp4

from rmsd.datasets import get_benchmark
from rmsd.datasets.videor1_reward import eval_reward, rouge_mean, training_reward
from rmsd.eval.evaluate import score_predictions
from rmsd.train.rewards import CorrectnessReward

MC, NUM, OCR, FREE, REG = "multiple choice", "numerical", "OCR", "free-form", "regression"


def reg(a: float, g: float) -> float:
    """The training reward's regression formula, as written in grpo.py (clip order included)."""
    return 1 - min(1.0, max(0.0, (abs(a - g) + 1e-9) / (abs(g) + 1e-9)))


# (problem_type, solution as the row writes it, reply, Video-R1's accuracy_reward)
TABLE = [
    # multiple choice: the first <answer> content, trimmed, equal as a string
    (MC, "<answer>B</answer>", "<think>The cup is blue.</think><answer>B</answer>", 1.0),
    (MC, "<answer>B</answer>", "<answer> B </answer>", 1.0),
    (MC, "<answer>B</answer>", "<answer>\nB\n</answer>", 1.0),
    (MC, "<answer>B</answer>", "<answer>b</answer>", 0.0),  # case counts
    (MC, "<answer>B</answer>", "<answer>B.</answer>", 0.0),
    (MC, "<answer>B</answer>", "<answer>(B)</answer>", 0.0),
    (MC, "<answer>B</answer>", "<answer>B. blue</answer>", 0.0),
    (MC, "<answer>B</answer>", "B", 0.0),  # no tag: the answer is ""
    (MC, "<answer>B</answer>", "The answer is B.", 0.0),
    (MC, "<answer>B</answer>", "<think>x</think><answer>B", 0.0),  # unclosed tag
    (MC, "<answer>B</answer>", "<answer>B</answer><answer>C</answer>", 1.0),  # the first tag counts
    (MC, "<answer>B</answer>", "<answer>C</answer><answer>B</answer>", 0.0),
    (MC, "<answer>B</answer>", "<answer><answer>B</answer></answer>", 0.0),  # content "<answer>B"
    (MC, "<answer>B</answer>", "<answer></answer>", 0.0),
    (MC, "<answer>B</answer>", "<think><answer>B</answer></think>", 1.0),  # a tag inside the reasoning counts
    (MC, "B", "no tags at all", 1.0),  # an untagged solution reads "" and so does the reply
    (MC, "B", "<answer>B</answer>", 0.0),
    # numerical: the decimal-mark rule, then float() after dropping commas, equal at 2 decimals
    (NUM, "<answer>3</answer>", "<answer>3</answer>", 1.0),
    (NUM, "<answer>3</answer>", "<answer>3.0</answer>", 0.0),
    (NUM, "<answer>3</answer>", "<answer>3.</answer>", 0.0),
    (NUM, "<answer>3</answer>", "<answer> 3 </answer>", 1.0),
    (NUM, "<answer>3</answer>", "<answer>+3</answer>", 1.0),
    (NUM, "<answer>3</answer>", "<answer>3 people</answer>", 0.0),
    (NUM, "<answer>3</answer>", "<answer>three</answer>", 0.0),
    (NUM, "<answer>3</answer>", "<answer>$3</answer>", 0.0),
    (NUM, "<answer>3</answer>", "3", 0.0),
    (NUM, "<answer>3</answer>", "<answer>nan</answer>", 0.0),
    (NUM, "<answer>1000</answer>", "<answer>1e3</answer>", 1.0),
    (NUM, "<answer>1000</answer>", "<answer>1_000</answer>", 1.0),  # float() reads digit underscores
    (NUM, "<answer>1000</answer>", "<answer>1,000</answer>", 0.0),
    (NUM, "<answer>1,200</answer>", "<answer>1200</answer>", 0.0),
    (NUM, "<answer>1,200</answer>", "<answer>1,200</answer>", 1.0),
    (NUM, "<answer>1,200</answer>", "<answer>12,00</answer>", 1.0),  # every comma dropped
    (NUM, "<answer>1,200</answer>", "<answer>1.200</answer>", 0.0),  # 1.2
    (NUM, "<answer>5.00</answer>", "<answer>5</answer>", 0.0),
    (NUM, "<answer>5.00</answer>", "<answer>5.0</answer>", 1.0),
    (NUM, "<answer>5.00</answer>", "<answer>5.004</answer>", 1.0),
    (NUM, "<answer>5.00</answer>", "<answer>5.006</answer>", 0.0),
    (NUM, "<answer>0.5</answer>", "<answer>.5</answer>", 1.0),
    (NUM, "<answer>2.675</answer>", "<answer>2.67</answer>", 1.0),  # round(2.675, 2) == 2.67 in binary floats
    (NUM, "<answer>-2</answer>", "<answer>-2</answer>", 1.0),
    (NUM, "<answer>-2</answer>", "<answer>\u22122</answer>", 0.0),  # a Unicode minus is no number to float()
    # OCR: 1 - word error rate, case- and punctuation-sensitive, clipped
    (OCR, "<answer>Open the door</answer>", "<answer>Open the door</answer>", 1.0),
    (OCR, "<answer>Open the door</answer>", "<answer>open the door</answer>", 1 - 1 / 3),
    (OCR, "<answer>Open the door</answer>", "<answer>Open  the\ndoor</answer>", 1.0),
    (OCR, "<answer>Open the door</answer>", "<answer>Open the door.</answer>", 1 - 1 / 3),
    (OCR, "<answer>Open the door</answer>", "<answer>Open the red door</answer>", 1 - 1 / 3),
    (OCR, "<answer>Open the door</answer>", "<answer>Open</answer>", 1 - 2 / 3),
    (OCR, "<answer>Open the door</answer>", "<answer>a b c d e f g</answer>", 0.0),  # 7 edits / 3 words
    (OCR, "<answer>Open the door</answer>", "Open the door", 0.0),  # no tag: every word deleted
    (OCR, "<answer></answer>", "<answer></answer>", 1.0),  # 0 edits / max(1, 0)
    (OCR, "<answer></answer>", "<answer>x</answer>", 0.0),
    # free-form: mean of ROUGE-1/2/L F with Porter stemming (rouge_score's tokeniser: a-z0-9, lower case)
    (FREE, "<answer>a person walks to the left</answer>", "<answer>a person walks to the left</answer>", 1.0),
    (FREE, "<answer>a person walks to the left</answer>", "<answer>A Person walks to the LEFT.</answer>", 1.0),
    # stems: walked = walks = walk; unigrams 5/6, bigrams 4/5, LCS 5/6
    (FREE, "<answer>a person walks to the left</answer>", "<answer>the person walked to the left</answer>",
     (5 / 6 + 4 / 5 + 5 / 6) / 3),
    # the same words reversed: unigrams 1, no bigram, LCS 1 of 6
    (FREE, "<answer>a person walks to the left</answer>", "<answer>left the to walks person a</answer>",
     (1 + 0 + 1 / 6) / 3),
    (FREE, "<answer>a person walks to the left</answer>", "<answer>dog</answer>", 0.0),
    (FREE, "<answer>a person walks to the left</answer>", "<answer>\u4eba\u5411\u5de6\u8d70</answer>", 0.0),
    (FREE, "<answer>a person walks to the left</answer>", "a person walks to the left", 0.0),  # no tag
    # regression: 1 - relative error with 1e-9 on both sides, clipped in grpo.py's order
    (REG, "<answer>12.5</answer>", "<answer>10</answer>", reg(10, 12.5)),
    (REG, "<answer>12.5</answer>", "<answer>12.5</answer>", reg(12.5, 12.5)),  # just under 1
    (REG, "<answer>12.5</answer>", "<answer>1,2.5</answer>", reg(12.5, 12.5)),  # commas dropped, no mark rule
    (REG, "<answer>12.5</answer>", "<answer>30</answer>", 0.0),
    (REG, "<answer>12.5</answer>", "<answer>-12.5</answer>", 0.0),
    (REG, "<answer>12.5</answer>", "<answer>about 12</answer>", 0.0),
    (REG, "<answer>12.5</answer>", "12.5", 0.0),
    (REG, "<answer>12.5</answer>", "<answer>nan</answer>", 1.0),  # max(0.0, nan) keeps 0.0
    (REG, "<answer>12.5</answer>", "<answer>inf</answer>", 0.0),
    (REG, "<answer>0</answer>", "<answer>0</answer>", 0.0),  # 1e-9 / 1e-9: a zero reference scores 0
    (REG, "<answer>8</answer>", "<answer>7</answer>", reg(7, 8)),
    # an unknown problem type
    ("counting", "<answer>3</answer>", "<answer>3</answer>", 0.0),
]


def test_the_table_covers_every_problem_type_with_enough_replies():
    assert len(TABLE) >= 40
    assert {row[0] for row in TABLE} >= {MC, NUM, OCR, FREE, REG}
    assert reg(12.5, 12.5) < 1.0 and reg(10, 12.5) == pytest.approx(0.8)


@pytest.mark.parametrize("ptype, solution, reply, expected", TABLE)
def test_training_reward_is_video_r1_accuracy_reward(ptype, solution, reply, expected):
    assert training_reward(reply, solution, ptype) == pytest.approx(expected, abs=1e-12)


def test_the_free_form_score_is_the_rouge_score_package():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for ref, hyp in [("a person walks to the left", "the person walked to the left"),
                     ("the running dogs barked", "a dog runs and barks"), ("", "x"), ("Open it", "open IT!")]:
        s = scorer.score(ref, hyp)
        assert rouge_mean(ref, hyp) == (s["rouge1"].fmeasure + s["rouge2"].fmeasure + s["rougeL"].fmeasure) / 3


def _mra(answer: float, reference: float) -> float:
    """eval_bench.py's mean_relative_accuracy, step by step in float32 (numpy standing in for its torch)."""
    pred, target = np.float32(answer), np.float32(reference)
    relative = np.abs(pred - target) / (np.abs(target) + np.float32(1e-8))
    thresholds = np.arange(0.5, 0.95 + 0.05 / 2, 0.05).astype(np.float32)
    return float(np.float32((relative < np.float32(1) - thresholds).sum()) / np.float32(10))


# (problem_type, solution, reply, eval_bench.py's reward_fn)
EVAL_TABLE = [
    (MC, "<answer>B</answer>", "B", 1.0),  # no tag: the whole reply
    (MC, "<answer>B</answer>", "B\n", 1.0),
    (MC, "<answer>B</answer>", "The answer is B.", 0.0),
    (MC, "<answer>B</answer>", "<answer>B</answer><answer>C</answer>", 1.0),
    (NUM, "<answer>3</answer>", "3", 1.0),
    (NUM, "<answer>3</answer>", "<answer>3.0</answer>", 0.0),
    (REG, "<answer>12.5</answer>", "<answer>10</answer>", _mra(10, 12.5)),  # 6 of 10 thresholds in float32
    (REG, "<answer>12.5</answer>", "<answer>12.5</answer>", 1.0),
    (REG, "<answer>12.5</answer>", "12", _mra(12, 12.5)),
    (REG, "<answer>10</answer>", "<answer>13</answer>", _mra(13, 10)),
    (REG, "<answer>0</answer>", "<answer>0</answer>", 1.0),
    (REG, "<answer>12.5</answer>", "<answer>nan</answer>", 0.0),
    # no branch in eval_bench.py (it would score 0): rmsd keeps the training formulas, on the whole reply if untagged
    (OCR, "<answer>Open the door</answer>", "<answer>Open the door</answer>", 1.0),
    (OCR, "<answer>Open the door</answer>", "Open the Door", 1 - 1 / 3),
    (FREE, "<answer>a dog</answer>", "<answer>a dog</answer>", 1.0),
]


@pytest.mark.parametrize("ptype, solution, reply, expected", EVAL_TABLE)
def test_eval_reward_is_eval_bench_reward_fn(ptype, solution, reply, expected):
    assert eval_reward(reply, solution, ptype) == expected


def test_mean_relative_accuracy_keeps_float32():
    assert _mra(10, 12.5) == float(np.float32(0.6)) != 0.6  # the relative error 0.2 misses the 0.8 threshold


# ----------------------------------------------------------------------------- the public paths on items
def _corpus(tmp_path, table):
    """A Video-R1-data folder with one row per table row whose solution the loader accepts."""
    data = tmp_path / "Video-R1-data"
    write_mp4(data / "LLaVA-Video-178K" / "clip.mp4", seed=5)
    rows, cases = [], []
    for n, (ptype, solution, reply, expected) in enumerate(table):
        if "<answer>" not in solution or ptype not in (MC, NUM, OCR, FREE, REG) or "<answer></answer>" in solution:
            continue  # a row without a reference is a broken row to the loader (tested in test_corpora.py)
        row = videor1_row(n, ptype, "./LLaVA-Video-178K/clip.mp4", "", options=CHOICES if ptype == MC else [])
        rows.append(row | {"solution": solution})
        cases.append((f"LLaVA-Video-178K/{n}", reply, expected))
    (data / "Video-R1-260k.json").write_text(json.dumps(rows, indent=2))
    return data, cases


def test_the_benchmark_extract_and_score_of_an_item_is_the_training_reward(tmp_path):
    data, cases = _corpus(tmp_path, TABLE)
    bench = get_benchmark("videor1")
    items = {it.item_id: it for it in bench.load_items(data)}
    assert len(cases) >= 60 and set(items) == {c[0] for c in cases}
    for item_id, reply, expected in cases:
        item = items[item_id]
        assert bench.score(bench.extract(reply, item), item) == pytest.approx(expected, abs=1e-12), reply
        assert bench.score(bench.extract(reply, item, mode="strict"), item, mode="strict") == pytest.approx(
            expected, abs=1e-12)
        assert bench.reward(reply, item) == pytest.approx(expected, abs=1e-12)
    # the RL stage's correctness reward: one float per rollout, the same numbers
    reward = CorrectnessReward(items, bench)
    got = reward([reply for _, reply, _ in cases], item_id=[iid for iid, _, _ in cases])
    assert got == pytest.approx([expected for _, _, expected in cases], abs=1e-12)


def test_rmsd_eval_on_a_video_r1_set_scores_as_eval_bench(tmp_path):
    data, cases = _corpus(tmp_path, EVAL_TABLE)
    bench = get_benchmark("videor1")
    items = {it.item_id: it for it in bench.load_items(data)}
    chosen = [items[iid] for iid, _, _ in cases]
    rows = score_predictions(chosen, [reply for _, reply, _ in cases], bench, "harness")
    assert [r["score"] for r in rows] == [expected for _, _, expected in cases]
    result = bench.aggregate(rows)
    regression = [e for (iid, _, e) in cases if items[iid].meta["problem_type"] == REG]
    others = [e for (iid, _, e) in cases if items[iid].meta["problem_type"] != REG]
    assert result["mean_mra"] == pytest.approx(sum(regression) / len(regression))
    assert result["mean_acc"] == pytest.approx(sum(others) / len(others))


def test_the_lenient_reading_stays_available_and_differs_where_documented(tmp_path):
    data, cases = _corpus(tmp_path, [
        (NUM, "<answer>3</answer>", "<answer>3.0</answer>", 0.0),
        (MC, "<answer>B</answer>", "The answer is B.", 0.0),
        (OCR, "<answer>Open the door</answer>", "<answer>open the door</answer>", 2 / 3),
        (NUM, "<answer>3</answer>", "<answer>3</answer><answer>4</answer>", 1.0),
    ])
    bench = get_benchmark("videor1")
    items = {it.item_id: it for it in bench.load_items(data)}
    lenient = [bench.score(bench.extract(reply, items[iid], mode="lenient"), items[iid], mode="lenient")
               for iid, reply, _ in cases]
    strict = [bench.reward(reply, items[iid]) for iid, reply, _ in cases]
    assert strict == pytest.approx([e for _, _, e in cases])
    assert lenient == [1.0, 1.0, 1.0, 0.0]  # 3.0 = 3; a letter out of prose; lower case; the last tag
