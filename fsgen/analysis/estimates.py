"""Back-of-the-envelope GPU estimates for the hub profiles, from nominal model sizes alone.

These are estimates, not measurements: weights take 2 bytes per parameter in bf16; peak memory
is the largest set of models one logging unit holds (large + small + tuned small for proxy)
plus 20% for KV caches and activations; decoding is memory-bound, so one decoding step of a
batch costs the bytes of the weights it reads over the GPU's memory bandwidth at 50% efficiency
(H100 SXM: 3.35 TB/s). Speculative decoding is counted as one large step per token (an upper
bound); prefill and scoring passes are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from fsgen.analysis.scaling import parse_size
from fsgen.models.profiles import Profile

BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
H100_BANDWIDTH = 3.35e12  # bytes/s, H100 SXM HBM3
H100_MEMORY = 80e9


def nominal_size(name: str) -> float:
    """Parameters from a rung or model name ending in a size, e.g. "qwen1.5-1.8b" or
    "pythia-70m" (the size after the last hyphen, read by `fsgen.parse_size`)."""
    return parse_size(name.rsplit("-", 1)[-1])


def _step_bytes(method: str, large: float, small: float, per_param: int) -> float:
    read = {
        "alone": large,
        "oracle": large,
        "contrastive": large + small,
        "speculative": large + small,
        "proxy": large + 2 * small,
    }[method]
    return read * per_param


def estimate_profile(
    profile: Profile,
    *,
    n_prompts: int,
    max_new_tokens: int,
    batch_size: int,
    methods: Sequence[str],
    bandwidth: float = H100_BANDWIDTH,
    efficiency: float = 0.5,
    gpu_memory: float = H100_MEMORY,
) -> dict[str, object]:
    """Peak memory, GPUs needed and token-logging hours of a hub profile (see module docstring)."""
    if profile.kind != "hub":
        raise ValueError(
            f"profile {profile.name!r} is {profile.kind!r}; estimates are for hub ones"
        )
    per_param = BYTES.get(profile.dtype, 2)
    sizes = [(rung, nominal_size(rung.name)) for rung in profile.rungs]
    largest, second = sizes[-1][1], sizes[-2][1]
    tuned = any(rung.tuned for rung in profile.rungs[:-1]) and "proxy" in methods
    peak = (largest + (2 if tuned else 1) * second) * per_param * 1.2
    batches = math.ceil(n_prompts / batch_size)
    seconds = 0.0
    for _task in profile.tasks:
        for j, (_rung, large) in enumerate(sizes):
            smalls = sizes[:j]
            units = {
                "alone": [0.0],
                "oracle": [0.0] if smalls else [],
                "contrastive": [s for _, s in smalls],
                "speculative": [s for _, s in smalls],
                "proxy": [s for r, s in smalls if r.tuned],
            }
            for method in methods:
                for small in units.get(method, []):
                    step = _step_bytes(method, large, small, per_param) / (bandwidth * efficiency)
                    seconds += batches * max_new_tokens * step
    return {
        "profile": profile.name,
        "rungs": len(sizes),
        "largest": profile.rungs[-1].model,
        "largest weights (GB)": round(largest * per_param / 1e9, 1),
        "peak memory (GB)": round(peak / 1e9, 1),
        "H100 80GB needed": math.ceil(peak / gpu_memory),
        "token logging (GPU-hours)": round(seconds / 3600, 1),
    }


def estimate_table(profiles: Sequence[Profile], **settings) -> pd.DataFrame:
    """`estimate_profile` for each hub profile, one row each."""
    return pd.DataFrame([estimate_profile(p, **settings) for p in profiles if p.kind == "hub"])
