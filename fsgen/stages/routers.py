"""Stage 06's outputs: the router sweep's and the speed-up study's tables and metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fsgen.analysis.routing import SweepResult, router_metrics
from fsgen.analysis.speedup import recommend_draft_length
from fsgen.core.io import write_metrics


def router_data_dir(data_dir: str, logs_dir: str | os.PathLike) -> str | None:
    """The data directory the stage reads prompts from: `data_dir` when given, else the one the
    token logs in `logs_dir` were made from (their settings.json), so the fresh prompts come
    from the same files as the logged ones; None: FSGEN_DATA_DIR or the hub."""
    if data_dir:
        return data_dir
    manifest = Path(logs_dir) / "settings.json"
    if not manifest.is_file():
        raise ValueError(f"no token logs at {logs_dir} (no settings.json): run stage 01 first")
    logged = json.loads(manifest.read_text()).get("data_dir")
    return None if logged in (None, "", "None") else str(logged)


def write_router_outputs(
    sweep: SweepResult, speedups, metrics_file, timing_file, results_dir
) -> dict[str, object]:
    """Write the stage's files: deterministic metrics (`metrics_file`), timings and speed-ups
    (`timing_file`), and CSV tables under `results_dir`. `speedups` is a `SpeedupResult` (or
    None). Returns the deterministic metrics."""
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    sweep.runs.drop(columns=["wall_seconds"]).to_csv(
        results / "runs.csv", index=False, float_format="%.6g"
    )
    sweep.summary.to_csv(results / "summary.csv", index=False, float_format="%.6g")
    sweep.scores.to_csv(results / "holdout_auc.csv", index=False, float_format="%.6g")
    metrics = router_metrics(sweep)
    timing: dict[str, object] = {}
    for row in sweep.runs.to_dict("records"):
        target = f"{row['target_call_rate']:g}"
        stem = f"{row['task']}.{row['large']}-{row['small']}.{row['router']}.at{target}"
        timing[f"{stem}.wall_seconds"] = row["wall_seconds"]
    if speedups is not None:
        speedups.acceptance.to_csv(results / "acceptance.csv", index=False, float_format="%.6g")
        speedups.table.to_csv(results / "speedup.csv", index=False, float_format="%.6g")
        speedups.timings.to_csv(results / "speedup_timings.csv", index=False, float_format="%.6g")
        for row in speedups.acceptance.to_dict("records"):
            stem = f"speculative.{row['pair']}.k{row['k']}"
            metrics[f"{stem}.tokens_per_round"] = row["tokens_per_round"]
            metrics[f"{stem}.batch_rounds"] = row["batch_rounds"]
        for row in speedups.table.to_dict("records"):
            stem = f"speculative.{row['pair']}.k{row['k']}"
            for key in (
                "predicted_speedup_forwards",
                "predicted_speedup_engine",
                "measured_speedup",
                "small_over_large_cost",
                "verify_over_large_cost",
            ):
                timing[f"{stem}.{key}"] = row[key]
        for pair, k in recommend_draft_length(speedups.table).items():
            timing[f"speculative.{pair}.recommended_k"] = k
        for pair, k in recommend_draft_length(speedups.table, "predicted_speedup_engine").items():
            timing[f"speculative.{pair}.predicted_best_k"] = k
    write_metrics(metrics_file, metrics)
    write_metrics(timing_file, timing)
    return metrics
