"""Stage 00, the ladder: train every rung of an embedded profile (and its tuned copy) into the
profile's models folder, resuming rung by rung, or describe a hub profile's rungs from their
configs; then the ladder table, its metrics (deterministic) and timings (not), the loss curves
and the figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsgen.core.io import write_metrics
from fsgen.core.paths import resolve
from fsgen.core.plots import plot_ladder, plot_training_curves, save_figure
from fsgen.models.drafts import DraftConfig, train_drafts
from fsgen.models.ladder import (
    LadderConfig,
    describe_hub_ladder,
    ladder_metrics,
    profile_model_names,
    remove_stale_models,
    train_ladder,
)
from fsgen.models.loss_law import ladder_table
from fsgen.models.packaged import convert_packaged
from fsgen.models.profiles import Profile, load_profile
from fsgen.stages.config import StagePaths, TrainLadder


@dataclass(frozen=True)
class Paths(StagePaths):
    metrics_file: Path
    timing_file: Path
    results_dir: Path


@dataclass(frozen=True)
class Result:
    profile: Profile
    ladder: pd.DataFrame  # one row per model, with the loss law's columns
    curves: pd.DataFrame  # the training loss of every step of every model


def run(config: TrainLadder, paths: Paths) -> Result:
    """Build the profile's ladder and write the stage's outputs."""
    profile = load_profile(config.profile, config.params_file)
    training = LadderConfig(**config.model_dump(exclude={"profile", "drafts"}))
    drafts = DraftConfig(
        **config.drafts.model_dump() | {"data_dir": config.drafts.data_dir or None},
        # the large model's answers are as long as token logging lets them be
        max_new_tokens=profile.generation_length("gsm8k", config.max_new_tokens),
        **{k: getattr(config, k) for k in ("seed", "threads", "workers", "executor")},
    )
    ladder, curves = build_ladder(profile, training, drafts)
    ladder = write_ladder_outputs(ladder, curves, paths)
    save_figure(plot_training_curves(curves), paths.results_dir / "loss_curves")
    save_figure(plot_ladder(ladder), paths.results_dir / "ladder")
    return Result(profile, ladder, curves)


def build_ladder(
    profile: Profile,
    config: LadderConfig,
    drafts: DraftConfig | None = None,
    *,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train an embedded profile (removing the models of its own it no longer names), convert a
    packaged one's model and train its drafts (`drafts`), or describe a hub one. Either way the
    ladder table is also written as `ladder.csv` into the profile's models_dir; returns
    `(ladder, curves)` (curves is empty for a hub ladder)."""
    models_dir = resolve(profile.models_dir)
    if profile.kind in ("embedded", "packaged"):
        remove_stale_models(models_dir, keep=profile_model_names(profile), profile=profile.name)
    if profile.kind == "embedded":
        ladder, curves = train_ladder(profile, config, models_dir, progress=progress)
    elif profile.kind == "packaged":
        if drafts is None:
            raise ValueError(f"profile {profile.name!r} is packaged: its drafts need a DraftConfig")
        large = profile.rungs[-1]
        convert_packaged(large, models_dir / large.name, profile.name)
        ladder, curves = train_drafts(profile, drafts, models_dir, progress=progress)
    else:
        ladder = describe_hub_ladder(profile)
        curves = pd.DataFrame(columns=["model", "step", "loss"])
    models_dir.mkdir(parents=True, exist_ok=True)
    ladder.drop(columns=["train_seconds"], errors="ignore").to_csv(
        models_dir / "ladder.csv", index=False, float_format="%.6g"
    )
    return ladder, curves


def write_ladder_outputs(ladder: pd.DataFrame, curves: pd.DataFrame, paths: Paths) -> pd.DataFrame:
    """Write the ladder's metrics (deterministic), its timings (not), the table and the curves;
    returns the ladder with the loss law's columns (`ladder_table`), as the table is written
    (there less the timings).

    The metrics hold every model's measured columns and, when the loss law was fitted, its
    parameters as `loss_law.<name>`. Timings live in their own file so that reruns leave the
    metrics file byte-identical.
    """
    ladder, law = ladder_table(ladder)
    metrics = ladder_metrics(ladder)
    if law is not None:
        metrics |= {f"loss_law.{k}": v for k, v in law.items()}
    write_metrics(paths.metrics_file, metrics)
    write_metrics(paths.timing_file, ladder_metrics(ladder, ["train_seconds"]))
    paths.results_dir.mkdir(parents=True, exist_ok=True)
    table = ladder.drop(columns=["train_seconds"], errors="ignore")
    table.to_csv(paths.results_dir / "ladder.csv", index=False, float_format="%.6g")
    curves.to_csv(paths.results_dir / "loss_curves.csv", index=False, float_format="%.6g")
    return ladder
