"""Stage 03, the scaling law: CF = b - a * r^(-alpha) fitted to every task and method of the CF
table (stage 02) and to the FS-GEN paper's published frequencies, with the model comparison, the
flat metrics and the figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsgen.analysis import scaling
from fsgen.core.executor import Executor
from fsgen.core.io import write_metrics
from fsgen.core.parallel import run_jobs
from fsgen.core.plots import save_figure
from fsgen.stages.config import ScalingLaw, StagePaths


@dataclass(frozen=True)
class Paths(StagePaths):
    frequency_file: Path  # read: stage 02's CF table
    paper_file: Path  # read: the paper's published frequencies
    metrics_file: Path
    results_dir: Path


@dataclass(frozen=True)
class Result:
    table: pd.DataFrame  # the CF table fitted
    fits: pd.DataFrame  # one row per task and method
    paper_fits: pd.DataFrame  # one row per method and dataset of the paper


def fit_groups(jobs: Sequence[scaling.GroupFit], workers: int, executor: Executor) -> list[dict]:
    """`[scaling.fit_group(job) for job in jobs]`, `workers` groups at once in their own
    processes (or as Ray tasks); each group's fit is the same whichever process makes it."""
    return run_jobs(
        scaling.fit_group,
        jobs,
        workers=workers,
        executor=executor,
        name=lambda job: f"fit of {job.key}",
        cost=lambda job: job.bootstrap * len(job.ratios),
        desc="scaling-law fits",
        progress=False,
    )


def run(config: ScalingLaw, paths: Paths) -> Result:
    """Fit ours and the paper's groups in one pool; write fits.csv, paper_fits.csv, the flat
    metrics and the figures."""
    table = pd.read_csv(paths.frequency_file)
    paper = scaling.paper_frequencies(paths.paper_file)
    settings = {"bootstrap": config.bootstrap, "seed": config.seed}
    ours = scaling.group_fits(table, **settings)
    theirs = scaling.group_fits(paper.rename(columns={"dataset": "task"}), **settings)
    rows = fit_groups(ours + theirs, config.workers, config.executor)
    fits, paper_fits = pd.DataFrame(rows[: len(ours)]), pd.DataFrame(rows[len(ours) :])
    paths.results_dir.mkdir(parents=True, exist_ok=True)
    fits.to_csv(paths.results_dir / "fits.csv", index=False, float_format="%.6g")
    paper_fits.to_csv(paths.results_dir / "paper_fits.csv", index=False, float_format="%.6g")
    metrics = scaling.fit_metrics(fits) | scaling.fit_metrics(paper_fits, prefix="paper.")
    write_metrics(paths.metrics_file, metrics)
    figure = scaling.plot_scaling_fits(table, fits, paper, paper_fits, config.paper_dataset)
    save_figure(figure, paths.results_dir / "scaling_law")
    save_figure(scaling.plot_paper_fits(paper, paper_fits), paths.results_dir / "paper_fits")
    return Result(table, fits, paper_fits)
