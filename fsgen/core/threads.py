"""The CPU runtime fsgen computes on: OpenMP's wait policy and the settings that make float results
the same on every x86-64 machine. `fsgen` imports this first, before torch runs its first kernel.

Wait policy. OpenMP threads that spin while they wait for work take the cores of everything else
on a busy machine. Measured with benchmarks/bench_threads.py (an oracle run on two tiny models,
best of 3, on this project's shared 2-core machine): 1 thread 0.42 s; 2 threads 2.37 s spinning
(the default) and 1.05 s with OMP_WAIT_POLICY=PASSIVE; beside two CPU-bound jobs, 1 thread
2.07 s, 2 threads 12.2 s spinning, 0.92 s passive. So idle threads sleep.

Same numbers on another machine. Float sums depend on the order of their terms, and that order
depends on two things a machine chooses (measured with benchmarks/bench_reproducibility.py):
- the vector width of torch's own kernels (`ATEN_CPU_CAPABILITY`: AVX-512 here, AVX2 on most
  laptops) and of MKL's matrix products (`MKL_CBWR`, MKL's conditional numerical
  reproducibility) and oneDNN's (`ONEDNN_MAX_CPU_ISA`), and of numpy's and scipy's OpenBLAS
  (`OPENBLAS_CORETYPE`, Haswell: AVX2): all are pinned to AVX2, which every x86-64 CPU since
  2013-2015 has. They are read when each library loads or first computes, so `import fsgen`
  comes first (every notebook's first code cell after its parameters);
- the thread count: sums, layer-norm and linear-layer gradients split their terms across threads,
  so 1 and 2 threads train different weights. Every stage therefore sets its own thread count
  (`threads` in params.yaml, `fsgen.core.determinism.compute_threads`), whatever the machine has
  or OMP_NUM_THREADS says; OpenBLAS (the analysis stages' fits) runs on one thread.
A value the user set in the environment wins (and `reproducibility` reports it).
"""

from __future__ import annotations

import functools
import os
import platform

PINNED_ISA = "AVX2"


@functools.cache
def cpu_has_avx2() -> bool:
    """Whether this is an x86-64 CPU with AVX2 (read from /proc/cpuinfo where it exists)."""
    if platform.machine().lower() not in {"x86_64", "amd64"}:
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return any(line.startswith("flags") and " avx2" in line for line in cpuinfo)
    except OSError:
        return True  # x86-64 without /proc (macOS, Windows): AVX2 is near universal


os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if cpu_has_avx2():
    os.environ.setdefault("ATEN_CPU_CAPABILITY", PINNED_ISA.lower())
    os.environ.setdefault("MKL_CBWR", PINNED_ISA)
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", PINNED_ISA)
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # numpy's and scipy's BLAS: AVX2
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # their sums in one order; the fits are small
