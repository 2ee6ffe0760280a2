"""The findings table: each verdict follows its stated rule, and missing inputs are named."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from fsgen.analysis import findings
from fsgen.analysis.findings import FAILS, HOLDS, OPEN, by_interval
from fsgen.analysis.findings_beyond import beyond_table
from fsgen.analysis.scaling import paper_frequencies


@pytest.mark.parametrize(
    "low, high, verdict",
    [(0.6, 0.9, HOLDS), (0.1, 0.4, FAILS), (0.4, 0.6, OPEN), (math.nan, 0.9, OPEN)],
)
def test_a_verdict_by_interval_needs_the_whole_interval_on_one_side(low, high, verdict):
    assert by_interval(low, high, 0.5) == verdict


def _frequency(cfs, lows, highs) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "collaboration_frequency": cfs,
            "collaboration_frequency_low": lows,
            "collaboration_frequency_high": highs,
        }
    )


def test_cf_under_20pct_counts_pairs_whose_interval_is_under():
    paper = pd.DataFrame({"collaboration_frequency": [0.1, 0.3]})
    sure = findings.cf_under_20pct(
        _frequency([0.1, 0.1, 0.3], [0.05] * 3, [0.15, 0.15, 0.35]), paper
    )
    assert (sure["ours"], sure["low"], sure["high"], sure["verdict"]) == (2 / 3, 2 / 3, 1.0, HOLDS)
    assert sure["paper_figure"] == 0.5
    wide = findings.cf_under_20pct(_frequency([0.1, 0.1, 0.3], [0.05] * 3, [0.25] * 3), paper)
    assert wide["verdict"] == OPEN  # under on the estimate, not surely under


def test_llm_to_slm_rows_read_speed_and_relative_quality():
    speed = findings.llm_to_slm_speed(
        {
            "x.llm_to_slm.batch1.speedup_vs_large": 2.5,
            "x.llm_to_slm.batch8.speedup_vs_large": 1.8,
            "y.llm_to_slm.batch1.speedup_vs_large": 9.0,
        },
        "x",
    )
    assert speed["ours"] == 1.8 and speed["verdict"] == FAILS  # the smaller of the two, task x
    quality = findings.llm_to_slm_quality(
        {
            "x.large.accuracy": 0.5,
            "x.llm_to_slm.accuracy": 0.45,
            "x.llm_to_slm.accuracy_low": 0.4,
            "x.llm_to_slm.accuracy_high": 0.49,
        },
        "x",
    )
    assert quality["ours"] == pytest.approx(0.9) and quality["verdict"] == HOLDS
    assert findings.llm_to_slm_quality({}, "x")["verdict"] == OPEN


def _ladder(losses, residuals, accuracies):
    n = len(losses)
    return pd.DataFrame(
        {
            "model": [f"m{i}" for i in range(n)] + ["m0-chat"],
            "variant": ["base"] * n + ["tuned"],
            "params": [10 * 2**i for i in range(n)] + [10],
            "heldout_loss": [*losses, 0.9],
            "loss_residual": [*residuals, float("nan")],
            "accuracy": [*accuracies, 0.9],
            "accuracy_low": [a - 0.05 for a in accuracies] + [0.85],
            "accuracy_high": [a + 0.05 for a in accuracies] + [0.95],
        }
    )


def test_instrument_rows_read_the_base_rungs_of_the_ladder():
    good = _ladder([0.5, 0.4, 0.35, 0.33], [0.01, -0.02, 0.029, -0.005], [0.1, 0.2, 0.3, 0.4])
    assert findings.loss_law(good)["verdict"] == HOLDS
    assert findings.loss_law(good)["ours"] == pytest.approx(0.029)
    assert findings.accuracy_rises(good)["verdict"] == HOLDS  # the tuned copy is not a step
    bad = _ladder([0.5, 0.4, 0.35, 0.33], [0.01, -0.05, 0.0, 0.0], [0.1, 0.3, 0.3, 0.4])
    assert findings.loss_law(bad)["verdict"] == FAILS
    three = _ladder([0.5, 0.4, 0.35], [0.0, 0.0, 0.0], [0.1, 0.2, 0.3])
    assert findings.loss_law(three)["verdict"] == OPEN  # too few rungs for a 3-parameter law
    rises = findings.accuracy_rises(bad)
    assert rises["verdict"] == FAILS and rises["ours"] == pytest.approx(2 / 3)


def test_proxy_gap_needs_a_tuned_copy_of_the_largest_rung():
    frequency = pd.DataFrame(
        {
            "task": ["t", "t"],
            "method": ["proxy", "proxy"],
            "large": ["b", "b"],
            "small": ["a", "a0"],
            "n_large": [10, 10],
            "accuracy": [0.35, 0.4],
            "accuracy_low": [0.3, 0.35],
            "accuracy_high": [0.4, 0.45],
        }
    )
    untuned = pd.DataFrame({"model": ["b"], "chat_accuracy": [0.1]})
    row = findings.proxy_gap_closed(frequency, untuned, "t")
    assert row["verdict"] == OPEN and "no tuned copy" in row["detail"]
    tuned = pd.DataFrame({"model": ["b", "b-chat"], "chat_accuracy": [0.1, 0.5]})
    row = findings.proxy_gap_closed(frequency, tuned, "t")
    assert row["ours"] == pytest.approx((0.25 / 0.4 + 0.3 / 0.4) / 2)
    assert row["low"] == pytest.approx((0.2 / 0.4 + 0.25 / 0.4) / 2)  # 0.5625 > 0.5
    assert row["verdict"] == HOLDS


def test_a_scaling_fit_through_as_many_pairs_as_parameters_tests_nothing():
    """Three pairs fit b - a r^-alpha exactly (R^2 = 1, as the smollm2 profile's do)."""
    fit = {"task": "t", "method": "oracle", "r2": 1.0, "a": 5.0, "alpha": 1.9, "b": 0.7}
    fit |= {"alpha_low": 1.9, "alpha_high": 1.9, "loo_rmse": math.nan, "best_form": "power_law"}
    paper = pd.DataFrame([fit | {"task": "gsm8k", "n": 6}])
    row = findings.power_law_fit(pd.DataFrame([fit | {"n": 3}]), paper, "t")
    assert row["verdict"] == OPEN and row["detail"].startswith("3 pairs")
    row = findings.power_law_fit(pd.DataFrame([fit | {"n": 4}]), paper, "t")
    assert row["verdict"] == HOLDS


def test_missing_outputs_make_their_rows_inconclusive(tmp_path, monkeypatch):
    monkeypatch.setenv("FSGEN_ROOT", str(tmp_path))
    (tmp_path / "data").mkdir()
    pd.DataFrame(
        {
            "dataset": ["gsm8k"],
            "method": ["oracle"],
            "large": ["7B"],
            "small": ["0.5B"],
            "collaboration_frequency": [0.1],
        }
    ).to_csv(tmp_path / "paper.csv", index=False)
    inputs = findings.Inputs(paper_points=paper_frequencies(tmp_path / "paper.csv"))
    table = findings.findings_table("synthetic", inputs)
    table = pd.concat([table, beyond_table(inputs)], ignore_index=True)
    assert list(table["id"]) == list(findings.CLAIMS)
    assert (table["verdict"] == OPEN).all()


def test_router_row_is_inconclusive_when_the_large_model_scores_nothing():
    routers = pd.DataFrame(
        {"large": ["b"], "small": ["a"], "call_rate_for_95": [0.0], "large_accuracy": [0.0]}
    )
    row = findings.router_pareto(routers)
    assert row["verdict"] == OPEN and "scores 0" in row["detail"]
    assert findings.router_pareto(routers.assign(large_accuracy=0.3))["verdict"] == HOLDS


def test_loss_law_reads_stage_00s_residuals_and_fits_only_tables_without_them():
    params = [10 * 2**i for i in range(5)]
    losses = [0.2 + 0.5 * (n / params[0]) ** -0.4 for n in params]  # exactly on a law
    written = _ladder(losses, [0.0, 0.0, 0.0, 0.0, 0.05], [0.1, 0.2, 0.3, 0.4, 0.5])
    row = findings.loss_law(written)  # the residuals stage 00 wrote, not a refit's (~0)
    assert row["ours"] == pytest.approx(0.05) and row["verdict"] == FAILS
    old = written.drop(columns=["loss_residual"])  # a table from before stage 00 wrote the fit
    refit = findings.loss_law(old)
    assert refit["ours"] < 1e-4 and refit["verdict"] == HOLDS
