"""Measuring speculative decoding's speed-up next to what the oracle traces predict
(`fsgen.analysis.speedup_model`).

Per pair, `speedup_study` replays the traces (acceptance per draft length, and the engine's work
in every timed run), then times, `repeats` times and interleaved: the forwards the engine runs
(`forward_costs`), and for each method (the large model alone, and speculative decoding at each
draft length) three short probe runs and the full run (`RUNS`). `speedup_table` turns the
medians into predicted and measured speed-ups.

Python's full garbage collections (a quarter-second pause each here, the cost of walking the
whole process heap) come every so many surviving objects, wherever the allocation history of the
whole process puts them, so they would land on some runs and not others. They are not the
engine's cost: as `timeit` does, every timed run (probes and full runs, the large model alone and
speculative alike) starts after a full collection and runs with the collector off
(`fsgen.core.timing.timed`, which also reports any full collection that happens anyway).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from fsgen.analysis.routing import oracle_trace, parse_pairs, profile_task
from fsgen.analysis.speedup_model import draft_acceptance, speedup_table, work_rows
from fsgen.core.timing import timed
from fsgen.data.tasks import get_task, load_examples
from fsgen.engine.batch import Batch
from fsgen.engine.collaborate import Engine
from fsgen.engine.forward import open_stream
from fsgen.models.cache import models_for
from fsgen.models.prompts import profile_prompts

# the timed runs of each method: two probes with every row running, one with half of the rows
# finished from the start (odd rows of each batch), and the full run
RUNS = ("probe_short", "probe_long", "probe_finished", "full")


# ----------------------------------------------------------------------------- measuring costs


@torch.no_grad()
def forward_costs(
    small, large, tokenizer, prompts, draft_lengths, extra: int = 160, inner: int = 5
) -> dict:
    """Median seconds of the forwards the engine runs, after a prefill of `prompts` (one batch):
    the small model over 1 and 2 new columns, the large model over 1 and k+1 new columns, each
    at two cache widths (the prompt's, and `extra` filler columns more), keeping the logits the
    engine keeps (the small model's last column, every column of a large verification). Keys are
    (model, columns fed, cache width after the forward)."""
    vocab = len(tokenizer)
    timings: dict[tuple[str, int, int], list[float]] = {}
    for name, model, columns in (
        ("small", small, [1, 2]),
        ("large", large, [1] + [k + 1 for k in draft_lengths]),
    ):
        for grow in (0, extra):
            batch = Batch.from_prompts(tokenizer, prompts, spare=grow + max(columns))
            stream = open_stream(model, vocab, batch, spare=grow + max(columns))
            stream.advance(batch)  # the prefill
            filler = batch.seq[:, -1:]  # (B, 1) any real token will do
            if grow:
                batch.append(filler.repeat(1, grow))  # (B, grow)
                stream.advance(batch)
            width = batch.width
            for _ in range(inner):
                for w in columns:
                    batch.append(filler.repeat(1, w))  # (B, w)
                    began = time.perf_counter()
                    stream.advance(batch, keep=w if name == "large" else 1)  # as the engine
                    seconds = time.perf_counter() - began
                    timings.setdefault((name, w, width + w), []).append(seconds)
                    batch.crop(width)
                    stream.crop(width)
    return {key: statistics.median(values) for key, values in timings.items()}


def _steps(out, batch_size: int) -> int:
    """Lockstep steps of a run of the large model alone: the longest row of each batch."""
    lengths = [len(t) for t in out.tokens]
    return sum(max(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size))


# ----------------------------------------------------------------------------- the study


@dataclass
class SpeedupResult:
    """Acceptance replayed from traces, the engine's work replayed for every timed run, raw
    timings, and predicted against measured speed-ups."""

    acceptance: pd.DataFrame
    timings: pd.DataFrame
    table: pd.DataFrame
    work: pd.DataFrame | None = None


@dataclass(frozen=True)
class StudyPlan:
    """What the study runs on every pair: the prompts, the methods (name -> `Engine` keywords:
    the large model alone, then speculative decoding at each draft length), the tokens of each
    timed run (`RUNS` -> max_new_tokens), and the engine's batch size and stop strings."""

    prompts: list[str]
    methods: dict[str, dict]
    lengths: dict[str, int]
    batch_size: int
    stop: list[str]
    draft_lengths: tuple[int, ...]


def speedup_study(
    profile,
    traces: pd.DataFrame,
    pairs: str | Sequence,  # [large, small] items, or "auto" (see parse_pairs)
    draft_lengths: Sequence[int] = (1, 2, 3, 4),
    *,
    task: str = "synthetic",
    n_prompts: int = 64,
    seed: int = 0,
    max_new_tokens: int = 160,
    batch_size: int = 64,
    repeats: int = 3,
    probe_tokens: tuple[int, int] = (8, 24),
    data_dir=None,
) -> SpeedupResult:
    """For each pair: replay the oracle traces of the first `n_prompts` logged prompts (the
    logging run's `seed` selection) for each draft length, measure costs, run speculative
    decoding and the large model alone on those prompts, and compare predicted with measured
    speed-ups. Every timing is repeated `repeats` times, interleaved (forward costs, three short
    probe runs, full runs of every method in turn), and the medians are used."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    short, long = probe_tokens
    if not 0 < short < long:
        raise ValueError(f"probe_tokens must be two increasing lengths, got {probe_tokens}")
    pair_names = parse_pairs(pairs, profile)
    task, max_new_tokens = profile_task(profile, task, max_new_tokens)
    examples = load_examples(task, data_dir=data_dir, n_prompts=n_prompts, seed=seed)
    plan = StudyPlan(
        prompts=profile_prompts(profile, task, examples, data_dir=data_dir),
        methods=study_methods(draft_lengths),
        lengths={
            "probe_short": short,
            "probe_long": long,
            "probe_finished": long,
            "full": max_new_tokens,
        },
        batch_size=batch_size,
        stop=list(get_task(task).stop),
        draft_lengths=tuple(draft_lengths),
    )
    models = models_for(profile)
    acceptance, timings, checks, work = [], [], [], []
    for large_name, small_name in pair_names:
        pair = f"{large_name}-{small_name}"
        large, small, tokenizer = models.get(large_name), models.get(small_name), models.tokenizer
        trace = pair_trace(traces, task, large_name, small_name, n_prompts)
        replay = draft_acceptance(trace, draft_lengths, batch_size)
        replay.insert(0, "pair", pair)
        acceptance.append(replay)
        work += pair_work(pair, trace, tokenizer, plan)
        for rep in range(repeats):
            timings += time_forwards(pair, rep, small, large, tokenizer, plan)
            runs, same = time_methods(pair, rep, small, large, tokenizer, plan)
            timings += runs
            checks += same
    timing_frame = pd.DataFrame(timings)
    work_frame = pd.DataFrame(work)
    acceptance_frame = pd.concat(acceptance, ignore_index=True)
    table = speedup_table(acceptance_frame, timing_frame, work_frame, pd.DataFrame(checks))
    return SpeedupResult(acceptance_frame, timing_frame, table, work_frame)


def study_methods(draft_lengths: Sequence[int]) -> dict[str, dict]:
    """The methods timed, by name: "large" alone, then "k<k>" speculative decoding per draft
    length, each as `Engine` keywords."""
    return {"large": {"method": "large"}} | {
        f"k{k}": {"method": "speculative", "num_draft": k} for k in draft_lengths
    }


def pair_trace(
    traces: pd.DataFrame, task: str, large: str, small: str, n_prompts: int
) -> pd.DataFrame:
    """The oracle trace of one pair on the first `n_prompts` logged prompts (all of them must
    be there)."""
    trace = oracle_trace(traces, task, large, small)
    trace = trace[trace["prompt_id"] < n_prompts]
    if trace["prompt_id"].nunique() < n_prompts:
        raise ValueError(
            f"the oracle traces of {large}-{small} cover {trace['prompt_id'].nunique()} prompts, "
            f"fewer than n_prompts={n_prompts}"
        )
    return trace


def pair_work(pair: str, trace: pd.DataFrame, tokenizer, plan: StudyPlan) -> list[dict]:
    """`work_rows` of every timed run of every method on one pair, replayed from its trace over
    the plan's batches of prompts (each as wide as its left-padded prompts)."""
    prompts, size = plan.prompts, plan.batch_size
    flags = {int(p): g["mismatch"].to_numpy(bool) for p, g in trace.groupby("prompt_id")}
    batches = [list(range(s, min(s + size, len(prompts)))) for s in range(0, len(prompts), size)]
    widths = [Batch.from_prompts(tokenizer, [prompts[i] for i in b], "cpu").width for b in batches]
    rows = []
    for name, how in plan.methods.items():
        for label in RUNS:
            rows += work_rows(
                pair,
                name,
                label,
                how.get("num_draft"),
                plan.lengths[label],
                [[flags[i] for i in b] for b in batches],
                widths,
            )
    return rows


def time_forwards(pair: str, rep: int, small, large, tokenizer, plan: StudyPlan) -> list[dict]:
    """Timing rows of `forward_costs` on the plan's first batch of prompts (repeat `rep`)."""
    costs = forward_costs(
        small,
        large,
        tokenizer,
        plan.prompts[: plan.batch_size],
        plan.draft_lengths,
        extra=plan.lengths["full"],
    )
    return [
        {
            "pair": pair,
            "repeat": rep,
            "what": "forward",
            "model": model,
            "columns": columns,
            "width": width,
            "seconds": s,
            "units": 1,
        }
        for (model, columns, width), s in costs.items()
    ]


def time_methods(
    pair: str, rep: int, small, large, tokenizer, plan: StudyPlan
) -> tuple[list[dict], list[dict]]:
    """Timing rows of every `RUNS` run of every method (repeat `rep`), and on the first repeat
    whether each method's full run wrote the large model's texts. Units: the lockstep steps of
    the large model alone, the large forwards of speculative decoding."""
    odd_rows = [i % plan.batch_size % 2 == 1 for i in range(len(plan.prompts))]  # per batch
    rows, checks, reference = [], [], None
    for name, how in plan.methods.items():
        for label in RUNS:
            finished = odd_rows if label == "probe_finished" else None
            tokens = plan.lengths[label]
            run = partial(run_method, small, large, tokenizer, plan, how, tokens, finished)
            seconds, collecting, out = timed(run)
            units = (
                _steps(out, plan.batch_size)
                if how["method"] == "large"
                else out.summary["large_forwards"]
            )
            rows.append(
                {
                    "pair": pair,
                    "repeat": rep,
                    "what": f"{label}_{name}",
                    "seconds": seconds,
                    "units": units,
                    "gc_seconds": collecting,
                }
            )
            if label == "full" and rep == 0:
                reference = out.texts if name == "large" else reference
                checks.append(
                    {"pair": pair, "method": name, "same_as_large": out.texts == reference}
                )
    return rows, checks


def run_method(small, large, tokenizer, plan: StudyPlan, how: dict, tokens: int, finished):
    """One engine run of method `how` on the plan's prompts, `tokens` new tokens, rows
    `finished` (None: none) done from the start."""
    engine = Engine(
        {"small": small, "large": large},
        tokenizer,
        max_new_tokens=tokens,
        batch_size=plan.batch_size,
        stop=plan.stop,
        **how,
    )
    return engine.run(plan.prompts, finished=finished)


# ----------------------------------------------------------------------------- figures


def plot_speedups(table: pd.DataFrame) -> plt.Figure:
    """Predicted (two cost models) and measured speed-up against draft length, one panel per
    pair; the dotted line marks no speed-up."""
    sns.set_theme(style="whitegrid", context="notebook")
    long = table.melt(
        id_vars=["pair", "k"],
        var_name="estimate",
        value_name="speed-up",
        value_vars=["predicted_speedup_forwards", "predicted_speedup_engine", "measured_speedup"],
    )
    long["estimate"] = long["estimate"].str.replace("_speedup", "").str.replace("_", " ")
    pairs = list(dict.fromkeys(table["pair"]))
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
    for ax, pair in zip(axes[0], pairs, strict=True):
        sns.lineplot(
            data=long[long.pair == pair],
            x="k",
            y="speed-up",
            hue="estimate",
            style="estimate",
            markers=True,
            dashes=False,
            ax=ax,
        )
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set(
            title=f"speculative decoding, {pair}",
            xlabel="draft length k",
            ylabel="speed-up over the large model alone",
        )
        ax.set_xticks(sorted(table["k"].unique()))
    fig.tight_layout()
    return fig
