"""Decoding speed on the embedded ladder: ratios measured in one run, written as JSON.

    python benchmarks/bench_decoding.py --out benchmarks/results/decoding.json

Compares, on the same prompts and the same machine, in one run:
1. oracle logging (`collaborate`, router `always`, all prompts in one batch) against the FS-GEN authors' loop made
   as fast as it goes at batch 1 (both models every token, with KV caches), and against plain
   batched `large.generate`;
2. greedy speculative decoding at batch 1 against transformers' assisted generation
   (`large.generate(assistant_model=small)`), tokens compared;
3. every method at batch 8 against batch 1 (tokens per second);
4. the engine's two forwards on the same work: the lean GPT-NeoX forward (`forward="lean"`, what
   `auto` picks for these models) against HF's forward with its dynamic cache (`forward="hf"`),
   for oracle logging, speculative decoding at batch 1, and the large model alone at batch 1
   and 8; tokens compared.
Each timing is the median of `--repeats` runs. Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import fsgen
from fsgen.data.synthetic import generate_problems, plain_prompt


def median_seconds(fn, repeats: int):
    """Median wall time of `fn()` over `repeats` runs, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def interleaved_medians(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Median wall time of each function, runs interleaved so that drift in the machine's speed
    hits every contender alike; also the last result of each."""
    times: dict = {name: [] for name in fns}
    results: dict = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}, results


@torch.no_grad()
def stepwise_oracle(small, large, tokenizer, prompts, max_new_tokens):
    """Batch 1, both models every token, with KV caches: the authors' loop at its fastest."""
    vocab, eos = len(tokenizer), tokenizer.eos_token_id
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        s_out, l_out = small(ids, use_cache=True), large(ids, use_cache=True)
        tokens = []
        for _ in range(max_new_tokens):
            token = l_out.logits[0, -1, :vocab].argmax()
            _ = s_out.logits[0, -1, :vocab].argmax()  # the small model's choice, for mismatches
            tokens.append(int(token))
            if int(token) == eos:
                break
            step = token.view(1, 1)
            s_out = small(step, past_key_values=s_out.past_key_values, use_cache=True)
            l_out = large(step, past_key_values=l_out.past_key_values, use_cache=True)
        outputs.append(tokens)
    return outputs


@torch.no_grad()
def plain_generate(large, tokenizer, prompts, max_new_tokens, batch_size):
    outputs = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(
            prompts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        out = large.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        outputs += out[:, enc["input_ids"].shape[1] :].tolist()
    return outputs


@torch.no_grad()
def assisted_generate(small, large, tokenizer, prompts, max_new_tokens):
    outputs = []
    for prompt in prompts:
        enc = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
        out = large.generate(
            **enc,
            assistant_model=small,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        outputs.append(out[0, enc["input_ids"].shape[1] :].tolist())
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="embedded")
    parser.add_argument("--small", default="e1")
    parser.add_argument("--large", default="e5")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/decoding.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = fsgen.load_profile(args.profile)
    small_rung, large_rung = profile.rung(args.small), profile.rung(args.large)
    small, tokenizer = fsgen.load_rung(small_rung, profile)
    large, _ = fsgen.load_rung(large_rung, profile)
    tuned, _ = (
        fsgen.load_rung(small_rung, profile, tuned=True) if small_rung.tuned else (small, None)
    )
    prompts = [
        plain_prompt(p.question) for p in generate_problems(args.prompts, split="test", seed=1)
    ]
    n, reps = args.max_new_tokens, args.repeats
    result: dict[str, object] = {
        "profile": args.profile,
        "small": args.small,
        "large": args.large,
        "prompts": len(prompts),
        "max_new_tokens": n,
        "repeats": reps,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }

    # 1. oracle logging
    t_step, step_tokens = median_seconds(
        lambda: stepwise_oracle(small, large, tokenizer, prompts, n), 1
    )
    seconds, runs = interleaved_medians(
        {
            "oracle": lambda: fsgen.collaborate(
                small,
                large,
                tokenizer,
                prompts,
                method="oracle",
                max_new_tokens=n,
                batch_size=len(prompts),
            ),
            "generate": lambda: plain_generate(large, tokenizer, prompts, n, len(prompts)),
        },
        reps,
    )
    result |= {
        "oracle_seconds": seconds["oracle"],
        "stepwise_batch1_seconds": t_step,
        "generate_seconds": seconds["generate"],
        "oracle_speedup_vs_stepwise_batch1": t_step / seconds["oracle"],
        "oracle_time_vs_generate": seconds["oracle"] / seconds["generate"],
        "oracle_tokens_equal_stepwise": runs["oracle"].tokens == step_tokens,
    }

    # 2. greedy speculative decoding at batch 1 vs assisted generation
    subset = prompts[:8]
    seconds, runs = interleaved_medians(
        {
            "speculative": lambda: fsgen.collaborate(
                small,
                large,
                tokenizer,
                subset,
                method="speculative",
                num_draft=5,
                max_new_tokens=n,
                batch_size=1,
            ),
            "assisted": lambda: assisted_generate(small, large, tokenizer, subset, n),
        },
        reps,
    )
    result |= {
        "speculative_batch1_seconds": seconds["speculative"],
        "assisted_generate_seconds": seconds["assisted"],
        "speculative_speedup_vs_assisted": seconds["assisted"] / seconds["speculative"],
        "speculative_tokens_equal_assisted": runs["speculative"].tokens == runs["assisted"],
        "speculative_acceptance_rate": 1 - runs["speculative"].summary["collaboration_frequency"],
    }

    # 3. batch 8 vs batch 1 throughput, every method
    for method, extra in [
        ("oracle", {}),
        ("oracle_threshold", {"router": "threshold", "threshold": 0.5}),
        ("contrastive", {}),
        ("proxy", {"small_tuned": tuned}),
        ("speculative", {}),
        ("small", {}),
        ("large", {}),
    ]:
        name = method.split("_")[0]
        rates = {}
        for batch_size in (1, 8):
            seconds, out = median_seconds(
                lambda b=batch_size, m=name, kw=extra: fsgen.collaborate(
                    small,
                    large,
                    tokenizer,
                    prompts[:16],
                    method=m,
                    max_new_tokens=n,
                    batch_size=b,
                    **kw,
                ),
                reps,
            )
            rates[batch_size] = out.summary["tokens"] / seconds
        result[f"throughput_batch8_vs_batch1.{method}"] = rates[8] / rates[1]

    # 4. the lean forward against HF's, the same engine otherwise
    work = {
        "oracle_logging": {"method": "oracle", "batch_size": len(prompts), "prompts": prompts},
        "speculative_batch1": {"method": "speculative", "batch_size": 1, "prompts": subset},
        "large_batch1": {"method": "large", "batch_size": 1, "prompts": prompts[:16]},
        "large_batch8": {"method": "large", "batch_size": 8, "prompts": prompts[:16]},
    }
    for label, how in work.items():
        how = dict(how)
        chosen = how.pop("prompts")
        calls = {
            forward: lambda f=forward, h=how, c=chosen: fsgen.collaborate(
                small, large, tokenizer, c, max_new_tokens=n, forward=f, **h
            )
            for forward in ("lean", "hf")
        }
        seconds, runs = interleaved_medians(calls, reps)
        result[f"forward.{label}.lean_seconds"] = seconds["lean"]
        result[f"forward.{label}.hf_seconds"] = seconds["hf"]
        result[f"forward.{label}.hf_over_lean"] = seconds["hf"] / seconds["lean"]
        result[f"forward.{label}.tokens_equal"] = runs["lean"].tokens == runs["hf"].tokens

    out_path = fsgen.resolve(args.out)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
