"""Stage 04: where collaboration happens. On oracle traces, a mismatch is a token where the
large model's choice differs from the small model's greedy choice; these functions ask where
in the generation mismatches fall and how well System 1's own uncertainty predicts them.

Signals, each oriented so that larger means "less sure": `1 - top1` (one minus the top-1
probability), `-margin` (top-1 minus top-2, negated) and `entropy` (nats).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from fsgen.core.stats import bootstrap_over_units, weighted_auroc, wilson_interval

SIGNALS = {"top1_prob": "small_top1_prob", "margin": "small_margin", "entropy": "small_entropy"}
LESS_SURE = {"top1_prob": -1.0, "margin": -1.0, "entropy": 1.0}  # sign making larger = less sure


def pair_traces(traces: pd.DataFrame, method: str = "oracle") -> pd.DataFrame:
    """The rows of one method, with `pair`, the generation's length and each token's relative
    position in it (0 = first token, 1 = last) and decile (0-9)."""
    if method not in set(traces["method"]):
        raise ValueError(f"no traces for method {method!r}; have {sorted(set(traces['method']))}")
    rows = traces[traces["method"] == method].copy()
    rows["pair"] = rows["large"] + "-" + rows["small"]
    keys = ["task", "pair", "prompt_id"]
    length = rows.groupby(keys, sort=False)["step"].transform("max") + 1
    rows["length"] = length
    rows["relative_position"] = rows["step"] / (length - 1).clip(lower=1)
    rows["decile"] = np.minimum((rows["step"] * 10 // length).astype(int), 9)
    rows["mismatch"] = rows["mismatch"].astype(bool)
    return rows.reset_index(drop=True)


def mismatch_by_decile(rows: pd.DataFrame) -> pd.DataFrame:
    """Mismatch rate per task, pair and decile of relative position (long form), with the
    mismatch count and a Wilson 95% interval of the rate (tokens counted as independent)."""
    grouped = rows.groupby(["task", "pair", "decile"], sort=False)["mismatch"]
    table = grouped.agg(mismatches="sum", tokens="size").reset_index()
    table["mismatch_rate"] = table["mismatches"] / table["tokens"]
    bounds = [
        wilson_interval(int(m), int(n)) for m, n in zip(table.mismatches, table.tokens, strict=True)
    ]
    table["mismatch_rate_low"] = [low for low, _ in bounds]
    table["mismatch_rate_high"] = [high for _, high in bounds]
    return table


def entropy_bins(rows: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Mismatch rate per task, pair and bin of System 1's entropy (equal-width bins from 0 to
    the largest entropy seen), with the bin's centre and token count."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    top = float(rows["small_entropy"].max()) if len(rows) else 1.0
    edges = np.linspace(0.0, max(top, 1e-6), bins + 1)
    index = np.clip(np.digitize(rows["small_entropy"], edges[1:-1]), 0, bins - 1)
    binned = rows.assign(bin=index)
    out = binned.groupby(["task", "pair", "bin"], sort=False)["mismatch"].agg(
        mismatch_rate="mean", tokens="size"
    )
    out = out.reset_index()
    out["entropy"] = (edges[out["bin"]] + edges[out["bin"] + 1]) / 2
    return out


def signal_auroc(rows: pd.DataFrame, *, bootstrap: int = 0, seed: int = 0) -> pd.DataFrame:
    """AUROC of each signal of System 1's uncertainty for predicting a mismatch, per task and
    pair (0.5 = no better than chance; NaN when a pair has only one class), with a 95% interval
    (`<signal>_low`, `<signal>_high`) from `bootstrap` resamples of the prompts (0: none)."""
    records = []
    for (task, pair), group in rows.groupby(["task", "pair"], sort=False):
        y = group["mismatch"].to_numpy()
        record = {
            "task": task,
            "pair": pair,
            "tokens": len(group),
            "mismatch_rate": float(y.mean()),
        }
        for name, column in SIGNALS.items():
            score = LESS_SURE[name] * group[column].to_numpy(float)
            record[name] = weighted_auroc(y, score)
            if bootstrap:
                low, high = bootstrap_over_units(
                    group["prompt_id"].to_numpy(),
                    lambda weights, y=y, score=score: weighted_auroc(y, score, weights),
                    resamples=bootstrap,
                    seed=seed,
                )
                record |= {f"{name}_low": low, f"{name}_high": high}
        records.append(record)
    return pd.DataFrame(records)


def uncertainty_metrics(auroc: pd.DataFrame, deciles: pd.DataFrame, method: str) -> dict:
    """Flat metrics: per task and pair, the mismatch rate and each signal's AUROC, and the
    mismatch rates in the first and last deciles (`deciles`: `mismatch_by_decile`)."""
    metrics: dict[str, object] = {}
    for row in auroc.to_dict("records"):
        key = f"{row['task']}.{method}.{row['pair']}"
        metrics[f"{key}.mismatch_rate"] = round(row["mismatch_rate"], 6)
        for name in SIGNALS:
            for end in ("", "_low", "_high"):
                if f"{name}{end}" in row:
                    metrics[f"{key}.auroc.{name}{end}"] = round(row[f"{name}{end}"], 6)
    for row in deciles[deciles["decile"].isin([0, 9])].to_dict("records"):
        key = f"{row['task']}.{method}.{row['pair']}.decile{row['decile']}.mismatch_rate"
        metrics[key] = round(row["mismatch_rate"], 6)
    return metrics


def plot_position_heatmap(rows: pd.DataFrame) -> plt.Figure:
    """Mismatch rate by decile of relative position: one heatmap per task, pairs down."""
    sns.set_theme(style="white", context="notebook")
    deciles = mismatch_by_decile(rows)
    tasks = list(dict.fromkeys(deciles["task"]))
    fig, axes = plt.subplots(1, len(tasks), squeeze=False, figsize=(7 * len(tasks), 3.5))
    for ax, task in zip(axes[0], tasks, strict=True):
        grid = deciles[deciles["task"] == task].pivot(
            index="pair", columns="decile", values="mismatch_rate"
        )
        sns.heatmap(
            grid,
            ax=ax,
            annot=True,
            fmt=".2f",
            cmap="rocket_r",
            vmin=0,
            annot_kws={"size": 7},
            cbar_kws={"label": "mismatch rate"},
        )
        ax.set(title=task, xlabel="decile of the generation (0 = start)", ylabel="pair")
    fig.suptitle("Where System 2 overrides System 1: mismatch rate by position")
    fig.tight_layout()
    return fig


def plot_signal_densities(rows: pd.DataFrame) -> plt.Figure:
    """KDE of System 1's top-1 probability, margin and entropy at matched and mismatched
    tokens, one row per pair (densities normalised within each class)."""
    sns.set_theme(style="whitegrid", context="notebook")
    pairs = list(dict.fromkeys(rows["pair"]))
    fig, axes = plt.subplots(
        len(pairs), len(SIGNALS), squeeze=False, figsize=(4 * len(SIGNALS), 2.4 * len(pairs))
    )
    label = rows["mismatch"].map({True: "mismatch", False: "match"})
    for i, pair in enumerate(pairs):
        part = rows[rows["pair"] == pair].assign(token=label)
        for j, (name, column) in enumerate(SIGNALS.items()):
            ax = axes[i, j]
            if part["token"].nunique() == 2 and part[column].nunique() > 1:
                sns.kdeplot(
                    data=part,
                    x=column,
                    hue="token",
                    hue_order=["match", "mismatch"],
                    common_norm=False,
                    fill=True,
                    ax=ax,
                    cut=0,
                    warn_singular=False,
                    legend=(i == 0 and j == 0),
                )
            ax.set(xlabel=name if i == len(pairs) - 1 else "", ylabel=pair if j == 0 else "")
    fig.suptitle("System 1's certainty at tokens where System 2 agrees vs overrides")
    fig.tight_layout()
    return fig


def plot_entropy_bins(rows: pd.DataFrame, bins: int = 10) -> plt.Figure:
    """Mismatch rate against System 1's entropy, one line per pair."""
    sns.set_theme(style="whitegrid", context="notebook")
    table = entropy_bins(rows, bins)
    grid = sns.relplot(
        data=table,
        x="entropy",
        y="mismatch_rate",
        hue="pair",
        col="task",
        kind="line",
        marker="o",
        height=3.5,
        aspect=1.4,
    )
    grid.set_axis_labels("System 1 entropy (nats, bin centre)", "mismatch rate")
    grid.figure.suptitle("The less sure System 1 is, the more often System 2 overrides it", y=1.03)
    return grid.figure


def widest_pair(rows: pd.DataFrame) -> str:
    """The pair label of the largest rung over the smallest among oracle trace rows: the large
    rung paired with the most small ones, and the small rung paired with the most large ones."""
    pairs = rows[["large", "small"]].drop_duplicates()
    large = pairs.groupby("large").size().sort_values(ascending=False, kind="stable").index[0]
    small = pairs.groupby("small").size().sort_values(ascending=False, kind="stable").index[0]
    label = rows.loc[(rows["large"] == large) & (rows["small"] == small), "pair"]
    return label.iloc[0] if len(label) else rows["pair"].iloc[0]


def example_generation(
    rows: pd.DataFrame, pair: str | None = None, prompt_id: int | None = None, max_tokens: int = 40
) -> pd.DataFrame:
    """The first `max_tokens` tokens of one generation (default: the widest pair and the prompt
    with the most mismatches in it), with System 1's top-k probabilities."""
    pair = pair or widest_pair(rows)
    part = rows[rows["pair"] == pair]
    if not len(part):
        raise ValueError(f"no trace rows for pair {pair!r}; pairs: {sorted(set(rows['pair']))}")
    if prompt_id is None:
        head = part[part["step"] < max_tokens]
        prompt_id = int(head.groupby("prompt_id")["mismatch"].sum().idxmax())
    return part[part["prompt_id"] == prompt_id].sort_values("step").head(max_tokens)


def plot_topk_example(example: pd.DataFrame, tokenizer=None, k: int = 3) -> plt.Figure:
    """Per generated token, System 1's top-k probabilities as stacked bars; tokens where System
    2 overrode System 1 are marked in red."""
    sns.set_theme(style="whitegrid", context="notebook")
    probs = np.array([list(p[:k]) + [0.0] * (k - len(p[:k])) for p in example["small_topk_probs"]])
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(example)), 3.8))
    x = np.arange(len(example))
    bottom = np.zeros(len(example))
    for j in range(k):
        ax.bar(
            x,
            probs[:, j],
            bottom=bottom,
            color=sns.color_palette("Blues_r", k)[j],
            edgecolor="white",
            linewidth=0.3,
            label=f"top-{j + 1}",
        )
        bottom += probs[:, j]
    mismatch = example["mismatch"].to_numpy(bool)
    ax.scatter(
        x[mismatch],
        np.full(mismatch.sum(), 1.04),
        marker="v",
        color="C3",
        label="System 2 overrides",
    )
    labels = [repr(t)[1:-1] if isinstance(t, str) else str(t) for t in example["token"]]
    ax.set_xticks(x, labels, rotation=90, fontsize=7)
    for tick, flagged in zip(ax.get_xticklabels(), mismatch, strict=True):
        tick.set_color("C3" if flagged else "black")
    ax.set(ylim=(0, 1.1), ylabel="System 1 probability", xlabel="generated token (System 2's)")
    pair, prompt = example["pair"].iloc[0], int(example["prompt_id"].iloc[0])
    ax.set_title(f"{pair}, prompt {prompt}: System 1's top-{k} at each token")
    ax.legend(fontsize=7, loc="lower right", ncol=k + 1)
    fig.tight_layout()
    return fig
