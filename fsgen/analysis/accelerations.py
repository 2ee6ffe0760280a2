"""Three accelerations head to head: the large model alone, the small model alone, the best router
at 95% of the large model's accuracy, greedy speculative decoding at its best draft length and
LLM-to-SLM, on the same prompts, the same machine and the same large model.

The choices are made by rules fixed here, from stage 06's outputs, before the head-to-head runs:

- the pair (`choose_pair`): of stage 06's pairs whose large model is LLM-to-SLM's, the one whose
  best router reaches 95% of the large model's accuracy at the lowest call rate (the first in
  stage 06's order on a tie); without such a pair, the best of all its pairs, and LLM-to-SLM is
  left out (it would not share the large model);
- the router (`best_router`): of that pair's routers (the random baseline aside), the kind with
  the lowest call rate reaching 95% of the large model's accuracy (`call_rate_for_95`, the
  first on a tie), re-calibrated on the pair's oracle traces to that call rate exactly as stage
  06 calibrates it (`recalibrate`);
- the draft length (`best_draft_length`): the one of stage 06's speed-up study with the highest
  measured speed-up for the pair (its `recommended_k`; the smallest on a tie).

Every system decodes through the engine (`fsgen.engine.collaborate`), greedy, with no token
trace. `measure_accuracy` decodes the prompts once per system; `time_systems` times every
system on the first prompts at each batch size, `repeats` times, systems interleaved within a
repeat and each run after a full garbage collection with the collector off
(`fsgen.core.timing.timed`). `head_to_head` joins them: per system and batch size, the accuracy
with its Wilson 95% interval and the median milliseconds per generated token, and whether the
system is on the Pareto front (`PARETO_RULE`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from fsgen.analysis.divergence import divergent_trace
from fsgen.analysis.routing import Calibration, calibrate_router, fit_learned_router, split_prompts
from fsgen.analysis.speedup_model import recommend_draft_length
from fsgen.core.timing import timed
from fsgen.data.scoring import accuracy, accuracy_interval
from fsgen.data.tasks import score
from fsgen.engine.collaborate import Collaboration, collaborate, generate

ACCELERATIONS = ("router", "speculative", "llm_to_slm")  # the systems that are not a model alone
NOT_ROUTERS = ("small", "large", "random")  # summary rows that are no calibrated router
PARETO_RULE = (
    "per batch size, a system is on the front when no other system has accuracy >= its own and "
    "ms per token <= its own with at least one strict (point figures: accuracy on all prompts, "
    "median ms per token over the repeats; the intervals do not enter the set)"
)


# ----------------------------------------------------------------------------- the choices


def _router_rows(summary: pd.DataFrame, task: str) -> pd.DataFrame:
    """Stage 06's summary rows of `task` that are calibrated routers."""
    if summary.empty or "call_rate_for_95" not in summary:
        raise ValueError(
            "stage 06's router summary has no call_rate_for_95 column (stage 06 not run, or "
            "skipped for this profile): run stage routers first, or skip accelerations too"
        )
    rows = summary[(summary["task"] == task) & ~summary["router"].isin(NOT_ROUTERS)]
    if rows.empty:
        raise ValueError(
            f"stage 06's router summary has no router of task {task!r}; its tasks: "
            f"{sorted(set(summary['task']))}"
        )
    return rows


def choose_pair(summary: pd.DataFrame, task: str, large: str | None = None) -> tuple[str, str]:
    """The pair of stage 06 the head-to-head runs (the module's rule): among the pairs with
    `large` as their large model (None: all), the lowest best-router call rate to 95%."""
    rows = _router_rows(summary, task)
    best = rows.groupby(["large", "small"], sort=False)["call_rate_for_95"].min()
    candidates = best[[name == large for name, _ in best.index]] if large else best
    if candidates.empty:
        candidates = best
    ranked = candidates.reset_index().sort_values("call_rate_for_95", kind="stable")
    first = ranked.iloc[0]
    return str(first["large"]), str(first["small"])


def best_router(summary: pd.DataFrame, task: str, pair: tuple[str, str]) -> tuple[str, float]:
    """The router kind of `pair` with the lowest call rate reaching 95% of the large model's
    accuracy (the first in stage 06's order on a tie), and that call rate."""
    rows = _router_rows(summary, task)
    rows = rows[(rows["large"] == pair[0]) & (rows["small"] == pair[1])]
    rows = rows[rows["call_rate_for_95"].notna()]
    if rows.empty:
        raise ValueError(
            f"stage 06 has no router of pair {pair[0]}-{pair[1]} reaching 95% of the large "
            "model's accuracy"
        )
    best = rows.sort_values("call_rate_for_95", kind="stable").iloc[0]
    return str(best["router"]), float(best["call_rate_for_95"])


def best_draft_length(speedup: pd.DataFrame, pair: tuple[str, str]) -> int:
    """The draft length with the highest measured speed-up of `pair` in stage 06's speed-up
    study (the smallest on a tie)."""
    name = f"{pair[0]}-{pair[1]}"
    if speedup.empty or "measured_speedup" not in speedup or name not in set(speedup["pair"]):
        raise ValueError(
            f"stage 06's speed-up study has no measured speed-up of pair {name}: add it to "
            "routers.speedup_pairs"
        )
    rows = speedup[speedup["pair"] == name].sort_values("k", kind="stable")
    return int(recommend_draft_length(rows)[name])


def recalibrate(
    trace: pd.DataFrame,
    router: str,
    call_rate: float,
    *,
    fit_fraction: float,
    top_k: int,
    seed: int,
    divergence: pd.DataFrame | None = None,
    pair: str = "",
) -> Calibration:
    """Router `router` of stage 06 calibrated on the pair's oracle `trace` to `call_rate`, as
    stage 06 calibrates it (`fsgen.stages.routers.plan_sweep`): the learned router fitted on the
    `fit_fraction` split of the prompts (`seed`), `learned_divergent` on every prompt's
    mismatches labelled by stage 08 (`divergence`, the rows of `pair`)."""
    if router == "learned_divergent":
        if divergence is None:
            raise ValueError(
                "router learned_divergent needs stage 08's labelled mismatches (divergence=...)"
            )
        fitted = fit_learned_router(divergent_trace(trace, divergence, pair), top_k)
        return calibrate_router(trace, "learned", call_rate, learned=fitted)
    fitted = None
    if router == "learned":
        fit_ids, _ = split_prompts(trace["prompt_id"], fit_fraction, seed)
        fitted = fit_learned_router(trace[trace["prompt_id"].isin(fit_ids)], top_k=top_k)
    return calibrate_router(trace, router, call_rate, learned=fitted)


# ----------------------------------------------------------------------------- the systems


@dataclass(frozen=True)
class System:
    """One system of the head-to-head: its key (`large`, `small`, `router`, `speculative`,
    `llm_to_slm_small`, `llm_to_slm`), the models it runs, what was chosen for it, and how it
    decodes prompts at a batch size (`decoding`: max_new_tokens and stop)."""

    key: str
    models: str
    detail: str
    decode: Callable[..., Collaboration]  # (prompts, batch_size=..., **decoding)


def alone(model, tokenizer) -> Callable[..., Collaboration]:
    """How a model alone decodes (the engine's `generate`, no trace)."""

    def decode(prompts, **run) -> Collaboration:
        return generate(model, tokenizer, prompts, **run)

    return decode


def pair_systems(
    large, small, tokenizer, names: tuple[str, str], calibration: Calibration, draft_length: int
) -> list[System]:
    """The large model alone, the small model alone, the routed pair and speculative decoding."""
    large_name, small_name = names
    pair = f"{large_name}-{small_name}"
    quiet = {"trace": False}

    def routed(prompts, **run):
        how = {"method": "oracle", "router": calibration.router()}
        return collaborate(small, large, tokenizer, prompts, **how, **quiet, **run)

    def speculative(prompts, **run):
        how = {"method": "speculative", "num_draft": draft_length}
        return collaborate(small, large, tokenizer, prompts, **how, **quiet, **run)

    router = f"{calibration.kind} at call rate {calibration.target_call_rate:.4g}"
    return [
        System("large", large_name, "alone", alone(large, tokenizer)),
        System("small", small_name, "alone", alone(small, tokenizer)),
        System("router", pair, router, routed),
        System("speculative", pair, f"greedy, draft length {draft_length}", speculative),
    ]


def llm_to_slm_systems(model, small, tokenizer, names: tuple[str, str]) -> list[System]:
    """LLM-to-SLM (`model`, an `LLMToSLM`) and, when given, its small model alone (`small`; None
    when it is the pair's small model, already in the table)."""

    def conditioned(prompts, **run):
        decoder, inputs = model.decoder(prompts)
        return generate(decoder, **inputs, trace=False, **run)

    large_name, small_name = names
    systems = [System("llm_to_slm", f"{large_name}->{small_name}", "encodes, then", conditioned)]
    if small is not None:
        systems.insert(0, System("llm_to_slm_small", small_name, "alone", alone(small, tokenizer)))
    return systems


# ----------------------------------------------------------------------------- measuring


def measure_accuracy(
    systems: Sequence[System], prompts, examples, task: str, *, batch_size: int, decoding: dict
) -> tuple[pd.DataFrame, dict[str, Collaboration]]:
    """Each system's accuracy on `prompts` with its Wilson 95% interval (`accuracy_interval`),
    tokens and call rate; and each system's generation."""
    rows, outputs = [], {}
    for system in systems:
        out = system.decode(list(prompts), batch_size=batch_size, **decoding)
        scores = score(task, out.texts, examples)
        value = accuracy(scores)
        low, high = accuracy_interval(scores)
        rows.append(
            {
                "system": system.key,
                "models": system.models,
                "detail": system.detail,
                "prompts": len(scores),
                "correct": sum(1 for s in scores if s == 1),
                "accuracy": math.nan if value is None else value,
                "accuracy_low": low,
                "accuracy_high": high,
                "tokens": out.summary["tokens"],
                "call_rate": out.summary["call_rate"],
            }
        )
        outputs[system.key] = out
    return pd.DataFrame(rows), outputs


def time_systems(
    systems: Sequence[System],
    prompts,
    *,
    batch_sizes: Sequence[int],
    repeats: int,
    decoding: dict,
) -> pd.DataFrame:
    """Wall seconds and tokens of every system on `prompts` at each batch size, `repeats` times;
    within a repeat every batch size and system in turn, in one process."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows = []
    for repeat in range(repeats):
        for batch_size in batch_sizes:
            for system in systems:

                def run(s=system, b=batch_size):
                    return s.decode(list(prompts), batch_size=b, **decoding)

                seconds, collecting, out = timed(run)
                rows.append(
                    {
                        "system": system.key,
                        "batch_size": batch_size,
                        "repeat": repeat,
                        "seconds": seconds,
                        "gc_seconds": collecting,
                        "tokens": out.summary["tokens"],
                    }
                )
    return pd.DataFrame(rows)


def pareto_front(accuracy: Sequence[float], cost: Sequence[float]) -> list[bool]:
    """Which points are on the Pareto front of high accuracy and low cost (`PARETO_RULE`): no
    other point has accuracy >= and cost <= with at least one strict."""
    points = list(zip(accuracy, cost, strict=True))
    if any(math.isnan(a) or math.isnan(c) for a, c in points):
        raise ValueError(f"accuracy and cost must be numbers, got {points}")
    return [
        not any(
            (a2 >= a and c2 <= c) and (a2 > a or c2 < c)
            for j, (a2, c2) in enumerate(points)
            if j != i
        )
        for i, (a, c) in enumerate(points)
    ]


def head_to_head(quality: pd.DataFrame, timing: pd.DataFrame) -> pd.DataFrame:
    """Per system and batch size: the accuracy with its interval (`quality`), the median seconds,
    tokens and ms per generated token of the timed runs (`timing`), the speed-up over the large
    model alone, and whether the system is on the batch size's Pareto front."""
    timed_runs = timing.assign(ms_per_token=1000 * timing["seconds"] / timing["tokens"].clip(1))
    medians = (
        timed_runs.groupby(["system", "batch_size"], sort=False)
        .agg(
            seconds=("seconds", statistics.median),
            timed_tokens=("tokens", "median"),
            ms_per_token=("ms_per_token", statistics.median),
        )
        .reset_index()
    )
    table = quality.merge(medians, on="system", how="inner", validate="one_to_many")
    table = table.sort_values("batch_size", kind="stable").reset_index(drop=True)
    parts = []
    for _, rows in table.groupby("batch_size", sort=False):
        large = rows.loc[rows["system"] == "large", "ms_per_token"]
        speedup = float(large.iloc[0]) / rows["ms_per_token"] if len(large) else math.nan
        front = pareto_front(rows["accuracy"].tolist(), rows["ms_per_token"].tolist())
        parts.append(rows.assign(speedup_vs_large=speedup, on_front=front))
    return pd.concat(parts, ignore_index=True)


# ----------------------------------------------------------------------------- outputs


def accuracy_metrics(quality: pd.DataFrame, choices: dict) -> dict[str, object]:
    """The deterministic metrics: `<system>.accuracy` (and `_low`, `_high`), `.correct`,
    `.tokens`, the router's realised `.call_rate`, the prompts, and the choices that do not
    depend on a timing (`choices`: pair, router kind and its call rate)."""
    metrics: dict[str, object] = {"prompts": int(quality["prompts"].iloc[0]), **choices}
    for row in quality.itertuples():
        for name in ("accuracy", "accuracy_low", "accuracy_high", "correct", "tokens"):
            metrics[f"{row.system}.{name}"] = getattr(row, name)
        if row.system == "router":
            metrics["router.call_rate"] = row.call_rate
    return metrics


def timing_metrics(table: pd.DataFrame, draft_length: int) -> dict[str, object]:
    """The timings `<system>.batch<b>.ms_per_token`, `.speedup_vs_large`, `.on_front`, the
    Pareto set per batch size, and the draft length (chosen from stage 06's timings)."""
    metrics: dict[str, object] = {"speculative.draft_length": draft_length}
    for row in table.itertuples():
        stem = f"{row.system}.batch{row.batch_size}"
        metrics[f"{stem}.ms_per_token"] = row.ms_per_token
        metrics[f"{stem}.speedup_vs_large"] = row.speedup_vs_large
        metrics[f"{stem}.on_front"] = int(row.on_front)
    for batch_size, rows in table.groupby("batch_size", sort=False):
        metrics[f"batch{batch_size}.front"] = ",".join(rows.loc[rows["on_front"], "system"])
    return metrics


def plot_head_to_head(table: pd.DataFrame) -> plt.Figure:
    """Accuracy (Wilson 95% interval) against median ms per generated token, one panel per batch
    size; the Pareto front joined by a line, systems off it hollow."""
    sns.set_theme(style="whitegrid", context="notebook")
    sizes = list(dict.fromkeys(table["batch_size"]))
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), squeeze=False)
    colours = dict(zip(dict.fromkeys(table["system"]), sns.color_palette(), strict=False))
    for ax, batch_size in zip(axes[0], sizes, strict=True):
        rows = table[table["batch_size"] == batch_size]
        for row in rows.itertuples():
            colour, high = colours[row.system], row.accuracy_high
            ax.errorbar(
                row.ms_per_token,
                row.accuracy,
                yerr=[[max(0.0, row.accuracy - row.accuracy_low)], [max(0.0, high - row.accuracy)]],
                fmt="o",
                color=colour,
                markerfacecolor=colour if row.on_front else "white",
                capsize=3,
                label=f"{row.system} ({row.models})",
            )
        front = rows[rows["on_front"]].sort_values("ms_per_token")
        ax.plot(front["ms_per_token"], front["accuracy"], color="grey", linestyle=":", zorder=0)
        ax.set_xscale("log")
        ax.set(
            title=f"batch {batch_size}",
            xlabel="median ms per generated token (log scale)",
            ylabel="accuracy (Wilson 95%)",
        )
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle("Head to head: filled points are on the Pareto front")
    fig.tight_layout()
    return fig
