"""The embedded ladder: a Pythia-style suite of GPT-NeoX models on synthetic problems.

Every rung shares one tokenizer and sees the same token blocks in the same order; only the
shape (and the learning rate) differs, as in Pythia. The base corpus (`base_corpus`) holds worked
solutions, formulas and bare-answer chat dialogues; every rung, the largest included, then gets a
tuned ("chat") copy that learns worked answers in the chat format.

A rung trains as one `RungJob` (`train_rung`) on `threads` threads, `workers` rungs at once in
their own processes or as Ray tasks (`fsgen.core.parallel`: the weights depend on the thread
count, never on the workers). Each finished model is saved atomically with a record of what made it (`RECORD`: the
profile, the settings, the rung and a fingerprint of the code), so a killed or timed-out run
resumes where it stopped: a rung whose record matches is read back, not retrained. The record
holds no timings, so a retrained model's folder is byte-identical and DVC sees the same output.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, GPTNeoXForCausalLM

from fsgen.core.executor import Executor
from fsgen.core.io import atomic_directory, atomic_write_bytes
from fsgen.core.parallel import check_workers, run_jobs
from fsgen.core.source import code_fingerprint
from fsgen.data.scoring import accuracy, accuracy_interval
from fsgen.data.synthetic import (
    Problem,
    base_corpus,
    chat_document,
    chat_prompt,
    expression_prompt,
    generate_problems,
    plain_document,
    plain_prompt,
)
from fsgen.data.tasks import expression_example, score
from fsgen.data.tokenizer import train_tokenizer
from fsgen.models.profiles import Profile, count_parameters, load_config
from fsgen.models.train import (
    EXPRESSION_STOP,
    answer_hits,
    batch_order,
    build_model,
    greedy_answers,
    heldout_loss,
    pack_blocks,
    train_causal_lm,
)

# settings that change how long training takes, or where, not its weights
WALL_TIME_ONLY = ("workers", "executor")
RECORD = "fsgen_rung.json"  # in each saved model's folder: what made it, its row and its curve


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
    chat_share: float = 0.25
    expression_share: float = 0.25
    max_new_tokens: int = 160
    eval_batch_size: int = 50
    max_position_embeddings: int = 1024
    threads: int = 1
    workers: int | str = 1  # rungs trained at once, or "auto" (as many as the cores hold)
    executor: str | dict | Executor = "local"  # "local" processes or "ray" tasks


@dataclass(frozen=True)
class Corpus:
    """What every rung trains and is measured on: the tokenizer, the base corpus's blocks and
    the order of its batches, the tuning corpus's, and the held-out problems."""

    tokenizer: object
    blocks: torch.Tensor  # (n_blocks, block_size)
    batches: list[list[int]]
    tune_blocks: torch.Tensor  # (n_tune_blocks, block_size)
    tune_batches: list[list[int]]
    test: list[Problem]


def build_corpus(config: LadderConfig) -> Corpus:
    """The ladder's `Corpus` from its settings: problems, tokenizer, blocks and batch orders."""
    train = generate_problems(config.train_problems, split="train", seed=config.seed)
    tune = generate_problems(config.tune_problems, split="train", seed=config.seed + 1)
    base_docs = base_corpus(
        train, chat_share=config.chat_share, expression_share=config.expression_share
    )
    tune_docs = [chat_document(p) for p in tune]
    worked_chats = generate_problems(50, split="train", seed=config.seed + 1)  # = tune[:50]
    tokenizer = train_tokenizer(
        base_docs + [chat_document(p) for p in worked_chats], config.vocab_size
    )
    blocks = pack_blocks(tokenizer, base_docs, config.block_size)
    tune_blocks = pack_blocks(tokenizer, tune_docs, config.block_size)
    return Corpus(
        tokenizer=tokenizer,
        blocks=blocks,
        batches=batch_order(len(blocks), config.steps, config.batch_size, config.seed),
        tune_blocks=tune_blocks,
        tune_batches=batch_order(
            len(tune_blocks), config.tune_steps, config.batch_size, config.seed
        ),
        test=generate_problems(config.test_problems, split="test", seed=config.seed),
    )


@dataclass(frozen=True)
class RungJob:
    """One rung to train (its base model, then its tuned copy if it has one) into `models_dir`,
    with the fingerprints its saved records must carry."""

    rung: object
    index: int
    config: LadderConfig
    profile: str  # the profile's name, recorded with each model (whose it is)
    models_dir: Path
    base_key: str
    tune_key: str
    corpus: Corpus
    progress: bool  # a bar over the training steps (in one process only: more are unreadable)

    @property
    def base_dir(self) -> Path:
        return self.models_dir / self.rung.name

    @property
    def tune_dir(self) -> Path:
        return self.models_dir / f"{self.rung.name}-chat"

    def finished(self) -> bool:
        """Whether the base model, and the tuned copy if the rung has one, are saved already."""
        base_done = finished_model(self.base_dir, self.base_key)
        return base_done and (
            self.rung.tuned is None or finished_model(self.tune_dir, self.tune_key)
        )


def train_rung(job: RungJob) -> dict[str, float]:
    """Train `job`'s base model (unless saved already) and then its tuned copy from it, saving
    each atomically with its table row and loss curve (a `train_ladder` job). Returns the
    training seconds of each model it trained, by name (kept out of the saved record, so that
    a retrained model's files are byte-identical)."""
    config, corpus, rung = job.config, job.corpus, job.rung
    tokenizer = corpus.tokenizer
    evaluation = Evaluation(tokenizer, corpus.test, config)
    progress, trained = job.progress, {}
    if finished_model(job.base_dir, job.base_key):
        model = GPTNeoXForCausalLM.from_pretrained(job.base_dir)
    else:
        model = build_model(
            rung.arch,
            len(tokenizer),
            tokenizer,
            config.max_position_embeddings,
            config.seed + job.index,
        )
        started = time.perf_counter()
        losses = train_causal_lm(
            model,
            corpus.blocks,
            corpus.batches,
            lr=rung.arch["lr"],
            warmup_steps=config.warmup_steps,
            desc=rung.name,
            progress=progress,
        )
        trained[rung.name] = time.perf_counter() - started
        row = evaluation.row(rung.name, "base", model)
        save_rung(model, tokenizer, job.base_dir, (job.profile, job.base_key), row, losses)
    if rung.tuned is None or finished_model(job.tune_dir, job.tune_key):
        return trained
    started = time.perf_counter()
    losses = train_causal_lm(
        model,
        corpus.tune_blocks,
        corpus.tune_batches,
        lr=config.tune_lr,
        warmup_steps=1,
        desc=f"{rung.name}-chat",
        progress=progress,
    )
    trained[f"{rung.name}-chat"] = time.perf_counter() - started
    row = evaluation.row(f"{rung.name}-chat", "tuned", model)
    save_rung(model, tokenizer, job.tune_dir, (job.profile, job.tune_key), row, losses)
    return trained


def train_ladder(
    profile: Profile, config: LadderConfig, models_dir: str | Path, *, progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every rung of an embedded `profile` and its tuned copy into `models_dir` (rungs in
    `config.workers` processes at once, largest first), resuming from the models a previous run
    finished with the same settings and code; returns `(ladder, curves)` (`collect_ladder`)."""
    config = replace(config, workers=check_workers(config.workers, config.threads))
    models_dir = Path(models_dir)
    step_bars = progress and config.workers == 1  # a bar per training step; per rung otherwise
    corpus = build_corpus(config)
    corpus.tokenizer.save_pretrained(models_dir / "tokenizer")
    jobs = rung_jobs(profile, config, models_dir, corpus, progress=step_bars)
    seconds = train_rungs(jobs, config, progress=progress and not step_bars)
    return collect_ladder(profile, models_dir, seconds)


def train_rungs(
    jobs: Sequence[RungJob], config: LadderConfig, *, progress: bool
) -> dict[str, float]:
    """Run `train_rung` on every job, `config.workers` at once on `config.threads` threads each
    (or as Ray tasks), the largest rungs first; returns the training seconds of every model
    trained, by name."""
    seconds: dict[str, float] = {}
    for trained in run_jobs(
        train_rung,
        jobs,
        workers=config.workers,
        threads=config.threads,
        cost=lambda job: job.rung.compute_weight,
        desc="rungs",
        progress=progress,
        executor=config.executor,
        name=lambda job: f"rung {job.rung.name}",
    ):
        seconds |= trained
    return seconds


def rung_jobs(
    profile: Profile, config: LadderConfig, models_dir: Path, corpus: Corpus, *, progress: bool
) -> list[RungJob]:
    """The rungs of an embedded `profile` still to train into `models_dir` (those a previous run
    finished with the same settings and code are left out), as jobs in the profile's order."""
    if profile.kind != "embedded":
        raise ValueError(
            f"only embedded profiles are trained here; {profile.name!r} is {profile.kind!r}"
        )
    code = code_fingerprint(["models.ladder"])
    jobs = []
    for index, rung in enumerate(profile.rungs):
        base_key = _fingerprint(config, rung.arch, index, "base", code)
        tune_key = _fingerprint(config, rung.arch, index, "tuned", base_key)
        job = RungJob(
            rung, index, config, profile.name, models_dir, base_key, tune_key, corpus, progress
        )
        if not job.finished():
            jobs.append(job)
    return jobs


def collect_ladder(
    profile: Profile, models_dir: Path, seconds: dict[str, float]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(ladder, curves)` read back from the saved records: one row per model with its parameter
    counts, held-out loss, accuracy (plain, chat and expression prompts) and `seconds` of
    training (NaN for a model read back); and the training loss of every step."""
    rows, curves = [], []
    for rung in profile.rungs:
        _collect(models_dir / rung.name, rows, curves)
        if rung.tuned is not None:
            _collect(models_dir / f"{rung.name}-chat", rows, curves)
    ladder = pd.DataFrame(rows)
    ladder["train_seconds"] = ladder["model"].map(seconds).astype(float)
    return ladder, pd.DataFrame(curves)


def _collect(folder: Path, rows: list[dict], curves: list[dict]) -> None:
    """Append a saved model's table row to `rows` and its loss curve (one entry per step,
    under the model's folder name) to `curves`, both read from its record."""
    record = _read_record(folder)
    rows.append(record["row"])
    curves += [{"model": folder.name, "step": s, "loss": v} for s, v in enumerate(record["losses"])]


def _fingerprint(config: LadderConfig, arch: dict, index: int, variant: str, parent: str) -> str:
    """What decides a saved model's weights and row: the settings (a base model's, but the
    tuning's; the thread count among them, as float sums depend on it), the rung's shape and
    place, the variant and the code (or, for a tuned copy, its base model's fingerprint)."""
    settings = {
        k: v
        for k, v in vars(config).items()
        if k not in WALL_TIME_ONLY and not (variant == "base" and k.startswith("tune_"))
    }
    text = json.dumps([settings, arch, index, variant, parent], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_record(folder: Path) -> dict:
    return json.loads((folder / RECORD).read_text())


def finished_model(folder: Path, key: str) -> bool:
    """Whether `folder` holds a model this code finished with the same settings (`key`)."""
    try:
        return _read_record(folder)["fingerprint"] == key
    except (OSError, ValueError, KeyError):
        return False


def save_rung(
    model, tokenizer, folder: Path, made: tuple[str, str], row: dict, losses: list[float]
) -> None:
    """Save a finished model atomically (`atomic_directory`: built beside `folder`, then moved
    into place); a previous version is replaced only if fsgen wrote it, as its record says."""
    if folder.exists() and not (folder / RECORD).is_file():
        raise ValueError(
            f"{folder} exists but was not written by fsgen (no {RECORD}); move it away"
        )
    with atomic_directory(folder) as partial:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        profile, key = made  # the profile whose model it is, and its fingerprint
        record = {"profile": profile, "fingerprint": key, "row": row, "losses": losses}
        atomic_write_bytes(partial / RECORD, json.dumps(record, indent=1).encode())


class Evaluation:
    """The ladder table's measurements of one model on the held-out problems."""

    def __init__(self, tokenizer, test: Sequence[Problem], config: LadderConfig):
        self.tokenizer, self.test, self.config = tokenizer, list(test), config
        self.test_docs = [plain_document(p) for p in self.test]
        self.expressions = [expression_example(i, p) for i, p in enumerate(self.test)]

    def row(self, name: str, variant: str, model) -> dict:
        """Parameters, held-out loss, and accuracy with Wilson intervals on plain, chat and
        expression prompts."""
        config, tokenizer = self.config, self.tokenizer
        counts = count_parameters(model)
        row = {
            "model": name,
            "variant": variant,
            "params": counts["total"],
            "non_embedding_params": counts["non_embedding"],
            "heldout_loss": heldout_loss(model, tokenizer, self.test_docs, config.eval_batch_size),
        }
        for column, prompt_fn in (("accuracy", plain_prompt), ("chat_accuracy", chat_prompt)):
            hits = answer_hits(
                model,
                tokenizer,
                self.test,
                prompt_fn,
                config.max_new_tokens,
                config.eval_batch_size,
            )
            row |= _with_interval(column, hits)
        prompts = [expression_prompt(p.question) for p in self.test]
        texts = greedy_answers(
            model,
            tokenizer,
            prompts,
            config.max_new_tokens,
            config.eval_batch_size,
            EXPRESSION_STOP,
        )
        hits = score("expression", texts, self.expressions)  # the task's own exact match
        return row | _with_interval("expression_accuracy", hits)


def _with_interval(column: str, hits: list[bool]) -> dict:
    low, high = accuracy_interval(hits)
    return {column: accuracy(hits), f"{column}_low": low, f"{column}_high": high}


ACCURACIES = tuple(
    f"{a}{end}"
    for a in ("accuracy", "chat_accuracy", "expression_accuracy")
    for end in ("", "_low", "_high")
)


MEASURED = (
    "params",
    "non_embedding_params",
    "heldout_loss",
    "fitted_loss",
    "loss_residual",
    *ACCURACIES,
)


def ladder_metrics(ladder: pd.DataFrame, columns: Sequence[str] = MEASURED) -> dict[str, float]:
    """Flat metrics `<model>.<column>` for every model and each of `columns` it has."""
    return {
        f"{row['model']}.{col}": row[col]
        for row in ladder.to_dict("records")
        for col in columns
        if col in row and not pd.isna(row[col])
    }


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


def profile_model_names(profile: Profile) -> set[str]:
    """The folder names an embedded profile's models are saved under."""
    names = {rung.name for rung in profile.rungs}
    return names | {f"{rung.name}-chat" for rung in profile.rungs if rung.tuned is not None}


def remove_stale_models(models_dir: Path, keep: set[str], profile: str) -> list[str]:
    """Delete the model folders fsgen saved in `models_dir` for `profile` (their `RECORD` names
    it) that are not in `keep`, and the temporary folders a killed save of one of `keep` left
    behind (`atomic_directory`'s `.<name>.*.tmp` and `.old`); returns the names removed. Models
    another profile made, or whose record names no profile, and anything else are left alone."""
    removed = []
    if not models_dir.is_dir():
        return removed
    for folder in sorted(models_dir.iterdir()):
        if not folder.is_dir():
            continue
        stale = folder.name not in keep and _record_profile(folder) == profile
        leftover = folder.name.startswith(".") and folder.name.endswith((".tmp", ".old"))
        if stale or (leftover and folder.name.split(".")[1] in keep):
            shutil.rmtree(folder)
            removed.append(folder.name)
    return removed


def _record_profile(folder: Path) -> str | None:
    """The profile a saved model's record names (None: no record, or none named)."""
    try:
        record = _read_record(folder)
    except (OSError, ValueError):
        return None
    return record.get("profile") if isinstance(record, dict) else None
