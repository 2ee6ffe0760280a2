"""Stage 01, token logging: every method on every pair of rungs, as resumable shards, then the
summary table (CF and accuracy with intervals) and its flat metrics.

The units (`fsgen.analysis.units`) return their token trace and generations (text, score), and
this process writes them as two shards (the generations shard last, so a unit counts as done only
when both exist): a worker on another machine needs no filesystem in common with this one. A
rerun skips finished units, and `merge_logs` reads the run's plan back in a fixed order. Units run
in worker processes on this machine (`executor="local"`, `workers` at once) or as tasks on a Ray
cluster (`executor="ray"`, `fsgen.core.executor`): each unit asks for the GPUs its models'
estimated memory needs, and the units that hold the same models run in one task, so those models
load once.

The output folder is fsgen's own (`fsgen.core.owned`): a non-empty folder fsgen did not make is
refused, never wiped. Changing the task list, the methods, `n_prompts` or `max_new_tokens` keeps
every finished shard (and reuses it when the change is undone). Only a change of the run-wide
settings (profile and its rungs, chunk size, seed, data, top-k, the code) deletes the shards,
which fsgen wrote.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from fsgen.analysis.estimates import BYTES, LONGEST_PROMPT, USABLE, model_shape, unit_memory
from fsgen.analysis.summary import logging_metrics, summarize_logs
from fsgen.analysis.units import (
    Unit,
    UnitJob,
    log_unit,
    model_set,
    models_large_first,
    plan_units,
    runs_ladder_prompts,
    unit_cost,
)
from fsgen.core import source
from fsgen.core.determinism import compute_threads
from fsgen.core.executor import Executor, RayRun, Resources, as_executor
from fsgen.core.io import atomic_write_text, write_metrics
from fsgen.core.names import name_list
from fsgen.core.owned import prepare_owned_dir
from fsgen.core.parallel import check_workers, run_jobs
from fsgen.core.shards import PLAN, SETTINGS, ShardStore, merge_logs, run_fingerprint, write_plan
from fsgen.data.sources import resolve_data_dir
from fsgen.data.tasks import load_examples
from fsgen.engine.methods import logging_methods
from fsgen.models.cache import release_models
from fsgen.models.profiles import Profile, load_profile
from fsgen.stages.config import StagePaths, TokenLogging


@dataclass(frozen=True)
class Paths(StagePaths):
    out_dir: Path  # the shards (resumable)
    metrics_file: Path
    results_dir: Path


@dataclass(frozen=True)
class Result:
    tasks: list[str]
    methods: list[str]
    counts: dict[str, int]  # units, run, skipped, model loads and sets (`log_tokens`)
    summary: pd.DataFrame  # per task, method and pair (summary.csv)


def run(config: TokenLogging, paths: Paths) -> Result:
    """Log (or resume) every unit of the profile's tasks and methods, then write the summary."""
    profile = load_profile(config.profile, config.params_file)
    tasks = default_tasks(profile, config.data_dir)
    # a profile may set its own methods and prompt count (a real model on a CPU: fewer of both)
    methods = logging_methods(list(profile.methods) if profile.methods else config.methods)
    counts = log_tokens(
        profile,
        paths.out_dir,
        tasks=tasks,
        methods=methods,
        n_prompts=profile.n_prompts or config.n_prompts,
        ladder_prompts=profile.n_prompts or config.ladder_prompts,
        chunk_size=config.chunk_size,
        seed=config.seed,
        data_dir=config.data_dir or None,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        threads=config.threads,
        workers=config.workers,
        executor=config.executor,
    )
    summary = write_logging_outputs(
        paths.out_dir,
        paths.metrics_file,
        paths.results_dir,
        bootstrap=config.bootstrap,
        seed=config.seed,
    )
    return Result(tasks, methods, counts, summary)


def log_tokens(
    profile: Profile,
    out_dir: str | os.PathLike,
    *,
    tasks: Sequence[str] = ("synthetic",),
    methods: str | Sequence[str] = "all",
    n_prompts: int = 8,
    ladder_prompts: int | None = None,
    chunk_size: int = 64,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 64,
    trace_top_k: int = 10,
    threads: int | None = None,
    workers: int | str = 1,
    executor: str | Executor = "local",
    progress: bool = True,
) -> dict[str, int]:
    """Run (or resume) every unit; returns counts of units, units run and skipped, model loads
    and the distinct model sets of the units run (and, on Ray, resubmissions after a lost node).

    Methods of a pair run on the first `n_prompts` prompts of each task; each rung alone and the
    ladder-wide oracle on the first `ladder_prompts` (default `n_prompts`; the same selection,
    extended). `threads`: compute on exactly this many CPU threads (float sums, and so the
    traces, depend on the count); None keeps torch's. `workers`: decode this many units at once,
    each in its own process (`fsgen.core.parallel`). `executor`: "local" (those processes) or
    "ray" (tasks on a Ray cluster, `fsgen.core.executor`). The traces depend on neither."""
    tasks = name_list(tasks, "tasks")
    executor = as_executor(executor)
    if threads is not None:
        compute_threads(threads)
    # "auto": as many as the cores hold; one on a GPU profile (the processes would share it)
    workers = 1 if workers == "auto" and profile.device != "cpu" else workers
    workers = check_workers(workers, torch.get_num_threads())
    for name, value in (("chunk_size", chunk_size), ("max_new_tokens", max_new_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    ladder_prompts = n_prompts if ladder_prompts is None else ladder_prompts
    if ladder_prompts < n_prompts:
        raise ValueError(
            f"ladder_prompts ({ladder_prompts}) must be at least n_prompts ({n_prompts})"
        )
    settings = {  # the run-wide settings: a change deletes the shards (see the module docstring)
        "profile": profile.name,
        "rungs": [r.model for r in profile.rungs],
        "chunk_size": chunk_size,
        "seed": seed,
        "data_dir": str(data_dir),
        "trace_top_k": trace_top_k,
        "num_draft": profile.num_draft,
        "threads": torch.get_num_threads(),
        "code": code_fingerprint(),
    }
    out_dir = _start_or_resume(Path(out_dir), settings)
    gens = ShardStore(out_dir / "generations")
    selected = {
        t: load_examples(t, data_dir=data_dir, n_prompts=ladder_prompts, seed=seed) for t in tasks
    }
    n_chunks = max(1, -(-n_prompts // chunk_size))
    ladder_chunks = max(1, -(-ladder_prompts // chunk_size))

    def chunk(unit: Unit) -> list:
        """The examples of `unit`: its chunk of the first n_prompts (or ladder_prompts)."""
        count = ladder_prompts if runs_ladder_prompts(unit.method) else n_prompts
        end = min((unit.chunk + 1) * chunk_size, count)
        return selected[unit.task][unit.chunk * chunk_size : end]

    plan = [
        replace(u, prompts=size, max_new_tokens=profile.generation_length(u.task, max_new_tokens))
        for u in plan_units(profile, tasks, methods, n_chunks, ladder_chunks)
        if (size := len(chunk(u)))
    ]
    write_plan(out_dir, [u.key for u in plan])
    run = run_fingerprint(out_dir)
    traces = ShardStore(out_dir / "traces")
    todo = [u for u in plan if not (gens.done(u.key, run) and traces.done(u.key, run))]
    jobs = [
        UnitJob(
            profile,
            unit,
            chunk(unit),
            unit.chunk * chunk_size,
            data_dir,
            batch_size=profile.batch_size or batch_size,
            trace_top_k=trace_top_k,
        )
        for unit in todo
    ]
    threads = torch.get_num_threads()
    ray_run = RayRun()
    try:
        loads = run_jobs(
            log_unit,
            jobs,
            workers=workers,
            threads=threads,
            cost=lambda job: unit_cost(job.unit, profile),
            desc="token logging",
            progress=progress,
            executor=executor,
            on_result=lambda index, result: write_unit(out_dir, run, jobs[index].unit, *result),
            resources=lambda job: unit_resources(job.unit, profile, threads, executor),
            group=lambda job: model_set(job.unit, profile),
            name=lambda job: f"unit {job.unit.key}",
            report=ray_run,
        )
    finally:
        release_models()  # this process's models (workers > 1: the workers' went with them)
    counts = {"units": len(plan), "run": len(todo), "skipped": len(plan) - len(todo)}
    counts["model_loads"] = sum(loads)
    counts["model_sets"] = len({model_set(u, profile) for u in todo})
    if executor.kind == "ray":
        counts["resubmitted"] = ray_run.resubmitted
    return counts


def write_unit(out_dir: Path, run: str, unit: Unit, trace, generations, loads: int) -> int:
    """Write a finished unit's trace and then its generations (which mark it done), both marked
    as the run `run`'s; returns the models its worker loaded for it."""
    ShardStore(out_dir / "traces").write(unit.key, trace, run)
    ShardStore(out_dir / "generations").write(unit.key, generations, run)  # last: marks it done
    return loads


def unit_resources(unit: Unit, profile: Profile, threads: int, executor: Executor) -> Resources:
    """What a unit asks a Ray node for: on a CPU profile, its compute threads; on a GPU one, one
    CPU and as many GPUs as the estimated peak memory of its models needs at the profile's batch
    (`fsgen.analysis.estimates.unit_memory`); over several GPUs, `device: auto` spreads the
    models across them."""
    if profile.device == "cpu":
        return Resources(cpus=threads)
    memory = unit_gpu_memory(unit, profile)
    usable = executor.gpu_memory_gb * 1e9 * USABLE
    return Resources(cpus=1, gpus=max(1, math.ceil(memory / usable)), memory_gb=memory / 1e9)


def unit_gpu_memory(unit: Unit, profile: Profile) -> float:
    """The estimated peak bytes of `unit` on a GPU (`fsgen.analysis.estimates.unit_memory`)."""
    shapes = []
    for name, tuned in models_large_first(unit, profile):
        rung = profile.rung(name)
        shapes.append(model_shape(rung.tuned if tuned else rung.model, revision=rung.revision))
    return sum(
        unit_memory(
            shapes,
            method=unit.method,
            batch=profile.batch_size or min(unit.prompts, 64),
            prompt=LONGEST_PROMPT.get(unit.task, 2048),
            new=unit.max_new_tokens,
            per_param=BYTES.get(profile.dtype, 2),
        ).values()
    )


def code_fingerprint() -> str:
    """A hash of the code token logging runs (this module and the fsgen modules it imports, the
    stage's DVC deps): logs made by other code are never resumed."""
    return source.code_fingerprint(["stages.token_logging"])


def default_tasks(profile: Profile, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The profile's tasks; on an embedded profile the benchmark tasks join when a data
    directory is given (argument or FSGEN_DATA_DIR)."""
    tasks = list(profile.tasks)
    if profile.kind == "embedded" and resolve_data_dir(data_dir or None) is not None:
        tasks += [t for t in ("gsm8k", "mmlu_stem", "mbpp", "mt_bench") if t not in tasks]
    return tasks


OWNER = "token_logging"
WRITES = (SETTINGS, PLAN, "traces/*.parquet", "generations/*.parquet")  # all a run writes


def _earlier_logs(out_dir: Path) -> bool:
    """Whether `out_dir` holds token logs of fsgen from before it marked its folders: their
    settings file names the profile and the code."""
    try:
        settings = json.loads((out_dir / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and {"profile", "code"} <= settings.keys()


def _start_or_resume(out_dir: Path, settings: dict) -> Path:
    """Resume a run with the same run-wide settings; when they changed, delete the shards (ours:
    the folder is fsgen's) so none of another configuration survives. Batch size and sharding do
    not change results. A non-empty folder fsgen did not make is refused, untouched."""
    out_dir = prepare_owned_dir(out_dir, owner=OWNER, patterns=WRITES, adopt=_earlier_logs)
    manifest = out_dir / SETTINGS
    text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
    if not manifest.exists() or manifest.read_text(encoding="utf-8") != text:
        for store in (ShardStore(out_dir / "generations"), ShardStore(out_dir / "traces")):
            store.remove(store.keys())  # generations first: a unit is done while it has them
        atomic_write_text(manifest, text)
    return out_dir


def write_logging_outputs(
    out_dir, metrics_file, results_dir, *, bootstrap: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Merge the shards, write the summary table (CSV, with intervals: see `summarize_logs`)
    and flat metrics; returns the table."""
    traces, generations = merge_logs(out_dir)
    table = summarize_logs(traces, generations, bootstrap=bootstrap, seed=seed)
    summary = table.to_csv(index=False, float_format="%.6g")
    atomic_write_text(Path(results_dir) / "summary.csv", summary)  # all or nothing
    write_metrics(metrics_file, logging_metrics(traces, generations, table))
    return table
