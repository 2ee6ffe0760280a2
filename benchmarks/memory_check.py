"""Estimated against measured peak memory of one oracle logging unit on CPU: two tiny Qwen2
models at the real vocabulary (151,936), so the scored logits dominate, as on a GPU.

    python benchmarks/memory_check.py 8 64    # batch, new tokens

Prints the growth of the process's peak resident memory over the run (the weights were loaded
before) beside `fsgen.analysis.estimates.unit_memory` without the weights. One run, one machine.
"""

import gc
import json
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fake_hub, from a checkout

import fsgen  # noqa: E402
from fsgen.analysis.estimates import Shape, unit_memory  # noqa: E402
from tests import fake_hub  # noqa: E402

torch.set_num_threads(1)
B, NEW = int(sys.argv[1]), int(sys.argv[2])
tok = fake_hub.hf_tokenizer("qwen", fake_hub.corpus(200_000))
ids = ["Qwen/Qwen1.5-0.5B", "Qwen/Qwen1.5-1.8B"]
models, shapes = [], []
for r, i in enumerate(ids):
    s = fake_hub.tiny_shape(i, r)
    m = fake_hub.random_model(i, s, seed=r)
    c = m.config
    shapes.append(
        Shape(
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size,
            c.num_key_value_heads,
            c.vocab_size,
            "qwen",
            c.tie_word_embeddings,
        )
    )
    models.append(m)
prompt = "Question: " + "a baker sells bread " * 40
prompts = [prompt] * B
P = len(tok(prompt, add_special_tokens=False)["input_ids"])
fsgen.collaborate(
    models[0], models[1], tok, prompts[:1], method="oracle", max_new_tokens=2, batch_size=1
)  # warm
gc.collect()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = fsgen.collaborate(
    models[0], models[1], tok, prompts, method="oracle", max_new_tokens=NEW, batch_size=B, stop=None
)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
n = max(map(len, out.tokens))
est = unit_memory([shapes[1], shapes[0]], method="oracle", batch=B, prompt=P, new=n, per_param=4)
weights = est.pop("weights")  # already resident before the run
print(
    json.dumps(
        {
            "batch": B,
            "prompt": P,
            "new": n,
            "measured_growth_MB": round((peak - base) / 1e6, 1),
            "estimated_beyond_weights_MB": round(sum(est.values()) / 1e6, 1),
            "parts_MB": {k: round(v / 1e6, 1) for k, v in est.items()},
            "weights_MB": round(weights / 1e6, 1),
        }
    )
)
