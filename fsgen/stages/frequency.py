"""Stage 02, collaboration frequency: the CF table of every task, method and pair, its metrics and
figures, from the token-logging summary (stage 01) and the ladder's sizes (stage 00)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsgen.analysis import frequency
from fsgen.core.io import write_metrics
from fsgen.core.plots import save_figure
from fsgen.models.profiles import load_profile
from fsgen.stages.config import Frequency, StagePaths

FIGURES = {  # file stem -> the figure drawn from the CF table
    "frequency_heatmaps": frequency.plot_frequency_heatmaps,
    "frequency_by_small": frequency.plot_frequency_by_small,
    "accuracy": frequency.plot_accuracy,
}


@dataclass(frozen=True)
class Paths(StagePaths):
    summary_file: Path  # read: stage 01's summary
    metrics_file: Path
    results_dir: Path


@dataclass(frozen=True)
class Result:
    table: pd.DataFrame  # one row per task, method and pair (frequency.csv)
    metrics: dict[str, object]


def run(config: Frequency, paths: Paths) -> Result:
    """Build the CF table and write frequency.csv, the flat metrics and the figures."""
    profile = load_profile(config.profile, config.params_file)
    sizes = frequency.ladder_sizes(profile, config.size_column)
    summary = pd.read_csv(paths.summary_file)
    table = frequency.frequency_table(summary, sizes)
    metrics = frequency.frequency_metrics(table, summary)
    paths.results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths.results_dir / "frequency.csv", index=False, float_format="%.6g")
    write_metrics(paths.metrics_file, metrics)
    for stem, plot in FIGURES.items():
        save_figure(plot(table), paths.results_dir / stem)
    return Result(table, metrics)
