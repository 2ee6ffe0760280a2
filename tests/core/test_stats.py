"""Intervals: Wilson for proportions, the percentile bootstrap over units for ratios."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fsgen.core.stats import (
    bootstrap_over_units,
    bootstrap_ratio_interval,
    weighted_auroc,
    wilson_interval,
)


def test_wilson_interval_matches_the_closed_form():
    low, high = wilson_interval(5, 64)
    p, n, z = 5 / 64, 64, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(10, 10)[1] == pytest.approx(1)
    assert all(np.isnan(wilson_interval(0, 0)))


@pytest.mark.parametrize("successes, trials", [(-1, 5), (6, 5)])
def test_wilson_interval_rejects_impossible_counts(successes, trials):
    with pytest.raises(ValueError, match=f"got {successes} of {trials}"):
        wilson_interval(successes, trials)


def test_bootstrap_ratio_interval_covers_the_ratio_and_narrows_with_more_units():
    rng = np.random.default_rng(1)
    tokens = rng.integers(20, 60, 400)
    mismatches = rng.binomial(tokens, 0.15)
    ratio = mismatches.sum() / tokens.sum()
    wide = bootstrap_ratio_interval(mismatches[:40], tokens[:40], resamples=500, seed=0)
    narrow = bootstrap_ratio_interval(mismatches, tokens, resamples=500, seed=0)
    assert narrow[0] < ratio < narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert narrow == bootstrap_ratio_interval(mismatches, tokens, resamples=500, seed=0)
    assert all(np.isnan(bootstrap_ratio_interval([], [], resamples=10, seed=0)))


def test_bootstrap_ratio_interval_rejects_unequal_lengths():
    with pytest.raises(ValueError, match=r"\(2,\) and \(3,\)"):
        bootstrap_ratio_interval([1, 2], [3, 4, 5], resamples=10, seed=0)


def test_bootstrap_over_units_moves_whole_units_and_is_seeded():
    units = np.repeat(np.arange(30), 5)  # 30 prompts of 5 tokens
    values = np.repeat(np.random.default_rng(2).normal(size=30), 5)  # constant within a prompt
    seen = []

    def mean(weights: np.ndarray) -> float:
        per_unit = [set(weights[units == u]) for u in range(30)]
        seen.append(all(len(w) == 1 for w in per_unit) and weights.sum() == 150)  # whole prompts
        return float(np.average(values, weights=weights))

    low, high = bootstrap_over_units(units, mean, resamples=200, seed=0)
    assert low < values.mean() < high and all(seen)
    assert (low, high) == bootstrap_over_units(units, mean, resamples=200, seed=0)
    nan = bootstrap_over_units(units, lambda weights: float("nan"), resamples=5, seed=0)
    assert all(np.isnan(nan))


def test_weighted_auroc_is_sklearns_on_repeated_rows():
    rng = np.random.default_rng(3)
    labels = rng.random(400) < 0.3
    scores = np.round(rng.normal(size=400) + labels, 1)  # rounded: many ties
    weights = rng.integers(0, 4, 400)
    repeated = np.repeat(np.arange(400), weights)
    expected = roc_auc_score(labels[repeated], scores[repeated])
    assert weighted_auroc(labels, scores, weights) == pytest.approx(expected, abs=1e-12)
    assert weighted_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(weighted_auroc(np.zeros(5), np.arange(5)))
