"""Stage 07, the findings: one row per claim of the two papers (and ours), computed from the
earlier stages' outputs by the rules fixed in `fsgen.analysis.findings`, written as findings.csv,
its caption, its figure and flat metrics (the rows read from timings apart)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsgen.analysis import findings
from fsgen.analysis.findings_beyond import beyond_table
from fsgen.analysis.findings_figure import plot_findings
from fsgen.analysis.scaling import paper_frequencies
from fsgen.core.io import write_metrics
from fsgen.core.plots import save_figure
from fsgen.stages.config import Findings, StagePaths


@dataclass(frozen=True)
class Paths(StagePaths):
    frequency_file: Path  # stage 02
    fits_file: Path  # stage 03
    paper_fits_file: Path  # stage 03
    paper_file: Path  # the paper's published frequencies
    auroc_file: Path  # stage 04
    position_file: Path  # stage 04
    ladder_file: Path  # stage 00
    llm_to_slm_file: Path  # stage 05's metrics
    llm_to_slm_timing_file: Path  # stage 05's timings
    routers_file: Path  # stage 06's summary
    divergence_file: Path  # stage 08's pairs table
    divergence_early_file: Path  # stage 08's position figures
    accelerations_file: Path  # stage 09's head-to-head table
    metrics_file: Path
    timing_file: Path  # the rows read from timings
    results_dir: Path


def _table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def _mapping(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def read_inputs(paths: Paths) -> findings.Inputs:
    """The earlier stages' outputs; one not yet written is empty (its rows are inconclusive)."""
    return findings.Inputs(
        frequency=_table(paths.frequency_file),
        fits=_table(paths.fits_file),
        paper_fits=_table(paths.paper_fits_file),
        paper_points=paper_frequencies(paths.paper_file),
        auroc=_table(paths.auroc_file),
        position=_table(paths.position_file),
        ladder=_table(paths.ladder_file),
        llm_to_slm=_mapping(paths.llm_to_slm_file),
        llm_to_slm_timing=_mapping(paths.llm_to_slm_timing_file),
        routers=_table(paths.routers_file),
        divergence=_table(paths.divergence_file),
        divergence_early=_table(paths.divergence_early_file),
        accelerations=_table(paths.accelerations_file),
    )


def run(config: Findings, paths: Paths) -> pd.DataFrame:
    """The findings table, written as findings.csv and caption.md under `results_dir`, with the
    flat metrics in `metrics_file` and the timed rows' in `timing_file`; returns the table."""
    inputs = read_inputs(paths)
    table = findings.findings_table(config.task, inputs, config.llm_to_slm_task)
    table = pd.concat([table, beyond_table(inputs)], ignore_index=True)
    paths.results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(paths.results_dir / "findings.csv", index=False, float_format="%.6g")
    (paths.results_dir / "caption.md").write_text(findings.CAPTION + "\n")
    save_figure(plot_findings(table), paths.results_dir / "findings")
    metrics, timings = findings.findings_metrics(table)
    write_metrics(paths.metrics_file, metrics)
    write_metrics(paths.timing_file, timings)
    return table
