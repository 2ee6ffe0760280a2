"""Drafts for a packaged model: small GPT-NeoX models trained on its tokenizer, by the embedded
ladder's training code, on GSM8K dialogues in the chat format the large model answers in.

Every draft sees the same blocks in the same order (as the ladder's rungs); only the shape and the
learning rate differ. Each document is a user turn holding a GSM8K training question and an
assistant turn holding its answer, rendered by the large model's own chat template. The answer is
`data`'s: `distilled`, the large model's own greedy answer (through the engine, as token logging
decodes it) to each of the first `distill_questions` training questions; `gold`, GSM8K's training
solution to every question (the calculator annotations `<<48/2=24>>` removed: the large model never
writes them). The last `heldout_questions` training questions are held out: their gold solutions
give the held-out loss, and the large model's greedy answers to the first `reference_answers` of
them give each draft's agreement (the share of the large model's tokens that the draft, fed the same
prefix, predicts as its greedy token: one minus the oracle's collaboration frequency, on questions
no draft trained on).

The large model's answers are decoded in chunks of `eval_batch_size` questions, one job each, and
each draft is one job (`fsgen.core.parallel.run_jobs`: `workers` at once, `threads` each); a chunk
of answers and a draft are saved atomically with a record of what made them, so a rerun reads back
what it finished.
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
ANSWERS = "answers"  # in the models folder: the large model's greedy answers, a file per chunk
KEY = re.compile(r"[0-9a-f]{16}")  # `_key`'s names: the answers' files fsgen wrote
DATA = ("distilled", "gold")  # what the drafts train on (the module docstring)


@dataclass(frozen=True)
class DraftConfig:
    """How the drafts of a packaged profile are trained (`train_ladder.drafts` in params.yaml)."""

    data_dir: str | None
    seed: int
    data: str  # one of DATA
    distill_questions: int  # `distilled`: the training questions the large model answers
    block_size: int
    batch_size: int
    steps: int
    warmup_steps: int
    heldout_questions: int
    reference_answers: int
    max_new_tokens: int  # the large model's answers (the profile's generation length)
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


def draft_documents(tokenizer, examples, answers: Sequence[str] | None = None) -> list[str]:
    """Each example's question and answer (`answers`, else its gold solution) as one chat
    dialogue in the tokenizer's template."""
    if answers is None:
        answers = [solution_text(e.record["answer"]) for e in examples]
    return [
        tokenizer.apply_chat_template(chat_messages(e, answer), tokenize=False)
        for e, answer in zip(examples, answers, strict=True)
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


def fit_draft(arch: dict, seed: int, tokenizer, blocks, batches, config: DraftConfig, desc: str):
    """A tied GPT-NeoX of shape `arch` trained on `blocks` (n_blocks, block_size) in the order
    `batches`; returns (model, losses per step, training seconds)."""
    model = build_model(arch, len(tokenizer), tokenizer, 2 * config.block_size, seed, tied=True)
    started = time.perf_counter()
    losses = train_causal_lm(
        model,
        blocks,
        batches,
        lr=arch["lr"],
        warmup_steps=config.warmup_steps,
        desc=desc,
        progress=False,
    )
    return model, losses, time.perf_counter() - started


def train_draft(job: DraftJob) -> dict[str, float]:
    """Train one draft, measure it and save it; returns its training seconds by name."""
    tokenizer = AutoTokenizer.from_pretrained(job.tokenizer_dir)
    config, rung = job.config, job.rung
    model, losses, seconds = fit_draft(
        rung.arch, config.seed + job.index, tokenizer, job.blocks, job.batches, config, rung.name
    )
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


@dataclass(frozen=True)
class AnswerJob:
    large_dir: Path
    examples: list  # one chunk of questions
    config: DraftConfig


def answer_chunk(job: AnswerJob) -> dict[str, list]:
    """The large model's greedy answers (through the engine, the task's stopping rule) to one chunk
    of questions' chat prompts: their prompt ids, answer ids and answer texts."""
    large, tokenizer = load_model(job.large_dir)
    prompts = chat_prompts(tokenizer, job.examples)
    result = generate(
        large,
        tokenizer,
        prompts,
        max_new_tokens=job.config.max_new_tokens,
        batch_size=job.config.eval_batch_size,
        stop=get_task("gsm8k").stop,
    )
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return {"prompts": prompt_ids, "answers": result.tokens, "texts": result.texts}


def large_answers(
    large_dir: Path, examples, config: DraftConfig, folder: Path, settings: dict, progress=True
):
    """`answer_chunk` over `examples` in chunks of `eval_batch_size` questions (`workers` at once),
    each chunk saved into `folder` as it finishes and read back when made with the same settings
    (the files of other settings, fsgen's own, are removed); returns the chunks' lists joined."""
    size = config.eval_batch_size
    chunks = [examples[i : i + size] for i in range(0, len(examples), size)]
    paths = [
        folder / f"{_key(settings | {'questions': [e.question for e in c]}, {}, -1)}.json"
        for c in chunks
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for stale in {p for p in folder.glob("*.json") if KEY.fullmatch(p.stem)} - set(paths):
        stale.unlink()
    todo = [i for i, path in enumerate(paths) if not path.is_file()]

    def save(index: int, result: dict) -> None:
        atomic_write_bytes(paths[todo[index]], json.dumps(result).encode())

    jobs = [AnswerJob(large_dir, chunks[i], config) for i in todo]
    workers = check_workers(config.workers, config.threads)
    run_jobs(
        answer_chunk,
        jobs,
        workers=workers,
        threads=config.threads,
        desc="large model's answers",
        progress=progress,
        executor=config.executor,
        on_result=save,
        name=lambda job: f"answers to {job.examples[0].question[:40]!r}...",
    )
    saved = [json.loads(path.read_text()) for path in paths]
    return {
        key: [x for chunk in saved for x in chunk[key]] for key in ("prompts", "answers", "texts")
    }


def training_documents(tokenizer, fitted, distilled: list[str], config: DraftConfig) -> list[str]:
    """The drafts' documents: the large model's answers (`distilled`, from `large_answers`) to the
    first `distill_questions` training questions, or every gold solution."""
    if config.data == "distilled":
        return draft_documents(tokenizer, fitted[: config.distill_questions], distilled)
    return draft_documents(tokenizer, fitted)


def check_config(config: DraftConfig, training_questions: int) -> None:
    """The draft settings against the GSM8K training split's `training_questions`."""
    if config.data not in DATA:
        raise ValueError(f"data must be one of {DATA}, got {config.data!r}")
    if (
        config.heldout_questions >= training_questions
        or config.reference_answers > config.heldout_questions
    ):
        raise ValueError(
            f"heldout_questions ({config.heldout_questions}) must be below the "
            f"{training_questions} training questions, and reference_answers "
            f"({config.reference_answers}) at most it"
        )
    available = training_questions - config.heldout_questions
    if config.data == "distilled" and not 0 < config.distill_questions <= available:
        raise ValueError(
            f"distill_questions ({config.distill_questions}) must be between 1 and the "
            f"{available} training questions not held out"
        )


def train_drafts(profile: Profile, config: DraftConfig, models_dir: Path, *, progress=True):
    """Train the drafts of a packaged `profile` (its largest rung converted already into
    `models_dir`), resuming from the answers and drafts finished with the same settings; returns
    the ladder table (`collect_ladder`, one row per model, the large model's included) and the
    curves."""
    config_workers = check_workers(config.workers, config.threads)
    large_rung = profile.rungs[-1]
    large_dir = models_dir / large_rung.name
    tokenizer = AutoTokenizer.from_pretrained(large_dir)
    train = load_examples("gsm8k", data_dir=config.data_dir, split="train")
    check_config(config, len(train))
    fitted, held = train[: -config.heldout_questions], train[-config.heldout_questions :]
    heldout = draft_documents(tokenizer, held)
    settings = {k: v for k, v in vars(config).items() if k not in ("workers", "executor")}
    settings |= {
        "large": _record(large_dir)["fingerprint"],
        "code": code_fingerprint(["models.drafts"]),
    }
    asked = held[: config.reference_answers]  # the references first, then the distilled
    asked += fitted[: config.distill_questions] if config.data == "distilled" else []
    # an answer depends on the large model, the code, its length, its batch and threads: the
    # drafts' own settings (steps, distill_questions, ...) leave the saved chunks valid
    made_by = ("large", "code", "max_new_tokens", "eval_batch_size", "threads")
    answer_settings = {k: settings[k] for k in made_by}
    answers = large_answers(
        large_dir, asked, config, models_dir / ANSWERS, answer_settings, progress
    )
    count = config.reference_answers
    references = list(zip(answers["prompts"][:count], answers["answers"][:count], strict=True))
    distilled = answers["texts"][count:]
    large_record, row_key = _record(large_dir), _key(settings, {}, -2)
    if large_record.get("row_key") != row_key:  # the large model's own row, measured once
        compute_threads(config.threads)  # its floats depend on the count
        large, _ = load_model(large_dir)
        large_record["row"] = draft_row(
            large_rung.name, "base", large, tokenizer, heldout, references, config
        )
        del large
        large_record |= {"row_key": row_key, "losses": []}
        atomic_write_bytes(large_dir / RECORD, json.dumps(large_record, indent=1).encode())
    documents = training_documents(tokenizer, fitted, distilled, config)
    blocks = pack_blocks(tokenizer, documents, config.block_size)
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
