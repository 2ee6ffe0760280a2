"""The quick start: two models, three prompts, one collaboration, wherever the notebook runs.

`quickstart_models` picks a System 1 / System 2 pair:
- `embedded`: the smallest and largest rung the pipeline trained (`data/models/embedded`);
- `hub`: two Pythia models from the model hub (needs the network, e.g. on Colab or Binder);
- `random`: two tiny GPT-NeoX models with random weights and a tokenizer trained on the spot
  (offline, seconds; they generate noise, but every step of the loop is real);
- `auto`: `embedded` if the pipeline has trained it, else `hub` on Colab or Binder, else `random`.
"""

from __future__ import annotations

import os
import sys

import pandas as pd

from fsgen.core.paths import resolve
from fsgen.data.synthetic import generate_problems, plain_document, plain_prompt
from fsgen.data.tokenizer import train_tokenizer
from fsgen.models.profiles import load_model
from fsgen.models.train import build_model

EMBEDDED = "data/models/embedded"
HUB_PAIR = ("EleutherAI/pythia-70m", "EleutherAI/pythia-160m")  # fp32: ~1 GB, fits Binder
CHOICES = ("auto", "embedded", "hub", "random")


def on_hosted_notebook() -> bool:
    """Whether this runs on Colab or Binder (where the hub is reachable)."""
    return "google.colab" in sys.modules or "BINDER_SERVICE_HOST" in os.environ


def _random_pair(seed: int):
    problems = generate_problems(200, seed=seed)
    tokenizer = train_tokenizer([plain_document(p) for p in problems], 300)
    small = build_model(
        {"hidden_size": 16, "num_layers": 1, "num_heads": 2}, len(tokenizer), tokenizer, 512, seed
    )
    large = build_model(
        {"hidden_size": 32, "num_layers": 2, "num_heads": 2},
        len(tokenizer),
        tokenizer,
        512,
        seed + 1,
    )
    return small.eval(), large.eval(), tokenizer


def quickstart_models(choice: str = "auto", seed: int = 0):
    """`(small, large, tokenizer, description)` for the quick start; see the module docstring."""
    if choice not in CHOICES:
        raise ValueError(f"unknown model choice {choice!r}; valid choices: {list(CHOICES)}")
    if choice == "auto":
        if (resolve(EMBEDDED) / "e3" / "config.json").exists():
            choice = "embedded"
        else:
            choice = "hub" if on_hosted_notebook() else "random"
    if choice == "embedded":
        folder = resolve(EMBEDDED)
        small, tokenizer = load_model(folder / "e0")
        large, _ = load_model(folder / "e3", with_tokenizer=False)
        return small, large, tokenizer, "embedded ladder: e0 (System 1) with e3 (System 2)"
    if choice == "hub":
        small, tokenizer = load_model(HUB_PAIR[0])
        large, _ = load_model(HUB_PAIR[1], with_tokenizer=False)
        return small, large, tokenizer, f"{HUB_PAIR[0]} (System 1) with {HUB_PAIR[1]} (System 2)"
    small, large, tokenizer = _random_pair(seed)
    return small, large, tokenizer, "two tiny random GPT-NeoX models (offline demo: noise)"


def quickstart_prompts() -> list[str]:
    """Three synthetic word problems in the plain prompt format."""
    return [plain_prompt(p.question) for p in generate_problems(3, split="test", seed=2024)]


def trace_preview(trace: pd.DataFrame, rows: int = 12) -> pd.DataFrame:
    """The first `rows` tokens of the trace with the columns worth reading first."""
    columns = [
        "prompt_id",
        "step",
        "token",
        "source",
        "large_called",
        "mismatch",
        "small_top1_prob",
        "small_entropy",
        "large_top1_prob",
    ]
    return trace[columns].head(rows)
