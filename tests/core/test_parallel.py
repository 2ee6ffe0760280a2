"""Jobs in worker processes: results in job order, the first failure raised, bad counts refused."""

import time

import pytest
import torch

from fsgen.core.parallel import available_cores, check_workers, run_jobs


def threads_and_square(n: int) -> tuple[int, int]:
    if n < 0:
        raise ValueError(f"negative job {n}")
    return torch.get_num_threads(), n * n


def note_start(job: tuple[str, int]) -> int:
    path, n = job
    with open(path, "a") as log:  # one short append per job: whole lines
        log.write(f"{n}\n")
    time.sleep(1.0)  # the first two jobs run (and are noted) before any third is taken
    return n


def test_workers_return_results_in_job_order_on_the_asked_threads():
    jobs = [5, 1, 4, 2, 3]
    results = run_jobs(threads_and_square, jobs, workers=2, threads=1, progress=False)
    assert results == [(1, n * n) for n in jobs]
    assert run_jobs(threads_and_square, jobs, workers=1, threads=1, progress=False) == results


def test_costliest_jobs_start_first_and_results_keep_the_job_order(tmp_path):
    jobs = [(str(tmp_path / "started"), n) for n in (1, 5, 2, 4)]
    results = run_jobs(
        note_start, jobs, workers=2, threads=1, cost=lambda job: job[1], progress=False
    )
    assert results == [1, 5, 2, 4]
    started = [int(n) for n in (tmp_path / "started").read_text().split()]
    assert started[:2] in ([5, 4], [4, 5])  # the two costliest went to the two workers first
    assert sorted(started) == [1, 2, 4, 5]


def test_a_failed_job_raises_its_own_error():
    with pytest.raises(ValueError, match="negative job -3"):
        run_jobs(threads_and_square, [1, -3, 2], workers=2, threads=1, progress=False)


def fail_fast_or_finish(job: int) -> int:
    if job < 0:
        raise ValueError(f"negative job {job}")
    time.sleep(1.5)  # still running when the other worker's job fails
    return job


def test_a_failure_keeps_the_jobs_already_running():
    """After the first failure the job already running beside it finishes and reaches
    `on_result` (a stage saves it there), then the failure is raised; jobs not yet handed to a
    worker are cancelled (the pool may already have queued one or two: they run and are kept too)."""
    kept = []
    with pytest.raises(ValueError, match="negative job -1"):
        run_jobs(
            fail_fast_or_finish,
            [-1, 7, 8, 9],
            workers=2,
            threads=1,
            cost=lambda job: -job,  # -1 first, then 7 beside it; 8 and 9 wait
            on_result=lambda index, result: kept.append(result),
            progress=False,
        )
    assert 7 in kept and set(kept) <= {7, 8, 9}  # a loaded machine may finish 8 first


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_worker_counts_are_named(bad):
    with pytest.raises(ValueError, match=f'workers must be an integer >= 1 or "auto", got {bad!r}'):
        check_workers(bad)


def test_auto_workers_fill_the_cores_at_the_threads_each():
    cores = available_cores()
    assert check_workers("auto") == cores
    assert check_workers("auto", threads=2) == max(1, cores // 2)
    assert check_workers("auto", threads=10 * cores) == 1
