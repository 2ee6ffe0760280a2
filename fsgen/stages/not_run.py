"""A stage that a profile leaves out (its `skip` list) still writes every output it declares in
dvc.yaml, each saying that it was not run, so `dvc repro` completes and the findings show the
rows that read it as not measured: metrics `{"not_run": 1}`, tables with the one column
`not_run` and no rows, figures that say so, and the output folders empty."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from fsgen.core.io import atomic_write_text, read_yaml
from fsgen.core.paths import resolve
from fsgen.core.plots import save_figure

NOTEBOOKS = "outputs/notebooks/"  # papermill writes the executed notebook itself


def declared_outputs(
    stage: str, profile: str, dvc_file: str = "dvc.yaml", root: Path | None = None
) -> list[Path]:
    """The outputs, metrics and plots `stage` declares in `dvc_file` (${profile} filled in),
    but its executed notebook, under `root` (default: the repository root)."""
    spec = (read_yaml(dvc_file).get("stages") or {}).get(stage)
    if spec is None:
        raise ValueError(f"{dvc_file} has no stage {stage!r}")
    paths = []
    for kind in ("outs", "metrics", "plots"):
        for entry in spec.get(kind) or []:
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            path = path.replace("${profile}", profile)
            if not path.startswith(NOTEBOOKS):
                paths.append(Path(root) / path if root is not None else resolve(path))
    return paths


def write_not_run(
    stage: str, profile: str, dvc_file: str = "dvc.yaml", root: Path | None = None
) -> list[Path]:
    """Write every declared output of `stage` as "not run for `profile`"; returns the paths."""
    paths = declared_outputs(stage, profile, dvc_file, root)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".json":
            atomic_write_text(path, json.dumps({"not_run": 1}, indent=2) + "\n")
        elif path.suffix == ".csv":
            atomic_write_text(path, "not_run\n")
        elif path.suffix in (".png", ".svg"):
            if path.suffix == ".png" or path.with_suffix(".png") not in paths:
                save_figure(not_run_figure(f"{stage}: not run for profile {profile}"), path)
        else:
            path.mkdir(parents=True, exist_ok=True)
    return paths


def is_not_run(path: Path) -> bool:
    """Whether the table or metrics file at `path` is one `write_not_run` wrote."""
    if path.suffix == ".csv":
        return path.read_text() == "not_run\n"
    return path.suffix == ".json" and json.loads(path.read_text()) == {"not_run": 1}


def empty_result(result_type):
    """A stage's `Result` with nothing in it: empty tables and mappings, zero counts and
    seconds, None elsewhere."""
    values = {}
    for field in dataclasses.fields(result_type):
        kind = str(field.type)
        empty = {"float": 0.0, "int": 0}.get(kind)
        if "DataFrame" in kind:
            empty = pd.DataFrame()
        elif kind.startswith("dict"):
            empty = {}
        values[field.name] = empty
    return result_type(**values)


def not_run_figure(text: str):
    """A small figure that holds one line of text."""
    figure, ax = plt.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return figure


def left_out(stage: str, profile, result_type):
    """If `profile` skips `stage`: its outputs written as not run (`write_not_run`) and its empty
    result; else None (the stage runs)."""
    if stage not in profile.skip:
        return None
    write_not_run(stage, profile.name)
    return empty_result(result_type)
