"""Token logging for a ladder: every method on every pair of rungs, as resumable shards.

The work is cut into units (task x method x pair x chunk of prompts). Each unit returns its token
trace and its generations (text, score), and this process writes them as two shards (the
generations shard last, so a unit counts as done only when both exist): a worker on another
machine needs no filesystem in common with this one. A rerun skips finished units, and
`merge_logs` reads the run's plan back in a fixed order. Units run in worker processes on this
machine (`executor="local"`, `workers` at once) or as tasks on a Ray cluster (`executor="ray"`,
`fsgen.core.executor`): each unit asks for the GPUs its models' estimated memory needs, and the
units that hold the same models run in one task, so those models load once.

The output folder is fsgen's own (`fsgen.core.owned`): a non-empty folder fsgen did not make is
refused, never wiped. A unit's key names what decides its result besides the run-wide settings
(its task, method, rungs, chunk, number of prompts and `max_new_tokens`), so changing the task
list, the methods, `n_prompts` or `max_new_tokens` keeps every finished shard (and reuses it
when the change is undone). Only a change of the run-wide settings (profile and its rungs,
chunk size, seed, data, top-k, the code) deletes the shards, which fsgen wrote.

The plan follows the method registry (`fsgen.engine.methods.METHODS`), so a method added there
is logged too:

- `alone`: every rung generates by itself (greedy), for accuracy of System 1 and System 2 alone.
- a ladder-wide method (`oracle`): one generation per large rung, scored by every smaller rung.
- a method that runs the tuned small model (`proxy`): every pair whose small rung has a tuned
  variant, on prompts in the chat format.
- every other method of a pair (`contrastive`, `contrastive_obrien`, `speculative`): every pair
  (large rung > small rung).
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
from fsgen.core import source
from fsgen.core.determinism import compute_threads
from fsgen.core.executor import Executor, RayRun, Resources, as_executor
from fsgen.core.io import atomic_write_text, write_metrics
from fsgen.core.names import name_list
from fsgen.core.owned import prepare_owned_dir
from fsgen.core.parallel import check_workers, run_jobs
from fsgen.core.shards import PLAN, SETTINGS, ShardStore, merge_logs, run_fingerprint, write_plan
from fsgen.core.stats import bootstrap_ratio_interval, wilson_interval
from fsgen.data.tasks import build_prompts, get_task, load_examples, resolve_data_dir, score
from fsgen.engine.collaborate import collaborate, collaborate_ladder
from fsgen.engine.methods import get_method, logging_methods
from fsgen.models.cache import ModelCache, models_for, release_models
from fsgen.models.profiles import Profile


@dataclass(frozen=True)
class Unit:
    """One piece of logging work."""

    task: str
    method: str
    large: str  # the rung that generates (for `alone`, the rung itself)
    small: str  # "" for `alone` and for `oracle`, which covers every smaller rung
    chunk: int
    prompts: int = 0  # how many prompts the chunk holds (0: not yet sized)
    max_new_tokens: int = 0

    @property
    def key(self) -> str:
        key = f"{self.task}+{self.method}+{self.large}+{self.small or '-'}+c{self.chunk:04d}"
        return key + f"+n{self.prompts}+m{self.max_new_tokens}"


def plan_units(
    profile: Profile,
    tasks: Sequence[str],
    methods: Sequence[str],
    n_chunks: int,
    ladder_chunks: int | None = None,
) -> list[Unit]:
    """Every unit of a logging run, grouped by large rung so models can be loaded once.

    Methods of a pair run `n_chunks` chunks of prompts; the cheap ones, each rung `alone` and
    the ladder-wide `oracle`, run `ladder_chunks` (default: as many)."""
    methods = logging_methods(methods)
    ladder_chunks = n_chunks if ladder_chunks is None else ladder_chunks
    units = []
    for task in tasks:
        for j, large in enumerate(profile.rungs):
            for method in methods:
                chunks = ladder_chunks if runs_ladder_prompts(method) else n_chunks
                for small in _smalls(method, profile.rungs[:j]):
                    units += [Unit(task, method, large.name, small, c) for c in range(chunks)]
    return units


def runs_ladder_prompts(method: str) -> bool:
    """Whether `method` is logged on the larger, ladder-wide prompt set (`alone`, `oracle`)."""
    return method == "alone" or get_method(method).ladder_wide


def _smalls(method: str, smaller) -> list[str]:
    """The small rungs a unit of `method` pairs with a large rung ("": the unit covers them)."""
    if method == "alone":
        return [""]
    spec = get_method(method)
    if spec.ladder_wide:
        return [""] if smaller else []
    return [s.name for s in smaller if s.tuned or not spec.uses_tuned]


def _needed(unit: Unit, profile: Profile) -> set[tuple[str, bool]]:
    if unit.method == "alone":
        return {(unit.large, False)}
    spec = get_method(unit.method)
    if spec.ladder_wide:
        smaller = profile.rungs[: [r.name for r in profile.rungs].index(unit.large)]
        return {(unit.large, False)} | {(r.name, False) for r in smaller}
    needed = {(unit.large, False), (unit.small, False)}
    return needed | ({(unit.small, True)} if spec.uses_tuned else set())


def run_unit(
    unit,
    cache: ModelCache,
    prompts,
    examples,
    offset: int,
    *,
    max_new_tokens: int,
    batch_size: int,
    trace_top_k: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decode one unit; returns (trace, generations) with the unit's columns added."""
    task = get_task(unit.task)
    kwargs = {
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "trace_top_k": trace_top_k,
        "stop": list(task.stop),
    }
    large = cache.get(unit.large)
    tokenizer = cache.tokenizer
    if unit.method == "alone":
        results = {"": collaborate(large, large, tokenizer, prompts, method="large", **kwargs)}
    elif get_method(unit.method).ladder_wide:
        smalls = {
            name: cache.get(name)
            for name, tuned in sorted(_needed(unit, cache.profile))
            if name != unit.large
        }
        results = collaborate_ladder(large, smalls, tokenizer, prompts, **kwargs)
    else:
        small = cache.get(unit.small)
        tuned = cache.get(unit.small, tuned=True) if get_method(unit.method).uses_tuned else None
        results = {
            unit.small: collaborate(
                small, large, tokenizer, prompts, method=unit.method, small_tuned=tuned, **kwargs
            )
        }
    traces, generations = [], []
    for small_name, out in sorted(results.items()):
        labels = {
            "task": unit.task,
            "method": unit.method,
            "large": unit.large,
            "small": small_name,
        }
        trace = out.trace.assign(**labels)
        trace["prompt_id"] = trace["prompt_id"] + offset
        traces.append(trace)
        generations.append(
            pd.DataFrame(
                {
                    **labels,
                    "prompt_id": range(offset, offset + len(prompts)),
                    "example_id": [e.id for e in examples],
                    "text": out.texts,
                    "tokens": [len(t) for t in out.tokens],
                    "correct": score(unit.task, out.texts, examples),
                }
            )
        )
    return pd.concat(traces, ignore_index=True), pd.concat(generations, ignore_index=True)


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
    workers: int = 1,
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
    check_workers(workers)
    executor = as_executor(executor)
    if threads is not None:
        compute_threads(threads)
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
            cost=lambda job: _cost(job.unit, profile),
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


def model_set(unit: Unit, profile: Profile) -> tuple[tuple[str, bool], ...]:
    """The models `unit` holds at once, sorted: units with the same set share their loads."""
    return tuple(sorted(_needed(unit, profile)))


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
    for name, tuned in _held(unit, profile):
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


def _held(unit: Unit, profile: Profile) -> list[tuple[str, bool]]:
    """The models of `unit`, the large rung first (the estimate sizes activations by it)."""
    return sorted(_needed(unit, profile), key=lambda item: item != (unit.large, False))


@dataclass(frozen=True)
class UnitJob:
    """One unit to decode (a `log_tokens` job): its examples and where they start in the
    selection, and the decoding settings."""

    profile: Profile
    unit: Unit
    examples: list
    offset: int
    data_dir: str | os.PathLike | None
    batch_size: int
    trace_top_k: int


def log_unit(job: UnitJob) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Decode `job`'s unit: its trace, its generations and the models loaded for it (a worker
    keeps the models of its last unit, so the next unit of the same models loads none)."""
    unit, profile = job.unit, job.profile
    cache = models_for(profile)
    loads_before = cache.loads
    cache.keep(_needed(unit, profile))
    cache.get(unit.large)  # loads the tokenizer with the first model
    # proxy tuning steers the base large model toward the tuned small one: its prompts are in the
    # tuned models' chat format
    chat = unit.method != "alone" and get_method(unit.method).uses_tuned
    prompts = build_prompts(
        unit.task,
        job.examples,
        data_dir=job.data_dir,
        chat=chat,
        tokenizer=cache.tokenizer if chat else None,
    )
    trace, generations = run_unit(
        unit,
        cache,
        prompts,
        job.examples,
        job.offset,
        max_new_tokens=unit.max_new_tokens,
        batch_size=job.batch_size,
        trace_top_k=job.trace_top_k,
    )
    return trace, generations, cache.loads - loads_before


def _cost(unit: Unit, profile: Profile) -> float:
    """A unit's rough compute: its prompts times the `compute_weight` of the models it runs."""
    return unit.prompts * sum(
        profile.rung(name).compute_weight for name, _ in _needed(unit, profile)
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
    write_metrics(metrics_file, metrics)
    return table
