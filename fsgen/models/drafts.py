"""Drafts for a packaged model: small GPT-NeoX models trained on its tokenizer, by the embedded
ladder's training code, on GSM8K solutions in the chat format the large model answers in.

Every draft sees the same blocks in the same order (as the ladder's rungs); only the shape and the
learning rate differ. The documents are GSM8K's training solutions (the calculator annotations
`<<48/2=24>>` removed: the large model never writes them, and they are not in the task's prompts),
each a user turn holding the question and an assistant turn holding the solution, rendered by the
large model's own chat template. The last `heldout_questions` training questions are held out:
their solutions give the held-out loss, and the large model's greedy answers to the first
`reference_answers` of them give each draft's agreement (the share of the large model's tokens
that the draft, fed the same prefix, predicts as its greedy token: one minus the oracle's
collaboration frequency, on questions no draft trained on).

Each draft is one job (`fsgen.core.parallel.run_jobs`: `workers` at once, `threads` each) and is
saved atomically with a record of what made it, so a rerun reads back the drafts it finished.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

from fsgen.core.determinism import compute_threads
from fsgen.core.io import atomic_write_bytes
from fsgen.core.parallel import check_workers, run_jobs
from fsgen.core.source import code_fingerprint
from fsgen.data.tasks import get_task, load_examples, user_message
from fsgen.engine.collaborate import generate
from fsgen.models.ladder import RECORD, collect_ladder, finished_model, save_rung
from fsgen.models.profiles import Profile, count_parameters, load_model
from fsgen.models.train import batch_order, build_model, heldout_loss, pack_blocks, train_causal_lm

ANNOTATION = re.compile(r"<<[^>]*>>")
REFERENCES = "reference_answers.json"  # in the models folder: the large model's greedy answers


@dataclass(frozen=True)
class DraftConfig:
    """How the drafts of a packaged profile are trained (`train_ladder.drafts` in params.yaml)."""

    data_dir: str | None
    seed: int
    block_size: int
    batch_size: int
    steps: int
    warmup_steps: int
    heldout_questions: int
    reference_answers: int
    max_new_tokens: int
    eval_batch_size: int
    threads: int
    workers: int | str
    executor: object = "local"


def chat_messages(example, answer: str | None = None) -> list[dict[str, str]]:
    """A GSM8K question as the user's turn token logging asks it in (zero-shot), and its answer
    as the assistant's, if given."""
    messages = [{"role": "user", "content": user_message("gsm8k", example)}]
    return messages + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def solution_text(answer: str) -> str:
    """A GSM8K training solution without its calculator annotations."""
    return ANNOTATION.sub("", answer)


def draft_documents(tokenizer, examples) -> list[str]:
    """Each example's question and solution as one chat dialogue in the tokenizer's template."""
    return [
        tokenizer.apply_chat_template(
            chat_messages(e, solution_text(e.record["answer"])), tokenize=False
        )
        for e in examples
    ]


def chat_prompts(tokenizer, examples) -> list[str]:
    """Each example's question as a chat prompt awaiting the assistant's answer."""
    return [
        tokenizer.apply_chat_template(chat_messages(e), tokenize=False, add_generation_prompt=True)
        for e in examples
    ]


@dataclass(frozen=True)
class DraftJob:
    rung: object
    index: int
    config: DraftConfig
    profile: str
    folder: Path
    key: str
    tokenizer_dir: Path
    blocks: torch.Tensor  # (n_blocks, block_size)
    batches: list[list[int]]
    heldout: list[str]  # held-out documents
    references: list[tuple[list[int], list[int]]]  # (prompt ids, the large model's answer ids)


def train_draft(job: DraftJob) -> dict[str, float]:
    """Train one draft, measure it and save it; returns its training seconds by name."""
    tokenizer = AutoTokenizer.from_pretrained(job.tokenizer_dir)
    config, rung = job.config, job.rung
    model = build_model(
        rung.arch,
        len(tokenizer),
        tokenizer,
        2 * config.block_size,
        config.seed + job.index,
        tied=True,
    )
    started = time.perf_counter()
    losses = train_causal_lm(
        model,
        job.blocks,
        job.batches,
        lr=rung.arch["lr"],
        warmup_steps=config.warmup_steps,
        desc=rung.name,
        progress=False,
    )
    seconds = time.perf_counter() - started
    row = draft_row(rung.name, "base", model, tokenizer, job.heldout, job.references, config)
    save_rung(model, tokenizer, job.folder, (job.profile, job.key), row, losses)
    return {rung.name: seconds}


def draft_row(name, variant, model, tokenizer, heldout, references, config) -> dict:
    """Parameters, held-out loss and agreement with the large model's greedy answers."""
    counts = count_parameters(model)
    return {
        "model": name,
        "variant": variant,
        "params": counts["total"],
        "non_embedding_params": counts["non_embedding"],
        "heldout_loss": heldout_loss(model, tokenizer, heldout, config.eval_batch_size),
        "agreement": agreement(model, references),
    }


@torch.no_grad()
def agreement(model, references: Sequence[tuple[list[int], list[int]]]) -> float:
    """The share of the reference answers' tokens that `model`, fed the prompt and the answer
    before each token, predicts as its greedy token (batch 1: no padding to get right)."""
    hits = total = 0
    for prompt, answer in references:
        if not answer:
            continue
        ids = torch.tensor([prompt + answer])  # (1, T)
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]  # (len(answer), V)
        hits += int((logits.argmax(-1) == torch.tensor(answer)).sum())
        total += len(answer)
    return hits / total if total else float("nan")


def reference_answers(large, tokenizer, examples, config: DraftConfig) -> list[tuple[list, list]]:
    """The large model's greedy answers (through the engine, the task's stopping rule) to
    `examples`' chat prompts, as (prompt ids, answer ids)."""
    prompts = chat_prompts(tokenizer, examples)
    result = generate(
        large,
        tokenizer,
        prompts,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.eval_batch_size,
        stop=get_task("gsm8k").stop,
    )
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return list(zip(prompt_ids, result.tokens, strict=True))


def train_drafts(profile: Profile, config: DraftConfig, models_dir: Path, *, progress=True):
    """Train the drafts of a packaged `profile` (its largest rung converted already into
    `models_dir`), resuming from the drafts finished with the same settings; returns the ladder
    table (`collect_ladder`, one row per model, the large model's included) and the curves."""
    config_workers = check_workers(config.workers, config.threads)
    compute_threads(config.threads)  # the large model's answers and row: floats depend on it
    large_rung = profile.rungs[-1]
    large_dir = models_dir / large_rung.name
    large, tokenizer = load_model(large_dir)
    train = load_examples("gsm8k", data_dir=config.data_dir, split="train")
    if (
        config.heldout_questions >= len(train)
        or config.reference_answers > config.heldout_questions
    ):
        raise ValueError(
            f"heldout_questions ({config.heldout_questions}) must be below the {len(train)} "
            f"training questions, and reference_answers ({config.reference_answers}) at most it"
        )
    fitted, held = train[: -config.heldout_questions], train[-config.heldout_questions :]
    heldout = draft_documents(tokenizer, held)
    settings = {k: v for k, v in vars(config).items() if k not in ("workers", "executor")}
    settings |= {
        "large": _record(large_dir)["fingerprint"],
        "code": code_fingerprint(["models.drafts"]),
    }
    references = _cached_references(
        large, tokenizer, held[: config.reference_answers], config, models_dir, settings
    )
    large_record, row_key = _record(large_dir), _key(settings, {}, -2)
    if large_record.get("row_key") != row_key:  # the large model's own row, measured once
        large_record["row"] = draft_row(
            large_rung.name, "base", large, tokenizer, heldout, references, config
        )
        large_record |= {"row_key": row_key, "losses": []}
        atomic_write_bytes(large_dir / RECORD, json.dumps(large_record, indent=1).encode())
    del large
    blocks = pack_blocks(tokenizer, draft_documents(tokenizer, fitted), config.block_size)
    batches = batch_order(len(blocks), config.steps, config.batch_size, config.seed)
    jobs = []
    for index, rung in enumerate(profile.rungs[:-1]):
        key = _key(settings, rung.arch, index)
        folder = models_dir / rung.name
        if not finished_model(folder, key):
            jobs.append(
                DraftJob(
                    rung,
                    index,
                    config,
                    profile.name,
                    folder,
                    key,
                    large_dir,
                    blocks,
                    batches,
                    heldout,
                    references,
                )
            )
    seconds: dict[str, float] = {}
    for trained in run_jobs(
        train_draft,
        jobs,
        workers=config_workers,
        threads=config.threads,
        cost=lambda job: job.rung.compute_weight,
        desc="drafts",
        progress=progress,
        executor=config.executor,
        name=lambda job: f"draft {job.rung.name}",
    ):
        seconds |= trained
    return collect_ladder(profile, models_dir, seconds)


def _record(folder: Path) -> dict:
    return json.loads((folder / RECORD).read_text())


def _key(settings: dict, arch: dict, index: int) -> str:
    text = json.dumps([settings, arch, index], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached_references(large, tokenizer, examples, config, models_dir: Path, settings: dict):
    """`reference_answers`, read back from the models folder when made with the same settings."""
    path = models_dir / REFERENCES
    key = _key(settings | {"examples": [e.question for e in examples]}, {}, -1)
    try:
        saved = json.loads(path.read_text())
        if saved["fingerprint"] == key:
            return [tuple(pair) for pair in saved["references"]]
    except (OSError, ValueError, KeyError):
        pass
    references = reference_answers(large, tokenizer, examples, config)
    atomic_write_bytes(path, json.dumps({"fingerprint": key, "references": references}).encode())
    return references
