"""Every path in fsgen is resolved from the repository root, so notebooks run the same anywhere."""

from __future__ import annotations

import os
from pathlib import Path

_MARKERS = ("dvc.yaml", "params.yaml")


def repo_root() -> Path:
    """The repository root: `$FSGEN_ROOT`, else the nearest parent of the working directory
    holding `dvc.yaml` and `params.yaml`, else the folder above the installed package."""
    if env := os.environ.get("FSGEN_ROOT"):
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if all((folder / marker).exists() for marker in _MARKERS):
            return folder
    return Path(__file__).resolve().parents[2]


def resolve(path: str | os.PathLike) -> Path:
    """`path` if absolute, else the same path under the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repo_root() / path
