"""Independent jobs spread over worker processes, each computing on a fixed number of threads.

On a small CPU, one process on two threads leaves much of the second core idle: the ladder's
models are small, so each operation is short and idle OpenMP threads sleep between them
(`fsgen.core.threads`). Two processes on one thread each keep both cores busy and slow down in
proportion on a loaded machine. A job's result depends on the thread count it computes on, never
on which process runs it or when, so `workers` changes the wall time and not one byte of output.

Workers are spawned (not forked: a fork after OpenMP has started can hang), so a job and its
function must be picklable (a module-level function and plain data).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import TypeVar

import torch
from tqdm.auto import tqdm

from fsgen.core.determinism import compute_threads, use_deterministic_algorithms

Job = TypeVar("Job")
Result = TypeVar("Result")


def check_workers(workers: int) -> int:
    """`workers` itself when it is an integer >= 1; a ValueError naming it otherwise."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


def _start_worker(threads: int) -> None:
    compute_threads(threads)
    use_deterministic_algorithms()


def run_jobs(
    task: Callable[[Job], Result],
    jobs: Sequence[Job],
    *,
    workers: int = 1,
    threads: int = 1,
    cost: Callable[[Job], float] | None = None,
    desc: str = "jobs",
    progress: bool = True,
) -> list[Result]:
    """`[task(job) for job in jobs]`, each on `threads` threads with torch's deterministic
    algorithms: in this process when `workers` is 1 or there is one job (its own settings are
    restored afterwards), else in `workers` spawned processes that take the jobs costliest first
    by `cost` (a job's rough compute; without it, in the order given), so that no worker is left
    alone with a long job at the end. Results come back in the order of `jobs` either way. The
    first failure stops the run: jobs not yet started are cancelled and its exception raised."""
    check_workers(workers)
    if workers == 1 or len(jobs) <= 1:
        before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        _start_worker(threads)
        try:
            return [task(job) for job in tqdm(jobs, desc=desc, disable=not progress)]
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
        initializer=_start_worker,
        initargs=(threads,),
    ) as pool:
        submitted = {i: pool.submit(task, jobs[i]) for i in order}
        futures = [submitted[i] for i in range(len(jobs))]
        bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            bar.update(len(done))
            failed = [f for f in done if f.exception() is not None]
            if failed:
                for future in pending:
                    future.cancel()
                bar.close()
                raise failed[0].exception()
        bar.close()
        return [future.result() for future in futures]
