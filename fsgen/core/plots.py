"""Figures: seaborn on a fixed style, saved as PNG and SVG with no timestamps (reruns match)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd
import seaborn as sns

matplotlib.rcParams["svg.hashsalt"] = "fsgen"


def save_figure(fig: plt.Figure, stem: str | os.PathLike) -> list[Path]:
    """Save `fig` as `<stem>.png` and `<stem>.svg`, then close it (a stage's notebook shows the
    saved files); returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return paths


def plot_training_curves(curves: pd.DataFrame) -> plt.Figure:
    """Training loss per step for every model of the ladder (log scale)."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(curves):
        sns.lineplot(data=curves, x="step", y="loss", hue="model", ax=ax, linewidth=1.2)
        ax.set_yscale("log")
    ax.set(title="Training loss of the embedded ladder", xlabel="step", ylabel="loss (nats/token)")
    return fig


def plot_ladder(ladder: pd.DataFrame) -> plt.Figure:
    """Held-out loss and accuracy against parameter count, base and tuned models."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, column, label in zip(
        axes,
        ("heldout_loss", "accuracy"),
        ("held-out loss (nats/token)", "accuracy (plain prompts)"),
        strict=True,
    ):
        if column in ladder and ladder[column].notna().any():
            sns.lineplot(data=ladder, x="params", y=column, hue="variant", marker="o", ax=ax)
            for row in ladder.itertuples():
                ax.annotate(
                    row.model,
                    (row.params, getattr(row, column)),
                    fontsize=8,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set(xlabel="parameters", ylabel=label)
    fig.suptitle("The ladder: larger rungs are better")
    fig.tight_layout()
    return fig
