"""Threads on a busy machine: an oracle run on two tiny models, with 1 and 2 torch threads and
OpenMP's two wait policies, alone and beside a CPU-bound job on every core.

Each configuration runs in a fresh process (OpenMP reads OMP_WAIT_POLICY when torch loads) and
prints its best wall time of three; the table gives each time as a ratio to 1 thread on an idle
machine, measured in this one run. Run: python benchmarks/bench_threads.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

_RUN = """
import json, sys, time
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
from fsgen import collaborate
from fsgen.data.synthetic import generate_problems, plain_document, plain_prompt
from fsgen.data.tokenizer import train_tokenizer

torch.set_num_threads(int(sys.argv[1]))
problems = generate_problems(200, seed=7)
tokenizer = train_tokenizer([plain_document(p) for p in problems], 300)
def model(hidden, layers, seed):
    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=4, intermediate_size=4 * hidden,
                           max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id)
    return GPTNeoXForCausalLM(config).eval()
small, large = model(64, 2, 0), model(128, 4, 1)
prompts = [plain_prompt(p.question) for p in problems[:16]]
times = []
for _ in range(3):
    began = time.perf_counter()
    collaborate(small, large, tokenizer, prompts, method="oracle", max_new_tokens=32, batch_size=16)
    times.append(time.perf_counter() - began)
print(json.dumps(min(times)))
"""


def run(threads: int, policy: str | None, busy: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    spinners = []
    if busy:  # one CPU-bound process per core, as another person's job would be
        spin = [sys.executable, "-c", "while True: pass"]
        spinners = [subprocess.Popen(spin) for _ in range(os.cpu_count() or 1)]
        time.sleep(0.5)
    try:
        out = subprocess.run(
            [sys.executable, "-c", _RUN, str(threads)], env=env, capture_output=True, text=True
        )
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = []
    for busy in (False, True):
        for threads, policy in ((1, None), (2, None), (2, "PASSIVE"), (2, "ACTIVE")):
            rows.append((busy, threads, policy or "default", run(threads, policy, busy)))
    base = rows[0][3]
    print(
        f"{'machine':8} {'threads':>7} {'OMP_WAIT_POLICY':>15} {'seconds':>8} {'x 1-thread idle':>16}"
    )
    for busy, threads, policy, seconds in rows:
        machine = "busy" if busy else "idle"
        print(f"{machine:8} {threads:>7} {policy:>15} {seconds:8.3f} {seconds / base:16.2f}")


if __name__ == "__main__":
    main()
