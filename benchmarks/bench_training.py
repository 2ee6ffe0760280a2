"""Where the ladder's training time could come from: milliseconds per training step of three
ladder shapes (batch 8 x 256 tokens, stage 00's step: forward, backward, clipping, AdamW) with
torch's default AdamW (foreach) and the fused one, on 1 and 2 threads. Ratios are to the stage's
setting (foreach, 2 threads), measured in this one run, best of 3 blocks of 10 steps after 3
warm-up steps. Only a guide for issue 14's budget: changing either changes the trained weights.
Run alone: python benchmarks/bench_training.py
"""

from __future__ import annotations

import time

import torch

import fsgen
from fsgen.data.synthetic import base_corpus, generate_problems
from fsgen.data.tokenizer import train_tokenizer
from fsgen.models.train import build_model, pack_blocks

SHAPES = ("e0", "e3", "e5")


def ms_per_step(model, blocks: torch.Tensor, *, fused: bool, steps: int = 10) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)
    model.train()
    best = float("inf")
    for block in range(4):  # the first is warm-up
        began = time.perf_counter()
        for step in range(steps if block else 3):
            batch = blocks[(step * 8) % (len(blocks) - 8) :][:8]  # (8, 256)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if block:
            best = min(best, (time.perf_counter() - began) / steps * 1e3)
    return best


def main() -> None:
    docs = base_corpus(
        generate_problems(2000, split="train", seed=0), chat_share=0.25, expression_share=0.25
    )
    tokenizer = train_tokenizer(docs, 512)
    blocks = pack_blocks(tokenizer, docs, 256)
    profile = fsgen.load_profile("embedded")
    print("shape  threads  optimizer  ms/step  ratio to (foreach, 2 threads)")
    for shape in SHAPES:
        arch = profile.rung(shape).arch
        results = {}
        for threads in (2, 1):
            torch.set_num_threads(threads)
            for fused in (False, True):
                model = build_model(arch, len(tokenizer), tokenizer, 1024, 0)
                results[threads, fused] = ms_per_step(model, blocks, fused=fused)
        base = results[2, False]
        for (threads, fused), ms in results.items():
            name = "fused" if fused else "foreach"
            print(f"{shape:5s}  {threads:7d}  {name:9s}  {ms:7.1f}  x{ms / base:.2f}")


if __name__ == "__main__":
    main()
