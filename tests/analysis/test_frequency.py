"""Stage 02: the collaboration-frequency table, its checks and its outputs."""

import json

import pandas as pd
import pytest

from fsgen.analysis.frequency import (
    falls_with_small_rung,
    frequency_metrics,
    frequency_table,
    share_under,
)
from fsgen.stages.frequency import FIGURES

SIZES = {"s": 10.0, "m": 40.0, "l": 200.0}


def _summary() -> pd.DataFrame:
    rows = [("alone", r, "", 0.0, acc) for r, acc in (("s", 0.1), ("m", 0.2), ("l", 0.5))]
    rows += [
        ("oracle", "m", "s", 0.30, 0.2),
        ("oracle", "l", "s", 0.25, 0.5),
        ("oracle", "l", "m", 0.10, 0.5),
        ("contrastive", "l", "m", 0.09, 0.45),
        ("contrastive", "l", "s", 0.08, 0.4),
    ]
    frame = pd.DataFrame(
        rows, columns=["method", "large", "small", "collaboration_frequency", "accuracy"]
    )
    frame["task"] = "t"
    frame["tokens"], frame["mismatches"] = 100, (frame["collaboration_frequency"] * 100).round()
    return frame


def test_table_has_ratios_and_both_systems_accuracy():
    table = frequency_table(_summary(), SIZES)
    assert list(table["method"]) == ["oracle"] * 3 + ["contrastive"] * 2  # alone is not a pair
    row = table[(table.method == "oracle") & (table.pair == "l-s")].iloc[0]
    assert row.ratio == 20.0 and row.n_large == 200.0 and row.n_small == 10.0
    assert row.small_accuracy == 0.1 and row.large_accuracy == 0.5 and row.accuracy == 0.5
    oracle = table[table.method == "oracle"]
    assert list(oracle.pair) == ["m-s", "l-s", "l-m"]  # by large size, then small size


def test_unknown_rung_and_bad_summary_are_named():
    with pytest.raises(ValueError, match=r"rungs \['l'\] have no parameter count"):
        frequency_table(_summary(), {"s": 1.0, "m": 2.0})
    with pytest.raises(ValueError, match="summary lacks columns"):
        frequency_table(pd.DataFrame({"task": ["t"]}), SIZES)


def test_falls_and_share_under_twenty_percent():
    table = frequency_table(_summary(), SIZES)
    falls = falls_with_small_rung(table).set_index(["method", "large"])["falls"]
    assert falls[("oracle", "l")]  # 0.25 (small s) > 0.10 (small m)
    assert not falls[("contrastive", "l")]  # 0.08 (small s) < 0.09 (small m): rises
    assert ("oracle", "m") not in falls  # one small rung only
    share = share_under(table).set_index("method")["share"]
    assert share["oracle"] == pytest.approx(1 / 3) and share["contrastive"] == 1.0


def test_metrics_and_outputs(tmp_path):
    summary = _summary()
    table = frequency_table(summary, SIZES)
    metrics = frequency_metrics(table, summary)
    assert metrics["t.oracle.l-s.collaboration_frequency"] == 0.25
    assert metrics["t.alone.l.accuracy"] == 0.5
    assert metrics["share_under_20pct"] == pytest.approx(3 / 5)
    assert metrics["t.oracle.l.cf_falls_with_small_rung"] is True
    json.dumps(metrics)  # flat and JSON-serialisable
    for stem, plot in FIGURES.items():
        assert plot(table).axes, stem  # the analysis layer draws; only the stage saves
