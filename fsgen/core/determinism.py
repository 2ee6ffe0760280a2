"""Deterministic torch, on CPU and CUDA alike."""

from __future__ import annotations

import os

import torch

CUBLAS_WORKSPACE = ":4096:8"  # what CUDA's reproducibility notes ask cuBLAS for


def use_deterministic_algorithms() -> None:
    """Turn on torch's deterministic algorithms, with the cuBLAS workspace setting they need on
    CUDA (without `CUBLAS_WORKSPACE_CONFIG`, the first cuBLAS matmul raises). The variable is
    read when cuBLAS starts, so this runs before any CUDA work; a value already set is kept."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
