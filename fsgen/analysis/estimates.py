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

import math
from collections.abc import Sequence
from dataclasses import dataclass

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


def _neox(hidden: int, layers: int, heads: int) -> Shape:
    return Shape(hidden, layers, heads, 4 * hidden, vocab=50304, family="neox")


def _qwen(hidden, layers, heads, intermediate, kv_heads=0, vocab=151936, tied=False) -> Shape:
    return Shape(hidden, layers, heads, intermediate, kv_heads, vocab, "qwen", tied)


# The real shapes (config.json of each hub model); the fake hub (tests/fake_hub.py) and the GPU
# check (benchmarks/gpu_check.py) build random-weight models from them.
ARCHITECTURES = {
    "EleutherAI/pythia-70m": _neox(512, 6, 8),
    "EleutherAI/pythia-160m": _neox(768, 12, 12),
    "EleutherAI/pythia-410m": _neox(1024, 24, 16),
    "EleutherAI/pythia-1b": _neox(2048, 16, 8),
    "EleutherAI/pythia-1.4b": _neox(2048, 24, 16),
    "EleutherAI/pythia-2.8b": _neox(2560, 32, 32),
    "EleutherAI/pythia-6.9b": _neox(4096, 32, 32),
    "EleutherAI/pythia-12b": _neox(5120, 36, 40),
    "Qwen/Qwen1.5-0.5B": _qwen(1024, 24, 16, 2816, tied=True),
    "Qwen/Qwen1.5-1.8B": _qwen(2048, 24, 16, 5504),
    "Qwen/Qwen1.5-4B": _qwen(2560, 40, 20, 6912),
    "Qwen/Qwen1.5-7B": _qwen(4096, 32, 32, 11008),
    "Qwen/Qwen1.5-14B": _qwen(5120, 40, 40, 13696, vocab=152064),
    "Qwen/Qwen1.5-32B": _qwen(5120, 64, 40, 27392, kv_heads=8, vocab=152064),
    "Qwen/Qwen1.5-72B": _qwen(8192, 80, 64, 24576, vocab=152064),
    "google/flan-t5-large": Shape(1024, 24, 16, 2816, vocab=32128, family="t5"),
}
# The longest prompt per task over both hub families, in tokens of stand-in tokenizers of the
# real sizes (docs/gpu_profiles.md): 8-shot GSM8K, 5-shot MMLU-STEM, 10-shot MBPP, MT-bench turn 1, with
# Qwen1.5's chat template (proxy tuning's prompts), rounded up.
LONGEST_PROMPT = {"gsm8k": 1310, "mmlu_stem": 2290, "mbpp": 4890, "mt_bench": 550}


def nominal_size(name: str) -> float:
    """Parameters from a rung or model name ending in a size, e.g. "qwen1.5-1.8b" or
    "pythia-70m" (the size after the last hyphen, read by `fsgen.parse_size`)."""
    return parse_size(name.rsplit("-", 1)[-1])


def shape_of(model: str) -> Shape:
    """The real shape of a hub model of the profiles (a -Chat variant has its base's)."""
    base = model.removesuffix("-Chat")
    if base not in ARCHITECTURES:
        raise ValueError(f"no architecture known for {model!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[base]


def model_shape(source: str, *, revision: str = "main") -> Shape:
    """A model's shape: the profiles' known ones by hub id, else read from its config.json (a
    local folder or the hub cache), for GPT-NeoX, Llama/Qwen-style and T5 configs."""
    base = str(source).removesuffix("-Chat")
    if base in ARCHITECTURES:
        return ARCHITECTURES[base]
    config = load_config(source, revision=revision)

    def get(*names: str, default=0):  # the first of a config's synonyms that it sets
        return next((getattr(config, n) for n in names if getattr(config, n, None)), default)

    family = {"gpt_neox": "neox", "t5": "t5"}.get(config.model_type, "qwen")
    hidden = get("hidden_size", "d_model")
    heads = get("num_attention_heads", "num_heads")
    return Shape(
        hidden=hidden,
        layers=get("num_hidden_layers", "num_layers"),
        heads=heads,
        intermediate=get("intermediate_size", "d_ff", default=4 * hidden),
        kv_heads=get("num_key_value_heads", default=heads),
        vocab=get("vocab_size"),
        family=family,
        tied=bool(get("tie_word_embeddings", default=False)),
    )


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
    shapes = [shape_of(rung.model) for rung in profile.rungs]
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
