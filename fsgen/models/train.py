"""Training a causal language model: a fresh GPT-NeoX of a rung's shape, token blocks and their
batch order, AdamW with warm-up and cosine decay, held-out loss and greedy answers through the
engine. The embedded ladder (`fsgen.models.ladder`) trains every rung with these."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from fsgen.data.scoring import last_number
from fsgen.data.synthetic import Problem
from fsgen.data.tasks import get_task
from fsgen.engine.collaborate import generate

SYNTHETIC_STOP = get_task("synthetic").stop  # where stage 00's greedy answers stop, as stage 01's
EXPRESSION_STOP = get_task("expression").stop


def build_model(
    arch: dict, vocab_size: int, tokenizer, max_positions: int, seed: int, *, tied: bool = False
):
    """A freshly initialised GPT-NeoX model of the rung's shape, seeded (`tied`: the output
    layer shares the input embedding, as a draft for a large vocabulary does)."""
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
        tie_word_embeddings=tied,
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
