"""The findings rows beyond the two papers: which interventions matter (stage 08), the router
trained on them (stage 06) and the three accelerations head to head (stage 09), by rules fixed
here before any number was seen, in the findings table's form (`fsgen.analysis.findings`)."""

from __future__ import annotations

import math

import pandas as pd

from fsgen.analysis.accelerations import ACCELERATIONS
from fsgen.analysis.divergence import R2R_DIVERGENT_OF_MISMATCHES
from fsgen.analysis.findings import (
    FAILS,
    HOLDS,
    OPEN,
    THRESHOLDS,
    Inputs,
    as_float,
    by_interval,
    claim_row,
    computed_rows,
    missing_row,
)


def divergent_share(pairs: pd.DataFrame) -> dict:
    """R2R: of the tokens where the small model would choose differently, a minority changes the
    outcome (its figures: 5% divergent, 6% neutral of all tokens, 45% of the mismatches)."""
    pooled = pairs[pairs["pair"] == "all"]
    column = "divergent_share_of_mismatches"
    if not len(pooled):
        ours = low = high = math.nan
    else:
        ours, low, high = (float(pooled[column + end].iloc[0]) for end in ("", "_low", "_high"))
    at = THRESHOLDS["divergent_share"]
    verdict = OPEN if math.isnan(low) else HOLDS if high < at else FAILS if low > at else OPEN
    rule = "divergent share of mismatches, pairs pooled: holds if high < 0.5, fails if low > 0.5"
    shares = "; ".join(
        f"{r.pair}: {r.divergent_share_of_mismatches:.3f}"
        for r in pairs[pairs["pair"] != "all"].itertuples()
    )
    detail = (
        "R2R's figure is another model family (DeepSeek-R1 distills) judged by an LLM verifier; "
        f"ours: the task's exact scorer on branches; {shares}"
    )
    return claim_row(
        "divergent_share", R2R_DIVERGENT_OF_MISMATCHES, ours, low, high, verdict, rule, detail
    )


def early_divergence(early: pd.DataFrame) -> dict:
    """Ours, after FS-GEN: the divergent mismatches concentrate at the start as all do."""
    row = early.iloc[0] if len(early) else {}
    ours, low, high = (
        as_float(row.get(f"first_decile_ratio{end}")) for end in ("", "_low", "_high")
    )
    rule = (
        "first-decile divergent rate / overall divergent rate, pairs pooled: holds if low > 1, "
        "fails if high < 1"
    )
    detail = (
        f"mean relative position: divergent {as_float(row.get('divergent_mean_position')):.3f}, "
        f"neutral {as_float(row.get('neutral_mean_position')):.3f}"
    )
    verdict = by_interval(low, high, THRESHOLDS["early_divergence"])
    paper = "qualitative (FS-GEN, all mismatches)"
    return claim_row("early_divergence", paper, ours, low, high, verdict, rule, detail)


def divergence_router(routers: pd.DataFrame) -> dict:
    """Ours: calibrated on the mismatches that change the outcome, a router needs fewer calls."""
    rule = (
        "call rate at 95%, learned_divergent / best mismatch-trained router, worst pair: holds "
        "if < 1, fails if every pair's >= 1"
    )
    if not len(routers) or "learned_divergent" not in set(routers["router"]):
        return missing_row("divergence_router", math.nan, rule, "no divergence-trained router run")
    ratios, parts = [], []
    for (large, small), rows in routers.groupby(["large", "small"], sort=False):
        rates = rows.set_index("router")["call_rate_for_95"]
        mismatch = rates.drop(["learned_divergent", "random"], errors="ignore").min()
        if "learned_divergent" in rates and mismatch > 0:
            ratios.append(float(rates["learned_divergent"] / mismatch))
            parts.append(f"{large}-{small}: {rates['learned_divergent']:.3f} vs {mismatch:.3f}")
    ours = max(ratios) if ratios else math.nan
    at = THRESHOLDS["divergence_router"]
    worst_holds = ours < at
    verdict = OPEN if math.isnan(ours) else HOLDS if worst_holds else OPEN
    verdict = FAILS if ratios and min(ratios) >= at else verdict
    nan = math.nan
    detail = "; ".join(parts)
    return claim_row("divergence_router", nan, ours, nan, nan, verdict, rule, detail)


def accelerations_pareto(table: pd.DataFrame) -> dict:
    """Ours: one of the three accelerations gives the large model's quality for less, head to
    head with the two models alone: on the Pareto front and faster than the large model at
    every batch size timed, not shown to fall below 95% of the large model's accuracy."""
    rule = (
        "accelerations on the Pareto front and faster than the large model at every batch size: "
        "the best accuracy / large accuracy (Wilson bounds); holds if high >= 0.95, fails if "
        "high < 0.95 or none is"
    )
    if not len(table) or "on_front" not in table:
        return missing_row("accelerations_pareto", math.nan, rule, "no head-to-head (stage 09)")
    fronts = {
        int(b): sorted(rows.loc[rows["on_front"].astype(bool), "system"])
        for b, rows in table.groupby("batch_size", sort=True)
    }
    detail = "; ".join(f"front at batch {b}: {', '.join(s)}" for b, s in fronts.items())
    large = table.loc[table["system"] == "large", "accuracy"]
    if not len(large) or not float(large.iloc[0]) > 0:
        why = f"{detail}; the large model scores 0: 95% of it is no target"
        return missing_row("accelerations_pareto", math.nan, rule, why)
    qualifying = [
        system
        for system, rows in table.groupby("system", sort=False)
        if system in ACCELERATIONS
        and rows["on_front"].astype(bool).all()
        and (rows["speedup_vs_large"] > 1).all()
        and len(rows) == len(fronts)
    ]
    nan = math.nan
    if not qualifying:
        detail += "; no acceleration qualifies"
        return claim_row("accelerations_pareto", nan, nan, nan, nan, FAILS, rule, detail)
    rows = table[table["system"].isin(qualifying)].drop_duplicates("system")
    best = rows.sort_values("accuracy", ascending=False, kind="stable").iloc[0]
    scale = float(large.iloc[0])
    ours, low, high = (
        float(best[c]) / scale for c in ("accuracy", "accuracy_low", "accuracy_high")
    )
    verdict = HOLDS if high >= THRESHOLDS["accelerations_pareto"] else FAILS
    detail += f"; qualifying: {', '.join(qualifying)} (best: {best['system']})"
    return claim_row("accelerations_pareto", nan, ours, low, high, verdict, rule, detail)


def beyond_table(inputs: Inputs) -> pd.DataFrame:
    """The rows of this module from the stage outputs; a row whose inputs are missing is
    inconclusive and names what is missing (as `findings_table`)."""
    computations = {
        "divergent_share": lambda: divergent_share(inputs.divergence),
        "early_divergence": lambda: early_divergence(inputs.divergence_early),
        "divergence_router": lambda: divergence_router(inputs.routers),
        "accelerations_pareto": lambda: accelerations_pareto(inputs.accelerations),
    }
    return computed_rows(computations)
