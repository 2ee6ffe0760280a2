"""Stage 06, routers that pay off: the router sweep, decoded for real, and the speed-up study.

`run(config, paths)` is the whole stage: it reads the token logs of stage 01, calibrates every
router on their oracle traces and decodes each at each target call rate on fresh prompts
(`sweep_routers`, fanned out over `fsgen.core.parallel.run_jobs`), runs the speed-up study
(`fsgen.analysis.speedup.speedup_study`), and writes every output (`write_outputs`):

- `metrics_file`: deterministic metrics (accuracies, areas, call rates, acceptance);
- `timing_file`: wall seconds of every sweep run, and the speed-ups measured and predicted;
- under `results_dir`: runs.csv, summary.csv, holdout_auc.csv, acceptance.csv, speedup.csv,
  speedup_timings.csv, and the figures accuracy_vs_call_rate, accuracy_vs_wall_time and speedup
  (each as PNG and SVG).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from fsgen.analysis.divergence import divergent_trace
from fsgen.analysis.routing import (
    KINDS,
    Calibration,
    SweepResult,
    calibrate_router,
    fit_learned_router,
    mismatch_auc,
    oracle_trace,
    parse_pairs,
    plot_router_sweep,
    profile_task,
    random_router,
    router_metrics,
    split_prompts,
    summarize_sweep,
)
from fsgen.analysis.speedup import SpeedupResult, plot_speedups, speedup_study
from fsgen.analysis.speedup_model import recommend_draft_length
from fsgen.core.determinism import compute_threads
from fsgen.core.executor import Executor
from fsgen.core.io import write_metrics
from fsgen.core.parallel import run_jobs
from fsgen.core.plots import save_figure
from fsgen.core.shards import merge_logs
from fsgen.data.scoring import accuracy
from fsgen.data.tasks import get_task, load_examples, score
from fsgen.engine.collaborate import collaborate
from fsgen.models.cache import models_for, release_models
from fsgen.models.profiles import load_profile
from fsgen.models.prompts import profile_prompts
from fsgen.stages.config import Routers, StagePaths
from fsgen.stages.not_run import left_out

# the speed-up table's columns written to the timing file, per pair and draft length
SPEEDUP_TIMINGS = (
    "predicted_speedup_forwards",
    "predicted_speedup_engine",
    "measured_speedup",
    "small_over_large_cost",
    "verify_over_large_cost",
)


@dataclass(frozen=True)
class Paths(StagePaths):
    """The stage's files (given as strings or paths, held resolved from the repository root):
    the token logs it reads, the metrics and timing JSON it writes, and the folder of its tables
    and figures."""

    logs_dir: Path
    metrics_file: Path
    timing_file: Path
    results_dir: Path
    divergence_file: Path  # stage 08's labelled mismatches (absent: no divergence router)


@dataclass(frozen=True)
class Result:
    """What the stage computed, for its notebook to show: the sweep's runs, per-router summary
    and held-out mismatch AUCs; the speed-up study's acceptance replay and speed-up table (None
    without `speedup_pairs`); and the deterministic metrics written."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    scores: pd.DataFrame
    acceptance: pd.DataFrame | None
    speedups: pd.DataFrame | None
    metrics: dict[str, object]


def run(config: Routers, paths: Paths) -> Result:
    """Run the stage on `config` (the validated `routers` values; the profile is read from the
    repository's params.yaml) and write its outputs under `paths`."""
    compute_threads(config.threads)
    profile = load_profile(config.profile, config.params_file)
    if (skipped := left_out("routers", profile, Result)) is not None:
        return skipped
    traces, _ = merge_logs(paths.logs_dir)
    data_dir = router_data_dir(config.data_dir, paths.logs_dir)
    divergence = pd.read_csv(paths.divergence_file) if paths.divergence_file.exists() else None
    sweep = sweep_routers(
        profile,
        traces,
        config.pairs,
        task=config.task,
        target_call_rates=config.target_call_rates,
        n_prompts=config.n_prompts,
        prompt_offset=config.prompt_offset,
        seed=config.seed,
        fit_fraction=config.fit_fraction,
        top_k=config.top_k,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        data_dir=data_dir,
        workers=config.workers,
        executor=config.executor,
        divergence=divergence,
    )
    speedups = None
    if config.speedup_pairs:
        try:
            speedups = speedup_study(
                profile,
                traces,
                config.speedup_pairs,
                config.draft_lengths,
                task=config.task,
                n_prompts=config.speedup_prompts,
                seed=config.seed,
                max_new_tokens=config.max_new_tokens,
                batch_size=config.batch_size,
                repeats=config.repeats,
                probe_tokens=tuple(config.probe_tokens),
                data_dir=data_dir,
            )
        finally:
            release_models()
    metrics = write_outputs(paths, sweep, speedups)
    return Result(
        sweep.runs,
        sweep.summary,
        sweep.scores,
        None if speedups is None else speedups.acceptance,
        None if speedups is None else speedups.table,
        metrics,
    )


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


# ----------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class SweepRun:
    """One decoding run of a sweep (a `sweep_routers` job): System 1 (`small`) decodes the
    prompts and consults System 2 (`large`) where the router says; `method` "small" or "large"
    runs that model alone. The router is rebuilt from `calibration` (or, for the random
    baseline, from `random_rate` and `seed`) where the run happens, as routers are closures."""

    profile: object
    large: str
    small: str
    method: str  # "oracle" (routed), "small" or "large" (alone)
    prompts: list[str]
    examples: list
    task: str
    decoding: dict  # max_new_tokens, batch_size, stop
    calibration: Calibration | None = None
    random_rate: float | None = None
    seed: int = 0


def run_sweep(job: SweepRun) -> dict:
    """Decode one `SweepRun`; returns its realised call rate, collaboration frequency, accuracy,
    tokens, large-model forwards and wall seconds."""
    models = models_for(job.profile)
    small, large, tokenizer = models.get(job.small), models.get(job.large), models.tokenizer
    how: dict = {"method": job.method}
    if job.calibration is not None:
        how["router"] = job.calibration.router()
    elif job.random_rate is not None:
        how["router"] = random_router(job.random_rate, job.seed)
    if job.method == "small":
        large = small
    elif job.method == "large":
        small = large
    out = collaborate(small, large, tokenizer, job.prompts, **how, **job.decoding)
    return {
        "call_rate": out.summary["call_rate"],
        "collaboration_frequency": out.summary["collaboration_frequency"],
        "accuracy": accuracy(score(job.task, out.texts, job.examples)),
        "tokens": out.summary["tokens"],
        "large_forwards": out.summary["large_forwards"],
        "wall_seconds": out.summary["wall_seconds"],
    }


def sweep_cost(job: SweepRun) -> float:
    """A sweep run's rough compute: its large rung's weight."""
    return job.profile.rung(job.large).compute_weight


def sweep_run_name(job: SweepRun) -> str:
    """A sweep run as its errors name it: its method and pair."""
    return f"sweep run {job.method} {job.large}-{job.small}"


def sweep_routers(
    profile,
    traces: pd.DataFrame,
    pairs: str | Sequence,  # [large, small] items, or "auto" (see parse_pairs)
    *,
    task: str = "synthetic",
    target_call_rates: Sequence[float] = (0.05, 0.1, 0.2, 0.4),
    kinds: Sequence[str] = KINDS,
    n_prompts: int = 64,
    prompt_offset: int = 64,
    seed: int = 0,
    fit_fraction: float = 0.5,
    top_k: int = 5,
    max_new_tokens: int = 160,
    batch_size: int = 64,
    data_dir: str | os.PathLike | None = None,
    workers: int = 1,
    executor: str | Executor = "local",
    progress: bool = False,
    divergence: pd.DataFrame | None = None,
) -> SweepResult:
    """For each pair, calibrate every router kind on the pair's oracle traces to each target call
    rate, then decode for real (`collaborate(method="oracle", router=...)`) on fresh prompts
    (`n_prompts` examples after the first `prompt_offset` of the `seed` shuffle, so not the
    logged ones when the offset is the logged count), next to a random router at the same
    targets and the two models alone. The learned router is fitted on a `fit_fraction` split of
    the traces' prompts and evaluated on the rest.

    The runs decode on this process's torch thread count, `workers` at once in their own
    processes (`fsgen.core.parallel`), or as Ray tasks (`executor="ray"`): each run's wall time
    is then one run's on its own core, beside another's; every other column is the same whatever
    `workers` and `executor` are. With `divergence` (stage 08's labelled mismatches), each pair
    it labelled also gets `learned_divergent`: the learned router fitted on divergent mismatches
    instead of all mismatches (the same features, another target), calibrated the same way."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown router kinds {unknown}; valid kinds: {list(KINDS)}")
    plan = parse_pairs(pairs, profile)
    task, max_new_tokens = profile_task(profile, task, max_new_tokens)
    examples = load_examples(
        task, data_dir=data_dir, n_prompts=prompt_offset + n_prompts, seed=seed
    )[prompt_offset:]
    decoding = {
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "stop": list(get_task(task).stop),
    }
    prompts = profile_prompts(profile, task, examples, data_dir=data_dir)
    template = SweepRun(profile, "", "", "", prompts, examples, task, decoding)
    jobs, rows, scores = plan_sweep(
        template, traces, plan, target_call_rates, kinds, seed, fit_fraction, top_k, divergence
    )
    try:
        measured = run_jobs(
            run_sweep,
            jobs,
            workers=workers,
            threads=torch.get_num_threads(),
            cost=sweep_cost,
            desc="router sweep",
            progress=progress,
            executor=executor,
            name=sweep_run_name,
        )
    finally:
        release_models()
    table = pd.DataFrame([label | measured[index] for label, index in rows])
    return SweepResult(table, summarize_sweep(table), pd.DataFrame(scores))


def plan_sweep(
    template: SweepRun,
    traces: pd.DataFrame,
    pairs: list[tuple[str, str]],
    target_call_rates: Sequence[float],
    kinds: Sequence[str],
    seed: int,
    fit_fraction: float,
    top_k: int,
    divergence: pd.DataFrame | None = None,
) -> tuple[list[SweepRun], list[tuple[dict, int]], list[dict]]:
    """The sweep's runs (`template` with each pair's models and router; a model alone runs
    once, whatever pairs it is in), each table row's label with the index of the run that
    measures it, and the held-out mismatch AUC of every router kind."""
    jobs: list[SweepRun] = []
    rows: list[tuple[dict, int]] = []
    alone: dict[str, int] = {}
    scores: list[dict] = []
    for large, small in pairs:
        trace = oracle_trace(traces, template.task, large, small)
        fit_ids, held_ids = split_prompts(trace["prompt_id"], fit_fraction, seed)
        learned = fit_learned_router(trace[trace["prompt_id"].isin(fit_ids)], top_k=top_k)
        held = mismatch_auc(trace[trace["prompt_id"].isin(held_ids)], learned)
        base = {"task": template.task, "large": large, "small": small}
        scores += [base | {"router": k, "holdout_mismatch_auc": v} for k, v in held.items()]
        for name, method in ((small, "small"), (large, "large")):
            if name not in alone:
                alone[name] = len(jobs)
                jobs.append(replace(template, large=name, small=name, method=method))
            fixed = 0.0 if method == "small" else 1.0
            label = {"target_call_rate": fixed, "threshold": None, "predicted_call_rate": fixed}
            rows.append((base | {"router": method} | label, alone[name]))
        pair = replace(template, large=large, small=small, method="oracle")
        routers = [(kind, kind, learned) for kind in kinds]
        if divergence is not None and f"{large}-{small}" in set(divergence["pair"]):
            labelled = divergent_trace(trace, divergence, f"{large}-{small}")
            routers.append(("learned_divergent", "learned", fit_learned_router(labelled, top_k)))
        for target in target_call_rates:
            for name, kind, fitted in routers:
                cal = calibrate_router(trace, kind, target, learned=fitted)
                label = {
                    "router": name,
                    "target_call_rate": target,
                    "threshold": cal.threshold,
                    "predicted_call_rate": cal.predicted_call_rate,
                }
                rows.append((base | label, len(jobs)))
                jobs.append(replace(pair, calibration=cal))
            label = {
                "router": "random",
                "target_call_rate": target,
                "threshold": None,
                "predicted_call_rate": target,
            }
            rows.append((base | label, len(jobs)))
            jobs.append(replace(pair, random_rate=target, seed=seed))
    return jobs, rows, scores


# ----------------------------------------------------------------------------- the outputs


def write_outputs(paths: Paths, sweep: SweepResult, speedups: SpeedupResult | None) -> dict:
    """Write the stage's files (see the module docstring); returns the deterministic metrics."""
    results = paths.results_dir
    results.mkdir(parents=True, exist_ok=True)
    write_csv(sweep.runs.drop(columns=["wall_seconds"]), results / "runs.csv")
    write_csv(sweep.summary, results / "summary.csv")
    write_csv(sweep.scores, results / "holdout_auc.csv")
    save_figure(plot_router_sweep(sweep.runs, "call_rate"), results / "accuracy_vs_call_rate")
    save_figure(plot_router_sweep(sweep.runs, "wall_seconds"), results / "accuracy_vs_wall_time")
    metrics, timing = router_metrics(sweep), sweep_timing(sweep)
    if speedups is not None:
        write_csv(speedups.acceptance, results / "acceptance.csv")
        write_csv(speedups.table, results / "speedup.csv")
        write_csv(speedups.timings, results / "speedup_timings.csv")
        save_figure(plot_speedups(speedups.table), results / "speedup")
        metrics |= speedup_metrics(speedups)
        timing |= speedup_timing(speedups)
    write_metrics(paths.metrics_file, metrics)
    write_metrics(paths.timing_file, timing)
    return metrics


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """A table as CSV, without its index, floats to 6 significant digits."""
    table.to_csv(path, index=False, float_format="%.6g")


def sweep_timing(sweep: SweepResult) -> dict[str, object]:
    """The wall seconds of every sweep run, by task, pair, router and target call rate."""
    timing: dict[str, object] = {}
    for row in sweep.runs.to_dict("records"):
        target = f"{row['target_call_rate']:g}"
        stem = f"{row['task']}.{row['large']}-{row['small']}.{row['router']}.at{target}"
        timing[f"{stem}.wall_seconds"] = row["wall_seconds"]
    return timing


def speedup_metrics(speedups: SpeedupResult) -> dict[str, object]:
    """The speed-up study's deterministic metrics: tokens and lockstep batch rounds per round,
    replayed from the traces, per pair and draft length."""
    metrics: dict[str, object] = {}
    for row in speedups.acceptance.to_dict("records"):
        stem = f"speculative.{row['pair']}.k{row['k']}"
        metrics[f"{stem}.tokens_per_round"] = row["tokens_per_round"]
        metrics[f"{stem}.batch_rounds"] = row["batch_rounds"]
    return metrics


def speedup_timing(speedups: SpeedupResult) -> dict[str, object]:
    """The speed-up study's timings: `SPEEDUP_TIMINGS` per pair and draft length, and per pair
    the draft length measured fastest (recommended_k) and predicted fastest (predicted_best_k)."""
    timing: dict[str, object] = {}
    for row in speedups.table.to_dict("records"):
        stem = f"speculative.{row['pair']}.k{row['k']}"
        for key in SPEEDUP_TIMINGS:
            timing[f"{stem}.{key}"] = row[key]
    for pair, k in recommend_draft_length(speedups.table).items():
        timing[f"speculative.{pair}.recommended_k"] = k
    for pair, k in recommend_draft_length(speedups.table, "predicted_speedup_engine").items():
        timing[f"speculative.{pair}.predicted_best_k"] = k
    return timing
