"""The findings as one picture: a row per claim of the findings table, our figure with its
interval, the rule's threshold (dashed) and the paper's figure (a diamond, where it is a number),
coloured by verdict. Each row has its own scale: the claims' figures are in different units."""

from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from fsgen.analysis.findings import FAILS, HOLDS, OPEN, THRESHOLDS

COLOURS = {HOLDS: "tab:green", FAILS: "tab:red", OPEN: "tab:gray"}


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def plot_findings(table: pd.DataFrame) -> plt.Figure:
    """One row per claim of `table` (the findings table's columns)."""
    if not len(table):
        raise ValueError("the findings table has no rows to draw")
    rows = table.reset_index(drop=True)
    figure, axes = plt.subplots(len(rows), 1, figsize=(11, 0.6 * len(rows) + 0.9), squeeze=False)
    for ax, row in zip(axes[:, 0], rows.itertuples(), strict=True):
        colour = COLOURS.get(row.verdict, "tab:gray")
        ours, low, high = _number(row.ours), _number(row.low), _number(row.high)
        paper = _number(row.paper_figure)
        threshold = THRESHOLDS.get(row.id, math.nan)
        values = [v for v in (ours, low, high, paper, threshold) if not math.isnan(v)]
        if not math.isnan(ours):
            errors = None
            if not (math.isnan(low) or math.isnan(high)):
                errors = [[max(ours - low, 0.0)], [max(high - ours, 0.0)]]
            ax.errorbar([ours], [0], xerr=errors, fmt="o", color=colour, capsize=3)
        else:
            ax.text(0.5, 0, "no figure", transform=ax.transAxes, ha="center", va="center")
        if not math.isnan(threshold):
            ax.axvline(threshold, color="black", ls="--", lw=0.8)
        if not math.isnan(paper):
            ax.plot([paper], [0], "D", color="tab:blue", mfc="none")
        if values:
            span = max(values) - min(values) or max(abs(max(values)), 1.0) * 0.2
            ax.set_xlim(min(values) - 0.15 * span, max(values) + 0.15 * span)
        label = textwrap.fill(f"{row.claim} ({row.paper}; {row.verdict})", 70)
        ax.text(
            -0.03,
            0.5,
            label,
            transform=ax.transAxes,
            ha="right",
            va="center",
            fontsize=7,
            color=colour,
        )
        ax.set_yticks([])
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylim(-1, 1)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    axes[0, 0].set_title(
        "ours (dot, 95% interval; green holds, red does not, grey inconclusive),\n"
        "the rule's threshold (dashed), the paper's figure (diamond)",
        fontsize=8,
    )
    figure.subplots_adjust(left=0.5, right=0.98, top=1 - 0.7 / figure.get_figheight(), hspace=1.2)
    return figure
