"""How often System 2 steps in (stage 02). Collaboration frequency (CF = mismatches / generated
tokens) per task, method and pair, with the pair's parameter ratio and the accuracy of each
system, from the token-logging summary.

A pair is `<large>-<small>`. System 1 is the small rung alone, System 2 the large rung alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from fsgen.core.paths import resolve
from fsgen.engine.methods import pair_methods

if TYPE_CHECKING:  # a type only: the frequency tables never load a model
    from fsgen.models.profiles import Profile

UNDER = 0.2  # FS-GEN: fewer than ~20% of tokens need the large model
TABLE_COLUMNS = [
    "task",
    "method",
    "large",
    "small",
    "pair",
    "n_large",
    "n_small",
    "ratio",
    "tokens",
    "mismatches",
    "collaboration_frequency",
    "collaboration_frequency_low",  # 95% bootstrap interval over prompts (stage 01)
    "collaboration_frequency_high",
    "accuracy",
    "accuracy_low",  # 95% Wilson interval
    "accuracy_high",
    "small_accuracy",
    "large_accuracy",
]


def ladder_sizes(profile: Profile, column: str = "params") -> dict[str, float]:
    """Parameter count of every base rung of `profile`, from `<models_dir>/ladder.csv` (written
    by the train_ladder stage: measured for the embedded ladder, from configs for hub ones)."""
    path = resolve(profile.models_dir) / "ladder.csv"
    if not path.exists():
        raise FileNotFoundError(f"no ladder table at {path}; run the train_ladder stage first")
    ladder = pd.read_csv(path)
    if column not in ladder:
        raise ValueError(f"size column {column!r} is not in {path}; columns: {list(ladder)}")
    base = ladder[ladder["variant"] == "base"]
    return dict(zip(base["model"], base[column].astype(float), strict=True))


def frequency_table(summary: pd.DataFrame, sizes: dict[str, float]) -> pd.DataFrame:
    """One row per task, collaboration method and pair: CF, ratio N_large / N_small, and the
    accuracy of the collaboration next to System 1 and System 2 alone.

    `summary` is the token-logging summary (`results/token_logging/summary.csv`); `sizes` maps
    each rung to its parameter count (`ladder_sizes`)."""
    missing = {"task", "method", "large", "small", "collaboration_frequency"} - set(summary)
    if missing:
        raise ValueError(f"summary lacks columns {sorted(missing)}; is it a token-logging summary?")
    alone = summary[summary["method"] == "alone"].set_index(["task", "large"])["accuracy"]
    methods = pair_methods()  # the registry's, in its order
    unknown_methods = sorted(set(summary["method"]) - {"alone", *methods})
    if unknown_methods:
        raise ValueError(
            f"summary has methods {unknown_methods} that are not in the method registry "
            f"(fsgen.engine.methods.METHODS: {methods})"
        )
    pairs = summary[summary["method"] != "alone"].copy()
    unknown = sorted((set(pairs["large"]) | set(pairs["small"])) - set(sizes))
    if unknown:
        raise ValueError(f"rungs {unknown} have no parameter count; known sizes: {sizes}")
    pairs["pair"] = pairs["large"] + "-" + pairs["small"]
    pairs["n_large"] = pairs["large"].map(sizes)
    pairs["n_small"] = pairs["small"].map(sizes)
    pairs["ratio"] = pairs["n_large"] / pairs["n_small"]
    lookup = alone.to_dict()
    pairs["small_accuracy"] = [
        lookup.get(k, np.nan) for k in zip(pairs.task, pairs.small, strict=True)
    ]
    pairs["large_accuracy"] = [
        lookup.get(k, np.nan) for k in zip(pairs.task, pairs.large, strict=True)
    ]
    for column in TABLE_COLUMNS:  # a summary written before intervals were logged
        if column.endswith(("_low", "_high")) and column not in pairs:
            pairs[column] = np.nan
    order = {m: i for i, m in enumerate(methods)}
    pairs = pairs.assign(_m=pairs["method"].map(order)).sort_values(
        ["task", "_m", "n_large", "n_small"], kind="stable"
    )
    return pairs[TABLE_COLUMNS].reset_index(drop=True)


def falls_with_small_rung(table: pd.DataFrame) -> pd.DataFrame:
    """For each task, method and large rung with at least two small rungs: does CF fall
    strictly as the small rung grows?"""
    rows = []
    for (task, method, large), group in table.groupby(["task", "method", "large"], sort=False):
        if len(group) < 2:
            continue
        cf = group.sort_values("n_small")["collaboration_frequency"].to_numpy()
        rows.append(
            {
                "task": task,
                "method": method,
                "large": large,
                "smalls": len(group),
                "falls": bool((np.diff(cf) < 0).all()),
            }
        )
    return pd.DataFrame(rows, columns=["task", "method", "large", "smalls", "falls"])


def share_under(table: pd.DataFrame, limit: float = UNDER) -> pd.DataFrame:
    """Per task and method, the share of pairs whose CF is below `limit`."""
    grouped = table.groupby(["task", "method"], sort=False)["collaboration_frequency"]
    return grouped.apply(lambda cf: float((cf < limit).mean())).rename("share").reset_index()


def frequency_metrics(table: pd.DataFrame, summary: pd.DataFrame) -> dict[str, object]:
    """Flat metrics: CF and accuracy per task/method/pair, each rung's accuracy alone, the share
    of pairs under 20% (per task and method, and over everything) and the CF-falls checks."""
    metrics: dict[str, object] = {}
    for row in table.itertuples():
        key = f"{row.task}.{row.method}.{row.pair}"
        for name in ("", "_low", "_high"):
            value = float(getattr(row, f"collaboration_frequency{name}"))
            if name == "" or not np.isnan(value):  # no interval in a summary without one
                metrics[f"{key}.collaboration_frequency{name}"] = round(value, 6)
        metrics[f"{key}.accuracy"] = row.accuracy
    for row in summary[summary["method"] == "alone"].itertuples():
        metrics[f"{row.task}.alone.{row.large}.accuracy"] = row.accuracy
    for row in share_under(table).itertuples():
        metrics[f"{row.task}.{row.method}.share_under_20pct"] = round(row.share, 6)
    metrics["share_under_20pct"] = round(
        float((table["collaboration_frequency"] < UNDER).mean()), 6
    )
    for row in falls_with_small_rung(table).itertuples():
        metrics[f"{row.task}.{row.method}.{row.large}.cf_falls_with_small_rung"] = row.falls
    return metrics


def _rungs(table: pd.DataFrame, who: str) -> list[str]:
    return list(table.drop_duplicates(who).sort_values(f"n_{who}")[who])


def plot_frequency_heatmaps(table: pd.DataFrame) -> plt.Figure:
    """One heatmap per task and method: large rung down, small rung across, CF in each cell."""
    sns.set_theme(style="white", context="notebook")
    tasks, methods = list(dict.fromkeys(table["task"])), list(dict.fromkeys(table["method"]))
    fig, axes = plt.subplots(
        len(tasks),
        len(methods),
        squeeze=False,
        figsize=(3.2 * len(methods) + 0.5, 2.8 * len(tasks)),
    )
    larges, smalls = _rungs(table, "large"), _rungs(table, "small")
    for i, task in enumerate(tasks):
        for j, method in enumerate(methods):
            part = table[(table["task"] == task) & (table["method"] == method)]
            grid = part.pivot(index="large", columns="small", values="collaboration_frequency")
            grid = grid.reindex(index=larges[::-1], columns=smalls)
            sns.heatmap(
                grid,
                ax=axes[i, j],
                annot=True,
                fmt=".2f",
                vmin=0,
                vmax=max(0.5, grid.max().max()),
                cmap="rocket_r",
                cbar=False,
                annot_kws={"size": 8},
            )
            axes[i, j].set(
                title=f"{task} · {method}",
                xlabel="small (System 1)",
                ylabel="large (System 2)" if j == 0 else "",
            )
    fig.suptitle("Collaboration frequency: share of tokens where System 2 overrides System 1")
    fig.tight_layout()
    return fig


def _interval_bars(data: pd.DataFrame, x: str, y: str, color=None, **_) -> None:
    """Error bars from the `<y>_low` / `<y>_high` columns, on the current seaborn facet."""
    low, high = data[f"{y}_low"], data[f"{y}_high"]
    if low.isna().all():
        return
    spread = [(data[y] - low).clip(lower=0), (high - data[y]).clip(lower=0)]
    plt.errorbar(data[x], data[y], yerr=spread, fmt="none", ecolor=color, capsize=2, lw=1)


def plot_frequency_by_small(table: pd.DataFrame) -> plt.Figure:
    """CF against the small rung's size, one line per large rung, one panel per task x method."""
    sns.set_theme(style="whitegrid", context="notebook")
    grid = sns.relplot(
        data=table,
        x="n_small",
        y="collaboration_frequency",
        hue="large",
        col="method",
        row="task",
        kind="line",
        marker="o",
        height=3,
        aspect=1.1,
        facet_kws={"sharey": False},
    )
    grid.map_dataframe(_interval_bars, x="n_small", y="collaboration_frequency")
    for ax in grid.axes.flat:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axhline(UNDER, color="grey", linestyle=":", linewidth=1)
    grid.set_axis_labels("small model parameters (System 1)", "collaboration frequency (95% CI)")
    grid.figure.suptitle("For a fixed large model, CF falls as System 1 grows", y=1.02)
    return grid.figure


def plot_accuracy(table: pd.DataFrame) -> plt.Figure:
    """Task accuracy per pair: System 1 alone, System 2 alone and each collaboration method."""
    sns.set_theme(style="whitegrid", context="notebook")
    alone = table.drop_duplicates(["task", "pair"])[
        ["task", "pair", "small_accuracy", "large_accuracy"]
    ]
    alone = alone.melt(["task", "pair"], var_name="system", value_name="accuracy")
    alone["system"] = alone["system"].map(
        {"small_accuracy": "System 1 alone", "large_accuracy": "System 2 alone"}
    )
    both = pd.concat(
        [alone, table[["task", "pair", "method", "accuracy"]].rename(columns={"method": "system"})],
        ignore_index=True,
    )
    grid = sns.catplot(
        data=both,
        x="pair",
        y="accuracy",
        hue="system",
        col="task",
        kind="bar",
        height=3.5,
        aspect=2,
    )
    grid.set_axis_labels("pair (large-small)", "task accuracy")
    grid.figure.suptitle("Accuracy of each system and collaboration", y=1.02)
    return grid.figure


def summarize_frequency(table: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """The CF table as a grid for display: one row per task and pair, one column per method."""
    part = table if methods is None else table[table["method"].isin(methods)]
    return part.pivot_table(
        index=["task", "pair", "ratio"],
        columns="method",
        values="collaboration_frequency",
        sort=False,
    ).round(3)
