"""Training the embedded ladder: a Pythia-style suite of GPT-NeoX models on synthetic problems.

Every rung shares one tokenizer and sees the same token blocks in the same order; only the
shape (and the learning rate) differs, as in Pythia. The base corpus (`base_corpus`) holds worked
solutions, formulas and bare-answer chat dialogues; every rung, the largest included, then gets a
tuned ("chat") copy that learns worked answers in the chat format.

Rungs train independently, each on `threads` threads, `workers` rungs at once in their own
processes (`fsgen.core.parallel`: the weights depend on the thread count, never on the workers).
Each finished model is saved atomically with a record of what made it (`RECORD`: the settings,
the rung and a fingerprint of the code), so a killed or timed-out run resumes where it stopped:
a rung whose record matches is read back, not retrained. The record holds no timings, so a
retrained model's folder is byte-identical and DVC sees the same output.
"""

from __future__ import annotations

import hashlib
import json
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

from fsgen.core.executor import Executor
from fsgen.core.io import atomic_directory, atomic_write_bytes, write_metrics
from fsgen.core.parallel import check_workers, run_jobs
from fsgen.core.paths import resolve
from fsgen.core.source import code_fingerprint
from fsgen.data.scoring import last_number
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
from fsgen.data.tasks import (
    accuracy,
    accuracy_interval,
    expression_example,
    get_task,
    score,
)
from fsgen.data.tokenizer import train_tokenizer
from fsgen.engine.collaborate import generate
from fsgen.models.loss_law import ladder_table
from fsgen.models.profiles import Profile, count_parameters, load_config

SYNTHETIC_STOP = get_task("synthetic").stop  # where stage 00's greedy answers stop, as stage 01's
EXPRESSION_STOP = get_task("expression").stop
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
    workers: int = 1
    executor: str | dict | Executor = "local"  # "local" processes or "ray" tasks


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
    """Train every rung of an embedded `profile` and its tuned copy into `models_dir` (rungs in
    `config.workers` processes at once, largest first), resuming from the models a previous run
    finished with the same settings and code.

    Returns `(ladder, curves)`: one row per model with its parameter counts, held-out loss,
    accuracy (plain, chat and expression prompts) and training seconds (NaN for a model read
    back); and the training loss of every step.
    """
    if profile.kind != "embedded":
        raise ValueError(
            f"only embedded profiles are trained here; {profile.name!r} is {profile.kind!r}"
        )
    check_workers(config.workers)
    models_dir = Path(models_dir)
    step_bars = progress and config.workers == 1  # a bar per training step; per rung otherwise
    corpus = build_corpus(config)
    corpus.tokenizer.save_pretrained(models_dir / "tokenizer")
    code = code_fingerprint(["models.train"])
    jobs = []
    for index, rung in enumerate(profile.rungs):
        base_key = _fingerprint(config, rung.arch, index, "base", code)
        tune_key = _fingerprint(config, rung.arch, index, "tuned", base_key)
        job = RungJob(
            rung, index, config, profile.name, models_dir, base_key, tune_key, corpus, step_bars
        )
        if not job.finished():
            jobs.append(job)
    seconds = train_rungs(jobs, config, progress=progress and not step_bars)
    rows, curves = [], []
    for rung in profile.rungs:
        _collect(models_dir / rung.name, rows, curves)
        if rung.tuned is not None:
            _collect(models_dir / f"{rung.name}-chat", rows, curves)
    ladder = pd.DataFrame(rows)
    ladder["train_seconds"] = ladder["model"].map(seconds).astype(float)
    return ladder, pd.DataFrame(curves)


def train_rungs(
    jobs: Sequence[RungJob], config: LadderConfig, *, progress: bool = True
) -> dict[str, float]:
    """Run `train_rung` on every job, `config.workers` at once on `config.threads` threads each,
    the largest rungs first; returns the training seconds of every model trained, by name."""
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
        base_done = _finished(self.base_dir, self.base_key)
        return base_done and (self.rung.tuned is None or _finished(self.tune_dir, self.tune_key))


def train_rung(job: RungJob) -> dict[str, float]:
    """Train `job`'s base model (unless saved already) and then its tuned copy from it, saving
    each atomically with its table row and loss curve (a `train_ladder` job). Returns the
    training seconds of each model it trained, by name (kept out of the saved record, so that
    a retrained model's files are byte-identical)."""
    config, corpus, rung = job.config, job.corpus, job.rung
    tokenizer = corpus.tokenizer
    evaluation = Evaluation(tokenizer, corpus.test, config)
    progress, trained = job.progress, {}
    if _finished(job.base_dir, job.base_key):
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
        _save_rung(model, tokenizer, job.base_dir, (job.profile, job.base_key), row, losses)
    if rung.tuned is None or _finished(job.tune_dir, job.tune_key):
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
    _save_rung(model, tokenizer, job.tune_dir, (job.profile, job.tune_key), row, losses)
    return trained


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


def _finished(folder: Path, key: str) -> bool:
    """Whether `folder` holds a model this code finished with the same settings (`key`)."""
    try:
        return _read_record(folder)["fingerprint"] == key
    except (OSError, ValueError, KeyError):
        return False


def _save_rung(
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


def write_ladder_outputs(
    ladder: pd.DataFrame,
    curves: pd.DataFrame,
    metrics_file: str | Path,
    timing_file: str | Path,
    results_dir: str | Path,
) -> pd.DataFrame:
    """Write the ladder's metrics (deterministic), its timings (not), the table and the curves;
    returns the ladder with the loss law's columns (`ladder_table`), as the table is written
    (there less the timings).

    The metrics hold every model's `MEASURED` columns and, when the loss law was fitted, its
    parameters as `loss_law.<name>`. Timings live in their own file so that reruns leave
    `metrics_file` byte-identical.
    """
    ladder, law = ladder_table(ladder)
    metrics = ladder_metrics(ladder)
    if law is not None:
        metrics |= {f"loss_law.{k}": v for k, v in law.items()}
    write_metrics(metrics_file, metrics)
    write_metrics(timing_file, ladder_metrics(ladder, ["train_seconds"]))
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    table = ladder.drop(columns=["train_seconds"], errors="ignore")
    table.to_csv(results_dir / "ladder.csv", index=False, float_format="%.6g")
    curves.to_csv(results_dir / "loss_curves.csv", index=False, float_format="%.6g")
    return ladder


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


def build_ladder(
    profile: Profile, config: LadderConfig, *, progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `train_ladder` stage: train an embedded profile, or describe a hub one.

    Either way the ladder table is also written as `ladder.csv` into the profile's models_dir,
    and `(ladder, curves)` are returned (curves is empty for a hub ladder).
    """
    models_dir = resolve(profile.models_dir)
    if profile.kind == "embedded":
        remove_stale_models(models_dir, keep=profile_model_names(profile), profile=profile.name)
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
