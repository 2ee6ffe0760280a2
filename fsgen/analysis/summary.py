"""The token-logging summary: per task, method and pair, tokens, calls, mismatches, the
collaboration frequency and accuracy, each with its 95% interval; and its flat metrics."""

from __future__ import annotations

import pandas as pd

from fsgen.core.stats import bootstrap_ratio_interval, wilson_interval


def summarize_logs(
    traces: pd.DataFrame, generations: pd.DataFrame, *, bootstrap: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Per task, method and pair: tokens, large calls, mismatches, collaboration frequency
    (and against the base small model for proxy), and accuracy of the generations, each with a
    95% interval: Wilson for accuracy, a bootstrap over prompts (`bootstrap` resamples, seeded)
    for the collaboration frequency."""
    keys = ["task", "method", "large", "small"]
    if traces.empty:
        return pd.DataFrame(columns=keys)
    calls = traces.assign(vs_base=traces["mismatch_vs_base"].astype("boolean").fillna(False))
    per_prompt = calls.groupby([*keys, "prompt_id"]).agg(
        tokens=("token_id", "size"),
        large_calls=("large_called", "sum"),
        mismatches=("mismatch", "sum"),
        mismatches_vs_base=("vs_base", "sum"),
    )
    table = per_prompt.groupby(keys).sum()
    table["collaboration_frequency"] = table["mismatches"] / table["tokens"]
    table["collaboration_frequency_vs_base"] = table["mismatches_vs_base"] / table["tokens"]
    intervals = {
        key: bootstrap_ratio_interval(
            group["mismatches"], group["tokens"], resamples=bootstrap, seed=seed
        )
        for key, group in per_prompt.groupby(keys)
    }
    table["collaboration_frequency_low"] = [intervals[key][0] for key in table.index]
    table["collaboration_frequency_high"] = [intervals[key][1] for key in table.index]
    correct = generations.assign(correct=pd.to_numeric(generations["correct"], errors="coerce"))
    scored = correct.groupby(keys)["correct"].agg(["sum", "count"])
    table["accuracy"] = scored["sum"] / scored["count"]
    wilson = {
        key: wilson_interval(int(row["sum"]), int(row["count"])) for key, row in scored.iterrows()
    }
    table["accuracy_low"] = [wilson.get(key, (float("nan"),) * 2)[0] for key in table.index]
    table["accuracy_high"] = [wilson.get(key, (float("nan"),) * 2)[1] for key in table.index]
    table["prompts"] = generations.groupby(keys).size()
    return table.reset_index()


def logging_metrics(traces: pd.DataFrame, generations: pd.DataFrame, table: pd.DataFrame) -> dict:
    """Flat metrics of a summary `table`: token and generation counts, then per task, method and
    pair its accuracy (with interval) and, for a collaboration, its frequency (with interval)."""
    metrics: dict[str, object] = {"tokens": len(traces), "generations": len(generations)}
    for row in table.to_dict("records"):
        pair = f"{row['large']}-{row['small']}" if row["small"] else row["large"]
        stem = f"{row['task']}.{row['method']}.{pair}"
        for name in ("accuracy", "accuracy_low", "accuracy_high"):
            metrics[f"{stem}.{name}"] = row[name]
        if row["method"] != "alone":
            for name in ("", "_low", "_high"):
                metrics[f"{stem}.collaboration_frequency{name}"] = row[
                    f"collaboration_frequency{name}"
                ]
    return metrics
