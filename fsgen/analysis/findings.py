"""The findings table: one row per claim of the two papers (and one of ours), the paper's figure,
ours with its 95% interval, and a verdict by a rule fixed here before any number was seen.

Each row is computed from the outputs of the earlier stages. A verdict is `holds`, `does not
hold` or `inconclusive`; a row whose figure cannot be computed (a missing output, a rung without
a tuned copy) is `inconclusive` and says why in `detail`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fsgen.analysis.frequency import UNDER
from fsgen.models.loss_law import with_loss_law

HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive"
COLUMNS = [
    "id",
    "paper",
    "claim",
    "paper_figure",
    "ours",
    "low",
    "high",
    "verdict",
    "rule",
    "detail",
]
CAPTION = (
    "One row per claim. `ours` is our figure with its 95% interval (`low`, `high`; Wilson for "
    "accuracies, bootstrap over prompts for frequencies and AUROCs, empty where the figure is a "
    "single fit or timing). The verdict follows the row's `rule`, fixed in "
    "fsgen/analysis/findings.py before the numbers were seen: `holds`, `does not hold`, or "
    "`inconclusive` when the interval straddles the threshold or the figure is missing."
)
CLAIMS = {  # id: (paper, claim)
    "cf_under_20pct": ("FS-GEN", "CF under 20% in most pairs"),
    "power_law": ("FS-GEN", "oracle CF follows b - a*r^(-alpha) in r"),
    "ratio_alone": ("FS-GEN", "CF depends on the sizes only through r (oracle)"),
    "early_mismatches": ("FS-GEN", "mismatches fall early in the generation"),
    "uncertainty_auroc": ("FS-GEN", "System 1's uncertainty predicts interventions"),
    "proxy_gap": ("proxy tuning", "proxy tuning closes most of the tuning gap"),
    "llm_to_slm_speed": ("LLM-to-SLM", "at least 2x faster than the large model"),
    "llm_to_slm_quality": ("LLM-to-SLM", "at a small performance penalty (1-2%)"),
    "router_pareto": (
        "fsgen",
        "a router reaches 95% of the large model's accuracy calling it for < 20% of tokens",
    ),
    "loss_law": ("fsgen (instrument)", "held-out loss follows L(N) = E + A*N^(-a) within 3%"),
    "accuracy_rises": ("fsgen (instrument)", "accuracy rises strictly with size"),
    # beyond the papers (fsgen.analysis.findings_beyond)
    "divergent_share": ("R2R", "fewer than half of the mismatches change the outcome"),
    "early_divergence": ("fsgen", "the mismatches that change the outcome fall early too"),
    "divergence_router": (
        "fsgen",
        "a router trained on divergent mismatches reaches 95% of the large model's accuracy "
        "with fewer calls than the best router trained on all mismatches",
    ),
    "accelerations_pareto": (
        "fsgen",
        "head to head, an acceleration (router, speculative decoding or LLM-to-SLM) is on the "
        "Pareto front, faster than the large model at batch 1 and 8, at 95% of its accuracy",
    ),
}
# each rule's threshold, where the verdict turns (the figure marks it)
THRESHOLDS = {
    "cf_under_20pct": 0.5,
    "power_law": 0.8,
    "ratio_alone": 0.05,
    "early_mismatches": 1.0,
    "uncertainty_auroc": 0.5,
    "proxy_gap": 0.5,
    "llm_to_slm_speed": 2.0,
    "llm_to_slm_quality": 0.95,
    "router_pareto": 0.2,
    "loss_law": 0.03,
    "accuracy_rises": 1.0,
    "divergent_share": 0.5,
    "divergence_router": 1.0,
    "early_divergence": 1.0,
    "accelerations_pareto": 0.95,
}
# rows read from timings: their metrics go apart
TIMED = frozenset({"llm_to_slm_speed", "accelerations_pareto"})
PROXY_TUNING_PAPER = 0.88  # Liu et al. 2024: proxy tuning closes 88-91% of Llama-2's tuning gap


@dataclass(frozen=True)
class Inputs:
    """What the findings read from the earlier stages' outputs; an output not yet written is an
    empty table (or mapping), and the rows that need it are inconclusive."""

    frequency: pd.DataFrame = field(default_factory=pd.DataFrame)  # stage 02's CF table
    fits: pd.DataFrame = field(default_factory=pd.DataFrame)  # stage 03
    paper_fits: pd.DataFrame = field(default_factory=pd.DataFrame)  # stage 03
    paper_points: pd.DataFrame = field(default_factory=pd.DataFrame)  # `paper_frequencies`
    auroc: pd.DataFrame = field(default_factory=pd.DataFrame)  # stage 04
    position: pd.DataFrame = field(default_factory=pd.DataFrame)  # stage 04
    ladder: pd.DataFrame = field(default_factory=pd.DataFrame)  # stage 00
    llm_to_slm: dict = field(default_factory=dict)  # stage 05's metrics
    llm_to_slm_timing: dict = field(default_factory=dict)  # stage 05's timings
    routers: pd.DataFrame = field(default_factory=pd.DataFrame)  # stage 06's summary
    divergence: pd.DataFrame = field(default_factory=pd.DataFrame)  # stage 08's pairs table
    divergence_early: pd.DataFrame = field(default_factory=pd.DataFrame)  # stage 08's position
    accelerations: pd.DataFrame = field(default_factory=pd.DataFrame)  # stage 09's head to head


def as_float(value) -> float:
    return float("nan") if value is None else float(value)


def by_interval(low: float, high: float, threshold: float) -> str:
    """`holds` when the interval lies above `threshold`, `does not hold` when below,
    `inconclusive` when it straddles it or is missing."""
    if math.isnan(low) or math.isnan(high):
        return OPEN
    return HOLDS if low > threshold else FAILS if high < threshold else OPEN


def claim_row(id_, paper_figure, ours, low, high, verdict, rule, detail="") -> dict:
    paper, claim = CLAIMS[id_]
    return dict(
        zip(
            COLUMNS,
            [id_, paper, claim, paper_figure, ours, low, high, verdict, rule, detail],
            strict=True,
        )
    )


def missing_row(id_: str, paper_figure, rule: str, why: str) -> dict:
    """An inconclusive row: its figure cannot be computed, for the reason `why`."""
    return claim_row(id_, paper_figure, math.nan, math.nan, math.nan, OPEN, rule, why)


def cf_under_20pct(frequency: pd.DataFrame, paper: pd.DataFrame) -> dict:
    """FS-GEN: fewer than 20% of tokens need the large model, in most pairs."""
    cf = frequency["collaboration_frequency"]
    # low: the share of pairs whose whole interval is under 20%; high: whose lower end is
    surely = frequency.get("collaboration_frequency_high", cf).fillna(cf) < UNDER
    possibly = frequency.get("collaboration_frequency_low", cf).fillna(cf) < UNDER
    low, high = float(surely.mean()), float(possibly.mean())
    rule = "share of (method, pair) under 20%: holds if low > 0.5, fails if high < 0.5"
    detail = f"{len(frequency)} method x pair rows; low/high: share whose CF interval is under"
    paper_share = float((paper["collaboration_frequency"] < UNDER).mean())
    ours = float((cf < UNDER).mean())
    verdict = by_interval(low, high, THRESHOLDS["cf_under_20pct"])
    return claim_row("cf_under_20pct", paper_share, ours, low, high, verdict, rule, detail)


def _oracle_fits(fits: pd.DataFrame, paper_fits: pd.DataFrame, task: str):
    """The oracle's fit row of `task` (ours) and of the paper's GSM8K points (None if absent)."""
    ours = fits[(fits.task == task) & (fits.method == "oracle")]
    theirs = paper_fits[(paper_fits.task == "gsm8k") & (paper_fits.method == "oracle")]
    return (ours.iloc[0] if len(ours) else None), (theirs.iloc[0] if len(theirs) else None)


def _field(fit, name: str) -> float:
    """A fit row's `name`, NaN when there is no row or no such column."""
    return as_float(fit[name]) if fit is not None and name in fit else math.nan


FIT_PARAMETERS = 3  # a, alpha and b of the scaling law


def power_law_fit(fits: pd.DataFrame, paper_fits: pd.DataFrame, task: str) -> dict:
    """FS-GEN: the oracle's CF follows b - a r^-alpha in the parameter ratio r."""
    ours, theirs = _oracle_fits(fits, paper_fits, task)
    r2 = _field(ours, "r2")
    points = _field(ours, "n")
    verdict = (
        OPEN
        if math.isnan(r2)
        or not points > FIT_PARAMETERS  # a curve through every point tests nothing
        else HOLDS
        if r2 >= THRESHOLDS["power_law"]
        else FAILS
        if r2 < 0.5
        else OPEN
    )
    rule = (
        "R^2 of the oracle fit over more pairs than its 3 parameters: holds if >= 0.8, "
        "fails if < 0.5"
    )
    detail = ""
    if ours is not None:
        detail = (
            f"{points:.0f} pairs, a={ours['a']:.3g}, alpha={ours['alpha']:.3g} [{ours['alpha_low']:.3g}, "
            f"{ours['alpha_high']:.3g}], b={ours['b']:.3g}, LOO RMSE={ours['loo_rmse']:.3g}, "
            f"best form by AIC: {ours['best_form']}"
        )
    nan = math.nan
    return claim_row("power_law", _field(theirs, "r2"), r2, nan, nan, verdict, rule, detail)


def ratio_alone(fits: pd.DataFrame, paper_fits: pd.DataFrame, task: str) -> dict:
    """FS-GEN's law is in r alone: the two sizes matter only through their ratio."""
    ours, theirs = _oracle_fits(fits, paper_fits, task)
    p = _field(ours, "nested.p")
    verdict = OPEN if math.isnan(p) else HOLDS if p >= THRESHOLDS["ratio_alone"] else FAILS
    rule = "nested F test, CF on log r vs on log N_large and log N_small: holds if p >= 0.05"
    paper_p, nan = _field(theirs, "nested.p"), math.nan
    return claim_row("ratio_alone", paper_p, p, nan, nan, verdict, rule, "figures are p-values")


def early_mismatches(position: pd.DataFrame, task: str) -> dict:
    """FS-GEN: interventions concentrate at the start of the generation."""
    rows = position[position.task == task]
    overall = rows["mismatches"].sum() / rows["tokens"].sum() if len(rows) else float("nan")
    first = rows[rows.decile == 0]
    if not len(first) or not overall:
        ours = low = high = float("nan")
    else:
        tokens = first["tokens"].sum()

        def pooled(column: str) -> float:  # the first decile's rate over pairs, by tokens
            return float((first[column] * first["tokens"]).sum() / tokens / overall)

        ours = float(first["mismatches"].sum() / tokens / overall)
        low, high = pooled("mismatch_rate_low"), pooled("mismatch_rate_high")
    rule = "first-decile mismatch rate / overall rate, oracle pairs pooled: holds if low > 1"
    return claim_row(
        "early_mismatches",
        "qualitative (position heatmap)",
        ours,
        low,
        high,
        by_interval(low, high, THRESHOLDS["early_mismatches"]),
        rule,
        "interval: token-weighted Wilson bounds of the first decile",
    )


def uncertainty_predicts(auroc: pd.DataFrame, task: str) -> dict:
    """FS-GEN: the large model steps in where System 1 is uncertain."""
    rows = auroc[auroc.task == task]
    if not len(rows) or "entropy_low" not in rows:
        ours = low = high = float("nan")
    else:
        ours, low, high = (float(rows[c].min()) for c in ("entropy", "entropy_low", "entropy_high"))
    rule = "smallest entropy AUROC over oracle pairs: holds if low > 0.5 (better than chance)"
    return claim_row(
        "uncertainty_auroc",
        "qualitative (densities)",
        ours,
        low,
        high,
        by_interval(low, high, THRESHOLDS["uncertainty_auroc"]),
        rule,
        f"{len(rows)} pairs; the worst pair's AUROC and interval",
    )


def proxy_gap_closed(frequency: pd.DataFrame, ladder: pd.DataFrame, task: str) -> dict:
    """Proxy tuning (Liu et al. 2024): steering the base large model with a small tuned-minus-
    base difference closes most of the gap to the tuned large model."""
    rule = (
        "share of the tuned-vs-base gap closed, largest rung, mean over small rungs: holds if > 0.5"
    )
    proxy = frequency[(frequency.task == task) & (frequency.method == "proxy")]
    if not len(proxy):
        return missing_row("proxy_gap", PROXY_TUNING_PAPER, rule, "no proxy rows")
    largest = proxy.sort_values("n_large")["large"].iloc[-1]
    chat = ladder.set_index("model")["chat_accuracy"] if "chat_accuracy" in ladder else pd.Series()
    if f"{largest}-chat" not in chat or largest not in chat:
        return missing_row(
            "proxy_gap",
            PROXY_TUNING_PAPER,
            rule,
            f"the largest rung {largest} has no tuned copy to measure the gap against",
        )
    base, tuned = float(chat[largest]), float(chat[f"{largest}-chat"])
    rows = proxy[proxy.large == largest]
    gap = tuned - base
    closed = (rows[["accuracy", "accuracy_low", "accuracy_high"]] - base) / gap if gap else None
    if closed is None:
        return missing_row(
            "proxy_gap",
            PROXY_TUNING_PAPER,
            rule,
            f"no tuning gap: {largest} scores {base:.3f} tuned and base",
        )
    ours, low, high = (
        float(closed[c].mean()) for c in ("accuracy", "accuracy_low", "accuracy_high")
    )
    detail = (
        f"{largest}: base {base:.3f}, tuned {tuned:.3f} (ladder chat accuracy); {len(rows)} smalls"
    )
    return claim_row(
        "proxy_gap",
        PROXY_TUNING_PAPER,
        ours,
        low,
        high,
        by_interval(low, high, THRESHOLDS["proxy_gap"]),
        rule,
        detail,
    )


def llm_to_slm_speed(timing: dict, task: str) -> dict:
    """LLM-to-SLM: at least 2x faster than the large model on `task` (the paper: up to 4x)."""
    speeds = [timing.get(f"{task}.llm_to_slm.batch{b}.speedup_vs_large") for b in (1, 8)]
    speeds = [s for s in speeds if s is not None]
    ours = float(min(speeds)) if speeds else float("nan")
    verdict = (
        OPEN if math.isnan(ours) else HOLDS if ours >= THRESHOLDS["llm_to_slm_speed"] else FAILS
    )
    rule = "the smaller of the batch-1 and batch-8 speed-ups (encoding included): holds if >= 2"
    detail = ", ".join(
        f"batch {b}: {timing.get(f'{task}.llm_to_slm.batch{b}.speedup_vs_large', math.nan):.2f}x"
        for b in (1, 8)
    )
    return claim_row(
        "llm_to_slm_speed",
        4.0,
        ours,
        float("nan"),
        float("nan"),
        verdict,
        rule,
        f"{task}: {detail} (medians of repeated runs)",
    )


def llm_to_slm_quality(metrics: dict, task: str) -> dict:
    """LLM-to-SLM: within 1-2% of the large model's quality on `task`."""
    large = metrics.get(f"{task}.large.accuracy")
    values = [metrics.get(f"{task}.llm_to_slm.accuracy{end}") for end in ("", "_low", "_high")]
    if not large or any(v is None for v in values):
        ours = low = high = float("nan")
    else:
        ours, low, high = (float(v) / float(large) for v in values)
    verdict = (
        OPEN if math.isnan(high) else HOLDS if high >= THRESHOLDS["llm_to_slm_quality"] else FAILS
    )
    rule = "LLM-to-SLM accuracy / large accuracy (Wilson bounds): holds if high >= 0.95"
    return claim_row(
        "llm_to_slm_quality",
        0.98,
        ours,
        low,
        high,
        verdict,
        rule,
        f"{task}: large accuracy {large}",
    )


def _base_rungs(ladder: pd.DataFrame) -> pd.DataFrame:
    return ladder[ladder["variant"] == "base"].sort_values("params")


def loss_law(ladder: pd.DataFrame) -> dict:
    """Our instrument: the base rungs' held-out losses lie on one smooth curve in parameters
    (no broken rung), as a Pythia-style suite's do."""
    rule = "largest |loss residual| against the fitted L(N) over the base rungs: holds if <= 0.03"
    if (ladder["variant"] == "base").sum() < 4:
        return missing_row("loss_law", "Pythia-style suite", rule, "fewer than 4 base rungs to fit")
    if "loss_residual" not in ladder:  # stage 00 wrote it; a table from before that: fit here
        ladder, _ = with_loss_law(ladder)
    base = _base_rungs(ladder)
    residual = base["loss_residual"].abs()
    worst = float(residual.max())
    verdict = HOLDS if worst <= THRESHOLDS["loss_law"] else FAILS
    detail = ", ".join(
        f"{m}: {r:+.3f}" for m, r in zip(base["model"], base["loss_residual"], strict=True)
    )
    nan = math.nan
    return claim_row("loss_law", "Pythia-style suite", worst, nan, nan, verdict, rule, detail)


def accuracy_rises(ladder: pd.DataFrame) -> dict:
    """Our instrument: each base rung answers more plain prompts right than the one below it."""
    rule = (
        "base rungs' plain-prompt accuracy: holds if it rises at every step up the ladder; "
        "ours: the share of steps that rise"
    )
    base = _base_rungs(ladder)
    steps = base["accuracy"].diff().dropna()
    ours = float((steps > 0).mean())
    detail = ", ".join(
        f"{m}: {a:.3f} [{lo:.3f}, {hi:.3f}]"
        for m, a, lo, hi in base[["model", "accuracy", "accuracy_low", "accuracy_high"]].itertuples(
            index=False
        )
    )
    nan = math.nan
    verdict = HOLDS if ours == THRESHOLDS["accuracy_rises"] else FAILS
    return claim_row("accuracy_rises", "rises with size", ours, nan, nan, verdict, rule, detail)


def router_pareto(routers: pd.DataFrame) -> dict:
    """Ours: a router on System 1's uncertainty keeps 95% of the large model's accuracy while
    calling it for under 20% of the tokens."""
    if not len(routers) or "call_rate_for_95" not in routers:
        ours, detail = float("nan"), "no router sweep"
    elif not (routers.get("large_accuracy", pd.Series([1.0])) > 0).all():
        ours, detail = float("nan"), "the large model scores 0: 95% of it is no target"
    else:
        per_pair = routers.groupby(["large", "small"])["call_rate_for_95"].min()
        ours = float(per_pair.max())
        detail = "; ".join(
            f"{large}-{small}: {rate:.3f}" for (large, small), rate in per_pair.items()
        )
    verdict = OPEN if math.isnan(ours) else HOLDS if ours < THRESHOLDS["router_pareto"] else FAILS
    rule = "call rate at 95% of the large model's accuracy, best router, worst pair: holds if < 0.2"
    return claim_row(
        "router_pareto",
        float("nan"),
        ours,
        float("nan"),
        float("nan"),
        verdict,
        rule,
        detail,
    )


def computed_rows(computations: dict) -> pd.DataFrame:
    """The table of `computations` (claim id -> a function giving its row); a row whose input
    is missing (a table or column not yet written) is inconclusive and names what is missing."""
    rows = []
    for id_, compute in computations.items():
        try:
            rows.append(compute())
        except (KeyError, AttributeError) as missing:
            rows.append(missing_row(id_, math.nan, "", f"missing input: {missing}"))
    return pd.DataFrame(rows, columns=COLUMNS)


def findings_table(
    task: str, inputs: Inputs = Inputs(), llm_to_slm_task: str = "synthetic"
) -> pd.DataFrame:
    """Every finding from the stage outputs (the FS-GEN rows on `task`, "" for the first task the
    token logs hold; the LLM-to-SLM rows on `llm_to_slm_task`); a row whose inputs are missing (an output not yet written, or written
    before a column existed) is inconclusive and names what is missing."""
    frequency = inputs.frequency
    if not task and "task" in frequency and len(frequency):
        task = str(frequency["task"].iloc[0])  # "": the first task logged, whatever the profile
    fits, paper_fits, ladder = inputs.fits, inputs.paper_fits, inputs.ladder
    computations = {
        "cf_under_20pct": lambda: cf_under_20pct(frequency, inputs.paper_points),
        "power_law": lambda: power_law_fit(fits, paper_fits, task),
        "ratio_alone": lambda: ratio_alone(fits, paper_fits, task),
        "early_mismatches": lambda: early_mismatches(inputs.position, task),
        "uncertainty_auroc": lambda: uncertainty_predicts(inputs.auroc, task),
        "proxy_gap": lambda: proxy_gap_closed(frequency, ladder, task),
        "llm_to_slm_speed": lambda: llm_to_slm_speed(inputs.llm_to_slm_timing, llm_to_slm_task),
        "llm_to_slm_quality": lambda: llm_to_slm_quality(inputs.llm_to_slm, llm_to_slm_task),
        "router_pareto": lambda: router_pareto(inputs.routers),
        "loss_law": lambda: loss_law(ladder),
        "accuracy_rises": lambda: accuracy_rises(ladder),
    }
    return computed_rows(computations)


def findings_metrics(table: pd.DataFrame) -> tuple[dict[str, object], dict[str, object]]:
    """Flat metrics `<id>.paper_figure`, `.ours`, `.low`, `.high`, `.verdict` of every row: the
    deterministic ones, and apart those of the rows read from timings (`TIMED`), so that the
    first stay byte-identical across reruns."""
    metrics: dict[str, object] = {}
    timings: dict[str, object] = {}
    for row in table.to_dict("records"):
        target = timings if row["id"] in TIMED else metrics
        for name in ("paper_figure", "ours", "low", "high"):
            value = row[name]
            if isinstance(value, float | int | np.floating) and not math.isnan(float(value)):
                target[f"{row['id']}.{name}"] = round(float(value), 6)
        target[f"{row['id']}.verdict"] = row["verdict"]
    return metrics, timings
