"""Intervals for the study's estimates: Wilson intervals for accuracies (statsmodels) and
percentile-bootstrap intervals over prompts for ratios such as the collaboration frequency."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

LEVEL = 0.95


def wilson_interval(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of `successes` out of `trials` (NaNs when `trials` is 0)."""
    if successes < 0 or trials < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return float("nan"), float("nan")
    low, high = proportion_confint(successes, trials, alpha=1 - level, method="wilson")
    return float(low), float(high)


def percentile_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` percentile interval of the finite `values` (NaNs when none is)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ratio_interval(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    resamples: int,
    seed: int,
    level: float = LEVEL,
) -> tuple[float, float]:
    """A percentile-bootstrap interval of sum(numerators) / sum(denominators), resampling the
    units (one entry each, such as a prompt's mismatches and tokens) with replacement,
    `resamples` times, seeded. NaNs when there are no units or no resamples."""
    top, bottom = np.asarray(numerators, float), np.asarray(denominators, float)
    if top.shape != bottom.shape or top.ndim != 1:
        raise ValueError(
            f"numerators and denominators must be 1-D and equally long, got "
            f"{top.shape} and {bottom.shape}"
        )
    if resamples < 0:
        raise ValueError(f"resamples must be >= 0, got {resamples}")
    if not len(top) or not resamples:
        return float("nan"), float("nan")
    picks = np.random.default_rng(seed).integers(0, len(top), (resamples, len(top)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = top[picks].sum(axis=1) / bottom[picks].sum(axis=1)  # (resamples,)
    return percentile_interval(ratios, level)


def bootstrap_over_units(
    units: Sequence,
    statistic: Callable[[np.ndarray], float],
    *,
    resamples: int,
    seed: int,
    level: float = LEVEL,
) -> tuple[float, float]:
    """A percentile-bootstrap interval of a weighted statistic, resampling whole units with
    replacement: `units[i]` is row i's unit (a prompt, so that the tokens of one generation
    move together), and `statistic` gets one resample as a weight per row (int, shape (n,)):
    how many times the resample drew the row's unit. Resamples where it is NaN are dropped;
    NaNs when none is left."""
    if resamples < 0:
        raise ValueError(f"resamples must be >= 0, got {resamples}")
    codes, uniques = pd.factorize(pd.Series(units), sort=True)
    if not len(codes) or not resamples:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        picked = rng.integers(0, len(uniques), len(uniques))  # (n_units,) drawn units
        values.append(statistic(np.bincount(picked, minlength=len(uniques))[codes]))
    return percentile_interval(values, level)


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None):
    """The area under the ROC curve of `scores` for the binary `labels`, each row counted
    `weights` times (None: once): the chance that a positive row outscores a negative one, ties
    counting half. NaN when either class has no weight. Exact for integer weights (the sums stay
    integers or halves far below 2^53), so equal to sklearn's `roc_auc_score` up to rounding."""
    labels = np.asarray(labels, dtype=float)
    weights = np.ones_like(labels) if weights is None else np.asarray(weights, dtype=float)
    _, level = np.unique(np.asarray(scores, dtype=float), return_inverse=True)  # rank of each
    positive = np.bincount(level, weights=weights * labels)  # (n_levels,)
    negative = np.bincount(level, weights=weights * (1.0 - labels))
    below = np.cumsum(negative) - negative  # negative weight scored lower than each level
    pairs = positive.sum() * negative.sum()
    if pairs == 0:
        return float("nan")
    return float((positive * (below + 0.5 * negative)).sum() / pairs)
