"""The quick start's shipped System 1 / System 2 pair: two small models trained like the ladder.

The embedded ladder (`fsgen.models.ladder`) takes most of `make repro`'s time to train; without it
the quick start would have nothing trained to show offline. This module trains a small and a
large GPT-NeoX model exactly as stage 00 trains a rung (`train_ladder`, untuned), and
writes them as package data (`fsgen/assets/quickstart`): one tokenizer, `small/` and `large/`
(safetensors in float16, loaded back as float32) and `RECORD`, a JSON account of what made them
(settings, shapes, seed, library versions, and each model's held-out loss and plain accuracy).

Rewrite the assets (about 2 minutes on two cores) with

    python -m fsgen.models.quickstart_pair
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from fsgen.core.determinism import reproducibility
from fsgen.core.io import atomic_directory, atomic_write_text
from fsgen.models.ladder import LadderConfig, train_ladder
from fsgen.models.profiles import Profile, Rung, load_model

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "quickstart"
RECORD = "quickstart_pair.json"
ROLES = ("small", "large")


@dataclass(frozen=True)
class QuickstartPairConfig:
    """How the shipped pair is trained: the ladder's corpus settings, two of its shapes (e0 and
    e2 of the embedded profile) and its training schedule (params.yaml's values, which a test
    holds these to)."""

    seed: int = 0
    vocab_size: int = 512
    train_problems: int = 30000
    chat_share: float = 0.25
    expression_share: float = 0.25
    block_size: int = 256
    batch_size: int = 4
    steps: int = 2000
    warmup_steps: int = 100
    max_position_embeddings: int = 1024
    # each model's rung `arch`, as in params.yaml: its GPT-NeoX shape and learning rate
    small: dict = field(
        default_factory=lambda: {"hidden_size": 24, "num_layers": 2, "num_heads": 2, "lr": 0.0096}
    )
    large: dict = field(
        default_factory=lambda: {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "lr": 0.0024}
    )
    test_problems: int = 200  # held-out problems for the record's loss and accuracy (as the ladder)
    max_new_tokens: int = 160
    threads: int = 1
    workers: int = 2  # the two models train at once (wall time only)


def build_quickstart_pair(
    out_dir: str | Path = ASSETS,
    config: QuickstartPairConfig | None = None,
    *,
    progress: bool = True,
) -> dict:
    """Train the pair deterministically, through the ladder's own `train_ladder` (a two-rung
    embedded profile, untuned), and write it to `out_dir` atomically (the folder is replaced only
    once everything is written). Returns the record that is saved beside it."""
    config = config or QuickstartPairConfig()
    shared = {f.name for f in fields(LadderConfig)} & {f.name for f in fields(config)}
    training = LadderConfig(**{name: getattr(config, name) for name in shared})  # untuned
    rungs = tuple(Rung(name=role, model=role, arch=dict(getattr(config, role))) for role in ROLES)
    profile = Profile(name="quickstart", kind="embedded", rungs=rungs)
    with tempfile.TemporaryDirectory() as scratch:
        ladder, curves = train_ladder(profile, training, scratch, progress=progress)
        rows = ladder.set_index("model")
        record: dict = {
            "settings": asdict(config),
            "transformers": transformers.__version__,
            **reproducibility(),  # torch's version, kernel width and threads: what decides the bytes
            "models": {},
        }
        for index, role in enumerate(ROLES):
            row = rows.loc[role]
            record["models"][role] = {
                "shape": dict(getattr(config, role)),
                "seed": config.seed + index,  # train_ladder seeds a rung by its place
                "params": int(row["params"]),
                "final_train_loss": float(curves.loc[curves["model"] == role, "loss"].iloc[-1]),
                "heldout_loss": float(row["heldout_loss"]),
                "accuracy": float(row["accuracy"]),
                "accuracy_low": float(row["accuracy_low"]),
                "accuracy_high": float(row["accuracy_high"]),
                "accuracy_problems": config.test_problems,
            }
        out_dir = Path(out_dir)
        with atomic_directory(out_dir) as partial:
            AutoTokenizer.from_pretrained(Path(scratch) / "tokenizer").save_pretrained(
                partial / "tokenizer"
            )
            for role in ROLES:
                model, _ = load_model(Path(scratch) / role, dtype="float32", with_tokenizer=False)
                model.to(torch.float16).save_pretrained(partial / role)
            atomic_write_text(partial / RECORD, json.dumps(record, indent=1) + "\n")
    return record


def read_record(folder: str | Path = ASSETS) -> dict:
    """The record saved with the pair in `folder`."""
    path = Path(folder) / RECORD
    if not path.is_file():
        raise FileNotFoundError(
            f"no quick-start pair record at {path}; run `python -m fsgen.models.quickstart_pair`"
        )
    return json.loads(path.read_text())


def load_quickstart_pair(
    folder: str | Path = ASSETS,
) -> tuple[torch.nn.Module, torch.nn.Module, PreTrainedTokenizerBase]:
    """`(small, large, tokenizer)` of the shipped pair, the models in float32 and in eval mode."""
    folder = Path(folder)
    for part in (*ROLES, "tokenizer"):
        if not (folder / part).is_dir():
            raise FileNotFoundError(
                f"the quick-start pair in {folder} lacks {part!r}; expected {[*ROLES, 'tokenizer']}"
            )
    small, _ = load_model(folder / "small", dtype="float32", with_tokenizer=False)
    large, _ = load_model(folder / "large", dtype="float32", with_tokenizer=False)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    return small, large, tokenizer


if __name__ == "__main__":
    build_quickstart_pair()
