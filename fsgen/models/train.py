"""Training the embedded ladder: a Pythia-style suite of GPT-NeoX models on synthetic problems.

Every rung shares one tokenizer and sees the same token blocks in the same order; only the
shape (and the learning rate) differs, as in Pythia. Every rung but the largest then gets a tuned
("chat") copy, fine-tuned on the instruction format that the base corpus never uses.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM

from fsgen.core.determinism import use_deterministic_algorithms
from fsgen.core.io import write_metrics
from fsgen.core.paths import resolve
from fsgen.data.scoring import last_number
from fsgen.data.synthetic import (
    Problem,
    chat_document,
    chat_prompt,
    generate_problems,
    plain_document,
    plain_prompt,
)
from fsgen.data.tasks import accuracy, accuracy_interval, get_task
from fsgen.data.tokenizer import train_tokenizer
from fsgen.engine.collaborate import generate
from fsgen.models.profiles import Profile, count_parameters, load_config

SYNTHETIC_STOP = get_task("synthetic").stop  # where stage 00's greedy answers stop, as stage 01's


@dataclass(frozen=True)
class LadderConfig:
    """How the embedded ladder is trained (the `train_ladder` section of params.yaml)."""

    seed: int = 0
    vocab_size: int = 512
    train_problems: int = 2000
    test_problems: int = 50
    block_size: int = 256
    batch_size: int = 16
    steps: int = 30
    warmup_steps: int = 5
    tune_problems: int = 200
    tune_steps: int = 10
    tune_lr: float = 3e-4
    max_new_tokens: int = 160
    eval_batch_size: int = 50
    max_position_embeddings: int = 1024
    threads: int = 2


def build_model(arch: dict, vocab_size: int, tokenizer, max_positions: int, seed: int):
    """A freshly initialised GPT-NeoX model of the rung's shape, seeded."""
    hidden, layers, heads = arch["hidden_size"], arch["num_layers"], arch["num_heads"]
    if hidden % heads:
        raise ValueError(f"hidden_size {hidden} is not divisible by num_heads {heads}")
    config = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max_positions,
        rotary_pct=1.0,
        use_parallel_residual=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


def pack_blocks(tokenizer, documents: Sequence[str], block_size: int) -> torch.Tensor:
    """Concatenate documents, each closed by end-of-text, into rows of `block_size` tokens."""
    ids: list[int] = []
    for encoded in tokenizer(list(documents), add_special_tokens=False)["input_ids"]:
        ids.extend(encoded + [tokenizer.eos_token_id])
    n_blocks = len(ids) // block_size
    if n_blocks == 0:
        raise ValueError(f"corpus of {len(ids)} tokens is shorter than one block ({block_size})")
    return torch.tensor(ids[: n_blocks * block_size]).view(n_blocks, block_size)  # (B, T)


def batch_order(n_blocks: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """The block indices of every step: epochs of seeded permutations, the same for every rung."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        epoch = list(range(n_blocks))
        rng.shuffle(epoch)
        order.extend(epoch)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def optimize(
    module: torch.nn.Module,
    parameters: list[torch.nn.Parameter],
    step_loss: Callable[[list[int]], torch.Tensor],
    batches: list[list[int]],
    *,
    lr: float,
    warmup_steps: int,
    weight_decay: float,
    desc: str = "train",
    progress: bool = True,
) -> list[float]:
    """AdamW (gradients clipped to norm 1) with linear warm-up, then cosine decay to a tenth of
    `lr` over `batches`; `step_loss` maps one batch of row indices to its loss. Returns the loss
    of each step."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    total = len(batches)

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = (step - warmup_steps) / max(1, total - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    module.train()
    losses = []
    bar = tqdm(batches, desc=desc, disable=not progress, mininterval=2.0)
    for indices in bar:
        loss = step_loss(indices)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    module.eval()
    return losses


def train_causal_lm(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    batches: list[list[int]],
    *,
    lr: float,
    warmup_steps: int,
    desc: str = "train",
    progress: bool = True,
) -> list[float]:
    """Next-token training on `blocks` (n, block_size) in the order of `batches` (`optimize`,
    weight decay 0.1); returns the loss of each step."""

    def step_loss(indices: list[int]) -> torch.Tensor:
        batch = blocks[indices]  # (batch_size, block_size)
        return model(input_ids=batch, labels=batch).loss

    return optimize(
        model,
        list(model.parameters()),
        step_loss,
        batches,
        lr=lr,
        warmup_steps=warmup_steps,
        weight_decay=0.1,
        desc=desc,
        progress=progress,
    )


@torch.no_grad()
def heldout_loss(model, tokenizer, documents: Sequence[str], batch_size: int = 50) -> float:
    """Mean next-token loss per token over held-out documents, each scored on its own."""
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(documents), batch_size):
        chunk = [doc + tokenizer.eos_token for doc in documents[start : start + batch_size]]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        ids, mask = enc["input_ids"], enc["attention_mask"]  # (B, T)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        real = (mask[:, 1:] == 1) & (mask[:, :-1] == 1)  # predicted and predicting token real
        targets = ids[:, 1:].masked_fill(~real, -100)  # (B, T-1)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2).float(), targets, ignore_index=-100, reduction="sum"
        )
        total_loss += loss.item()
        total_tokens += int((targets != -100).sum())
    return total_loss / total_tokens


def greedy_answers(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 50,
    stop: Sequence[str] = SYNTHETIC_STOP,
) -> list[str]:
    """Greedy continuations of `prompts` through the engine (its stopping rule: end ids and the
    synthetic task's stop strings, the chat end tag among them), cut at the first stop."""
    result = generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, stop=stop
    )
    return result.texts


def answer_hits(
    model,
    tokenizer,
    problems: Sequence[Problem],
    prompt_fn: Callable[[str], str],
    max_new_tokens: int,
    batch_size: int = 50,
) -> list[bool]:
    """For each problem, whether the greedy answer's last number equals the gold answer."""
    prompts = [prompt_fn(p.question) for p in problems]
    outputs = greedy_answers(model, tokenizer, prompts, max_new_tokens, batch_size)
    return [last_number(text) == p.answer for text, p in zip(outputs, problems, strict=True)]


def train_ladder(
    profile: Profile,
    config: LadderConfig,
    models_dir: str | Path,
    *,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every rung of an embedded `profile` (and the tuned copies) into `models_dir`.

    Returns `(ladder, curves)`: one row per model with its parameter counts, held-out loss,
    accuracy (plain and chat prompts) and training seconds; and the training loss of every step.
    """
    if profile.kind != "embedded":
        raise ValueError(
            f"only embedded profiles are trained here; {profile.name!r} is {profile.kind!r}"
        )
    torch.set_num_threads(config.threads)
    use_deterministic_algorithms()
    models_dir = Path(models_dir)
    train = generate_problems(config.train_problems, split="train", seed=config.seed)
    test = generate_problems(config.test_problems, split="test", seed=config.seed)
    tune = generate_problems(config.tune_problems, split="train", seed=config.seed + 1)
    base_docs = [plain_document(p) for p in train]
    tokenizer = train_tokenizer(
        base_docs + [chat_document(p) for p in tune[:50]], config.vocab_size
    )
    tokenizer.save_pretrained(models_dir / "tokenizer")
    blocks = pack_blocks(tokenizer, base_docs, config.block_size)
    batches = batch_order(len(blocks), config.steps, config.batch_size, config.seed)
    tune_blocks = pack_blocks(tokenizer, [chat_document(p) for p in tune], config.block_size)
    tune_batches = batch_order(len(tune_blocks), config.tune_steps, config.batch_size, config.seed)
    test_docs = [plain_document(p) for p in test]

    rows, curves = [], []
    for index, rung in enumerate(profile.rungs):
        model = build_model(
            rung.arch,
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
            lr=rung.arch["lr"],
            warmup_steps=config.warmup_steps,
            desc=rung.name,
            progress=progress,
        )
        seconds = time.perf_counter() - started
        curves += [{"model": rung.name, "step": s, "loss": v} for s, v in enumerate(losses)]
        rows.append(
            _evaluate(rung.name, "base", model, tokenizer, test, test_docs, config, seconds)
        )
        _save(model, tokenizer, models_dir / rung.name)
        if index == len(profile.rungs) - 1 or rung.tuned is None:
            continue
        started = time.perf_counter()
        losses = train_causal_lm(
            model,
            tune_blocks,
            tune_batches,
            lr=config.tune_lr,
            warmup_steps=1,
            desc=f"{rung.name}-chat",
            progress=progress,
        )
        seconds = time.perf_counter() - started
        curves += [
            {"model": f"{rung.name}-chat", "step": s, "loss": v} for s, v in enumerate(losses)
        ]
        rows.append(
            _evaluate(
                f"{rung.name}-chat", "tuned", model, tokenizer, test, test_docs, config, seconds
            )
        )
        _save(model, tokenizer, models_dir / f"{rung.name}-chat")
    return pd.DataFrame(rows), pd.DataFrame(curves)


def _evaluate(name, variant, model, tokenizer, test, test_docs, config, seconds) -> dict:
    counts = count_parameters(model)
    row = {
        "model": name,
        "variant": variant,
        "params": counts["total"],
        "non_embedding_params": counts["non_embedding"],
        "heldout_loss": heldout_loss(model, tokenizer, test_docs, config.eval_batch_size),
        "train_seconds": seconds,
    }
    for column, prompt_fn in (("accuracy", plain_prompt), ("chat_accuracy", chat_prompt)):
        hits = answer_hits(
            model, tokenizer, test, prompt_fn, config.max_new_tokens, config.eval_batch_size
        )
        low, high = accuracy_interval(hits)
        row |= {column: accuracy(hits), f"{column}_low": low, f"{column}_high": high}
    return row


def _save(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


ACCURACIES = tuple(
    f"{a}{end}" for a in ("accuracy", "chat_accuracy") for end in ("", "_low", "_high")
)
MEASURED = ("params", "non_embedding_params", "heldout_loss", *ACCURACIES)


def ladder_metrics(ladder: pd.DataFrame, columns: Sequence[str] = MEASURED) -> dict[str, float]:
    """Flat metrics `<model>.<column>` for every model and each of `columns` it has."""
    return {
        f"{row['model']}.{col}": row[col]
        for row in ladder.to_dict("records")
        for col in columns
        if col in row and not pd.isna(row[col])
    }


def write_ladder_outputs(
    ladder: pd.DataFrame,
    curves: pd.DataFrame,
    metrics_file: str | Path,
    timing_file: str | Path,
    results_dir: str | Path,
) -> None:
    """Write the ladder's metrics (deterministic), its timings (not), the table and the curves.

    Timings live in their own file so that reruns leave `metrics_file` byte-identical.
    """
    write_metrics(metrics_file, ladder_metrics(ladder))
    write_metrics(timing_file, ladder_metrics(ladder, ["train_seconds"]))
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    table = ladder.drop(columns=["train_seconds"], errors="ignore")
    table.to_csv(results_dir / "ladder.csv", index=False, float_format="%.6g")
    curves.to_csv(results_dir / "loss_curves.csv", index=False, float_format="%.6g")


def describe_hub_ladder(profile: Profile) -> pd.DataFrame:
    """Parameter counts of a hub ladder from each rung's config alone (no weights downloaded)."""
    rows = []
    for rung in profile.rungs:
        for name, source, variant in (
            (rung.name, rung.model, "base"),
            (f"{rung.name}-chat", rung.tuned, "tuned"),
        ):
            if source is None:
                continue
            config = load_config(source, revision=rung.revision)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config)
            counts = count_parameters(model)
            rows.append(
                {
                    "model": name,
                    "variant": variant,
                    "source": source,
                    "revision": rung.revision,
                    "params": counts["total"],
                    "non_embedding_params": counts["non_embedding"],
                }
            )
    return pd.DataFrame(rows)


def build_ladder(
    profile: Profile, config: LadderConfig, *, progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `train_ladder` stage: train an embedded profile, or describe a hub one.

    Either way the ladder table is also written as `ladder.csv` into the profile's models_dir,
    and `(ladder, curves)` are returned (curves is empty for a hub ladder).
    """
    models_dir = resolve(profile.models_dir)
    if models_dir.exists():
        shutil.rmtree(models_dir)
    if profile.kind == "embedded":
        ladder, curves = train_ladder(profile, config, models_dir, progress=progress)
    else:
        ladder, curves = (
            describe_hub_ladder(profile),
            pd.DataFrame(columns=["model", "step", "loss"]),
        )
    models_dir.mkdir(parents=True, exist_ok=True)
    ladder.drop(columns=["train_seconds"], errors="ignore").to_csv(
        models_dir / "ladder.csv", index=False, float_format="%.6g"
    )
    return ladder, curves
