"""Where fanned-out jobs run: `local` worker processes (the default) or `ray`, tasks on a Ray cluster.

`local` is `fsgen.core.parallel`'s process pool: `workers` processes on this machine, no extra
package. `ray` sends the jobs to a Ray cluster (`pip install "fsgen[ray]"`) as Ray tasks that ask
for what each job needs (CPUs, GPUs) and are placed by Ray's scheduler:

- **Which cluster.** One this process has initialised already; else the one `RAY_ADDRESS` names;
  else the one `ray start` started on this machine (a head node); else a local one fsgen starts,
  on this machine's cores with its object store capped at `object_store_mb`.
- **Model locality.** Jobs with the same `group` key (token logging: units that hold the same
  models) run one after another in one task, so their models load once per group and not once
  per job (a GPU task's worker process exits when the task ends, and its models with it).
- **Nothing lost, nothing doubled.** A task yields each job's result as it finishes and this
  process hands it to `on_result` (token logging writes the shard: the driver writes, so no
  filesystem need be shared between nodes). When a task's worker or node dies, its group is
  resubmitted with only the jobs it had not returned (up to `max_retries` times); a job that
  raises is not retried, and its error is raised here.
- **Refused before it starts.** A job that no node of the cluster can hold (more CPUs or GPUs
  than any node has) is an error naming it, what it needs and what the nodes have, before any
  job runs.

A job's result depends on the thread count it computes on, never on which process or node ran
it, so both executors give the same bytes.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from tqdm.auto import tqdm

KINDS = ("local", "ray")
ENV_PREFIXES = ("FSGEN_",)  # variables forwarded to Ray's workers (the repository root, the data)


@dataclass(frozen=True)
class Executor:
    """How a stage runs its jobs: `kind` "local" or "ray", and Ray's settings."""

    kind: str = "local"
    gpu_memory_gb: float = 80.0  # ray: one GPU's memory, to size a job's GPUs from its estimate
    max_retries: int = 3  # ray: resubmissions of a group whose worker or node died
    object_store_mb: int = 512  # ray: the object store of a local cluster fsgen starts

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"executor kind must be one of {list(KINDS)}, got {self.kind!r}")
        checks = (
            ("gpu_memory_gb", self.gpu_memory_gb, float, 0),
            ("max_retries", self.max_retries, int, -1),
            ("object_store_mb", self.object_store_mb, int, 74),
        )
        for name, value, kind, above in checks:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or (kind is int and not isinstance(value, int)) or not value > above:
                raise ValueError(
                    f"executor.{name} must be a {kind.__name__} > {above}, got {value!r}"
                )
            if not math.isfinite(value):
                raise ValueError(f"executor.{name} must be finite, got {value!r}")


def as_executor(value: str | Mapping | Executor | None) -> Executor:
    """An `Executor` from its kind ("local", "ray"), a mapping of its fields, or itself."""
    if value is None:
        return Executor()
    if isinstance(value, Executor):
        return value
    if isinstance(value, str):
        return Executor(kind=value.strip())
    if isinstance(value, Mapping):
        names = {f.name for f in fields(Executor)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"unknown executor settings {unknown}; settings: {sorted(names)}")
        return Executor(**value)
    raise ValueError(f"executor must be 'local', 'ray' or a mapping of settings, got {value!r}")


@dataclass(frozen=True)
class Resources:
    """What one job asks a Ray node for."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 0.0  # the estimate the GPUs were sized from (reported, not requested)

    def covers(self, other: Resources) -> Resources:
        """The larger of both, field by field (what a group of jobs run in turn needs)."""
        return Resources(
            max(self.cpus, other.cpus),
            max(self.gpus, other.gpus),
            max(self.memory_gb, other.memory_gb),
        )

    def fits(self, node: Mapping[str, float]) -> bool:
        return self.cpus <= node.get("CPU", 0) and self.gpus <= node.get("GPU", 0)

    def describe(self) -> str:
        text = f"{self.cpus:g} CPU" + (f", {self.gpus:g} GPU" if self.gpus else "")
        return text + (f" (~{self.memory_gb:.1f} GB)" if self.memory_gb else "")


def import_ray():
    """The `ray` module, or an ImportError naming the extra that brings it."""
    try:
        return importlib.import_module("ray")
    except ImportError as error:
        raise ImportError(
            'executor \'ray\' needs Ray: pip install "fsgen[ray]" (or pip install "ray[default]")'
        ) from error


def connect_ray(executor: Executor):
    """Ray, initialised the way Ray users expect: the cluster this process joined already, else
    the one `RAY_ADDRESS` names, else the one `ray start` started on this machine, else a new
    local one on this machine's cores with the object store capped."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
        return ray
    try:
        ray.init(address="auto")  # a cluster `ray start` started here (a head node)
    except ConnectionError:
        ray.init(
            num_cpus=os.cpu_count() or 1,
            object_store_memory=executor.object_store_mb * 2**20,
            include_dashboard=False,
        )
    return ray


def _run_group(task, items, threads):
    """A Ray task: `task` on each `(index, job)` in turn, yielding `(index, result)` as each ends."""
    # here, not at the top: the stage configs import this module, and analysis stages skip torch
    from fsgen.core.determinism import start_worker  # noqa: PLC0415

    start_worker(threads)
    for index, job in items:
        yield index, task(job)


@dataclass
class RayRun:
    """What a Ray run did: groups submitted, resubmissions after a lost worker or node."""

    groups: int = 0
    resubmitted: int = 0
    failures: list[str] = field(default_factory=list)


def run_on_ray(
    task: Callable,
    jobs: Sequence,
    *,
    executor: Executor,
    threads: int,
    resources: Callable[[Any], Resources] | None,
    group: Callable[[Any], Hashable] | None,
    name: Callable[[Any], str],
    cost: Callable[[Any], float] | None,
    on_result: Callable[[int, Any], Any] | None,
    desc: str,
    progress: bool,
    report: RayRun | None = None,
) -> list:
    """`run_jobs` on a Ray cluster (see the module docstring); results in the order of `jobs`."""
    ray = connect_ray(executor)
    report = RayRun() if report is None else report
    groups: dict[Hashable, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(group(job) if group else i, []).append(i)
    need = {}
    for key, indices in groups.items():
        asked = [resources(jobs[i]) if resources else Resources(cpus=threads) for i in indices]
        need[key] = asked[0]
        for other in asked[1:]:
            need[key] = need[key].covers(other)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for key, indices in groups.items():
        if not any(need[key].fits(node) for node in nodes):
            have = [f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU" for n in nodes]
            raise ValueError(
                f"{name(jobs[indices[0]])} needs {need[key].describe()}, but no node of the "
                f"Ray cluster has that much: its nodes have {have or 'nothing (no live node)'}"
            )
    order = list(groups)
    if cost is not None:  # the costliest groups first, so none is left alone at the end
        order.sort(key=lambda key: -sum(cost(jobs[i]) for i in groups[key]))
    remote = ray.remote(_run_group)
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}

    def submit(key, indices):
        report.groups += 1
        options = {"num_cpus": need[key].cpus, "num_gpus": need[key].gpus, "max_retries": 0}
        if env:
            options["runtime_env"] = {"env_vars": env}
        items = [(i, jobs[i]) for i in indices]
        return remote.options(**options).remote(task, items, threads)

    running = {}
    for key in order:
        running[submit(key, groups[key])] = (key, list(groups[key]))
    results: list = [None] * len(jobs)
    retries: dict[Hashable, int] = {}
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            generator = ready[0]
            key, remaining = running[generator]
            try:
                index, result = ray.get(next(generator))
            except StopIteration:
                del running[generator]
                continue
            except ray.exceptions.RayTaskError as error:  # the job itself failed: no retry
                raise error.as_instanceof_cause() from None
            except ray.exceptions.RayError as error:  # its worker or node died: the rest again
                del running[generator]
                report.failures.append(f"{type(error).__name__}: {name(jobs[remaining[0]])}")
                retries[key] = retries.get(key, 0) + 1
                if retries[key] > executor.max_retries:
                    raise RuntimeError(
                        f"{desc}: {name(jobs[remaining[0]])} lost its worker or node "
                        f"{retries[key]} times (executor.max_retries {executor.max_retries})"
                    ) from error
                report.resubmitted += 1
                running[submit(key, remaining)] = (key, remaining)
                continue
            remaining.remove(index)
            results[index] = on_result(index, result) if on_result else result
            bar.update(1)
    finally:
        bar.close()
        for generator in running:  # after a failure: the groups still running stop
            try:
                ray.cancel(generator, force=True)
            except Exception:  # noqa: BLE001 (a task that ended meanwhile cannot be cancelled)
                pass
    return results
