"""The cost of reproducible CPU results: training steps of two ladder shapes with the kernels at
this machine's best width (torch's, MKL's and oneDNN's chosen freely) and pinned to AVX2 (what
`import fsgen` does), at the stage's 2 threads, and pinned with OMP_NUM_THREADS=1 in the
environment (which the stage's own thread count overrides).

Each configuration runs in a fresh process (the kernels' width is fixed at their first use);
the table gives each best-of-3 training time as a ratio to the unpinned one, measured in this one
run, and whether its weights equal the pinned run's. Run alone on the machine:
    python benchmarks/bench_reproducibility.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_RUN = """
import hashlib, json, sys, time
import fsgen
from fsgen.core.determinism import compute_threads, reproducibility, use_deterministic_algorithms
from fsgen.data.synthetic import base_corpus, generate_problems
from fsgen.data.tokenizer import train_tokenizer
from fsgen.models.train import batch_order, build_model, pack_blocks, train_causal_lm

hidden, layers, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
compute_threads(2)
use_deterministic_algorithms()
docs = base_corpus(generate_problems(3000, split="train", seed=0), chat_share=0.25, expression_share=0.25)
tokenizer = train_tokenizer(docs, 512)
blocks = pack_blocks(tokenizer, docs, 256)
times = []
for _ in range(3):
    model = build_model({"hidden_size": hidden, "num_layers": layers, "num_heads": 4}, len(tokenizer), tokenizer, 1024, 0)
    began = time.perf_counter()
    train_causal_lm(model, blocks, batch_order(len(blocks), steps, 8, 0), lr=3e-3, warmup_steps=5, progress=False)
    times.append(time.perf_counter() - began)
digest = hashlib.sha256()
for _, tensor in sorted(model.state_dict().items()):
    digest.update(tensor.contiguous().numpy().tobytes())
print(json.dumps({"seconds": min(times), "weights": digest.hexdigest()[:16], **reproducibility()}))
"""

UNPINNED = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "ALL"}
CONFIGURATIONS = {
    "unpinned (best width), 2 threads": UNPINNED,
    "pinned AVX2, 2 threads": {},
    "pinned AVX2, 2 threads, OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
}
SHAPES = {"e2 (64x2)": (64, 2), "e5 (192x4)": (192, 4)}
STEPS = 30


def run(shape: tuple[int, int], extra: dict[str, str]) -> dict:
    drop = {"ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS"}
    env = {k: v for k, v in os.environ.items() if k not in drop} | extra
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *map(str, shape), str(STEPS)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"{STEPS} training steps of 8 x 256 tokens, best of 3; ratio to the unpinned run")
    for shape_name, shape in SHAPES.items():
        results = {name: run(shape, extra) for name, extra in CONFIGURATIONS.items()}
        base = results["unpinned (best width), 2 threads"]
        pinned = results["pinned AVX2, 2 threads"]
        for name, result in results.items():
            print(
                f"{shape_name:11s} {name:44s} {result['cpu_capability']:7s} "
                f"{result['seconds']:6.2f} s  x{result['seconds'] / base['seconds']:.2f}  "
                f"weights {result['weights']} "
                f"{'= pinned' if result['weights'] == pinned['weights'] else '!= pinned'}"
            )


if __name__ == "__main__":
    main()
