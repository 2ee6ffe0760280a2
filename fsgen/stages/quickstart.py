"""The quick start: two models, three prompts, one collaboration, wherever the notebook runs.

`quickstart_models` picks a System 1 / System 2 pair:
- `embedded`: the smallest and largest rung the pipeline trained (`data/models/embedded`);
- `hub`: two Pythia models from the model hub (needs the network; for Colab or Binder users
  who want real models);
- `packaged`: the small trained pair shipped inside fsgen (`fsgen/assets/quickstart`, written by
  `python -m fsgen.models.quickstart_pair`): offline, a second to load, and it answers the
  synthetic word problems in their worked format, the large one more often right;
- `auto`: `embedded` if the pipeline has trained it, else `packaged`.
"""

from __future__ import annotations

import pandas as pd

from fsgen.core.paths import resolve
from fsgen.data.synthetic import generate_problems, plain_prompt
from fsgen.models.profiles import load_model
from fsgen.models.quickstart_pair import ASSETS, load_quickstart_pair, read_record

EMBEDDED = "data/models/embedded"
HUB_PAIR = ("EleutherAI/pythia-70m", "EleutherAI/pythia-160m")  # fp32: ~1 GB, fits Binder
CHOICES = ("auto", "embedded", "hub", "packaged")


def quickstart_models(choice: str = "auto"):
    """`(small, large, tokenizer, description)` for the quick start; see the module docstring."""
    if choice not in CHOICES:
        raise ValueError(f"unknown model choice {choice!r}; valid choices: {list(CHOICES)}")
    if choice == "auto":
        if (resolve(EMBEDDED) / "e3" / "config.json").exists():
            choice = "embedded"
        else:
            choice = "packaged"
    if choice == "embedded":
        folder = resolve(EMBEDDED)
        small, tokenizer = load_model(folder / "e0")
        large, _ = load_model(folder / "e3", with_tokenizer=False)
        return small, large, tokenizer, "embedded ladder: e0 (System 1) with e3 (System 2)"
    if choice == "hub":
        small, tokenizer = load_model(HUB_PAIR[0])
        large, _ = load_model(HUB_PAIR[1], with_tokenizer=False)
        return small, large, tokenizer, f"{HUB_PAIR[0]} (System 1) with {HUB_PAIR[1]} (System 2)"
    small, large, tokenizer = load_quickstart_pair(ASSETS)
    return small, large, tokenizer, packaged_description(read_record(ASSETS))


def packaged_description(record: dict) -> str:
    """What the shipped pair is, from its record: shapes, sizes, held-out loss and accuracy."""
    parts = []
    for role, system in (("small", "System 1"), ("large", "System 2")):
        m = record["models"][role]
        s = m["shape"]
        parts.append(
            f"{role} ({system}: hidden {s['hidden_size']}, {s['num_layers']} layers, "
            f"{m['params'] / 1e3:.0f}k params, held-out loss {m['heldout_loss']:.3f}, "
            f"accuracy {m['accuracy']:.1%} [{m['accuracy_low']:.1%}, {m['accuracy_high']:.1%}] "
            f"on {m['accuracy_problems']} problems)"
        )
    return "packaged pair (fsgen/assets/quickstart): " + " with ".join(parts)


def quickstart_prompts() -> list[str]:
    """Three synthetic word problems in the plain prompt format."""
    return [plain_prompt(p.question) for p in generate_problems(3, split="test", seed=2024)]


def marked_texts(trace: pd.DataFrame, open_mark: str = "[", close_mark: str = "]") -> list[str]:
    """Each prompt's generated text rebuilt from the trace, with every token System 2 changed
    (the trace's `mismatch`: it was consulted and its token differs from System 1's) between
    `open_mark` and `close_mark`."""
    missing = {"prompt_id", "step", "token", "mismatch"} - set(trace.columns)
    if missing:
        raise ValueError(f"trace lacks columns {sorted(missing)}; expected a collaborate trace")
    texts = []
    for _, rows in trace.sort_values(["prompt_id", "step"]).groupby("prompt_id", sort=True):
        pieces = [
            f"{open_mark}{token}{close_mark}" if changed else token
            for token, changed in zip(rows["token"], rows["mismatch"], strict=True)
        ]
        texts.append("".join(pieces))
    return texts


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
