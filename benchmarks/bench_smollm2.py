"""Real speed-ups on a CPU: SmolLM2-135M-Instruct (the smollm2 profile's large rung) and its best
draft, greedy, on GSM8K chat prompts. Ratios measured in one run; run it with nothing else on
the machine, after the smollm2 profile's train_ladder stage made the models:

    FSGEN_DATA_DIR=../shared/data python benchmarks/bench_smollm2.py [--prompts 8] [--new 64]

1. fsgen's greedy decode of the large model alone against transformers' `generate`, batch 1
   (one prompt after another) and batch 8 (left-padded for transformers, which needs it);
2. greedy speculative decoding with the draft against the large model alone (fsgen, batch 1) and
   against transformers' assisted generation with the same draft (batch 1: all it supports),
   the tokens checked identical;
3. the large model's batch-1 decode against the memory-bandwidth bound: its weight bytes read
   once per token over a measured copy bandwidth; and what limits it, as the same bound's
   fraction reached by less than the engine's step: the model's linear layers alone (one
   matrix-vector product each, in a loop: the weights' reads and nothing else) and transformers'
   bare forward of one token with a KV cache (no engine: no stopping rule, no choosing). Beside
   them, what a speculative round costs in those forwards: the large model's forward of two
   tokens (verifying one drafted token) and the draft's forward of one.

Writes benchmarks/results/smollm2_speed.json (and prints it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from fsgen.core.paths import resolve
from fsgen.data.tasks import build_prompts, get_task, load_examples
from fsgen.engine.collaborate import collaborate, generate
from fsgen.models.profiles import load_model, load_profile

OUT = resolve("benchmarks/results/smollm2_speed.json")


def copy_bandwidth(megabytes: int = 1024, repeats: int = 5) -> float:
    """Bytes per second a tensor copy moves (read plus written), best of `repeats`."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() * 4 / best


def linear_layers_seconds(model, repeats: int = 20) -> float:
    """Seconds to apply every linear layer of `model` (the output layer included) once to one
    token's input, best of `repeats`: a step's weight reads with no other work."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(1, 1, m.in_features) for m in linears]
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            started = time.perf_counter()
            for layer, x in zip(linears, inputs, strict=True):
                layer(x)
            best = min(best, time.perf_counter() - started)
    return best


def bare_forward_seconds(model, tokenizer, prompt: str, width: int = 1, steps: int = 32) -> float:
    """Median seconds of transformers' forward of `width` tokens with a KV cache after `prompt`
    (width 2: what speculative decoding's verifying forward costs at one drafted token)."""
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    times = []
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        for _ in range(steps):
            token = out.logits[:, -1:].argmax(-1).repeat(1, width)  # (1, width)
            started = time.perf_counter()
            out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def hf_greedy(model, tokenizer, prompts, new, *, assistant=None, batch=1, draft=5):
    """transformers' greedy `generate` (or assisted generation with `assistant`), the new ids of
    each prompt up to its end token, kept as fsgen's engine keeps it; prompts `batch` at a time,
    left-padded."""
    outputs = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(prompts), batch):
            chunk = prompts[start : start + batch]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            kwargs = {"max_new_tokens": new, "do_sample": False}
            kwargs["pad_token_id"] = tokenizer.pad_token_id
            if assistant is not None:
                assistant.generation_config.num_assistant_tokens = draft
                assistant.generation_config.num_assistant_tokens_schedule = "constant"
                kwargs["assistant_model"] = assistant
            with torch.no_grad():
                ids = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1] :]
            for row in ids.tolist():
                end = tokenizer.eos_token_id
                outputs.append(row[: row.index(end) + 1] if end in row else row)
    finally:
        tokenizer.padding_side = side
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--draft", default="d1", help="the draft rung")
    parser.add_argument(
        "--num-draft", type=int, nargs="+", default=[1, 2, 4], help="draft lengths to try"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = load_profile("smollm2")
    large, tokenizer = load_model(profile.rungs[-1].model)
    draft, _ = load_model(profile.rung(args.draft).model)
    examples = load_examples("gsm8k", n_prompts=args.prompts, seed=0)
    prompts = build_prompts("gsm8k", examples, chat=True, tokenizer=tokenizer, zero_shot=True)
    stop, new = get_task("gsm8k").stop, args.new
    common = {"max_new_tokens": new, "stop": stop, "trace": False}

    def ours_alone(batch):
        result = collaborate(
            large, large, tokenizer, prompts, method="large", batch_size=batch, **common
        )
        return result.tokens

    runs = {}
    generate(large, tokenizer, prompts[:1], max_new_tokens=4)  # warm-up
    for batch in (1, 8):
        tokens, seconds = timed(lambda b=batch: ours_alone(b))
        runs[f"fsgen_large_batch{batch}"] = (tokens, seconds)
        tokens, seconds = timed(lambda b=batch: hf_greedy(large, tokenizer, prompts, new, batch=b))
        runs[f"hf_generate_batch{batch}"] = (tokens, seconds)

    def ours_speculative(k):
        result = collaborate(
            draft,
            large,
            tokenizer,
            prompts,
            method="speculative",
            num_draft=k,
            batch_size=1,
            **common,
        )
        return result.tokens

    for k in args.num_draft:  # the best draft length is the fastest, measured here
        runs[f"fsgen_speculative_k{k}_batch1"] = timed(lambda k=k: ours_speculative(k))
    tokens = {name: sum(len(t) for t in run[0]) for name, run in runs.items()}
    per_second = {name: tokens[name] / run[1] for name, run in runs.items()}
    best = max(args.num_draft, key=lambda k: per_second[f"fsgen_speculative_k{k}_batch1"])
    runs["fsgen_speculative_batch1"] = runs[f"fsgen_speculative_k{best}_batch1"]
    runs["hf_assisted_batch1"] = timed(
        lambda: hf_greedy(large, tokenizer, prompts, new, assistant=draft, draft=best)
    )
    tokens = {name: sum(len(t) for t in run[0]) for name, run in runs.items()}
    per_second = {name: tokens[name] / run[1] for name, run in runs.items()}
    same = {
        name: runs[name][0] == runs["fsgen_large_batch1"][0]
        for name in runs
        if name != "fsgen_large_batch1"
    }
    weight_bytes = sum(p.numel() * p.element_size() for p in large.parameters())
    bandwidth = copy_bandwidth()
    bound = bandwidth / weight_bytes  # tokens per second at batch 1 if weights stream once
    linear_only = 1 / linear_layers_seconds(large)
    bare_forward = 1 / bare_forward_seconds(large, tokenizer, prompts[0])
    verify_cost = bare_forward_seconds(large, tokenizer, prompts[0], width=2) * bare_forward
    draft_cost = bare_forward_seconds(draft, tokenizer, prompts[0]) * bare_forward
    report = {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "prompts": args.prompts,
        "max_new_tokens": new,
        "draft": args.draft,
        "num_draft": best,
        "draft_lengths_tried": args.num_draft,
        "tokens": tokens,
        "tokens_per_second": {k: round(v, 2) for k, v in per_second.items()},
        "same_tokens_as_fsgen_large_batch1": same,
        "fsgen_vs_hf_batch1": per_second["fsgen_large_batch1"] / per_second["hf_generate_batch1"],
        "fsgen_vs_hf_batch8": per_second["fsgen_large_batch8"] / per_second["hf_generate_batch8"],
        "speculative_vs_large_batch1": per_second["fsgen_speculative_batch1"]
        / per_second["fsgen_large_batch1"],
        "speculative_vs_hf_assisted": per_second["fsgen_speculative_batch1"]
        / per_second["hf_assisted_batch1"],
        "weight_bytes": weight_bytes,
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "bandwidth_bound_tokens_per_second": bound,
        "fraction_of_bound_batch1": per_second["fsgen_large_batch1"] / bound,
        "linear_layers_only_tokens_per_second": linear_only,
        "fraction_of_bound_linear_layers_only": linear_only / bound,
        "bare_forward_tokens_per_second": bare_forward,
        "fraction_of_bound_bare_forward": bare_forward / bound,
        # in units of the large model's bare one-token forward: speculative decoding's round
        "large_two_token_forward_cost": verify_cost,
        "draft_one_token_forward_cost": draft_cost,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
