"""Small writers shared by every stage: atomic files and flat JSON metrics."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from fsgen.core.paths import resolve


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename, so a crash never leaves a
    half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, object]) -> Path:
    """Write `metrics` as flat JSON with sorted keys (scalars only; NaN becomes null)."""
    flat: dict[str, object] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping | list | tuple):
            raise ValueError(f"metrics must be flat, but {key!r} holds {type(value).__name__}")
        if hasattr(value, "item"):  # numpy and torch scalars
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        flat[str(key)] = value
    text = json.dumps(flat, indent=2, sort_keys=True) + "\n"
    return atomic_write_bytes(path, text.encode())


def read_metrics(path: str | os.PathLike) -> dict[str, object]:
    """Read a metrics file written by `write_metrics`."""
    return json.loads(Path(path).read_text())


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from `path` (resolved from the repository root); errors name the file."""
    path = resolve(path)
    if not path.is_file():
        raise FileNotFoundError(f"no params file at {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded
