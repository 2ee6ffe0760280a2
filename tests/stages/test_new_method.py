"""Extending is what the README says: a new combining method is one function and one registry
entry, and the pipeline reports it everywhere (token logging, frequency, scaling law, findings)
without any other list of methods to update."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fsgen.engine.methods import METHODS, Method
from fsgen.stages import findings, frequency, scaling_law
from fsgen.stages.config import stage_config
from fsgen.stages.token_logging import log_tokens, write_logging_outputs
from tests.conftest import REPO, RUN


def average(view):
    """The new rule: the mean of System 1's and the large model's logits."""
    return (view.s + view.l) / 2


@pytest.mark.slow
def test_a_registered_method_appears_in_every_output(tiny_ladder, tmp_path, monkeypatch):
    profile, root = tiny_ladder
    monkeypatch.setenv("FSGEN_ROOT", str(root))
    monkeypatch.setitem(METHODS, "average", Method("average", average, "combined"))

    log_tokens(profile, tmp_path / "logs", **RUN)  # methods="all": the registry's
    summary = write_logging_outputs(
        tmp_path / "logs", tmp_path / "token_logging.json", tmp_path / "01", bootstrap=20
    )
    pairs = {("t1", "t0"), ("t2", "t0"), ("t2", "t1")}
    logged = summary[summary["method"] == "average"]
    assert set(zip(logged["large"], logged["small"], strict=True)) == pairs

    config = stage_config("frequency", "", {"profile": "tiny", "size_column": "params"})
    paths = frequency.Paths(tmp_path / "01/summary.csv", tmp_path / "02.json", tmp_path / "02")
    table = frequency.run(config, paths).table
    assert set(table[table["method"] == "average"]["pair"]) == {"t1-t0", "t2-t0", "t2-t1"}
    metrics = json.loads((tmp_path / "02.json").read_text())
    assert "synthetic.average.t2-t1.collaboration_frequency" in metrics
    assert "synthetic.average.share_under_20pct" in metrics

    tiny = {"executor": "local", "bootstrap": 10, "seed": 0, "paper_dataset": "gsm8k"}
    config = stage_config("scaling_law", "", tiny | {"workers": 1})
    paper = REPO / "data/paper/fsgen_collaboration_frequency.csv"
    paths = scaling_law.Paths(
        tmp_path / "02/frequency.csv", paper, tmp_path / "03.json", tmp_path / "03"
    )
    fits = scaling_law.run(config, paths).fits
    assert "average" in set(fits["method"])
    assert "synthetic.average.a" in json.loads((tmp_path / "03.json").read_text())

    config = stage_config("findings", "", {"task": "synthetic", "llm_to_slm_task": "expression"})
    missing = tmp_path / "not-written"
    paths = findings.Paths(
        tmp_path / "02/frequency.csv",
        tmp_path / "03/fits.csv",
        tmp_path / "03/paper_fits.csv",
        paper,
        *[missing / name for name in ("auroc.csv", "position.csv", "ladder.csv")],
        *[missing / name for name in ("l2s.json", "l2s_timing.json", "routers.csv")],
        *[missing / name for name in ("divergence.csv", "divergence_early.json")],
        missing / "accelerations.csv",
        tmp_path / "07.json",
        tmp_path / "07_timing.json",
        tmp_path / "07",
    )
    findings.run(config, paths)
    rows = pd.read_csv(tmp_path / "07/findings.csv").set_index("id")
    methods = len(set(table["method"]))
    assert methods == len([m for m in METHODS.values() if m.pairs])  # every pair method, ours too
    assert rows.loc["cf_under_20pct", "detail"].startswith(f"{3 * methods} method x pair rows")
