"""Stage 04, where collaboration happens: on one method's traces (stage 01), where in a generation
mismatches fall and how well System 1's uncertainty predicts them (AUROC with intervals), with
the tables, flat metrics and figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsgen.analysis import uncertainty
from fsgen.core.io import write_metrics
from fsgen.core.plots import save_figure
from fsgen.core.shards import merge_logs
from fsgen.stages.config import StagePaths, Uncertainty


@dataclass(frozen=True)
class Paths(StagePaths):
    logs_dir: Path  # read: stage 01's token logs
    metrics_file: Path
    results_dir: Path


@dataclass(frozen=True)
class Result:
    rows: pd.DataFrame  # the method's trace rows, one per generated token and pair
    auroc: pd.DataFrame  # per task and pair: each signal's AUROC with its interval
    deciles: pd.DataFrame  # mismatch rate by decile of the generation
    bins: pd.DataFrame  # mismatch rate by bin of System 1's entropy


def run(config: Uncertainty, paths: Paths) -> Result:
    """Merge the token logs and write the study's outputs (`write_outputs`)."""
    traces, _ = merge_logs(paths.logs_dir)
    return write_outputs(traces, config, paths)


def write_outputs(traces: pd.DataFrame, config: Uncertainty, paths: Paths) -> Result:
    """auroc.csv, position.csv, entropy_bins.csv, the flat metrics and the four figures."""
    rows = uncertainty.pair_traces(traces, config.method)
    auroc = uncertainty.signal_auroc(rows, bootstrap=config.bootstrap)
    deciles = uncertainty.mismatch_by_decile(rows)
    bins = uncertainty.entropy_bins(rows, config.entropy_bin_count)
    results = paths.results_dir
    results.mkdir(parents=True, exist_ok=True)
    for name, table in (("auroc", auroc), ("position", deciles), ("entropy_bins", bins)):
        table.to_csv(results / f"{name}.csv", index=False, float_format="%.6g")
    write_metrics(
        paths.metrics_file, uncertainty.uncertainty_metrics(auroc, deciles, config.method)
    )
    example = uncertainty.example_generation(
        rows, config.example_pair or None, max_tokens=config.example_tokens
    )
    figures = {
        "position_heatmap": uncertainty.plot_position_heatmap(rows),
        "signal_densities": uncertainty.plot_signal_densities(rows),
        "entropy_bins": uncertainty.plot_entropy_bins(rows, config.entropy_bin_count),
        "topk_example": uncertainty.plot_topk_example(example),
    }
    for stem, figure in figures.items():
        save_figure(figure, results / stem)
    return Result(rows, auroc, deciles, bins)
