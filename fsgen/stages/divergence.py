"""Stage 08, which interventions matter: on the oracle traces of stage 01 (the first `n_prompts`
prompts of the logged selection, for each pair), every mismatch is branched (System 1's token in
place of System 2's, System 2 continuing greedily to the end) and scored with the task's scorer:
divergent when the branch's score differs from the oracle's, neutral otherwise
(`fsgen.analysis.divergence`). Writes the per-pair table with bootstrap intervals, the position
table and figure, the AUROCs of System 1's uncertainty for divergent mismatches beside plain
mismatches, every labelled mismatch, and flat metrics (the stage's seconds apart)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsgen.analysis import divergence
from fsgen.analysis.routing import oracle_trace, parse_pairs
from fsgen.core.determinism import compute_threads
from fsgen.core.io import write_metrics
from fsgen.core.plots import save_figure
from fsgen.core.shards import SETTINGS, merge_logs, read_plan
from fsgen.data.tasks import get_task, load_examples
from fsgen.engine.batch import encode_prompts
from fsgen.models.cache import models_for, release_models
from fsgen.models.profiles import load_profile
from fsgen.models.prompts import profile_prompts
from fsgen.stages.config import Divergence, StagePaths
from fsgen.stages.not_run import left_out


@dataclass(frozen=True)
class Paths(StagePaths):
    logs_dir: Path  # read: stage 01's token logs
    metrics_file: Path
    timing_file: Path  # the stage's seconds, apart from the deterministic metrics
    results_dir: Path


@dataclass(frozen=True)
class Result:
    mismatches: pd.DataFrame  # every mismatch with its branch's score and label
    pairs: pd.DataFrame  # per pair (and pooled): counts and shares with intervals
    position: pd.DataFrame  # per pair and decile: mismatch and divergent rates
    early: dict  # pooled: first-decile divergent rate over overall, mean positions
    auroc: pd.DataFrame  # per pair and signal: AUROC for mismatch, divergent, divergent|mismatch
    seconds: float


def logged_selection(logs_dir: Path) -> tuple[int, str | None]:
    """The seed and data directory the token logs drew their prompts with (settings.json)."""
    manifest = Path(logs_dir) / SETTINGS
    if not manifest.is_file():
        raise ValueError(f"no token logs at {logs_dir} (no {SETTINGS}): run stage 01 first")
    settings = json.loads(manifest.read_text())
    data_dir = settings.get("data_dir")
    return int(settings["seed"]), None if data_dir in (None, "", "None") else str(data_dir)


def logged_length(logs_dir: Path, task: str) -> int:
    """The generation length the oracle of `task` was logged with (its units' keys, `+m<n>`),
    so that a branch continues within the same length as the generation it branches from."""
    lengths = {
        int(key.rsplit("+m", 1)[1])
        for key in read_plan(logs_dir) or []
        if key.startswith(f"{task}+oracle+")
    }
    if len(lengths) != 1:
        raise ValueError(
            f"the token logs at {logs_dir} hold oracle units of {task!r} with generation "
            f"lengths {sorted(lengths)}; expected one"
        )
    return lengths.pop()


def run(config: Divergence, paths: Paths) -> Result:
    """Branch every mismatch of each pair's oracle traces and write the study's outputs."""
    compute_threads(config.threads)
    profile = load_profile(config.profile, config.params_file)
    if (skipped := left_out("divergence", profile, Result)) is not None:
        return skipped
    traces, _ = merge_logs(paths.logs_dir)
    seed, data_dir = logged_selection(paths.logs_dir)
    task = config.task or load_profile(config.profile, config.params_file).tasks[0]
    length = logged_length(paths.logs_dir, task)
    return study(config, traces, seed, config.data_dir or data_dir, length, paths)


def study(
    config: Divergence, traces: pd.DataFrame, seed: int, data_dir, max_new_tokens: int, paths
) -> Result:
    """The stage on merged `traces` whose prompts were drawn with `seed` from `data_dir` and
    generated within `max_new_tokens`."""
    started = time.perf_counter()
    profile = load_profile(config.profile, config.params_file)
    task = config.task or profile.tasks[0]
    pairs = parse_pairs(config.pairs, profile)
    examples = load_examples(task, data_dir=data_dir, n_prompts=config.n_prompts, seed=seed)
    models = models_for(profile)
    labels, kept = {}, {}
    try:
        for large_name, small_name in pairs:
            pair = f"{large_name}-{small_name}"
            trace = divergence.first_prompts(
                oracle_trace(traces, task, large_name, small_name), config.n_prompts
            )
            ids = sorted(set(int(i) for i in trace["prompt_id"]))
            if ids[-1] >= len(examples):
                raise ValueError(
                    f"pair {pair}'s first {config.n_prompts} logged prompts have ids up to "
                    f"{ids[-1]}, expected ids below n_prompts={config.n_prompts}"
                )
            large = models.get(large_name)
            chosen = [examples[i] for i in ids]
            prompts = profile_prompts(
                profile, task, chosen, data_dir=data_dir, tokenizer=models.tokenizer
            )
            prompt_ids = dict(zip(ids, encode_prompts(models.tokenizer, prompts), strict=True))
            labels[pair] = divergence.label_mismatches(
                large,
                models.tokenizer,
                task,
                trace,
                prompt_ids,
                {i: examples[i] for i in ids},
                max_new_tokens=max_new_tokens,
                batch_size=config.batch_size,
                stop=list(get_task(task).stop),
            ).assign(pair=pair)
            kept[pair] = trace
    finally:
        release_models()
    boot = {"bootstrap": config.bootstrap, "seed": config.seed}
    result = Result(
        mismatches=pd.concat(labels.values(), ignore_index=True),
        pairs=divergence.pair_table(kept, labels, **boot),
        position=divergence.position_table(kept, labels),
        early=divergence.early_divergence(kept, labels, **boot),
        auroc=divergence.divergence_auroc(kept, labels, **boot),
        seconds=time.perf_counter() - started,
    )
    write_outputs(result, paths)
    return result


def write_outputs(result: Result, paths: Paths) -> None:
    """pairs.csv, position.csv, early.csv, auroc.csv, mismatches.csv, the figure, the metrics."""
    results = paths.results_dir
    results.mkdir(parents=True, exist_ok=True)
    tables = {
        "pairs": result.pairs,
        "position": result.position,
        "early": pd.DataFrame([result.early]),
        "auroc": result.auroc,
        "mismatches": result.mismatches.drop(columns=["length"]),
    }
    for name, table in tables.items():
        table.to_csv(results / f"{name}.csv", index=False, float_format="%.6g")
    metrics = divergence.divergence_metrics(result.pairs, result.early, result.auroc)
    write_metrics(paths.metrics_file, metrics)
    write_metrics(paths.timing_file, {"stage_seconds": round(result.seconds, 3)})
    save_figure(divergence.plot_divergence(result.pairs, result.position), results / "divergence")
