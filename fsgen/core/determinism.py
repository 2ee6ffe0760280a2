"""Deterministic torch, on CPU and CUDA alike, and the same CPU results on every x86-64 machine
(`fsgen.core.threads` pins the kernels' vector width; the thread count is set here)."""

from __future__ import annotations

import os
import warnings

import torch

from fsgen.core.threads import PINNED_ISA, cpu_has_avx2

CUBLAS_WORKSPACE = ":4096:8"  # what CUDA's reproducibility notes ask cuBLAS for


def use_deterministic_algorithms() -> None:
    """Turn on torch's deterministic algorithms, with the cuBLAS workspace setting they need on
    CUDA (without `CUBLAS_WORKSPACE_CONFIG`, the first cuBLAS matmul raises). The variable is
    read when cuBLAS starts, so this runs before any CUDA work; a value already set is kept."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)


def compute_threads(threads: int) -> None:
    """Compute on exactly `threads` intra-op threads (results depend on the count; see the module
    docstring), whatever the machine's cores or OMP_NUM_THREADS; warn when torch's kernels are
    not at the pinned width (`check_pinned`)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    if warning := check_pinned():
        warnings.warn(warning, stacklevel=2)


def start_worker(threads: int) -> None:
    """A worker process's settings before its jobs: `threads` compute threads and torch's
    deterministic algorithms (`fsgen.core.parallel`, `fsgen.core.executor`)."""
    compute_threads(threads)
    use_deterministic_algorithms()


def reproducibility() -> dict[str, str | int]:
    """What decides this machine's float results: torch's version and kernel width, MKL's,
    oneDNN's and OpenBLAS's pinned ISA and the thread count (the record a stage keeps beside
    its results)."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
        "threads": torch.get_num_threads(),
    }


def check_pinned() -> str | None:
    """A warning text when torch's kernels are not at the pinned width on a CPU that has it
    (torch ran a kernel before `fsgen` was imported, or the environment asked for another
    width): results then differ from other machines' in the last digits. None when pinned."""
    capability = torch.backends.cpu.get_cpu_capability()
    if cpu_has_avx2() and capability != PINNED_ISA:
        return (
            f"torch computes with {capability} kernels, not {PINNED_ISA}: results will differ "
            f"from other machines' in the last digits. Import fsgen before running any torch "
            f"operation, and leave ATEN_CPU_CAPABILITY unset (it is "
            f"{os.environ.get('ATEN_CPU_CAPABILITY')!r})"
        )
    return None
