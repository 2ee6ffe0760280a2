"""The embedded ladder's loss law: held-out loss against size, L(N) = E + A * N^(-a), fitted over
the base rungs, and each rung's residual against it (stage 00's ladder table). Numbers only: the
findings table and the results report (fsgen.stages.report) read it without loading a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import least_squares


def fit_loss_law(params: Sequence[float], losses: Sequence[float]) -> dict[str, float]:
    """Fit L(N) = E + A * N^(-a) to held-out losses by least squares on the fit's error relative
    to each loss (E between 0 and the smallest loss, A >= 0, a in [0, 3]); returns E, A, a and
    the largest absolute residual (loss - fitted) / fitted, the ladder table's `loss_residual`.
    N is in units of the smallest N, so A is the loss above E there."""
    n = np.asarray(params, dtype=float)
    loss = np.asarray(losses, dtype=float)
    if len(n) < 4 or len(n) != len(loss):
        raise ValueError(
            f"need >= 4 (N, loss) points of equal length, got {len(n)} and {len(loss)}"
        )
    x = n / n.min()

    def residuals(theta: np.ndarray) -> np.ndarray:  # fitted relative to the measured loss
        e, a_coef, alpha = theta
        return (e + a_coef * x ** (-alpha)) / loss - 1.0

    start = np.array([0.5 * loss.min(), loss.max() - 0.5 * loss.min(), 0.5])
    fit = least_squares(
        residuals, start, bounds=([0.0, 0.0, 0.0], [loss.min(), np.inf, 3.0]), method="trf"
    )
    e, a_coef, alpha = (float(v) for v in fit.x)
    fitted = e + a_coef * x ** (-alpha)
    return {
        "E": e,
        "A": a_coef,
        "a": alpha,
        "n_min": float(n.min()),
        "max_abs_residual": float(np.abs((loss - fitted) / fitted).max()),
    }


def with_loss_law(ladder: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """The ladder with `fitted_loss` and `loss_residual` ((loss - fitted) / fitted) for its base
    rungs, from `fit_loss_law` over them in total parameters; and the fit itself."""
    base = ladder["variant"] == "base"
    law = fit_loss_law(ladder.loc[base, "params"], ladder.loc[base, "heldout_loss"])
    fitted = law["E"] + law["A"] * (ladder["params"] / law["n_min"]) ** (-law["a"])
    ladder = ladder.copy()
    ladder["fitted_loss"] = fitted.where(base)
    ladder["loss_residual"] = ((ladder["heldout_loss"] - fitted) / fitted).where(base)
    return ladder, law


LAW_COLUMNS = ("fitted_loss", "loss_residual")  # what `with_loss_law` adds to the ladder table


def ladder_table(ladder: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float] | None]:
    """Stage 00's ladder table: a trained ladder (one with held-out losses) with the columns of
    `with_loss_law` and the fit, or, with fewer than 4 base rungs to fit, those columns empty
    (NaN) and no fit. A ladder without held-out losses (a hub ladder) is returned as it is."""
    if "heldout_loss" not in ladder:
        return ladder, None
    if (ladder["variant"] == "base").sum() >= 4:
        return with_loss_law(ladder)
    return ladder.assign(**dict.fromkeys(LAW_COLUMNS, np.nan)), None
