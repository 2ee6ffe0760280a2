"""The collaboration-frequency scaling law of FS-GEN: CF = b - a * r^(-alpha), r = N_large/N_small.

Fitted as the FS-GEN authors did: nonlinear least squares (`scipy.optimize.curve_fit`, trust
region reflective) from the initial guess a = alpha = b = 1, with every parameter bounded below by
0.05, on ratios of the models' nominal sizes ("1.8B" / "0.5B").
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from fsgen.paths import resolve

PAPER_FREQUENCIES = "data/paper/fsgen_collaboration_frequency.csv"
LOWER_BOUND = 0.05
INITIAL_GUESS = (1.0, 1.0, 1.0)  # a, alpha, b
PARAMETERS = ("a", "alpha", "b")
_UNITS = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


def scaling_law(r: np.ndarray, a: float, alpha: float, b: float) -> np.ndarray:
    """CF(r) = b - a * r^(-alpha)."""
    return b - a * np.power(r, -alpha)


def parse_size(name: str) -> float:
    """A nominal model size such as "1.8B", "410m" or "72B" as a number of parameters."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KkMmBbTt])\s*", str(name))
    if not match:
        raise ValueError(f"expected a model size like '1.8B' or '410M', got {name!r}")
    return float(match.group(1)) * _UNITS[match.group(2).upper()]


def _fit(ratios: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    params, _ = curve_fit(
        scaling_law,
        ratios,
        frequencies,
        p0=INITIAL_GUESS,
        bounds=(LOWER_BOUND, np.inf),
        maxfev=2000,
    )
    return params


def r_squared(observed: np.ndarray, predicted: np.ndarray) -> float:
    """Coefficient of determination of `predicted` against `observed`."""
    total = float(((observed - observed.mean()) ** 2).sum())
    residual = float(((observed - predicted) ** 2).sum())
    return 1.0 - residual / total if total > 0 else float("nan")


def fit_scaling_law(
    ratios: Sequence[float],
    frequencies: Sequence[float],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Fit CF = b - a * r^(-alpha) to (ratio, frequency) points.

    Returns `a`, `alpha`, `b`, `r2`, `n`, and bootstrap intervals `<param>_low` / `<param>_high`
    at `level` (pairs resampled with replacement, `bootstrap` times, seeded; resamples whose fit
    fails or that hold fewer than 3 distinct ratios are skipped, `bootstrap_fits` counts the rest).
    """
    r = np.asarray(ratios, dtype=float)
    cf = np.asarray(frequencies, dtype=float)
    if r.shape != cf.shape or r.ndim != 1:
        raise ValueError(
            f"ratios and frequencies must be 1-D and equally long, got {r.shape} and {cf.shape}"
        )
    if len(np.unique(r)) < 3:
        raise ValueError(
            f"need at least 3 distinct ratios to fit 3 parameters, got {len(np.unique(r))}"
        )
    if (r <= 0).any() or not np.isfinite(r).all():
        raise ValueError(f"ratios must be positive and finite, got {r.tolist()}")
    if not np.isfinite(cf).all():
        raise ValueError(f"frequencies must be finite, got {cf.tolist()}")
    params = _fit(r, cf)
    result = dict(zip(PARAMETERS, map(float, params), strict=True))
    result |= {"r2": r_squared(cf, scaling_law(r, *params)), "n": int(len(r))}
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(r), len(r))
        if len(np.unique(r[pick])) < 3:
            continue
        try:
            samples.append(_fit(r[pick], cf[pick]))
        except RuntimeError:  # no convergence on this resample
            continue
    result["bootstrap_fits"] = len(samples)
    tail = (1 - level) / 2 * 100
    for i, name in enumerate(PARAMETERS):
        values = np.array([s[i] for s in samples])
        low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan)
        result[f"{name}_low"], result[f"{name}_high"] = float(low), float(high)
    return result


def paper_frequencies(path: str | os.PathLike = PAPER_FREQUENCIES) -> pd.DataFrame:
    """The FS-GEN paper's published collaboration frequencies (Qwen1.5), with size columns
    `n_large`, `n_small` and their `ratio` added."""
    frame = pd.read_csv(resolve(path))
    frame["n_large"] = frame["large"].map(parse_size)
    frame["n_small"] = frame["small"].map(parse_size)
    frame["ratio"] = frame["n_large"] / frame["n_small"]
    return frame
