"""The head-to-head's rules (pair, router, draft length, re-calibration, Pareto front), its table
and its findings row, on hand-made inputs whose answers are known."""

import math

import pandas as pd
import pytest

from fsgen.analysis import accelerations
from fsgen.analysis.findings_beyond import accelerations_pareto
from fsgen.analysis.routing import KINDS
from fsgen.stages import routers
from tests.analysis.test_routing import synthetic_trace


def summary_rows(rates: dict[tuple[str, str], dict[str, float]]) -> pd.DataFrame:
    """Stage 06's summary: call_rate_for_95 per pair and router, with both models alone."""
    rows = []
    for (large, small), by_router in rates.items():
        for router, rate in by_router.items():
            rows.append(
                {"task": "synthetic", "large": large, "small": small, "router": router}
                | {"call_rate_for_95": rate, "large_accuracy": 0.6, "small_accuracy": 0.3}
            )
    return pd.DataFrame(rows)


SUMMARY = summary_rows(
    {
        ("e5", "e4"): {"threshold": 0.09, "margin": 0.08, "learned": 0.08, "random": 0.01},
        ("e5", "e3"): {"threshold": 0.07, "entropy": 0.12, "random": 0.02},
        ("e4", "e2"): {"margin": 0.01},
    }
)


def test_the_pair_is_the_cheapest_best_router_with_llm_to_slms_large_model():
    assert accelerations.choose_pair(SUMMARY, "synthetic", "e5") == ("e5", "e3")  # 0.07 < 0.08
    assert accelerations.choose_pair(SUMMARY, "synthetic", None) == ("e4", "e2")  # every pair
    assert accelerations.choose_pair(SUMMARY, "synthetic", "e9") == ("e4", "e2")  # none shares it
    with pytest.raises(ValueError, match="no router of task 'gsm8k'"):
        accelerations.choose_pair(SUMMARY, "gsm8k", "e5")
    with pytest.raises(ValueError, match="stage 06 not run"):
        accelerations.choose_pair(pd.DataFrame({"not_run": []}), "synthetic", "e5")


def test_the_router_is_the_lowest_call_rate_to_95_first_on_a_tie_random_aside():
    assert accelerations.best_router(SUMMARY, "synthetic", ("e5", "e4")) == ("margin", 0.08)
    assert accelerations.best_router(SUMMARY, "synthetic", ("e5", "e3")) == ("threshold", 0.07)
    never = SUMMARY.assign(call_rate_for_95=math.nan)
    with pytest.raises(ValueError, match="no router of pair e5-e4 reaching 95%"):
        accelerations.best_router(never, "synthetic", ("e5", "e4"))


def test_the_draft_length_is_the_fastest_measured_smallest_on_a_tie():
    speedup = pd.DataFrame(
        {
            "pair": ["e5-e4"] * 3 + ["e5-e3"] * 3,
            "k": [4, 1, 2, 1, 2, 4],
            "measured_speedup": [0.8, 0.5, 0.8, 0.9, 0.4, 0.3],
        }
    )
    assert accelerations.best_draft_length(speedup, ("e5", "e4")) == 2
    assert accelerations.best_draft_length(speedup, ("e5", "e3")) == 1
    with pytest.raises(ValueError, match="no measured speed-up of pair e4-e2"):
        accelerations.best_draft_length(speedup, ("e4", "e2"))


def test_recalibration_is_stage_06s_calibration():
    """Each router kind (and the divergence-trained one) re-calibrated to a call rate gets the
    threshold stage 06's sweep calibrates it to at that target."""
    trace = synthetic_trace(1200, seed=3)
    traces = trace.assign(method="oracle", task="synthetic", large="b", small="a")
    divergence = trace[trace["mismatch"]].assign(pair="b-a")
    divergence["divergent"] = divergence["step"] % 3 == 0
    fit = {"fit_fraction": 0.5, "top_k": 5, "seed": 4}
    template = routers.SweepRun(None, "", "", "", [], [], "synthetic", {})
    jobs, rows, _ = routers.plan_sweep(
        template,
        traces,
        [("b", "a")],
        [0.13],
        KINDS,
        fit["seed"],
        fit["fit_fraction"],
        5,
        divergence,
    )
    swept = {label["router"]: jobs[i].calibration for label, i in rows if jobs[i].calibration}
    assert set(swept) == {*KINDS, "learned_divergent"}
    for router, calibration in swept.items():
        again = accelerations.recalibrate(
            trace, router, 0.13, **fit, divergence=divergence, pair="b-a"
        )
        assert (again.kind, again.threshold) == (calibration.kind, calibration.threshold), router
        assert again.predicted_call_rate == calibration.predicted_call_rate
    with pytest.raises(ValueError, match="needs stage 08's labelled mismatches"):
        accelerations.recalibrate(trace, "learned_divergent", 0.1, **fit)


def test_the_pareto_front_keeps_every_undominated_point():
    accuracy = [0.6, 0.6, 0.5, 0.4, 0.6, 0.3]
    cost = [2.0, 1.0, 0.5, 0.5, 1.0, 0.2]
    # 0 is dominated by 1 (as accurate, cheaper); 3 by 2 (cheaper is not needed: more accurate);
    # 1 and 4 tie, both on the front; 5 is the cheapest
    assert accelerations.pareto_front(accuracy, cost) == [False, True, True, False, True, True]
    assert accelerations.pareto_front([0.5], [1.0]) == [True]
    with pytest.raises(ValueError, match="must be numbers"):
        accelerations.pareto_front([0.5, math.nan], [1.0, 2.0])


def quality_frame(accuracy: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "system": system,
                "models": "m",
                "detail": "",
                "prompts": 100,
                "correct": round(100 * value),
                "accuracy": value,
                "accuracy_low": value - 0.1,
                "accuracy_high": value + 0.1,
                "tokens": 1000,
                "call_rate": 0.0,
            }
            for system, value in accuracy.items()
        ]
    )


def timing_frame(seconds: dict[int, dict[str, list[float]]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"system": system, "batch_size": batch, "repeat": repeat, "seconds": value}
            | {"gc_seconds": 0.0, "tokens": 100}
            for batch, by_system in seconds.items()
            for system, values in by_system.items()
            for repeat, value in enumerate(values)
        ]
    )


QUALITY = quality_frame(
    {"large": 0.6, "small": 0.3, "router": 0.58, "speculative": 0.6, "llm_to_slm": 0.55}
)
TIMING = timing_frame(
    {
        1: {
            "large": [0.20, 0.22, 0.90],  # the median ignores the one slow repeat
            "small": [0.05, 0.05, 0.05],
            "router": [0.10, 0.12, 0.11],
            "speculative": [0.25, 0.25, 0.25],
            "llm_to_slm": [0.06, 0.06, 0.06],
        },
        8: {
            "large": [0.08, 0.08, 0.08],
            "small": [0.02, 0.02, 0.02],
            "router": [0.09, 0.09, 0.09],
            "speculative": [0.07, 0.07, 0.07],
            "llm_to_slm": [0.03, 0.03, 0.03],
        },
    }
)


def test_the_head_to_head_table_takes_medians_and_a_front_per_batch_size():
    table = accelerations.head_to_head(QUALITY, TIMING).set_index(["batch_size", "system"])
    assert len(table) == 10
    assert table.loc[(1, "large"), "ms_per_token"] == pytest.approx(2.2)  # 0.22 s / 100 tokens
    assert table.loc[(1, "router"), "speedup_vs_large"] == pytest.approx(2.0)
    assert table.loc[(8, "speculative"), "speedup_vs_large"] == pytest.approx(0.08 / 0.07)
    front = {b: set(rows.index[rows["on_front"]]) for b, rows in table.groupby(level=0)}
    assert front[1] == {(1, "large"), (1, "small"), (1, "router"), (1, "llm_to_slm")}
    assert front[8] == {(8, "small"), (8, "speculative"), (8, "llm_to_slm")}
    assert table.loc[(8, "router"), "accuracy_low"] == pytest.approx(0.48)
    timings = accelerations.timing_metrics(table.reset_index(), 2)
    assert timings["batch1.front"] == "large,small,router,llm_to_slm"
    assert timings["speculative.draft_length"] == 2 and timings["router.batch8.on_front"] == 0


def test_the_findings_row_needs_an_acceleration_on_both_fronts_and_faster():
    table = accelerations.head_to_head(QUALITY, TIMING)
    row = accelerations_pareto(table)
    assert "qualifying: llm_to_slm" in row["detail"]  # the router is off the batch-8 front
    assert row["ours"] == pytest.approx(0.55 / 0.6)
    assert row["high"] == pytest.approx(0.65 / 0.6) and row["verdict"] == "holds"
    lower = QUALITY[QUALITY["system"] != "llm_to_slm"]
    worse = pd.concat([lower, quality_frame({"llm_to_slm": 0.4})], ignore_index=True)
    worse = accelerations.head_to_head(worse, TIMING)
    row = accelerations_pareto(worse)
    assert row["high"] == pytest.approx(0.5 / 0.6) and row["verdict"] == "does not hold"
    slow = TIMING.assign(seconds=TIMING["seconds"].where(TIMING["system"] == "large", 1.0))
    row = accelerations_pareto(accelerations.head_to_head(QUALITY, slow))
    assert row["verdict"] == "does not hold" and "no acceleration qualifies" in row["detail"]
    assert accelerations_pareto(pd.DataFrame({"not_run": []}))["verdict"] == "inconclusive"
    nothing = accelerations.head_to_head(QUALITY.assign(accuracy=0.0), TIMING)
    assert accelerations_pareto(nothing)["verdict"] == "inconclusive"
