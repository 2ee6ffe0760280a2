"""Routers that pay off: calibrated uncertainty routers, a learned router, a random baseline, and
the summaries of a sweep that puts each router's accuracy against its call rate (the sweep's
decoding runs are `fsgen.stages.routers`'s).

Every router here consults the large model when an *uncertainty score* of System 1's next-token
distribution is above a cut-off. The scores, and how a cut-off maps to the router's own rule:

| kind | score u | router rule | threshold returned |
|---|---|---|---|
| threshold | -top1 probability | top1 < t | t = -cut |
| margin | -(top1 - top2) | margin < t | t = -cut |
| entropy | entropy (nats) | entropy > t | t = cut |
| learned | P(mismatch) from `LearnedRouter` | P > t | t = cut |

Calibration reads *oracle* traces: the large model wrote every token and each row says whether
System 1's argmax disagreed with it (`mismatch`). So each row is a decision point where we know
what routing it would have cost and gained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fsgen.engine.routers import Router, entropy, make_router

KINDS = ("threshold", "margin", "entropy", "learned")
ORACLE_COLUMNS = ("prompt_id", "mismatch", "small_top1_prob", "small_margin", "small_entropy")


# ----------------------------------------------------------------------------- pairs and traces


def parse_pairs(pairs, profile=None) -> list[tuple[str, str]]:
    """Pairs as data: a list of `[large, small]` lists or `{large: ..., small: ...}` mappings
    (rung names, which may hold hyphens, as hub rungs do); "auto" (with `profile`): the
    profile's largest rung with each of the two rungs below it (`default_pairs`)."""
    if isinstance(pairs, str) and pairs == "auto" and profile is not None:
        return default_pairs(profile)
    if isinstance(pairs, str) or not isinstance(pairs, Sequence):
        raise ValueError(
            "pairs are a list of [large, small] or {large: ..., small: ...} items"
            f"{' or auto' if profile is not None else ''}, got {pairs!r}"
        )
    parsed = []
    for item in pairs:
        if isinstance(item, Mapping):
            if set(item) != {"large", "small"}:
                raise ValueError(f"a pair mapping has keys large and small, got {dict(item)!r}")
            item = (item["large"], item["small"])
        if (
            isinstance(item, str)
            or len(item) != 2
            or not all(isinstance(n, str) and n for n in item)
        ):
            raise ValueError(f"a pair is [large, small] (two rung names), got {item!r}")
        parsed.append((item[0], item[1]))
    if profile is not None:
        for large, small in parsed:
            profile.rung(large), profile.rung(small)  # unknown names: an error naming the rungs
    return parsed


def default_pairs(profile) -> list[tuple[str, str]]:
    """The profile's largest rung with each of the (up to) two rungs below it, smaller first."""
    names = [rung.name for rung in profile.rungs]
    return [(names[-1], small) for small in names[-3:-1]]


def profile_task(profile, task: str, max_new_tokens: int) -> tuple[str, int]:
    """The task a stage studies ("": the profile's first) and its generation length (the
    profile's own for that task, else `max_new_tokens`)."""
    task = task or profile.tasks[0]
    return task, profile.generation_length(task, max_new_tokens)


def oracle_trace(traces: pd.DataFrame, task: str, large: str, small: str) -> pd.DataFrame:
    """The oracle-method rows of one task and pair from `merge_logs` traces, in token order."""
    keep = (
        (traces["method"] == "oracle")
        & (traces["task"] == task)
        & (traces["large"] == large)
        & (traces["small"] == small)
    )
    rows = traces[keep].sort_values(["prompt_id", "step"], kind="stable").reset_index(drop=True)
    if rows.empty:
        raise ValueError(
            f"no oracle traces for task {task!r}, pair {large}-{small}; logged pairs: "
            f"{sorted(set(zip(traces['large'], traces['small'], strict=True)))}"
        )
    return rows


def split_prompts(prompt_ids, fit_fraction: float = 0.5, seed: int = 0) -> tuple[list, list]:
    """Split distinct prompt ids into (fit, holdout), shuffled by `seed`; both keep id order."""
    if not 0 < fit_fraction < 1:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    ids = np.array(sorted(set(int(i) for i in prompt_ids)))
    if len(ids) < 2:
        raise ValueError(f"need at least 2 prompts to split, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_fit = min(len(ids) - 1, max(1, round(fit_fraction * len(ids))))
    return sorted(ids[order[:n_fit]].tolist()), sorted(ids[order[n_fit:]].tolist())


def _check_trace(trace: pd.DataFrame, columns: Sequence[str] = ORACLE_COLUMNS) -> None:
    missing = [c for c in columns if c not in trace.columns]
    if missing:
        raise ValueError(f"trace lacks columns {missing}; expected an oracle trace with {columns}")
    if trace.empty:
        raise ValueError("trace has no rows; expected oracle trace rows to calibrate on")


# ----------------------------------------------------------------------------- the learned router


def probs_features(top_probs: np.ndarray, entropies: np.ndarray) -> np.ndarray:
    """Features of System 1's distribution: its top-k probabilities (sorted, descending), their
    margin, and the entropy; (N, k + 2)."""
    margin = top_probs[:, :1] - top_probs[:, 1:2]  # (N, 1)
    return np.concatenate([top_probs, margin, entropies[:, None]], axis=1)


def trace_features(trace: pd.DataFrame, top_k: int) -> np.ndarray:
    """`probs_features` of the small model's distribution at every trace row."""
    top = np.stack([np.asarray(p, dtype=np.float64)[:top_k] for p in trace["small_topk_probs"]])
    if top.shape[1] < max(top_k, 2):
        raise ValueError(f"the trace keeps {top.shape[1]} top probabilities, need top_k={top_k}")
    return probs_features(top, trace["small_entropy"].to_numpy(np.float64))


class LearnedRouter:
    """Logistic regression on System 1's top-k probabilities, margin and entropy, predicting a
    mismatch (System 1's argmax differs from the large model's token). Deterministic: lbfgs on
    standardised features, no randomness. `score(probs)` gives P(mismatch) per row;
    `router(t)` is a router callable for `collaborate` consulting when P(mismatch) > t."""

    def __init__(self, top_k: int = 5, c: float = 1.0):
        if top_k < 2:
            raise ValueError(f"top_k must be >= 2, got {top_k}")
        self.top_k, self.c = top_k, c
        self.mean = self.scale = self.coef = None
        self.intercept = 0.0

    def fit(self, trace: pd.DataFrame) -> LearnedRouter:
        """Fit on oracle trace rows (features of the small model, label `mismatch`)."""
        _check_trace(trace, ("mismatch", "small_topk_probs", "small_entropy"))
        x = trace_features(trace, self.top_k)  # (N, F)
        y = trace["mismatch"].to_numpy(bool)
        self.mean, self.scale = x.mean(0), x.std(0)
        self.scale[self.scale == 0] = 1.0
        if y.all() or not y.any():  # one class: a constant score, its frequency
            self.coef = np.zeros(x.shape[1])
            rate = float(y.mean())
            self.intercept = math.log(max(rate, 1e-6) / max(1 - rate, 1e-6))
            return self
        model = LogisticRegression(C=self.c, max_iter=1000, solver="lbfgs")
        model.fit((x - self.mean) / self.scale, y)
        self.coef, self.intercept = model.coef_[0].astype(np.float64), float(model.intercept_[0])
        return self

    def _check_fitted(self) -> None:
        if self.coef is None:
            raise ValueError("the learned router is not fitted; call fit(trace) first")

    def score_features(self, x: np.ndarray) -> np.ndarray:
        """P(mismatch) for feature rows (N, F) -> (N,)."""
        self._check_fitted()
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept  # (N,)
        return 1.0 / (1.0 + np.exp(-z))

    def score_trace(self, trace: pd.DataFrame) -> np.ndarray:
        """P(mismatch) at every row of a trace (N,)."""
        return self.score_features(trace_features(trace, self.top_k))

    def score(self, probs: torch.Tensor) -> torch.Tensor:
        """P(mismatch) for System 1's probabilities (B, V) -> (B,)."""
        top = probs.double().topk(self.top_k, dim=-1).values  # (B, k)
        x = probs_features(top.cpu().numpy(), entropy(probs.double()).cpu().numpy())
        return torch.from_numpy(self.score_features(x)).to(probs.device)

    def router(self, threshold: float) -> Router:
        """A router consulting the large model where P(mismatch) > `threshold`."""
        self._check_fitted()

        def learned(probs: torch.Tensor) -> torch.Tensor:
            return self.score(probs) > threshold  # (B,) bool

        return learned


def fit_learned_router(trace: pd.DataFrame, top_k: int = 5, c: float = 1.0) -> LearnedRouter:
    """A `LearnedRouter` fitted on oracle trace rows."""
    return LearnedRouter(top_k=top_k, c=c).fit(trace)


# ----------------------------------------------------------------------------- the random router


def random_router(call_rate: float, seed: int = 0) -> Router:
    """Consult the large model for each row with probability `call_rate`, independent of System 1.
    Seeded: the same sequence of calls gives the same decisions."""
    if not 0 <= call_rate <= 1:
        raise ValueError(f"call_rate must be in [0, 1], got {call_rate}")
    generator = torch.Generator().manual_seed(seed)

    def random(probs: torch.Tensor) -> torch.Tensor:
        draws = torch.rand(probs.shape[0], generator=generator, dtype=torch.float64)  # (B,)
        return (draws < call_rate).to(probs.device)

    return random


# ----------------------------------------------------------------------------- calibration


def uncertainty(trace: pd.DataFrame, kind: str, learned: LearnedRouter | None = None) -> np.ndarray:
    """The uncertainty score u of router `kind` at each trace row (consult when u > cut)."""
    if kind == "threshold":
        return -trace["small_top1_prob"].to_numpy(np.float64)
    if kind == "margin":
        return -trace["small_margin"].to_numpy(np.float64)
    if kind == "entropy":
        return trace["small_entropy"].to_numpy(np.float64)
    if kind == "learned":
        if learned is None:
            raise ValueError("router kind 'learned' needs learned=<a fitted LearnedRouter>")
        return learned.score_trace(trace)
    raise ValueError(f"unknown router kind {kind!r}; valid kinds: {list(KINDS)}")


@dataclass(frozen=True)
class Calibration:
    """A calibrated router: its kind, threshold (in the router's own rule, see the module table)
    and what the traces predict: the call rate and the token agreement with the large model."""

    kind: str
    threshold: float
    predicted_call_rate: float
    predicted_agreement: float
    target_call_rate: float | None = None
    min_accuracy: float | None = None
    learned: LearnedRouter | None = None

    def router(self) -> Router:
        """The router callable for `collaborate`."""
        if self.kind == "learned":
            return self.learned.router(self.threshold)
        return make_router(self.kind, self.threshold)[1]


def calibrate_router(
    trace: pd.DataFrame,
    kind: str,
    target_call_rate: float | None = None,
    min_accuracy: float | None = None,
    *,
    learned: LearnedRouter | None = None,
) -> Calibration:
    """Choose the threshold of router `kind` from oracle traces.

    Give exactly one of:
    - `target_call_rate`: the threshold whose predicted call rate (fraction of trace tokens
      routed to the large model) is closest to the target (the lower one on a tie);
    - `min_accuracy`: the threshold with the lowest call rate whose predicted *token agreement*
      reaches the floor. Token agreement is the fraction of trace positions where the routed
      decoder would emit the large model's token: 1 - (mismatches not routed) / tokens. (Task
      accuracy cannot be read off one trace; agreement with the large model is its proxy.)

    The threshold maps to the router's rule as in the module table (for `threshold`, consult when
    top1 < threshold). Cut-offs sit halfway between adjacent distinct scores, so tied rows are
    routed together. `learned` (a fitted `LearnedRouter`) is needed for kind 'learned'.
    """
    if (target_call_rate is None) == (min_accuracy is None):
        raise ValueError(
            "give exactly one of target_call_rate and min_accuracy, got "
            f"target_call_rate={target_call_rate!r}, min_accuracy={min_accuracy!r}"
        )
    if target_call_rate is not None and not 0 <= target_call_rate <= 1:
        raise ValueError(f"target_call_rate must be in [0, 1], got {target_call_rate}")
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise ValueError(f"min_accuracy must be in [0, 1], got {min_accuracy}")
    if kind not in KINDS:
        raise ValueError(f"unknown router kind {kind!r}; valid kinds: {list(KINDS)}")
    _check_trace(trace)
    u = uncertainty(trace, kind, learned)  # (N,)
    if not np.isfinite(u).all():
        bad = int(np.flatnonzero(~np.isfinite(u))[0])
        raise ValueError(
            f"router {kind!r} scores {int((~np.isfinite(u)).sum())} trace rows as NaN or "
            f"infinite (the first is row {bad}, score {u[bad]!r}): the trace's small-model "
            "statistics (top-1 probability, entropy) must be finite"
        )
    cuts, rates, agreement = _cut_curve(u, trace["mismatch"].to_numpy(bool))
    if target_call_rate is not None:
        best = int(np.argmin(np.abs(rates - target_call_rate)))  # first (lowest rate) on a tie
    else:
        best = int(np.flatnonzero(agreement >= min_accuracy - 1e-12)[0])
    cut = float(cuts[best])
    threshold = cut if kind in ("entropy", "learned") else -cut
    return Calibration(
        kind,
        threshold,
        float(rates[best]),
        float(agreement[best]),
        target_call_rate,
        min_accuracy,
        learned if kind == "learned" else None,
    )


def _cut_curve(u: np.ndarray, mismatch: np.ndarray):
    """Every distinct way to route by `u > cut`: the cuts (descending), call rates, agreements."""
    n = len(u)
    order = np.argsort(-u, kind="stable")
    values, flags = u[order], mismatch[order]
    boundaries = np.flatnonzero(np.diff(values) != 0)  # last index of each tie group but the final
    consulted = np.concatenate([[0], boundaries + 1, [n]])  # rows routed at each cut
    caught = np.concatenate([[0], np.cumsum(flags)])[consulted]  # mismatches routed
    cuts = np.concatenate(
        [
            [values[0]],  # u > max: nobody
            (values[boundaries] + values[boundaries + 1]) / 2,
            [np.nextafter(values[-1], -np.inf)],  # everybody
        ]
    )
    rates = consulted / n
    agreement = 1.0 - (flags.sum() - caught) / n
    return cuts, rates, agreement


# ----------------------------------------------------------------------------- curve summaries


def area_under_curve(call_rates: Sequence[float], accuracies: Sequence[float]) -> float:
    """Trapezoidal area under accuracy against call rate, points sorted by call rate (call
    rates must lie in [0, 1]; include the endpoints, the small model alone at 0 and the large
    model alone at 1, for the area over the whole range)."""
    x, y = _sorted_curve(call_rates, accuracies)
    if len(x) < 2:
        return float("nan")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def call_rate_to_reach(
    call_rates: Sequence[float], accuracies: Sequence[float], target: float
) -> float:
    """The lowest call rate at which the curve (linear between points sorted by call rate)
    reaches accuracy `target`; NaN if it never does."""
    x, y = _sorted_curve(call_rates, accuracies)
    if len(x) and y[0] >= target:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i - 1] < target <= y[i]:
            return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
    return float("nan")


def _sorted_curve(call_rates, accuracies) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(call_rates, dtype=float), np.asarray(accuracies, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"call_rates and accuracies differ in length: {len(x)} vs {len(y)}")
    if ((x < 0) | (x > 1)).any():
        raise ValueError(f"call rates must lie in [0, 1], got {x.tolist()}")
    order = np.lexsort((y, x))
    return x[order], y[order]


def mismatch_auc(trace: pd.DataFrame, learned: LearnedRouter | None = None) -> dict[str, float]:
    """ROC AUC of each router's uncertainty score for predicting a mismatch on trace rows
    (0.5: no better than chance; NaN when the rows hold one class)."""
    y = trace["mismatch"].to_numpy(bool)
    kinds = KINDS if learned is not None else KINDS[:3]
    if y.all() or not y.any():
        return dict.fromkeys(kinds, float("nan"))
    return {k: float(roc_auc_score(y, uncertainty(trace, k, learned))) for k in kinds}


# ----------------------------------------------------------------------------- sweep summaries


@dataclass
class SweepResult:
    """The sweep's runs (one row per decoding run), per-router summary, and learned-router
    evaluation (mismatch ROC AUC on the held-out prompts of the traces)."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    scores: pd.DataFrame


def summarize_sweep(runs: pd.DataFrame, fraction: float = 0.95) -> pd.DataFrame:
    """Per task, pair and router: area under accuracy against realised call rate (endpoints: the
    two models alone), the call rate reaching `fraction` of the large model's accuracy, and the
    worst gap between the realised and the calibrated (predicted) call rate."""
    rows = []
    for (task, large, small), group in runs.groupby(["task", "large", "small"], sort=False):
        ends = group[group["router"].isin(["small", "large"])]
        large_acc = float(group.loc[group["router"] == "large", "accuracy"].iloc[0])
        for router, points in group[~group["router"].isin(["small", "large"])].groupby(
            "router", sort=False
        ):
            curve = pd.concat([ends, points])
            gap = (points["call_rate"] - points["predicted_call_rate"]).abs()
            rows.append(
                {
                    "task": task,
                    "large": large,
                    "small": small,
                    "router": router,
                    "auc": area_under_curve(curve["call_rate"], curve["accuracy"]),
                    "call_rate_for_95": call_rate_to_reach(
                        curve["call_rate"], curve["accuracy"], fraction * large_acc
                    ),
                    "large_accuracy": large_acc,
                    "small_accuracy": float(
                        ends.loc[ends["router"] == "small", "accuracy"].iloc[0]
                    ),
                    "max_calibration_gap": float(gap.max()),
                    "mean_calibration_gap": float(gap.mean()),
                }
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures and metrics


def plot_router_sweep(runs: pd.DataFrame, x: str = "call_rate") -> plt.Figure:
    """Task accuracy against `x` (realised call rate, or wall_seconds) per router, one panel per
    pair; the dotted line is 95% of the large model's accuracy."""
    sns.set_theme(style="whitegrid", context="notebook")
    pairs = runs[["task", "large", "small"]].drop_duplicates().to_records(index=False)
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4), squeeze=False)
    for ax, (task, large, small) in zip(axes[0], pairs, strict=True):
        group = runs[(runs.task == task) & (runs.large == large) & (runs.small == small)]
        ends = group[group.router.isin(["small", "large"])]
        curves = [
            pd.concat([ends, p.assign(curve=r)]).assign(curve=r)
            for r, p in group[~group.router.isin(["small", "large"])].groupby("router")
        ]
        data = pd.concat(curves).sort_values([x, "accuracy"], kind="stable")
        sns.lineplot(
            data=data,
            x=x,
            y="accuracy",
            hue="curve",
            style="curve",
            markers=True,
            dashes=False,
            estimator=None,
            sort=True,
            ax=ax,
        )
        large_acc = float(group.loc[group.router == "large", "accuracy"].iloc[0])
        ax.axhline(0.95 * large_acc, color="grey", linestyle=":", linewidth=1)
        label = "fraction of tokens sent to the large model" if x == "call_rate" else x
        ax.set(title=f"{task}: {large} helps {small}", xlabel=label, ylabel="task accuracy")
        ax.legend(title="router", fontsize=8)
    fig.tight_layout()
    return fig


def router_metrics(result: SweepResult) -> dict[str, object]:
    """Deterministic flat metrics of a sweep (no timings)."""
    metrics: dict[str, object] = {}
    for row in result.summary.to_dict("records"):
        stem = f"{row['task']}.{row['large']}-{row['small']}"
        metrics[f"{stem}.large_accuracy"] = row["large_accuracy"]
        metrics[f"{stem}.small_accuracy"] = row["small_accuracy"]
        for key in ("auc", "call_rate_for_95", "max_calibration_gap"):
            metrics[f"{stem}.{row['router']}.{key}"] = row[key]
    for row in result.scores.to_dict("records"):
        stem = f"{row['task']}.{row['large']}-{row['small']}.{row['router']}"
        metrics[f"{stem}.holdout_mismatch_auc"] = row["holdout_mismatch_auc"]
    for row in result.runs.to_dict("records"):
        if row["router"] in ("small", "large"):
            continue
        stem = f"{row['task']}.{row['large']}-{row['small']}.{row['router']}"
        target = f"{row['target_call_rate']:g}"
        metrics[f"{stem}.at{target}.call_rate"] = row["call_rate"]
        metrics[f"{stem}.at{target}.predicted_call_rate"] = row["predicted_call_rate"]
        metrics[f"{stem}.at{target}.accuracy"] = row["accuracy"]
    return metrics
