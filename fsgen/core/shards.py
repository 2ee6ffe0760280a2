"""Resumable work in shards: each finished unit of work is one Parquet file, written atomically.

A long stage lists its units (a task x pair x method x prompt chunk, say), skips those whose shard
already exists, and writes each new one through a temporary file and a rename, so a crash never
leaves a half-written shard and a rerun redoes only what is missing. `merge` reads every shard in
sorted key order, so the merged table does not depend on the order the work finished in, nor on
which process or machine did it. A run records the keys of its plan in
`plan.json` (`write_plan`); `merge_logs` then reads only those, so shards of units a later run
dropped (a task left out, say) stay on disk for when they come back, without entering results.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fsgen.core.io import atomic_write_bytes, atomic_write_text

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


class ShardStore:
    """A folder of `<key>.parquet` shards."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(
                f"shard keys are letters, digits and . _ = + - (not starting with a symbol), got {key!r}"
            )
        return self.folder / f"{key}.parquet"

    def done(self, key: str) -> bool:
        """Whether the shard `key` was written completely."""
        return self.path(key).exists()

    def write(self, key: str, frame: pd.DataFrame) -> Path:
        """Write one shard atomically (deterministic bytes for the same frame)."""
        buffer = io.BytesIO()
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False), buffer, compression="zstd"
        )
        return atomic_write_bytes(self.path(key), buffer.getvalue())

    def keys(self) -> list[str]:
        """The finished shards, sorted."""
        if not self.folder.exists():
            return []
        return sorted(p.name[: -len(".parquet")] for p in self.folder.glob("*.parquet"))

    def merge(self, keys: Sequence[str] | None = None) -> pd.DataFrame:
        """Every shard (or those of `keys` that exist), concatenated in sorted key order."""
        chosen = self.keys() if keys is None else sorted(set(keys) & set(self.keys()))
        frames = [pq.read_table(self.path(key)).to_pandas() for key in chosen]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def remove(self, keys: Sequence[str]) -> None:
        """Delete the shards `keys` (shards this store wrote; absent ones are skipped)."""
        for key in keys:
            self.path(key).unlink(missing_ok=True)


PLAN = "plan.json"


def write_plan(out_dir: str | os.PathLike, keys: Sequence[str]) -> None:
    """Record the unit keys of a run's plan (what `merge_logs` reads)."""
    atomic_write_text(Path(out_dir) / PLAN, json.dumps(sorted(keys), indent=0) + "\n")


def read_plan(out_dir: str | os.PathLike) -> list[str] | None:
    """The unit keys `write_plan` recorded in `out_dir`, or None when there is no plan."""
    path = Path(out_dir) / PLAN
    if not path.is_file():
        return None
    try:
        keys = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is not a JSON list of shard keys: {error}") from error
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{path} must hold a JSON list of shard keys, got {keys!r:.80}")
    return keys


def merge_logs(out_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The traces and generations of a token-logging run (its `traces/` and `generations/`
    shard folders; only its plan's units when it recorded one), in a fixed order whatever the
    run order."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"no token logs at {out_dir}: run token logging first")
    keys = read_plan(out_dir)
    traces, generations = ShardStore(out_dir / "traces"), ShardStore(out_dir / "generations")
    return traces.merge(keys), generations.merge(keys)
