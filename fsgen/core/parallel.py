"""Independent jobs spread over worker processes, each computing on a fixed number of threads.

On a small CPU, one process on two threads leaves much of the second core idle: the ladder's
models are small, so each operation is short and idle OpenMP threads sleep between them
(`fsgen.core.threads`). Two processes on one thread each keep both cores busy and slow down in
proportion on a loaded machine. A job's result depends on the thread count it computes on, never
on which process runs it or when, so `workers` changes the wall time and not one byte of output.

Workers are spawned (not forked: a fork after OpenMP has started can hang), so a job and its
function must be picklable (a module-level function and plain data). `executor="ray"` sends the
same jobs to a Ray cluster instead (`fsgen.core.executor`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import TypeVar

import torch
from tqdm.auto import tqdm

from fsgen.core.determinism import start_worker
from fsgen.core.executor import Executor, RayRun, Resources, as_executor, run_on_ray

Job = TypeVar("Job")
Result = TypeVar("Result")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity; the machine's count elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_workers(workers: int | str, threads: int = 1) -> int:
    """The number of worker processes `workers` asks for: an integer >= 1 as it is, or "auto",
    as many as the cores hold at `threads` threads each (at least 1); a ValueError naming any
    other value. The outputs never depend on it."""
    if workers == "auto":
        return max(1, available_cores() // max(1, threads))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f'workers must be an integer >= 1 or "auto", got {workers!r}')
    return workers


def run_jobs(
    task: Callable[[Job], Result],
    jobs: Sequence[Job],
    *,
    workers: int = 1,
    threads: int = 1,
    cost: Callable[[Job], float] | None = None,
    desc: str = "jobs",
    progress: bool = True,
    executor: str | Mapping | Executor = "local",
    on_result: Callable[[int, Result], object] | None = None,
    resources: Callable[[Job], Resources] | None = None,
    group: Callable[[Job], Hashable] | None = None,
    name: Callable[[Job], str] = repr,
    report: RayRun | None = None,
) -> list:
    """`[task(job) for job in jobs]`, each on `threads` threads with torch's deterministic
    algorithms: in this process when `workers` is 1 or there is one job (its own settings are
    restored afterwards), else in `workers` spawned processes that take the jobs costliest first
    by `cost` (a job's rough compute; without it, in the order given), so that no worker is left
    alone with a long job at the end. Results come back in the order of `jobs` either way. The
    first failure stops the run: jobs not yet started are cancelled and its exception raised.

    `on_result(index, result)` runs in this process as each job finishes (a stage writes what
    the job returned there), and its return value takes the result's place. `executor="ray"`
    runs the jobs as Ray tasks instead (`fsgen.core.executor`: `workers` is then the cluster's
    to decide), each asking for `resources(job)` (default: `threads` CPUs), the jobs of one
    `group` key in one task; `name(job)` names a job in errors; `report` collects what Ray did."""
    workers = check_workers(workers, threads)
    executor = as_executor(executor)
    if executor.kind == "ray":
        return run_on_ray(
            task,
            jobs,
            executor=executor,
            threads=threads,
            resources=resources,
            group=group,
            name=name,
            cost=cost,
            on_result=on_result,
            desc=desc,
            progress=progress,
            report=report,
        )
    if workers == 1 or len(jobs) <= 1:
        before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        start_worker(threads)
        try:
            results = []
            for index, job in enumerate(tqdm(jobs, desc=desc, disable=not progress)):
                result = task(job)
                results.append(on_result(index, result) if on_result else result)
            return results
        finally:  # this process's settings as they were
            torch.set_num_threads(before[0])
            torch.use_deterministic_algorithms(before[1])
    order = list(range(len(jobs)))
    if cost is not None:
        order.sort(key=lambda i: -cost(jobs[i]))  # stable: equal costs keep their order
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=context,
        initializer=start_worker,
        initargs=(threads,),
    ) as pool:
        submitted = {pool.submit(task, jobs[i]): i for i in order}
        results: list = [None] * len(jobs)
        bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
        pending = set(submitted)
        failure = None  # the first job that raised: the jobs not started are cancelled, and the
        # running ones finish and are kept (on_result saves them) before it is raised
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=submitted.__getitem__):
                    if future.cancelled():
                        continue
                    if future.exception() is not None:
                        if failure is None:
                            failure = future.exception()
                            for other in pending:
                                other.cancel()
                        continue
                    index = submitted[future]
                    result = future.result()
                    results[index] = on_result(index, result) if on_result else result
                    bar.update(1)
        finally:
            bar.close()
        if failure is not None:
            raise failure
        return results
