"""The trace's per-token statistics, computed a chunk of rows at a time."""

from __future__ import annotations

import numpy as np
import torch

from fsgen.engine import trace
from fsgen.engine.trace import distribution_stats, host_stats


def test_chunked_statistics_equal_the_whole_tensor_s(monkeypatch):
    logits = torch.randn(37, 11, generator=torch.Generator().manual_seed(0))
    whole = {name: values.numpy() for name, values in distribution_stats(logits, 3).items()}
    monkeypatch.setattr(trace, "STATS_CHUNK", 5 * 11)  # 5 rows a chunk: 8 chunks, the last short
    chunked = host_stats(logits, 3)
    assert chunked.keys() == whole.keys()
    for name, values in whole.items():
        assert chunked[name].shape == values.shape
        np.testing.assert_array_equal(chunked[name], values)
    empty = host_stats(logits[:0], 3)
    assert empty["topk_ids"].shape == (0, 3) and empty["entropy"].shape == (0,)
