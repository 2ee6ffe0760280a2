"""Which text makes a better draft for SmolLM2-135M-Instruct: GSM8K's gold training solutions, or
the large model's own greedy answers to the same questions (distillation)? Run it with nothing
else on the machine, after the smollm2 profile's train_ladder stage made the large model:

    FSGEN_DATA_DIR=../shared/data python benchmarks/bench_draft_data.py [--questions 200]

Drafts of one shape (`--draft`, d0 by default), one seed, the same number of steps, the same
held-out questions as stage 00 (`train_ladder.drafts` in params.yaml), one per data set of
`--sets` (the first two by default):

- `gold_subset`: the gold solutions of the first `--questions` training questions;
- `distilled_subset`: the large model's greedy answers to those questions (through the engine,
  the task's stopping rule, the profile's `max_new_tokens`), in the same chat format (what
  stage 00 trains on with `data: distilled`);
- `gold_all`: every gold training solution (stage 00's `data: gold`).

Each is measured as stage 00 measures its drafts: held-out loss on the held-out gold solutions and
agreement with the large model's greedy answers to the first `reference_answers` held-out
questions (the figure that sets the oracle's collaboration frequency). Writes
benchmarks/results/draft_data.json (and prints it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer

from fsgen.core.io import read_yaml
from fsgen.core.parallel import run_jobs
from fsgen.core.paths import resolve
from fsgen.data.tasks import load_examples
from fsgen.models.drafts import (
    AnswerJob,
    DraftConfig,
    answer_chunk,
    draft_documents,
    draft_row,
    fit_draft,
)
from fsgen.models.profiles import load_profile
from fsgen.models.train import batch_order, pack_blocks

OUT = resolve("benchmarks/results/draft_data.json")


@dataclass(frozen=True)
class Job:
    data: str
    documents: list[str]
    arch: dict
    tokenizer_dir: Path
    config: DraftConfig
    steps: int
    heldout: list[str]
    references: list


def train_one(job: Job) -> dict:
    """One draft trained on `job.documents` and measured as stage 00 measures its drafts."""
    tokenizer = AutoTokenizer.from_pretrained(job.tokenizer_dir)
    config = job.config
    blocks = pack_blocks(tokenizer, job.documents, config.block_size)  # (n_blocks, block_size)
    batches = batch_order(len(blocks), job.steps, config.batch_size, config.seed)
    model, _, seconds = fit_draft(
        job.arch, config.seed, tokenizer, blocks, batches, config, job.data
    )
    row = draft_row(job.data, "base", model, tokenizer, job.heldout, job.references, config)
    epochs = job.steps * config.batch_size / len(blocks)
    return row | {
        "data": job.data,
        "documents": len(job.documents),
        "blocks": len(blocks),
        "epochs": round(epochs, 2),
        "train_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=200, help="training questions distilled")
    parser.add_argument(
        "--sets",
        nargs="+",
        default=["gold_subset", "distilled_subset"],
        choices=["gold_subset", "distilled_subset", "gold_all"],
    )
    parser.add_argument("--draft", default="d0", help="the draft shape (a smollm2 rung)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    ladder = read_yaml(resolve("params.yaml"))["train_ladder"]
    profile = load_profile("smollm2")
    settings = ladder["drafts"] | {"seed": ladder["seed"], "threads": 1, "workers": args.workers}
    settings["data_dir"] = settings["data_dir"] or os.environ.get("FSGEN_DATA_DIR")
    settings["max_new_tokens"] = profile.generation_length("gsm8k", ladder["max_new_tokens"])
    config = DraftConfig(**settings)
    large_dir = resolve(profile.rungs[-1].model)
    tokenizer = AutoTokenizer.from_pretrained(large_dir)
    train = load_examples("gsm8k", data_dir=config.data_dir, split="train")
    fitted, held = train[: -config.heldout_questions], train[-config.heldout_questions :]
    subset = fitted[: args.questions]

    started = time.perf_counter()
    answers = answer_chunk(AnswerJob(large_dir, held[: config.reference_answers], config))
    references = list(zip(answers["prompts"], answers["answers"], strict=True))
    documents, distilled_tokens = {}, 0
    if "distilled_subset" in args.sets:
        distilled = answer_chunk(AnswerJob(large_dir, subset, config))
        documents["distilled_subset"] = draft_documents(tokenizer, subset, distilled["texts"])
        distilled_tokens = sum(map(len, distilled["answers"]))
    distill_seconds = time.perf_counter() - started
    gold = {"gold_subset": subset, "gold_all": fitted}
    documents |= {
        name: draft_documents(tokenizer, gold[name]) for name in args.sets if name in gold
    }
    heldout = draft_documents(tokenizer, held)
    arch = profile.rung(args.draft).arch
    jobs = [
        Job(name, documents[name], arch, large_dir, config, args.steps, heldout, references)
        for name in args.sets
    ]
    rows = run_jobs(train_one, jobs, workers=args.workers, threads=1, desc="drafts")
    report = {
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "draft": args.draft,
        "steps": args.steps,
        "tokens_per_step": config.batch_size * config.block_size,
        "questions": args.questions,
        "max_new_tokens": config.max_new_tokens,
        "distilled_tokens": distilled_tokens,
        "distill_and_reference_seconds": round(distill_seconds, 1),
        "drafts": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
