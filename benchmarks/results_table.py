"""What the training benchmarks share: appending their rows to a CSV under benchmarks/results."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def append_rows(table: pd.DataFrame, path: Path) -> None:
    """Append `table` to the CSV at `path` (its header only when the file is new) and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, mode="a", header=not path.exists(), index=False, float_format="%.6g")
    with pd.option_context("display.width", 160, "display.precision", 4):
        print(table.to_string(index=False))
