"""Resumable work in shards: each finished unit of work is one Parquet file, written atomically.

A long stage lists its units (a task x pair x method x prompt chunk, say), skips those whose shard
already exists, and writes each new one through a temporary file and a rename, so a crash never
leaves a half-written shard and a rerun redoes only what is missing. `merge` reads every shard in
sorted key order, so the merged table does not depend on the order the work finished in, nor on
how it was split across machines (`select_shard`).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fsgen.core.io import atomic_write_bytes

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

    def merge(self) -> pd.DataFrame:
        """Every shard, concatenated in sorted key order."""
        frames = [pq.read_table(self.folder / f"{key}.parquet").to_pandas() for key in self.keys()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def parse_shard(spec: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) as `(i, n)`: this machine's part of n."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise ValueError(f"shard must be 'i/n' with 0 <= i < n, got {spec!r}")
    return int(match.group(1)), int(match.group(2))


def select_shard(items: Sequence, spec: str = "0/1") -> list:
    """The items of shard `spec` ('i/n'): every n-th item starting at i."""
    index, count = parse_shard(spec)
    return list(items[index::count])


def merge_logs(out_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All traces and generations of a token-logging run (its `traces/` and `generations/`
    shard folders), in a fixed order whatever the run order."""
    out_dir = Path(out_dir)
    return ShardStore(out_dir / "traces").merge(), ShardStore(out_dir / "generations").merge()
