"""The collaboration-frequency scaling law of FS-GEN: CF = b - a * r^(-alpha), r = N_large/N_small.

Fitted as the FS-GEN authors did: nonlinear least squares (`scipy.optimize.curve_fit`, trust
region reflective) from the initial guess a = alpha = b = 1, with every parameter bounded below by
0.05, on ratios of the models' nominal sizes ("1.8B" / "0.5B").
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import statsmodels.api as sm
from scipy.optimize import curve_fit
from sklearn.metrics import r2_score
from statsmodels.regression.linear_model import RegressionResultsWrapper
from statsmodels.tools.eval_measures import aic, bic
from statsmodels.tools.sm_exceptions import SingularMatrixWarning

from fsgen.core.names import parse_size
from fsgen.core.paths import resolve
from fsgen.core.stats import percentile_interval

PAPER_FREQUENCIES = "data/paper/fsgen_collaboration_frequency.csv"
LOWER_BOUND = 0.05
INITIAL_GUESS = (1.0, 1.0, 1.0)  # a, alpha, b
PARAMETERS = ("a", "alpha", "b")


def scaling_law(r: np.ndarray, a: float, alpha: float, b: float) -> np.ndarray:
    """CF(r) = b - a * r^(-alpha)."""
    return b - a * np.power(r, -alpha)


def _jacobian(r: np.ndarray, a: float, alpha: float, b: float) -> np.ndarray:
    """d CF / d (a, alpha, b) at each ratio (n, 3)."""
    power = np.power(r, -alpha)
    return np.column_stack([-power, a * power * np.log(r), np.ones_like(r)])


def _fit(ratios: np.ndarray, frequencies: np.ndarray, start=INITIAL_GUESS, jac=None) -> np.ndarray:
    with warnings.catch_warnings():  # covariance and step warnings on flat data: not errors
        warnings.simplefilter("ignore")
        params, _ = curve_fit(
            scaling_law,
            ratios,
            frequencies,
            p0=start,
            jac=jac,
            bounds=(LOWER_BOUND, np.inf),
            maxfev=2000,
        )
    return params


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
    The point estimate is the authors' procedure exactly; each resample's fit starts from it and
    uses the analytic Jacobian, which finds the same optimum in half the time.
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
    if not np.isfinite(r).all() or (r <= 1).any():
        raise ValueError(
            f"ratios are N_large / N_small of pairs (large > small): finite and > 1, got "
            f"{r.tolist()}"
        )
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, numbers.Integral) or bootstrap < 0:
        raise ValueError(f"bootstrap must be an integer >= 0 (resamples), got {bootstrap!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not np.isfinite(cf).all():
        raise ValueError(f"frequencies must be finite, got {cf.tolist()}")
    if ((cf < 0) | (cf > 1)).any():
        raise ValueError(
            f"frequencies are shares of tokens in [0, 1] (not percent), got {cf.tolist()}"
        )
    params = _fit(r, cf)
    result = dict(zip(PARAMETERS, map(float, params), strict=True))
    fitted = least_squares_criteria(cf, scaling_law(r, *params), len(PARAMETERS))
    result |= {"r2": fitted["r2"], "n": int(len(r))}
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(r), len(r))
        if len(np.unique(r[pick])) < 3:
            continue
        try:
            samples.append(_fit(r[pick], cf[pick], start=params, jac=_jacobian))
        except RuntimeError:  # no convergence on this resample
            continue
    result["bootstrap_fits"] = len(samples)
    for i, name in enumerate(PARAMETERS):
        low, high = percentile_interval([s[i] for s in samples], level)
        result[f"{name}_low"], result[f"{name}_high"] = low, high
    return result


def paper_frequencies(path: str | os.PathLike = PAPER_FREQUENCIES) -> pd.DataFrame:
    """The FS-GEN paper's published collaboration frequencies (Qwen1.5), with size columns
    `n_large`, `n_small` and their `ratio` added."""
    frame = pd.read_csv(resolve(path))
    frame["n_large"] = frame["large"].map(parse_size)
    frame["n_small"] = frame["small"].map(parse_size)
    frame["ratio"] = frame["n_large"] / frame["n_small"]
    return frame


# ----------------------------------------------------------------------------- stage 03

FORMS = ("power_law", "log_linear", "log_sizes")
# The linear forms, as regressors of an OLS with a constant: CF on log r ("r alone"), and CF on
# log N_large and log N_small ("both sizes"), which holds "r alone" as the case c_small = -c_large.
LINEAR_FORMS = {
    "log_linear": lambda n_large, n_small: [np.log(n_large / n_small)],
    "log_sizes": lambda n_large, n_small: [np.log(n_large), np.log(n_small)],
}


def fit_linear_form(form: str, n_large, n_small, frequencies) -> RegressionResultsWrapper:
    """The statsmodels OLS fit of one linear form (`log_linear` or `log_sizes`)."""
    if form not in LINEAR_FORMS:
        raise ValueError(f"unknown linear form {form!r}; valid: {list(LINEAR_FORMS)}")
    columns = LINEAR_FORMS[form](np.asarray(n_large, float), np.asarray(n_small, float))
    design = sm.add_constant(np.column_stack(columns), has_constant="add")
    return sm.OLS(np.asarray(frequencies, float), design).fit()


def least_squares_criteria(observed, predicted, k: int) -> dict[str, float]:
    """`aic`, `bic` and `r2` of a least-squares fit with `k` parameters and these predictions,
    on the scale statsmodels' OLS uses (Gaussian errors, variance profiled out), so that the
    nonlinear power law compares with the OLS forms. The log-likelihood is statsmodels' own: an
    OLS whose one regressor is the prediction, evaluated at coefficient 1."""
    observed, predicted = np.asarray(observed, float), np.asarray(predicted, float)
    llf = float(sm.OLS(observed, predicted[:, None]).loglike(np.ones(1)))
    n = len(observed)
    r2 = r2_score(observed, predicted) if np.ptp(observed) > 0 else float("nan")
    return {"aic": float(aic(llf, n, k)), "bic": float(bic(llf, n, k)), "r2": float(r2)}


def compare_forms(n_large, n_small, frequencies) -> dict[str, float]:
    """Each form of `FORMS` on the same points (`<form>.aic`, `.bic`, `.r2`; the power law
    fitted as `fit_scaling_law` fits it), and the nested F test of "r alone" (`log_linear`)
    against "both sizes" (`log_sizes`): `nested.f`, `nested.p` (small p: the two sizes matter
    apart from their ratio), `nested.df`."""
    n_large, n_small = np.asarray(n_large, float), np.asarray(n_small, float)
    cf = np.asarray(frequencies, float)
    out: dict[str, float] = {}
    r = n_large / n_small
    try:
        params = _fit(r, cf)
        criteria = least_squares_criteria(cf, scaling_law(r, *params), len(PARAMETERS))
    except RuntimeError:  # the power law did not converge
        criteria = dict.fromkeys(("aic", "bic", "r2"), float("nan"))
    out |= {f"power_law.{name}": value for name, value in criteria.items()}
    with warnings.catch_warnings():  # sizes collinear with r (one small rung): tested below
        warnings.simplefilter("ignore", SingularMatrixWarning)
        fits = {form: fit_linear_form(form, n_large, n_small, cf) for form in LINEAR_FORMS}
    for form, fit in fits.items():
        criteria = {"aic": fit.aic, "bic": fit.bic, "r2": fit.rsquared}
        out |= {f"{form}.{name}": float(value) for name, value in criteria.items()}
    both, alone = fits["log_sizes"], fits["log_linear"]
    if both.df_model > alone.df_model and both.df_resid > 0:
        f_value, p_value, df_diff = both.compare_f_test(alone)
        out |= {"nested.f": float(f_value), "nested.p": float(p_value), "nested.df": df_diff}
    else:  # the sizes are collinear with the ratio here: nothing to test
        out |= {"nested.f": float("nan"), "nested.p": float("nan"), "nested.df": 0.0}
    return out


def leave_one_out_error(ratios, frequencies) -> dict[str, float]:
    """Leave-one-pair-out prediction of the power law: each point predicted by the fit to the
    others. Returns `loo_rmse`, `loo_mae` and `loo_points` (points whose remaining data still
    held 3 distinct ratios and converged; NaN errors when none did)."""
    r, cf = np.asarray(ratios, float), np.asarray(frequencies, float)
    errors = []
    for i in range(len(r)):
        keep = np.arange(len(r)) != i
        if len(np.unique(r[keep])) < 3:
            continue
        try:
            params = _fit(r[keep], cf[keep])
        except RuntimeError:
            continue
        errors.append(float(scaling_law(r[i], *params) - cf[i]))
    errors = np.array(errors)
    if not len(errors):
        return {"loo_rmse": float("nan"), "loo_mae": float("nan"), "loo_points": 0}
    return {
        "loo_rmse": float(np.sqrt((errors**2).mean())),
        "loo_mae": float(np.abs(errors).mean()),
        "loo_points": int(len(errors)),
    }


def _best_form(row: dict, criterion: str) -> str:
    """The form of `FORMS` with the lowest `criterion` (NaN counts as worst)."""
    return min(FORMS, key=lambda form: np.nan_to_num(row[f"{form}.{criterion}"], nan=np.inf))


@dataclass(frozen=True)
class GroupFit:
    """One group of a CF table to fit (a `fit_table` job): its key columns and its points."""

    key: dict
    ratios: np.ndarray
    frequencies: np.ndarray
    n_large: np.ndarray
    n_small: np.ndarray
    bootstrap: int
    seed: int


def fit_group(job: GroupFit) -> dict:
    """The fit table's row for one group: the power law with its bootstrap intervals, the
    leave-one-pair-out error and the model comparison (NaNs under 3 distinct ratios)."""
    r, cf = job.ratios, job.frequencies
    row = job.key | {"n": len(r)}
    if len(np.unique(r)) < 3:
        return row
    try:
        row |= fit_scaling_law(r, cf, bootstrap=job.bootstrap, seed=job.seed)
    except RuntimeError:
        return row
    row |= leave_one_out_error(r, cf)
    row |= compare_forms(job.n_large, job.n_small, cf)
    row["best_form"] = _best_form(row, "aic")
    row["best_form_bic"] = _best_form(row, "bic")
    return row


def group_fits(
    table: pd.DataFrame,
    by: Sequence[str] = ("task", "method"),
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> list[GroupFit]:
    """The `GroupFit` of every group of `table`, in the table's order."""
    jobs = []
    for key, group in table.groupby(list(by), sort=False):
        keys = key if isinstance(key, tuple) else (key,)
        jobs.append(
            GroupFit(
                dict(zip(by, keys, strict=True)),
                group["ratio"].to_numpy(float),
                group["collaboration_frequency"].to_numpy(float),
                group["n_large"].to_numpy(float),
                group["n_small"].to_numpy(float),
                bootstrap,
                seed,
            )
        )
    return jobs


def fit_table(
    table: pd.DataFrame,
    by: Sequence[str] = ("task", "method"),
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Fit the scaling law to every group of `table` (columns `n_large`, `n_small`, `ratio`,
    `collaboration_frequency`): parameters, R^2, bootstrap intervals, leave-one-pair-out error,
    and the AIC of each form. Groups with fewer than 3 distinct ratios get a row of NaNs. (Stage
    03 fits the groups in parallel, `fsgen.stages.scaling_law`; each fit is the same anywhere.)"""
    return pd.DataFrame(
        [fit_group(job) for job in group_fits(table, by, bootstrap=bootstrap, seed=seed)]
    )


def fit_metrics(
    fits: pd.DataFrame, by: Sequence[str] = ("task", "method"), prefix: str = ""
) -> dict:
    """Flat metrics `<prefix><task>.<method>.<quantity>` from a `fit_table`."""
    metrics = {}
    for row in fits.to_dict("records"):
        key = prefix + ".".join(str(row[k]) for k in by)
        for name, value in row.items():
            if name in by:
                continue
            metrics[f"{key}.{name}"] = round(value, 6) if isinstance(value, float) else value
    return metrics


def _law_curve(fit: dict, ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grid = np.geomspace(ratios.min(), ratios.max(), 100)
    return grid, scaling_law(grid, fit["a"], fit["alpha"], fit["b"])


def plot_scaling_fits(
    table: pd.DataFrame,
    fits: pd.DataFrame,
    paper: pd.DataFrame | None = None,
    paper_fits: pd.DataFrame | None = None,
    paper_dataset: str = "gsm8k",
) -> plt.Figure:
    """Per task and method: CF against r^-alpha (where the law is a straight line) and against
    log r, with the fit; the paper's Qwen1.5 points for the same method on `paper_dataset`
    and their fit overlaid."""
    sns.set_theme(style="whitegrid", context="notebook")
    groups = fits.dropna(subset=["a"]).to_dict("records") if "a" in fits else []  # none fitted
    fig, axes = plt.subplots(
        max(1, len(groups)), 2, figsize=(10, 3.4 * max(1, len(groups))), squeeze=False
    )
    for (left, right), fit in zip(axes, groups, strict=False):
        series = [
            (
                "fsgen",
                table[(table.task == fit["task"]) & (table.method == fit["method"])],
                fit,
                "C0",
            )
        ]
        if paper is not None and paper_fits is not None:
            ref = paper[(paper.dataset == paper_dataset) & (paper.method == fit["method"])]
            ref_fit = paper_fits[
                (paper_fits.task == paper_dataset) & (paper_fits.method == fit["method"])
            ]
            if len(ref) and len(ref_fit) and pd.notna(ref_fit.iloc[0]["a"]):
                series.append(
                    (f"paper Qwen1.5 {paper_dataset}", ref, ref_fit.iloc[0].to_dict(), "C3")
                )
        for label, points, law, color in series:
            r = points["ratio"].to_numpy(float)
            cf = points["collaboration_frequency"].to_numpy(float)
            grid, curve = _law_curve(law, r)
            text = f"{label}: a={law['a']:.3g}, α={law['alpha']:.3g}, b={law['b']:.3g}, R²={law['r2']:.2f}"
            left.scatter(np.power(r, -law["alpha"]), cf, color=color, s=18)
            left.plot(np.power(grid, -law["alpha"]), curve, color=color, label=text)
            right.scatter(r, cf, color=color, s=18)
            right.plot(grid, curve, color=color, label=label)
        left.set(
            title=f"{fit['task']} · {fit['method']}",
            xlabel="r^(-α)  (r = N_large / N_small)",
            ylabel="collaboration frequency",
        )
        left.legend(fontsize=7, loc="best")
        right.set(xscale="log", title=f"{fit['task']} · {fit['method']}", xlabel="r (log scale)")
        right.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        right.legend(fontsize=7, loc="best")
    fig.suptitle("CF = b - a·r^(-α): data and least-squares fits")
    fig.tight_layout()
    return fig


def plot_paper_fits(paper: pd.DataFrame, paper_fits: pd.DataFrame) -> plt.Figure:
    """The paper's published Qwen1.5 frequencies per method and dataset against r, refitted."""
    sns.set_theme(style="whitegrid", context="notebook")
    methods, datasets = sorted(set(paper.method)), sorted(set(paper.dataset))
    fig, axes = plt.subplots(
        len(methods),
        len(datasets),
        squeeze=False,
        sharex=True,
        figsize=(3.2 * len(datasets), 2.8 * len(methods)),
    )
    for i, method in enumerate(methods):
        for j, dataset in enumerate(datasets):
            ax = axes[i, j]
            points = paper[(paper.method == method) & (paper.dataset == dataset)]
            fit = paper_fits[(paper_fits.method == method) & (paper_fits.task == dataset)]
            if len(points):
                ax.scatter(points.ratio, points.collaboration_frequency, s=14, color="C3")
            if len(fit) and pd.notna(fit.iloc[0]["a"]):
                law = fit.iloc[0].to_dict()
                grid, curve = _law_curve(law, points["ratio"].to_numpy(float))
                ax.plot(grid, curve, color="C3", label=f"R²={law['r2']:.2f}")
                ax.legend(fontsize=7)
            ax.set(
                xscale="log",
                title=f"{dataset} · {method}",
                xlabel="r" if i == len(methods) - 1 else "",
            )
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle("The FS-GEN paper's Qwen1.5 frequencies, fitted with fsgen.fit_scaling_law")
    fig.tight_layout()
    return fig
