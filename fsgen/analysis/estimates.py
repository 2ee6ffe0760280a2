"""GPU memory and time for the hub profiles' token logging, from the models' real shapes.

Estimates, not measurements. Per logging unit (a task x method x pair x chunk) at batch `B`, a
prompt of `P` tokens (the task's longest) and `n` new tokens, in the profile's dtype (`b` bytes):

- weights: every model the unit holds at once: the large rung alone; large + small
  (contrastive, speculative); large + small + tuned small (proxy); the large rung with *every*
  smaller rung (oracle, which scores the large model's tokens with each of them);
- KV cache: for each model held, 2 (keys, values) x layers x KV width x b x B x (P + n);
- logits: a decoding step keeps one position per row (B x V, in b bytes and a float32 copy);
  the oracle's teacher-forced scoring keeps n + 1 positions (B x (n + 1) x V: the model's b
  bytes, the float32 and flattened copies, the trace statistics' float32 log-softmax,
  probabilities and two temporaries): checked against the measured peak of such a unit on CPU
  (benchmarks/memory_check.py: 24 bytes per scored logit in float32, as estimated);
- activations: the largest model's prefill over B x P tokens through one MLP (2 x its width).

Time: decoding is memory-bound (each step reads the weights of the models it runs and their KV
caches, over `bandwidth` at `efficiency`; speculative counted as one large and one small read
per token, an upper bound); prefills and the oracle's scoring passes are compute-bound (2 FLOPs
per parameter per token at `flops` x `efficiency`). Loading and downloading are not counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsgen.core.names import parse_size
from fsgen.engine.methods import METHODS, logging_methods
from fsgen.models.profiles import Profile, load_config

BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
H100_BANDWIDTH = 3.35e12  # bytes/s, H100 SXM HBM3
H100_FLOPS = 989e12  # dense bf16
H100_MEMORY = 80e9
USABLE = 0.9  # of a GPU's memory: the CUDA context and the allocator's fragmentation take the rest


@dataclass(frozen=True)
class Shape:
    """A model's architecture as its config.json gives it."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    kv_heads: int = 0  # 0: as many as heads
    vocab: int = 0  # the model's (padded) vocabulary
    family: str = ""  # "neox", "qwen" or "t5"
    tied: bool = False  # input and output embeddings shared

    @property
    def kv_width(self) -> int:
        return (self.kv_heads or self.heads) * (self.hidden // self.heads)

    @property
    def params(self) -> int:
        """Parameter count from the shape (biases and norms left out: under 0.1%)."""
        h, f = self.hidden, self.intermediate
        if self.family == "qwen":
            layer = 2 * h * h + 2 * h * self.kv_width + 3 * h * f
        elif self.family == "t5":
            layer = 4 * h * h + 3 * h * f  # the encoder, the part LLM-to-SLM runs
        else:
            layer = 4 * h * h + 2 * h * f
        return self.layers * layer + self.vocab * h * (1 if self.tied else 2)


# The config.json fields of the papers' hub models (their shape only), so that estimates, the fake
# hub (tests/fake_hub.py) and the GPU check (benchmarks/gpu_check.py) need no network; any other
# model's config is read from its folder or the hub (`model_shape`).
HUB_CONFIGS: dict[str, dict] = json.loads(
    (Path(__file__).resolve().parents[1] / "assets" / "hub_configs.json").read_text()
)
# The longest prompt per task over both hub families, in tokens of stand-in tokenizers of the
# real sizes (docs/gpu_profiles.md): 8-shot GSM8K, 5-shot MMLU-STEM, 10-shot MBPP, MT-bench turn 1, with
# Qwen1.5's chat template (proxy tuning's prompts), rounded up.
LONGEST_PROMPT = {"gsm8k": 1310, "mmlu_stem": 2290, "mbpp": 4890, "mt_bench": 550}


def nominal_size(name: str) -> float:
    """Parameters from a rung or model name ending in a size, e.g. "qwen1.5-1.8b" or
    "pythia-70m" (the size after the last hyphen, read by `fsgen.parse_size`)."""
    return parse_size(name.rsplit("-", 1)[-1])


def shape_from_config(config: dict) -> Shape:
    """A model's `Shape` from its config.json fields (GPT-NeoX, Llama/Qwen-style and T5 names)."""

    def get(*names: str, default=0):  # the first of a config's synonyms that it sets
        return next((config[n] for n in names if config.get(n)), default)

    hidden = get("hidden_size", "d_model")
    heads = get("num_attention_heads", "num_heads")
    return Shape(
        hidden=hidden,
        layers=get("num_hidden_layers", "num_layers"),
        heads=heads,
        intermediate=get("intermediate_size", "d_ff", default=4 * hidden),
        kv_heads=get("num_key_value_heads", default=heads),
        vocab=get("vocab_size"),
        family={"gpt_neox": "neox", "t5": "t5"}.get(config.get("model_type"), "qwen"),
        tied=bool(get("tie_word_embeddings", default=False)),
    )


def model_shape(source: str, *, revision: str = "main") -> Shape:
    """A model's shape from its config.json: the papers' hub models from `HUB_CONFIGS` (a -Chat
    variant has its base's), any other from its local folder or the hub (cache)."""
    base = str(source).removesuffix("-Chat")
    if base in HUB_CONFIGS:
        return shape_from_config(HUB_CONFIGS[base])
    return shape_from_config(load_config(source, revision=revision).to_dict())


def held_models(method: str, large: int, smaller: Sequence[int], tuned: bool) -> list[list[int]]:
    """For each unit of `method` with the large rung `large`, the rungs it holds at once."""
    if method == "alone":
        return [[large]]
    spec = METHODS[method]
    if spec.ladder_wide:
        return [[large, *smaller]] if smaller else []
    if spec.uses_tuned:
        return [[large, s, s] for s in smaller] if tuned else []
    return [[large, s] for s in smaller]


def unit_memory(
    shapes: Sequence[Shape], *, method: str, batch: int, prompt: int, new: int, per_param: int
) -> dict[str, float]:
    """Peak bytes of one unit holding `shapes` (the large model first): see the module
    docstring."""
    width = prompt + new
    weights = sum(s.params for s in shapes) * per_param
    kv = sum(2 * s.layers * s.kv_width * per_param * batch * width for s in shapes)
    vocab = max(s.vocab for s in shapes)
    float_copy = 4 if per_param != 4 else 0  # `.float()` copies bf16 logits, not float32 ones
    if method != "alone" and METHODS[method].ladder_wide:
        # scoring: the model's logits, their float32 copy, the flattened copy, and the trace
        # statistics' log-softmax, probabilities and two temporaries of the entropy
        logits = batch * (new + 1) * vocab * (per_param + float_copy + 4 + 16)
    else:
        logits = batch * vocab * (per_param + float_copy)
    biggest = shapes[0]
    activations = 2 * batch * prompt * max(biggest.intermediate, 3 * biggest.hidden) * per_param
    return {"weights": weights, "kv": kv, "logits": logits, "activations": activations}


def unit_seconds(
    shapes: Sequence[Shape],
    *,
    method: str,
    batch: int,
    prompt: int,
    new: int,
    per_param: int,
    bandwidth: float,
    flops: float,
    efficiency: float,
) -> float:
    """Seconds of one unit: prefill (compute) + n decoding steps (memory) + oracle scoring."""
    prefill = sum(2 * s.params * batch * prompt for s in shapes) / (flops * efficiency)
    stepping = shapes if method not in ("oracle", "alone") else shapes[:1]
    kv_read = sum(
        2 * s.layers * s.kv_width * per_param * batch * (prompt + new / 2) for s in stepping
    )
    step = (sum(s.params for s in stepping) * per_param + kv_read) / (bandwidth * efficiency)
    scoring = 0.0
    if method == "oracle":
        scoring = sum(2 * s.params * batch * new for s in shapes[1:]) / (flops * efficiency)
    return prefill + new * step + scoring


def estimate_profile(
    profile: Profile,
    *,
    n_prompts: int,
    max_new_tokens: int,
    batch_size: int,
    methods: Sequence[str],
    bandwidth: float = H100_BANDWIDTH,
    flops: float = H100_FLOPS,
    efficiency: float = 0.5,
    gpu_memory: float = H100_MEMORY,
    prompts: dict[str, int] | None = None,
) -> dict[str, object]:
    """Peak memory (and what it is made of), GPUs needed and token-logging hours of a hub
    profile at `batch_size` (see the module docstring)."""
    if profile.kind != "hub":
        raise ValueError(
            f"profile {profile.name!r} is {profile.kind!r}; estimates are for hub ones"
        )
    methods = logging_methods("all") if list(methods) in (["all"], []) else list(methods)
    per_param = BYTES.get(profile.dtype, 2)
    prompts = {**LONGEST_PROMPT, **(prompts or {})}
    shapes = [model_shape(rung.model, revision=rung.revision) for rung in profile.rungs]
    peak, parts, seconds = 0.0, {}, 0.0
    batches = math.ceil(n_prompts / batch_size)
    for task in profile.tasks:
        new = profile.generation_length(task, max_new_tokens)
        for j, rung in enumerate(profile.rungs):
            for method in methods:
                for held in held_models(method, j, range(j), rung_tuned(profile, j)):
                    unit = [shapes[i] for i in held]
                    size = {"method": method, "batch": batch_size, "prompt": prompts[task]}
                    memory = unit_memory(unit, new=new, per_param=per_param, **size)
                    if sum(memory.values()) > peak:
                        peak, parts = (
                            sum(memory.values()),
                            memory | {"unit": f"{method} {rung.name}"},
                        )
                    seconds += batches * unit_seconds(
                        unit,
                        new=new,
                        per_param=per_param,
                        bandwidth=bandwidth,
                        flops=flops,
                        efficiency=efficiency,
                        **size,
                    )
    return {
        "profile": profile.name,
        "rungs": len(shapes),
        "largest": profile.rungs[-1].model,
        "batch": batch_size,
        "peak unit": parts.get("unit", ""),
        "weights (GB)": round(parts.get("weights", 0) / 1e9, 1),
        "KV cache (GB)": round(parts.get("kv", 0) / 1e9, 1),
        "logits (GB)": round(parts.get("logits", 0) / 1e9, 1),
        "peak memory (GB)": round(peak / 1e9, 1),
        "H100 80GB needed": math.ceil(peak / (gpu_memory * USABLE)),
        "token logging (GPU-hours)": round(seconds / 3600, 1),
    }


def rung_tuned(profile: Profile, j: int) -> bool:
    """Whether the rungs below rung `j` have tuned variants (proxy tuning runs on them)."""
    return any(rung.tuned for rung in profile.rungs[:j])


def fitting_batch(
    profile: Profile, *, gpus: int | None = None, ceiling: int = 64, **settings
) -> int:
    """The largest power-of-two batch (at most `ceiling`) whose peak fits the fewest GPUs the
    largest unit's weights need (or `gpus`)."""
    at_one = estimate_profile(profile, batch_size=1, **settings)
    gpus = gpus or at_one["H100 80GB needed"]
    batch = 1
    while batch * 2 <= ceiling:
        out = estimate_profile(profile, batch_size=batch * 2, **settings)
        if out["H100 80GB needed"] > gpus:
            break
        batch *= 2
    return batch


def estimate_table(profiles: Sequence[Profile], **settings) -> pd.DataFrame:
    """`estimate_profile` for each hub profile, one row each, at its own batch size if it sets
    one (`settings["batch_size"]` otherwise)."""
    rows = []
    for profile in profiles:
        if profile.kind != "hub":
            continue
        batch = profile.batch_size or settings["batch_size"]
        rows.append(estimate_profile(profile, **(settings | {"batch_size": batch})))
    return pd.DataFrame(rows)
