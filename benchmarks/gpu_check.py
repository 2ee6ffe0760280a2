"""The GPU check: fsgen on random-weight models of the hub profiles' real sizes, no hub needed.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json   # a CUDA machine
    python benchmarks/gpu_check.py --tiny   # CPU rehearsal: results/gpu_check_tiny_cpu.json

Builds Qwen1.5 0.5B/1.8B/4B/7B and Pythia 70m..1.4b (their real shapes, random bf16 weights,
the fake hub's tokenizers: tests/fake_hub.py) and measures, in one run:
1. every method at batch 1, 8 and 32 on each family's smallest and largest model: tokens/s;
2. the large models alone: fsgen's tokens/s against HF `generate` (same prompts, greedy);
3. greedy speculative decoding at batch 1 against HF assisted generation
   (`generate(assistant_model=small)`), and its token parity with the large model alone;
4. peak GPU memory of each run (`torch.cuda.max_memory_allocated`; none on CPU).
Random weights make acceptance rates meaningless, so speculative timing is also run with drafts
forced to the two ends: one that copies the large model's greedy choices (every draft accepted:
the upper bound) and one that never agrees (every draft rejected: the lower bound). The forced
drafts run the small model's forward and then overwrite its logits, through HF's forward.
`--tiny` builds CPU-sized models of the same classes and vocabularies. Prints ratios; writes one
JSON. Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fake_hub, from a checkout

import fsgen  # noqa: E402
from fsgen.analysis.estimates import model_shape  # noqa: E402
from fsgen.engine.batch import encode_prompts, padding_id  # noqa: E402
from fsgen.engine.methods import METHODS  # noqa: E402
from tests import fake_hub  # noqa: E402

FAMILIES = {
    "qwen1.5": ["Qwen/Qwen1.5-0.5B", "Qwen/Qwen1.5-1.8B", "Qwen/Qwen1.5-4B", "Qwen/Qwen1.5-7B"],
    "pythia": [
        "EleutherAI/pythia-70m",
        "EleutherAI/pythia-160m",
        "EleutherAI/pythia-410m",
        "EleutherAI/pythia-1b",
        "EleutherAI/pythia-1.4b",
    ],
}
PROMPT = (
    "Question: A baker makes {n} loaves of bread each morning and sells three quarters of them "
    "before noon. How many loaves are left for the afternoon, and what fraction is that?\nAnswer:"
)


class ForcedDraft(torch.nn.Module):
    """A draft model whose choices are forced: it runs `small`'s forward (its cost) and then
    puts all probability on the large model's greedy next token (`agree=True`) or on another
    token (`agree=False`), looked up by the row's whole prefix in `script` (prefix -> token)."""

    def __init__(self, small, script: dict[tuple[int, ...], int], agree: bool, vocab: int):
        super().__init__()
        self.small, self.script, self.agree, self.vocab = small, script, agree, vocab
        self.config, self.generation_config = small.config, small.generation_config
        self.history: torch.Tensor | None = None

    def forward(self, input_ids, attention_mask=None, past_key_values=None, **kwargs):
        start = past_key_values.get_seq_length() if past_key_values is not None else 0
        out = self.small(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            **kwargs,
        )
        ids = input_ids.cpu()
        self.history = ids if start == 0 else torch.cat([self.history[:, :start], ids], 1)
        mask = (
            attention_mask.bool().cpu()
            if attention_mask is not None
            else torch.ones_like(self.history, dtype=torch.bool)
        )
        logits = out.logits  # (B, keep, V)
        keep = logits.shape[1]
        width = self.history.shape[1]
        for row in range(logits.shape[0]):
            for i, column in enumerate(range(width - keep, width)):
                prefix = self.history[row, : column + 1][mask[row, : column + 1]]
                target = self.script.get(tuple(prefix.tolist()))
                if target is None:
                    continue
                token = target if self.agree else (target + 1) % self.vocab
                logits[row, i].fill_(-1e4)
                logits[row, i, token] = 0.0
        return out


def build_family(family: str, tiny: bool, device: str, texts: list[str]):
    """Random-weight models (bf16 on GPU, float32 on CPU) and the family's tokenizer."""
    ids = FAMILIES[family][:2] if tiny else FAMILIES[family]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    models = {}
    for rank, hub_id in enumerate(ids):
        shape = fake_hub.tiny_shape(hub_id, rank) if tiny else model_shape(hub_id)
        with torch.device(device):
            models[hub_id] = fake_hub.random_model(hub_id, shape, seed=rank, dtype=dtype)
    fam = fake_hub.family(ids[0])
    return models, fake_hub.hf_tokenizer(fam, texts)


def peak_memory(device: str) -> float | None:
    if device != "cuda":
        return None
    return torch.cuda.max_memory_allocated() / 1e9


def timed(device: str, fn):
    """(seconds, peak GB, result) of one call, after a warm start of the allocator counters."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, peak_memory(device), result


def hf_generate(model, tokenizer, prompts, new: int, assistant=None):
    """HF `generate`, greedy, on the prompts left-padded by hand (the tokenizer unchanged)."""
    rows = encode_prompts(tokenizer, prompts)
    width = max(map(len, rows))
    pad = padding_id(tokenizer)
    device = next(model.parameters()).device
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        pad_token_id=pad,
        assistant_model=assistant,
    )
    return [row[width:].tolist() for row in out]


def check_family(family: str, args, texts, device: str) -> dict:
    models, tokenizer = build_family(family, args.tiny, device, texts)
    names = list(models)
    small, large = models[names[0]], models[names[-1]]
    vocab = len(tokenizer)
    new = args.new_tokens
    results: dict[str, object] = {"models": names}
    prompts = [PROMPT.format(n=12 + i) for i in range(max(args.batches))]
    run = {"max_new_tokens": new, "trace": False, "stop": None}
    # 2. each model alone: fsgen against HF generate
    for name, model in models.items():
        for batch in args.batches:
            chunk = prompts[:batch]
            fs, fs_peak, out = timed(
                device,
                lambda m=model, c=chunk, b=batch: fsgen.generate(
                    m, tokenizer, c, batch_size=b, **run
                ),
            )
            hf, hf_peak, hf_out = timed(
                device, lambda m=model, c=chunk: hf_generate(m, tokenizer, c, new)
            )
            tokens, hf_tokens = sum(map(len, out.tokens)), sum(map(len, hf_out))
            key = f"alone.{name}.batch{batch}"
            results[key] = {
                "fsgen_tokens_per_s": tokens / fs,
                "hf_tokens_per_s": hf_tokens / hf,
                "fsgen_over_hf": (tokens / fs) / (hf_tokens / hf),
                "peak_gb": fs_peak,
                "hf_peak_gb": hf_peak,
            }
    # 1. every method on the (smallest, largest) pair
    for method in ("oracle", *[m for m, spec in METHODS.items() if spec.pairs and m != "oracle"]):
        for batch in args.batches:
            chunk = prompts[:batch]
            seconds, peak, out = timed(
                device,
                lambda m=method, c=chunk, b=batch: fsgen.collaborate(
                    small,
                    large,
                    tokenizer,
                    c,
                    method=m,
                    small_tuned=small if METHODS[m].uses_tuned else None,  # random: base as tuned
                    batch_size=b,
                    **run,
                ),
            )
            tokens = sum(map(len, out.tokens))
            results[f"{method}.batch{batch}"] = {"tokens_per_s": tokens / seconds, "peak_gb": peak}
    # 3. speculative at batch 1: parity, HF assisted, forced drafts
    one = prompts[:1]
    alone = fsgen.generate(large, tokenizer, one, batch_size=1, **run)
    prompt_ids = encode_prompts(tokenizer, one)[0]
    generated = alone.tokens[0]
    script = {tuple(prompt_ids + generated[:i]): t for i, t in enumerate(generated)}
    spec = {"method": "speculative", "batch_size": 1, **run}
    s_sec, _, s_out = timed(device, lambda: fsgen.collaborate(small, large, tokenizer, one, **spec))
    a_sec, _, a_out = timed(
        device, lambda: hf_generate(large, tokenizer, one, new, assistant=small)
    )
    l_sec, _, l_out = timed(device, lambda: hf_generate(large, tokenizer, one, new))
    forced = {}
    for agree in (True, False):
        draft = ForcedDraft(small, script, agree, vocab)
        seconds, _, out = timed(
            device, lambda d=draft: fsgen.collaborate(d, large, tokenizer, one, **spec)
        )
        forced["copies_large" if agree else "never_agrees"] = {
            "tokens_per_s": len(out.tokens[0]) / seconds,
            "tokens_per_large_forward": len(out.tokens[0]) / max(out.summary["large_forwards"], 1),
            "matches_large": out.tokens[0] == generated,
        }
    results["speculative_vs_hf_assisted.batch1"] = {
        "fsgen_tokens_per_s": len(s_out.tokens[0]) / s_sec,
        "hf_assisted_tokens_per_s": len(a_out[0]) / a_sec,
        "fsgen_over_hf_assisted": (len(s_out.tokens[0]) / s_sec) / (len(a_out[0]) / a_sec),
        "hf_assisted_over_hf_alone": (len(a_out[0]) / a_sec) / (len(l_out[0]) / l_sec),
        "matches_large_alone": s_out.tokens[0] == generated,
        "hf_assisted_matches_hf_alone": a_out[0] == l_out[0],
        "forced": forced,
    }
    return results


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else str(value)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CPU-sized models (rehearsal)")
    parser.add_argument(
        "--out",
        default=None,
        help="default benchmarks/results/gpu_check.json (the GPU run's record); with --tiny, "
        "benchmarks/results/gpu_check_tiny_cpu.json (the rehearsal's)",
    )
    parser.add_argument("--new-tokens", type=int, default=None, help="default 128 (tiny: 12)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args(argv)
    args.new_tokens = args.new_tokens or (12 if args.tiny else 128)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if not args.tiny and device != "cuda":
        sys.exit("gpu_check needs a CUDA device (or --tiny for the CPU rehearsal)")
    torch.manual_seed(0)
    texts = fake_hub.corpus(300_000)
    started = time.perf_counter()
    report = {
        "device": torch.cuda.get_device_name()
        if device == "cuda"
        else platform.processor() or "cpu",
        "tiny": args.tiny,
        "new_tokens": args.new_tokens,
        "note": "random weights: acceptance is forced (copies_large, never_agrees) for the bounds",
        "families": {f: check_family(f, args, texts, device) for f in FAMILIES},
    }
    report["seconds"] = time.perf_counter() - started
    if args.out is None:  # a rehearsal never overwrites the real GPU run's record
        name = "gpu_check_tiny_cpu.json" if args.tiny else "gpu_check.json"
        args.out = str(Path(__file__).resolve().parent / "results" / name)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True, default=_rounded) + "\n")
    for family, results in report["families"].items():
        print(f"== {family} ({', '.join(results['models'])})")
        for key, value in results.items():
            if key == "models":
                continue
            print(f"{key}: {json.dumps(value, default=str)}")
    print(f"{report['seconds']:.1f} s on {report['device']}; {report['note']}")
    return report


if __name__ == "__main__":
    main()
