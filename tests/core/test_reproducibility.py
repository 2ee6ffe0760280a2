"""Same numbers on another machine: fsgen pins the kernels' vector width and the thread count, so
what a stage computes does not depend on the cores, OMP_NUM_THREADS or AVX-512."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fsgen.core.determinism import compute_threads
from fsgen.core.threads import cpu_has_avx2

needs_avx2 = pytest.mark.skipif(not cpu_has_avx2(), reason="the pins apply to x86-64 with AVX2")

_TRAIN_AND_HASH = """
import hashlib, json, sys
import fsgen
from fsgen.core.determinism import compute_threads, reproducibility, use_deterministic_algorithms
from fsgen.data.synthetic import base_corpus, generate_problems
from fsgen.data.tokenizer import train_tokenizer
from fsgen.models.train import batch_order, build_model, pack_blocks, train_causal_lm

compute_threads(int(sys.argv[1]))
use_deterministic_algorithms()
docs = base_corpus(generate_problems(300, split="train", seed=0), chat_share=0.25, expression_share=0.25)
tokenizer = train_tokenizer(docs, 300)
blocks = pack_blocks(tokenizer, docs, 64)
model = build_model({"hidden_size": 64, "num_layers": 2, "num_heads": 4}, len(tokenizer), tokenizer, 128, 0)
train_causal_lm(model, blocks, batch_order(len(blocks), 6, 8, 0), lr=3e-3, warmup_steps=2, progress=False)
digest = hashlib.sha256()
for _, tensor in sorted(model.state_dict().items()):
    digest.update(tensor.contiguous().numpy().tobytes())
print(json.dumps({"weights": digest.hexdigest(), **reproducibility()}))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    drop = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_CBWR"}
    env = {k: v for k, v in os.environ.items() if k not in drop and k != "ONEDNN_MAX_CPU_ISA"}
    return env | extra


def _train(threads: int, **env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _TRAIN_AND_HASH, str(threads)],
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_avx2
@pytest.mark.timeout(600)
def test_weights_do_not_depend_on_the_environments_thread_settings():
    """Importing fsgen pins the kernels to AVX2, and the stage's thread count decides:
    OMP_NUM_THREADS and MKL_NUM_THREADS (and so a machine's core count, torch's default) do not."""
    first = _train(2, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    second = _train(2, OMP_NUM_THREADS="3")
    for run in (first, second):
        assert run["cpu_capability"] == "AVX2" and run["threads"] == 2
        assert run["mkl_cbwr"] == "AVX2" and run["onednn_max_cpu_isa"] == "AVX2"
    assert first["weights"] == second["weights"]


@needs_avx2
def test_a_kernel_width_the_user_chose_is_kept_and_reported():
    code = (
        "import fsgen, torch\n"
        "from fsgen.core.determinism import check_pinned\n"
        "print(check_pinned())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=_clean_env(ATEN_CPU_CAPABILITY="default"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "DEFAULT" in done.stdout and "ATEN_CPU_CAPABILITY" in done.stdout


def test_compute_threads_rejects_a_count_that_is_not_a_positive_integer():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=f"threads must be an integer >= 1, got {bad!r}"):
            compute_threads(bad)
