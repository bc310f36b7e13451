"""benchmarks/pilot.py end to end on a small copy of regime v4: every rung trained and judged, the decision
recorded, a decided pilot never run again, and an interrupted one resumed from its committed record without
training anything twice."""

from __future__ import annotations

import json
import sys

import pilot
import pytest
import regimes
import torch

from rmsd.models.offline.pretrain import PretrainConfig, build_pretrained


@pytest.fixture
def small_regime(tmp_path, monkeypatch):
    import rmsd.models.offline.pretrain as pretrain

    torch.set_num_threads(1)
    config = PretrainConfig(steps=1, batch_size=2, videos=2, mix={"drill": 1.0})
    monkeypatch.setattr(pretrain, "SHIPPED", build_pretrained(tmp_path / "base", config=config,
                                                              cache=tmp_path / "cache", log=None))
    small = {**regimes.REGIMES["v4"], "n": 30, "adv_steps": 1,
             "pilot": {"methods": ["ceiling", "single"], "seeds": [0, 1], "sft_steps": [1, 2]}}
    monkeypatch.setitem(regimes.REGIMES, "small", small)
    monkeypatch.setattr(pilot, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    monkeypatch.setattr(sys, "argv", ["pilot.py", "--regime", "small", "--work", str(tmp_path / "work")])
    return tmp_path


def test_the_pilot_judges_every_rung_and_records_its_decision(small_regime, monkeypatch):
    pilot.main()
    record = json.loads((small_regime / "results" / "pilot_small.json").read_text())
    assert list(record["rungs"]) == ["1", "2"]  # a 1-step student passes no rung: both were tried
    assert record["chosen_sft_steps"] == "none"
    for s, rung in record["rungs"].items():
        assert [(r["method"], r["seed"]) for r in rung["runs"]] == [("ceiling", 0), ("single", 0), ("ceiling", 1),
                                                                    ("single", 1)]
        assert all(r["steps"]["sft"] == int(s) + 1 for r in rung["runs"])  # S + R SFT steps
        assert all(len(r["final"]["per_item"]) == record_test_items(small_regime) for r in rung["runs"])
        assert set(rung["verdict"]) >= {"a", "b", "c", "passes", "gap", "kind_spread"}
        assert rung["verdict"]["passes"] is False
    text = (small_regime / "results" / "pilot_small.md").read_text()
    assert "## S = 1 " in text and "## S = 2 " in text and "Decision: **none**" in text
    assert "Rung verdict: **does not pass**" in text and "| ceiling | 1 |" in text
    assert text.count("Headroom, paired per item") == 2  # every judged rung says where its headroom lies
    with pytest.raises(SystemExit, match="has decided"):
        pilot.main()

    # --report judges every complete rung again from the record alone: nothing trained, the same verdicts
    judged = {s: rung.pop("verdict") for s, rung in record["rungs"].items()}
    (small_regime / "results" / "pilot_small.json").write_text(json.dumps(record))
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--report"])
    pilot.main()
    rewritten = json.loads((small_regime / "results" / "pilot_small.json").read_text())
    assert {s: rung["verdict"] for s, rung in rewritten["rungs"].items()} == json.loads(json.dumps(judged))
    monkeypatch.setattr(sys, "argv", sys.argv[:-1])

    # an interrupted pilot (no decision yet, its run folders gone with the session) resumes from the record
    del record["chosen_sft_steps"]
    (small_regime / "results" / "pilot_small.json").write_text(json.dumps(record))
    for s in ("S1", "S2"):
        for run in (small_regime / "work" / s).glob("*/seed*/result.json"):
            run.unlink()
    pilot.main()
    again = json.loads((small_regime / "results" / "pilot_small.json").read_text())
    assert all(r.get("cached") for rung in again["rungs"].values() for r in rung["runs"])  # nothing trained twice
    assert again["chosen_sft_steps"] == "none"


def record_test_items(root) -> int:
    return len((root / "work" / "data" / "test.jsonl").read_text().splitlines())
