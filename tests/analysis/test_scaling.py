import numpy as np
import pandas as pd
import pytest
from scipy.optimize import curve_fit

from fsgen.analysis.scaling import (
    compare_forms,
    fit_linear_form,
    fit_scaling_law,
    fit_table,
    least_squares_criteria,
    leave_one_out_error,
    paper_frequencies,
    parse_size,
    scaling_law,
)


def _authors_fit(large, small, cf):
    """The FS-GEN authors' procedure, written out independently: sizes from the names
    ("1.8B" -> 1.8), r = large / small, -a * r^-alpha + b by curve_fit from (1, 1, 1) with
    every parameter >= 0.05."""
    ratio = np.array([float(x[:-1]) for x in large]) / np.array([float(x[:-1]) for x in small])
    popt, _ = curve_fit(
        lambda x, a, alpha, b: -a * x ** (-alpha) + b,
        ratio,
        np.array(cf),
        maxfev=2000,
        p0=[1.0, 1.0, 1.0],
        bounds=(0.05, np.inf),
    )
    return popt


@pytest.mark.parametrize("method", ["oracle", "contrastive", "proxy"])
@pytest.mark.parametrize("dataset", ["gsm8k", "mmlu_stem", "mbpp"])
def test_paper_points_fit_as_the_authors_fit_them(method, dataset):
    paper = paper_frequencies()
    rows = paper[(paper.method == method) & (paper.dataset == dataset)]
    fit = fit_scaling_law(rows.ratio, rows.collaboration_frequency, bootstrap=0)
    expected = _authors_fit(rows.large, rows.small, rows.collaboration_frequency)
    np.testing.assert_allclose([fit["a"], fit["alpha"], fit["b"]], expected, rtol=1e-6, atol=1e-9)
    assert fit["n"] == len(rows)


def test_qwen_oracle_gsm8k_fit():
    paper = paper_frequencies()
    rows = paper[(paper.method == "oracle") & (paper.dataset == "gsm8k")]
    assert len(rows) == 20
    fit = fit_scaling_law(rows.ratio, rows.collaboration_frequency, bootstrap=200, seed=1)
    assert min(fit["a"], fit["alpha"], fit["b"]) >= 0.05
    assert fit["a_low"] <= fit["a"] <= fit["a_high"]
    assert fit["b_low"] <= fit["b"] <= fit["b_high"]
    assert 0 <= fit["r2"] <= 1
    assert fit == fit_scaling_law(rows.ratio, rows.collaboration_frequency, bootstrap=200, seed=1)


def test_recovers_known_parameters():
    rng = np.random.default_rng(0)
    ratios = np.array([2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 100, 144], dtype=float)
    truth = (0.3, 0.7, 0.25)
    cf = scaling_law(ratios, *truth) + rng.normal(0, 0.002, len(ratios))
    fit = fit_scaling_law(ratios, cf, bootstrap=300)
    np.testing.assert_allclose([fit["a"], fit["alpha"], fit["b"]], truth, rtol=0.1)
    assert fit["r2"] > 0.99
    for name, value in zip(("a", "alpha", "b"), truth, strict=True):
        assert fit[f"{name}_low"] <= value <= fit[f"{name}_high"], name


def test_sizes_and_paper_table():
    assert parse_size("1.8B") == 1.8e9 and parse_size("410m") == 410e6 and parse_size("72B") == 72e9
    with pytest.raises(ValueError, match="expected a model size like '1.8B'.*got 'big'"):
        parse_size("big")
    paper = paper_frequencies()
    assert set(paper.method) == {"oracle", "contrastive", "proxy"}
    assert (paper.ratio > 1).all()


@pytest.mark.parametrize(
    "ratios, frequencies, message",
    [
        ([2, 4, 8], [0.1, 0.2], "equally long"),
        ([2, 2, 4, 4], [0.1, 0.1, 0.2, 0.2], "at least 3 distinct ratios"),
        ([2, -4, 8], [0.1, 0.2, 0.3], r"finite and > 1, got \[2.0, -4.0, 8.0\]"),
        ([1, 4, 8], [0.1, 0.2, 0.3], r"finite and > 1, got \[1.0, 4.0, 8.0\]"),
        ([2, 4, 8], [0.1, float("nan"), 0.3], "frequencies must be finite"),
    ],
)
def test_bad_input(ratios, frequencies, message):
    with pytest.raises(ValueError, match=message):
        fit_scaling_law(ratios, frequencies)


N_LARGE = np.array([4, 8, 8, 16, 16, 16, 32, 32, 32, 32], dtype=float)
N_SMALL = np.array([1, 1, 2, 1, 2, 4, 1, 2, 4, 8], dtype=float)


def test_criteria_of_a_prediction_are_statsmodels_own_for_an_ols_fit():
    rng = np.random.default_rng(0)
    cf = 0.3 - 0.05 * np.log(N_LARGE / N_SMALL) + rng.normal(0, 0.01, len(N_LARGE))
    ols = fit_linear_form("log_linear", N_LARGE, N_SMALL, cf)
    criteria = least_squares_criteria(cf, ols.fittedvalues, 2)
    assert criteria["aic"] == pytest.approx(ols.aic)
    assert criteria["bic"] == pytest.approx(ols.bic)
    assert criteria["r2"] == pytest.approx(ols.rsquared)


def test_model_comparison_prefers_the_form_the_data_came_from():
    rng = np.random.default_rng(0)
    by_sizes = 0.5 + 0.02 * np.log(N_LARGE) - 0.1 * np.log(N_SMALL)
    forms = compare_forms(N_LARGE, N_SMALL, by_sizes + rng.normal(0, 1e-3, len(N_LARGE)))
    for criterion in ("aic", "bic"):
        others = min(forms[f"power_law.{criterion}"], forms[f"log_linear.{criterion}"])
        assert forms[f"log_sizes.{criterion}"] < others
    assert forms["log_sizes.r2"] > 0.99
    assert forms["nested.df"] == 1 and forms["nested.p"] < 1e-6  # both sizes, not r alone
    law = scaling_law(N_LARGE / N_SMALL, 0.3, 0.7, 0.4) + rng.normal(0, 1e-4, len(N_LARGE))
    forms = compare_forms(N_LARGE, N_SMALL, law)
    assert forms["power_law.aic"] < min(forms["log_linear.aic"], forms["log_sizes.aic"])


def test_the_nested_test_needs_sizes_that_vary_apart_from_their_ratio():
    n_large = np.array([2.0, 4.0, 8.0, 16.0])
    forms = compare_forms(n_large, np.ones(4), [0.1, 0.2, 0.25, 0.27])
    assert forms["nested.df"] == 0 and np.isnan(forms["nested.p"])


def test_leave_one_out_and_fit_table():
    ratios = np.array([2, 3, 4, 6, 8, 12, 16, 32], dtype=float)
    cf = scaling_law(ratios, 0.3, 0.7, 0.25)
    exact = leave_one_out_error(ratios, cf)
    assert exact["loo_points"] == 8 and exact["loo_rmse"] < 1e-4
    assert leave_one_out_error(ratios[:3], cf[:3])["loo_points"] == 0  # 2 left: cannot fit 3
    table = pd.DataFrame(
        {
            "task": "t",
            "method": ["m"] * 8 + ["few"] * 2,
            "ratio": list(ratios) + [2.0, 4.0],
            "collaboration_frequency": list(cf) + [0.1, 0.2],
        }
    )
    table["n_small"], table["n_large"] = 1.0, table["ratio"]
    fits = fit_table(table, bootstrap=20).set_index("method")
    assert fits.loc["m", "r2"] > 0.999 and fits.loc["m", "best_form"] == "power_law"
    assert np.isnan(fits.loc["few", "a"]) and fits.loc["few", "n"] == 2
