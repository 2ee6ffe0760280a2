"""Resumable work in shards: each finished unit of work is one Parquet file, written atomically.

A long stage lists its units (a task x pair x method x prompt chunk, say), skips those whose shard
already exists, and writes each new one through a temporary file and a rename, so a crash never
leaves a half-written shard and a rerun redoes only what is missing. `merge` reads every shard in
sorted key order, so the merged table does not depend on the order the work finished in, nor on
which process or machine did it. A run records the keys of its plan in
`plan.json` (`write_plan`); `merge_logs` then reads only those, so shards of units a later run
dropped (a task left out, say) stay on disk for when they come back, without entering results.

A shard carries its provenance in its Parquet metadata: the run's settings fingerprint and its
key. It counts as done only when its file is a complete Parquet file of this run (a truncated
file, or one copied in from a run with other settings, is not done, and is written again), and
`merge_logs` refuses a run whose plan has units without shards, or shards of another run.
"""

from __future__ import annotations

import hashlib
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
PROVENANCE = b"fsgen.provenance"  # the Parquet metadata key: "<run fingerprint>/<shard key>"


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

    def done(self, key: str, run: str = "") -> bool:
        """Whether the shard `key` was written completely (by the run `run`, when given)."""
        written = self.provenance(key)  # one footer read
        return written is not None and (not run or written == run)

    def provenance(self, key: str) -> str | None:
        """The run fingerprint shard `key` was written with ("" if none); None when there is
        no complete Parquet file for it."""
        try:
            metadata = pq.read_metadata(self.path(key)).metadata or {}
        except (OSError, pa.ArrowException):
            return None
        run, _, written_key = metadata.get(PROVENANCE, b"").decode().rpartition("/")
        return run if written_key == key else ""

    def write(self, key: str, frame: pd.DataFrame, run: str = "") -> Path:
        """Write one shard atomically (deterministic bytes for the same frame), marked with the
        run fingerprint `run` and its key."""
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if run:
            marked = {**(table.schema.metadata or {}), PROVENANCE: f"{run}/{key}".encode()}
            table = table.replace_schema_metadata(marked)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        return atomic_write_bytes(self.path(key), buffer.getvalue())

    def keys(self) -> list[str]:
        """The finished shards, sorted."""
        if not self.folder.exists():
            return []
        return sorted(p.name[: -len(".parquet")] for p in self.folder.glob("*.parquet"))

    def merge(self, keys: Sequence[str] | None = None, run: str = "") -> pd.DataFrame:
        """Every shard (or those of `keys` that exist), concatenated in sorted key order; with
        `run`, a shard written by another run is a ValueError naming it."""
        chosen = self.keys() if keys is None else sorted(set(keys) & set(self.keys()))
        if run:
            foreign = [key for key in chosen if self.provenance(key) != run]
            if foreign:
                raise ValueError(
                    f"{len(foreign)} shard(s) in {self.folder} were not written by this run "
                    f"(incomplete, or copied in from a run with other settings), e.g. "
                    f"{self.path(foreign[0]).name}: rerun the stage to write them again"
                )
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
    run order. A run whose plan has units not yet finished, or shards another run wrote, is a
    ValueError saying so: a summary of part of a run would pass for the whole."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"no token logs at {out_dir}: run token logging first")
    keys = read_plan(out_dir)
    run = run_fingerprint(out_dir)
    traces, generations = ShardStore(out_dir / "traces"), ShardStore(out_dir / "generations")
    if keys is not None:
        missing = [k for k in keys if not (generations.done(k) and traces.done(k))]
        if missing:
            raise ValueError(
                f"token logs at {out_dir} are unfinished: {len(missing)} of {len(keys)} units "
                f"have no complete shards (e.g. {missing[0]}); run token logging again to "
                "finish them"
            )
    return traces.merge(keys, run), generations.merge(keys, run)


SETTINGS = "settings.json"  # a run's run-wide settings, beside its plan


def run_fingerprint(out_dir: str | os.PathLike) -> str:
    """A short hash of the run-wide settings recorded in `out_dir` ("" when none are)."""
    try:
        text = (Path(out_dir) / SETTINGS).read_bytes()
    except OSError:
        return ""
    return hashlib.sha256(text).hexdigest()[:16]
