"""Token traces: one row per generated token, who decided it and how sure each model was.

| column | type | meaning |
|---|---|---|
| prompt_id | int | index of the prompt in the call |
| step | int | position of the token in the generation (0-based) |
| token_id, token | int, str | the emitted token and its text |
| source | str | who decided it: small, large, combined, draft, bonus |
| large_called | bool | whether the large model was consulted for this token |
| mismatch | bool | a collaboration: the emitted token differs from System 1's choice |
| small_top1_prob, small_entropy, small_margin | float | System 1's top-1 probability, entropy (nats), top-1 minus top-2 |
| small_topk_ids, small_topk_probs | list | System 1's `trace_top_k` most likely tokens |
| large_top1_prob, ..., large_topk_probs | | the same for the large model; null when not consulted |
| mismatch_vs_base | bool | proxy tuning only: emitted differs from the base small model's argmax |

Traces are stored as Parquet (`write_trace`, `read_trace`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from fsgen.core.io import atomic_write_bytes

STAT_FIELDS = ("top1_prob", "entropy", "margin", "topk_ids", "topk_probs")
COLUMNS = (
    ["prompt_id", "step", "token_id", "token", "source", "large_called", "mismatch"]
    + [f"small_{f}" for f in STAT_FIELDS]
    + [f"large_{f}" for f in STAT_FIELDS]
    + ["mismatch_vs_base"]
)
SCHEMA = pa.schema(
    [
        ("prompt_id", pa.int32()),
        ("step", pa.int32()),
        ("token_id", pa.int32()),
        ("token", pa.string()),
        ("source", pa.string()),
        ("large_called", pa.bool_()),
        ("mismatch", pa.bool_()),
    ]
    + [
        field
        for who in ("small", "large")
        for field in (
            (f"{who}_top1_prob", pa.float32()),
            (f"{who}_entropy", pa.float32()),
            (f"{who}_margin", pa.float32()),
            (f"{who}_topk_ids", pa.list_(pa.int32())),
            (f"{who}_topk_probs", pa.list_(pa.float32())),
        )
    ]
    + [("mismatch_vs_base", pa.bool_())]
)


def distribution_stats(logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Top-1 probability, entropy, margin and top-k of softmax(logits) for each row (B, V)."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    probs = logp.exp()
    top = probs.topk(max(k, 2), dim=-1)  # (B, k)
    return {
        "top1_prob": top.values[:, 0],
        "entropy": -(probs * logp.nan_to_num(neginf=0.0)).sum(-1),
        "margin": top.values[:, 0] - top.values[:, 1],
        "topk_ids": top.indices[:, :k],
        "topk_probs": top.values[:, :k],
    }


STATS_CHUNK = 2**26  # logits per chunk of `host_stats` (rows x vocabulary): 256 MB of float32


def host_stats(logits: torch.Tensor, k: int) -> dict[str, np.ndarray]:
    """`distribution_stats` of logits (N, V), computed on their device a chunk of rows at a time
    (a teacher-forced generation of a 49k-token vocabulary would otherwise hold several copies
    of every logit at once); only the N x k values of the trace cross to the host, as numpy
    arrays."""
    rows = max(STATS_CHUNK // max(logits.shape[-1], 1), 1)
    parts = [distribution_stats(chunk, k) for chunk in logits.split(rows)] or [
        distribution_stats(logits, k)
    ]
    return {
        name: torch.cat([part[name] for part in parts]).cpu().numpy()
        if name == "topk_ids"
        else torch.cat([part[name] for part in parts]).float().cpu().numpy()
        for name in parts[0]
    }


def empty_trace() -> pd.DataFrame:
    """A trace with no rows and every column."""
    return SCHEMA.empty_table().to_pandas()


def write_trace(trace: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write `trace` as Parquet (atomically), with the documented schema."""
    missing = [c for c in COLUMNS if c not in trace.columns]
    if missing:
        raise ValueError(f"trace lacks columns {missing}")
    extra = [c for c in trace.columns if c not in COLUMNS]
    table = pa.Table.from_pandas(trace[COLUMNS], schema=SCHEMA, preserve_index=False)
    if extra:  # experiment columns (method, pair, ...) ride along after the schema's
        for name in extra:
            table = table.append_column(name, pa.array(trace[name]))
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return atomic_write_bytes(path, buffer.getvalue())


def read_trace(path: str | os.PathLike) -> pd.DataFrame:
    """Read a trace written by `write_trace`; a file that is not one (not Parquet, or lacking
    trace columns) is an error naming it."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise ValueError(f"{path} is not a Parquet trace file: {error}") from error
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not a token trace: it lacks the columns {missing}")
    return table.to_pandas()
