"""Training LLM-to-SLM and its baseline on one budget: the projector and the small model of an
`LLMToSLM` (the large model frozen), and the small model fine-tuned alone, on the same
(prompt, response) pairs, steps and learning rate, with the loss on response tokens only.

Prompts are tokenized by the large model's tokenizer (as `LLMToSLM` reads them) and left padded;
responses by the small model's, right padded and closed by its end token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fsgen.core.names import name_list
from fsgen.data.tasks import GENERATED, build_prompts, generated_examples, get_task, load_examples
from fsgen.engine.batch import padding_id
from fsgen.models.llm_to_slm import LLMToSLM, large_prompts, response_loss
from fsgen.models.train import batch_order, optimize


def small_response_loss(small, prompt_ids, prompt_mask, response_ids, response_mask):
    """`response_loss` of a plain small model (its own embedding everywhere)."""
    ids = torch.cat([prompt_ids, response_ids], 1).to(small.device)  # (B, P + R)
    embeds = small.get_input_embeddings()(ids)
    return response_loss(small, embeds, prompt_mask, response_ids.to(small.device), response_mask)


@dataclass(frozen=True)
class Pair:
    """One training example: the prompt and the response that follows it."""

    prompt: str
    response: str


def training_pairs(task: str, n: int, *, seed: int = 0) -> list[Pair]:
    """`n` (prompt, response) pairs of `task`'s training split, prompts as
    `fsgen.data.tasks.build_prompts` makes them, responses the reference solutions.

    Generated tasks (synthetic, expression) draw fresh training problems from
    `fsgen.data.synthetic.generate_problems(split="train")`; the prompt is "Question: ...\\nAnswer:"
    (or "...\\nExpression:") and the response " <worked solution>" (or " <formula>"), as in the
    ladder's corpus.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    task_spec = get_task(task)
    if "train" not in task_spec.splits:
        raise ValueError(f"task {task!r} has no train split (splits: {task_spec.splits})")
    if task_spec.name in GENERATED:
        examples = generated_examples(task_spec.name, n, split="train", seed=seed)
    else:
        examples = load_examples(task_spec, n_prompts=n, seed=seed, split="train")
    prompts = build_prompts(task_spec, examples)
    return [Pair(p, f" {e.solution.strip()}") for p, e in zip(prompts, examples, strict=True)]


def mixed_training_pairs(tasks: Sequence[str], n: int, *, seed: int = 0) -> list[Pair]:
    """`n` training pairs of each of `tasks`, interleaved (one of each task in turn)."""
    tasks = task_list(tasks)
    per_task = [training_pairs(task, n, seed=seed) for task in tasks]
    return [pair for row in zip(*per_task, strict=True) for pair in row]


def task_list(tasks: str | Sequence[str]) -> list[str]:
    """`tasks` as a non-empty list of registered task names (`name_list`: one name is a list
    of one)."""
    tasks = name_list(tasks, "tasks")
    for task in tasks:
        get_task(task)
    return tasks


@dataclass
class Encoded:
    """Training pairs as token ids: prompts (large tokenizer), responses (small, EOS closed)."""

    prompts: list[list[int]]
    responses: list[list[int]]
    prompt_pad: int
    response_pad: int

    def collate(self, rows: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """Left-padded prompts and right-padded responses: ids and masks (B, P), (B, R)."""
        p_ids, p_mask = _pad([self.prompts[r] for r in rows], self.prompt_pad, left=True)
        r_ids, r_mask = _pad([self.responses[r] for r in rows], self.response_pad, left=False)
        return p_ids, p_mask, r_ids, r_mask


def _pad(rows: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span], mask[i, span] = torch.tensor(row, dtype=torch.long), 1
    return ids, mask


def encode_pairs(pairs: Sequence[Pair], prompt_tokenizer, response_tokenizer) -> Encoded:
    """Tokenize prompts and responses separately; every response ends in EOS."""
    if not pairs:
        raise ValueError("no training pairs given")
    prompts = large_prompts(prompt_tokenizer, [p.prompt for p in pairs])
    prompts = prompt_tokenizer(prompts, add_special_tokens=False)["input_ids"]
    responses = response_tokenizer([p.response for p in pairs], add_special_tokens=False)
    eos = response_tokenizer.eos_token_id
    return Encoded(
        prompts,
        [ids + [eos] for ids in responses["input_ids"]],
        padding_id(prompt_tokenizer),
        padding_id(response_tokenizer),
    )


@dataclass(frozen=True)
class TrainConfig:
    """One training budget, shared by LLM-to-SLM and the fine-tuned small baseline."""

    steps: int = 200
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 10
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")


def _optimize(
    module: torch.nn.Module,
    parameters: list[torch.nn.Parameter],
    step_loss: Callable[[list[int]], torch.Tensor],
    n_examples: int,
    config: TrainConfig,
    desc: str,
    progress: bool,
) -> list[float]:
    """`fsgen.models.train.optimize` (no weight decay) over seeded epochs of the `n_examples` rows."""
    torch.manual_seed(config.seed)
    batches = batch_order(n_examples, config.steps, config.batch_size, config.seed)
    return optimize(
        module,
        parameters,
        step_loss,
        batches,
        lr=config.lr,
        warmup_steps=config.warmup_steps,
        weight_decay=0.0,
        desc=desc,
        progress=progress,
    )


def train_llm_to_slm(
    model: LLMToSLM, pairs: Sequence[Pair], config: TrainConfig, *, progress: bool = True
) -> list[float]:
    """Train the projector and the small model (the large model stays frozen) on the response
    tokens of `pairs`; returns the loss of every step."""
    data = encode_pairs(pairs, model.large_tokenizer, model.small_tokenizer)
    model.freeze_large()

    def step_loss(rows: list[int]) -> torch.Tensor:
        return model(*data.collate(rows))

    return _optimize(
        model, model.trainable_parameters(), step_loss, len(pairs), config, "llm-to-slm", progress
    )


def fine_tune_small(
    small, tokenizer, pairs: Sequence[Pair], config: TrainConfig, *, progress: bool = True
) -> list[float]:
    """The baseline with the same budget: the small model alone fine-tuned on the response tokens
    of `pairs` (same data, steps and learning rate); returns the loss of every step."""
    data = encode_pairs(pairs, tokenizer, tokenizer)

    def step_loss(rows: list[int]) -> torch.Tensor:
        return small_response_loss(small, *data.collate(rows))

    return _optimize(
        small, list(small.parameters()), step_loss, len(pairs), config, "fine-tune small", progress
    )
