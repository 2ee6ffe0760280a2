"""The quick start's shipped System 1 / System 2 pair: two small models trained like the ladder.

The embedded ladder (`fsgen.models.train`) takes the 45-minute `make repro` to train; without it
the quick start would have nothing trained to show offline. This module trains a small and a
large GPT-NeoX model on the ladder's synthetic corpus, with the ladder's own functions, and
writes them as package data (`fsgen/assets/quickstart`): one tokenizer, `small/` and `large/`
(safetensors in float16, loaded back as float32) and `RECORD`, a JSON account of what made them
(settings, shapes, seed, library versions, and each model's held-out loss and plain accuracy).

Rewrite the assets (about 2-3 minutes on two CPU threads) with

    python -m fsgen.models.quickstart_pair
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from fsgen.core.determinism import compute_threads, reproducibility, use_deterministic_algorithms
from fsgen.core.io import atomic_directory, atomic_write_text
from fsgen.core.stats import wilson_interval
from fsgen.data.synthetic import base_corpus, generate_problems, plain_document, plain_prompt
from fsgen.data.tokenizer import train_tokenizer
from fsgen.models.profiles import count_parameters, load_model
from fsgen.models.train import (
    answer_hits,
    batch_order,
    build_model,
    heldout_loss,
    pack_blocks,
    train_causal_lm,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "quickstart"
RECORD = "quickstart_pair.json"
ROLES = ("small", "large")


@dataclass(frozen=True)
class Shape:
    """One model's GPT-NeoX shape and its learning rate (as a rung of params.yaml)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    lr: float


@dataclass(frozen=True)
class QuickstartPairConfig:
    """How the shipped pair is trained: the ladder's corpus settings, two of its shapes (e0 and
    e2 of the embedded profile) and its training schedule."""

    seed: int = 0
    vocab_size: int = 512
    train_problems: int = 30000
    chat_share: float = 0.25
    expression_share: float = 0.25
    block_size: int = 256
    batch_size: int = 8
    steps: int = 1000
    warmup_steps: int = 50
    max_position_embeddings: int = 1024
    small: Shape = field(default_factory=lambda: Shape(24, 2, 2, 0.006))
    large: Shape = field(default_factory=lambda: Shape(64, 2, 4, 0.004))
    test_problems: int = 200  # held-out problems for the record's loss (the ladder's count)
    accuracy_problems: int = 200  # held-out problems for the record's plain accuracy
    max_new_tokens: int = 160
    threads: int = 2


def build_quickstart_pair(
    out_dir: str | Path = ASSETS,
    config: QuickstartPairConfig | None = None,
    *,
    progress: bool = True,
) -> dict:
    """Train the pair deterministically and write it to `out_dir` atomically (the folder is
    replaced only once everything is written). Returns the record that is saved beside it."""
    config = config or QuickstartPairConfig()
    compute_threads(config.threads)
    use_deterministic_algorithms()
    train = generate_problems(config.train_problems, split="train", seed=config.seed)
    test = generate_problems(config.test_problems, split="test", seed=config.seed)
    docs = base_corpus(
        train, chat_share=config.chat_share, expression_share=config.expression_share
    )
    tokenizer = train_tokenizer(docs, config.vocab_size)
    blocks = pack_blocks(tokenizer, docs, config.block_size)
    batches = batch_order(len(blocks), config.steps, config.batch_size, config.seed)
    test_docs = [plain_document(p) for p in test]
    record: dict = {
        "settings": asdict(config),
        "transformers": transformers.__version__,
        **reproducibility(),  # torch's version, kernel width and threads: what decides the bytes
        "train_blocks": len(blocks),
        "models": {},
    }
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as partial:
        tokenizer.save_pretrained(partial / "tokenizer")
        for index, role in enumerate(ROLES):
            shape: Shape = getattr(config, role)
            model = build_model(
                asdict(shape),
                len(tokenizer),
                tokenizer,
                config.max_position_embeddings,
                config.seed + index,
            )
            started = time.perf_counter()
            losses = train_causal_lm(
                model,
                blocks,
                batches,
                lr=shape.lr,
                warmup_steps=config.warmup_steps,
                desc=role,
                progress=progress,
            )
            seconds = time.perf_counter() - started
            hits = answer_hits(
                model,
                tokenizer,
                test[: config.accuracy_problems],
                plain_prompt,
                config.max_new_tokens,
            )
            record["models"][role] = {
                "shape": asdict(shape),
                "seed": config.seed + index,
                "params": count_parameters(model)["total"],
                "final_train_loss": losses[-1],
                "heldout_loss": heldout_loss(model, tokenizer, test_docs),
                "accuracy": sum(hits) / len(hits),
                "accuracy_low": wilson_interval(sum(hits), len(hits))[0],
                "accuracy_high": wilson_interval(sum(hits), len(hits))[1],
                "accuracy_problems": len(hits),
            }
            if progress:
                print(f"{role}: trained in {seconds:.0f} s; {record['models'][role]}")
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
