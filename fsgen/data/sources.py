"""Where the tasks' data come from: a local data directory laid out like `../shared/data` (JSONL
files, chosen by `data_dir=` or `$FSGEN_DATA_DIR`), else the model hub through `datasets`; with
errors that name the file, the row or the missing source."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fsgen.core.paths import resolve

DATA_ENV = "FSGEN_DATA_DIR"


@dataclass(frozen=True)
class Example:
    """One evaluation item: its id, question, gold answer and reference solution.

    `gold` is what a prediction is scored against (a number, a letter, the MBPP asserts, or None
    for MT-bench); `solution` is a reference answer written out (the worked solution, the
    reference code, "The answer is (B).") that scores as correct; `record` is the raw row.
    """

    task: str
    id: int
    question: str
    gold: object
    solution: str | None
    record: dict = field(repr=False, compare=False)


class DataUnavailableError(OSError):
    """A task's data is not in a local data directory and the hub cannot be reached."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data directory: `data_dir`, else `$FSGEN_DATA_DIR`, else None (the hub).

    Relative paths resolve from the repository root (`fsgen.core.paths.resolve`).
    """
    if data_dir is not None and not str(data_dir).strip():
        raise ValueError(
            f"data_dir must name a data directory, got {data_dir!r} (None: ${DATA_ENV} or the hub)"
        )
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    return None if chosen is None else resolve(chosen)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file (blank lines skipped); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a JSONL data file at {path}, but there is none")
    rows = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    rows.append(json.loads(line))
            except (UnicodeDecodeError, ValueError) as error:
                raise ValueError(
                    f"{path} line {number}: not a UTF-8 JSON line ({error})"
                ) from error
            if line.strip() and not isinstance(rows[-1], dict):
                raise ValueError(f"{path} line {number}: expected a JSON object, got {line[:60]!r}")
    return rows


def rows_with(rows: list[dict], source: str, fields: Sequence[str]):
    """`(i, row)` over rows that all hold `fields`; a missing one names the source and row."""
    for i, row in enumerate(rows):
        missing = [name for name in fields if name not in row]
        if missing:
            raise ValueError(f"{source} row {i} lacks the fields {missing}; it has {sorted(row)}")
        yield i, row


def hub_rows(path: str, *args: str, split: str) -> list[dict]:
    """Rows of a hub dataset through `datasets`; a clear error when it cannot be had."""
    try:
        from datasets import load_dataset  # noqa: PLC0415 (slow to import; only the hub path needs it)

        return [dict(row) for row in load_dataset(path, *args, split=split)]
    except Exception as err:  # offline, not cached, renamed upstream, ...
        raise DataUnavailableError(
            f"could not load {path!r} ({split}) from the hub: {err}. Offline, point fsgen at a "
            f"local data directory laid out like ../shared/data, either with data_dir= or with "
            f"the {DATA_ENV} environment variable."
        ) from err


def check_split(task: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise ValueError(f"task {task!r} has splits {tuple(splits)}, got split={split!r}")
