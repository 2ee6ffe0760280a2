"""LLM-to-SLM speed on the embedded ladder: ratios measured in one run, written as JSON.

    python benchmarks/bench_llm_to_slm.py --out benchmarks/results/llm_to_slm.json

Stage 05 times the four systems on 8 prompts, 3 repeats. This reruns the two that its speed-up
compares, the large model alone and LLM-to-SLM, on more prompts and repeats, at each batch size,
through both forwards the code offers:
1. the lean forward (`fsgen.engine.fast_neox`, what the stage times: `forward="lean"`) and
2. the Hugging Face forward on the same loop (`forward="hf"`),
and reports per system the median seconds, ms per generated token, the large model's encoding
share of LLM-to-SLM's time, and the speed-up over the large model alone, with the tokens of both
forwards compared. Contenders are interleaved within a repeat; each run starts after a full
garbage collection, with the collector off (as `timeit` does and the stage does). Nothing here
is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch

from fsgen.core.timing import timed
from fsgen.data.tasks import build_prompts, get_task, load_examples
from fsgen.engine.collaborate import generate
from fsgen.models import llm_to_slm


def main() -> None:
    """Time the large model alone and LLM-to-SLM, print and write the ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--large", default="data/models/embedded/e5")
    parser.add_argument("--checkpoint", default="data/llm_to_slm/llm_to_slm")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/llm_to_slm.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    large, tokenizer = llm_to_slm.load_large(args.large)
    model = llm_to_slm.LLMToSLM.from_pretrained(
        args.checkpoint, large=large, large_tokenizer=tokenizer
    )
    examples = load_examples("synthetic", n_prompts=args.prompts, seed=0, split="test")
    prompts = build_prompts("synthetic", examples)
    stop = list(get_task("synthetic").stop)
    result: dict[str, object] = {
        "large": args.large,
        "checkpoint": args.checkpoint,
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }

    def runner(system: str, forward: str, run: dict):
        if system == "large":
            return lambda: generate(large, tokenizer, prompts, forward=forward, **run)

        def conditioned():  # as the stage times it: the wrapper is built inside the timed run
            small, inputs = model.decoder(prompts, forward=forward)
            out = generate(small, **inputs, **run)
            out.summary["encode_seconds"] = small.encode_seconds
            return out

        return conditioned

    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        run = {"max_new_tokens": args.max_new_tokens, "batch_size": batch_size, "stop": stop}
        contenders = {
            (forward, system): runner(system, forward, run)
            for forward in ("lean", "hf")
            for system in ("large", "llm_to_slm")
        }
        times = {key: [] for key in contenders}
        encode = {key: [] for key in contenders}
        outputs = {}
        for _ in range(args.repeats):
            for key, fn in contenders.items():
                seconds, _, outputs[key] = timed(fn)  # as in the stage: the collector off
                times[key].append(seconds)
                encode[key].append(outputs[key].summary.get("encode_seconds", 0.0))
        for forward in ("lean", "hf"):
            large_s = statistics.median(times[forward, "large"])
            l2s_s = statistics.median(times[forward, "llm_to_slm"])
            tokens = {s: outputs[forward, s].summary["tokens"] for s in ("large", "llm_to_slm")}
            prefix = f"batch{batch_size}.{forward}"
            result |= {
                f"{prefix}.large_seconds": large_s,
                f"{prefix}.llm_to_slm_seconds": l2s_s,
                f"{prefix}.large_ms_per_token": 1000 * large_s / tokens["large"],
                f"{prefix}.llm_to_slm_ms_per_token": 1000 * l2s_s / tokens["llm_to_slm"],
                f"{prefix}.encode_share": statistics.median(encode[forward, "llm_to_slm"]) / l2s_s,
                f"{prefix}.speedup": large_s / l2s_s,
            }
        result[f"batch{batch_size}.lean_speedup_vs_hf_forward.large"] = (
            result[f"batch{batch_size}.hf.large_seconds"]
            / result[f"batch{batch_size}.lean.large_seconds"]
        )
        result[f"batch{batch_size}.tokens_equal_across_forwards"] = all(
            outputs["lean", s].tokens == outputs["hf", s].tokens for s in ("large", "llm_to_slm")
        )
    for key, value in result.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
