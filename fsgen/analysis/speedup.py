"""Predicting speculative decoding's speed-up from oracle traces, and measuring it.

Greedy speculative decoding emits exactly the large model's greedy tokens, and an oracle trace
holds those tokens with a flag saying whether System 1's argmax agreed at each position. So a
trace replays every round: a round drafts up to k tokens, accepts the run of agreements from
where it starts (at most k), then emits one large token (a correction, or a bonus after k
accepted): accepted + 1 tokens a round.

Cost of a round, in large-step units: k small forwards of one token plus one large forward over
k + 1 tokens, against one large forward of one token per token for the large model alone:

    speed-up(k) = tokens per round * c_large(1) / (k * c_small(1) + c_large(k + 1))

Rows of a batch move in lockstep (a round, or a step, serves every row), so the batch needs as
many rounds as its slowest row, and the large model alone as many steps as its longest row;
`draft_acceptance` reports both, per row and per batch.

The formula counts model forwards only, at the prompt's cache width. `speedup_study` also
predicts with an engine cost model, every term measured on the engine itself and none fitted to
the full runs (they stay the held-out check); what a run does is replayed from the traces
(`replay_work`): its lockstep rounds, the rows still running in each, and every forward with the
columns it feeds and the cache width it attends over.

    seconds = setup + sum over forwards of c(model, columns, width)
                    + a * rounds + b * running row-rounds

- Forwards grow with the cache width (the cache is copied as it grows, and every fed column
  attends over all of it): a forward of the large model costs about 1.6 times as much at the
  end of a 160-token run as after the prompt. Speculative caches also grow faster
  than the large model's alone: a round adds k + 1 columns, and drafts rejected by some rows
  stay as masked columns (only what every row rejected is cropped). So c is measured at two
  cache widths (the prompt's, and max_new_tokens more; holes in the mask cost nothing extra)
  and taken as linear in the width (`forward_costs`, `forward_lines`).
- Bookkeeping (choosing, verifying, statistics, stop checks, trace rows) is partly paid per
  round for every row of the batch, running or not (verification and the statistics cover all
  rows), and partly per running row. Three probe runs per method tell them apart
  (`engine_costs`): a short and a long one with every row running, and a long one with half the
  rows finished from the start.
- Python's full garbage collections (a quarter-second pause each here, the cost of walking the
  whole process heap) come every so many surviving objects, wherever the allocation history of
  the whole process puts them, so they would land on some runs and not others. They are not the
  engine's cost: as `timeit` does, every timed run (probes and full runs, the large model alone
  and speculative alike) starts after a full collection and runs with the collector off
  (`fsgen.core.timing.timed`, which also reports any full collection that happens anyway).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from scipy.optimize import nnls

from fsgen.analysis.routing import oracle_trace, parse_pairs, profile_task
from fsgen.core.plots import save_figure
from fsgen.core.timing import timed
from fsgen.data.tasks import build_prompts, get_task, load_examples
from fsgen.engine.batch import Batch
from fsgen.engine.collaborate import Engine
from fsgen.engine.forward import open_stream
from fsgen.models.cache import models_for


def replay_rounds(mismatch: Sequence[bool], k: int) -> list[int]:
    """Drafts accepted in each round of greedy speculative decoding with draft length `k` over
    one generation whose positions disagree (System 1 vs the large model) where `mismatch`."""
    if k < 1:
        raise ValueError(f"draft length k must be >= 1, got {k}")
    flags = [bool(m) for m in mismatch]
    n, position, rounds = len(flags), 0, []
    while position < n:
        accepted = 0
        while accepted < k and position + accepted < n and not flags[position + accepted]:
            accepted += 1
        rounds.append(accepted)
        position += accepted + 1  # the accepted drafts, then the large model's token
    return rounds


def draft_acceptance(
    trace: pd.DataFrame, draft_lengths: Sequence[int], batch_size: int | None = None
) -> pd.DataFrame:
    """Per draft length k, replaying an oracle trace: tokens, rounds and tokens per round summed
    over rows; drafts accepted per round; the acceptance of the k-th draft once the first k-1
    passed; and the lockstep batch's steps (longest row, summed over batches of `batch_size`
    prompts in prompt order; None: one batch) and rounds (slowest row). `iid_tokens_per_round`
    is the textbook (1 - a^(k+1)) / (1 - a) for a per-token agreement rate a."""
    if trace.empty:
        raise ValueError("trace has no rows; expected oracle trace rows")
    ordered = trace.sort_values(["prompt_id", "step"], kind="stable")
    rows = {int(p): g["mismatch"].to_numpy(bool) for p, g in ordered.groupby("prompt_id")}
    ids = sorted(rows)
    size = batch_size or len(ids)
    batches = [ids[i : i + size] for i in range(0, len(ids), size)]
    agree = 1.0 - float(ordered["mismatch"].mean())
    table = []
    for k in draft_lengths:
        replays = {p: replay_rounds(rows[p], k) for p in ids}
        accepted = [a for p in ids for a in replays[p]]
        reached = [a for a in accepted if a >= k - 1]  # rounds whose first k-1 drafts passed
        tokens = sum(len(rows[p]) for p in ids)
        table.append(
            {
                "k": k,
                "tokens": tokens,
                "rounds": len(accepted),
                "tokens_per_round": tokens / len(accepted),
                "accepted_per_round": float(np.mean(accepted)),
                "acceptance_at_k": float(np.mean([a >= k for a in reached])) if reached else np.nan,
                "iid_tokens_per_round": (1 - agree ** (k + 1)) / (1 - agree)
                if agree < 1
                else k + 1,
                "rows": len(ids),
                "batches": len(batches),
                "batch_steps": sum(max(len(rows[p]) for p in b) for b in batches),
                "batch_rounds": sum(max(len(replays[p]) for p in b) for b in batches),
            }
        )
    out = pd.DataFrame(table)
    out["batch_tokens_per_round"] = out["batch_steps"] / out["batch_rounds"]
    return out


def predict_speedup(
    tokens_per_round: float, k: int, small_cost: float, large_cost: float, verify_cost: float
) -> float:
    """Speculative decoding's speed-up over the large model alone: tokens per round divided by
    the cost of a round (k small forwards and one verification over k+1 tokens) in units of one
    large forward of one token."""
    if min(small_cost, large_cost, verify_cost) <= 0:
        raise ValueError(
            f"costs must be positive, got small_cost={small_cost}, large_cost={large_cost}, "
            f"verify_cost={verify_cost}"
        )
    if k < 1:
        raise ValueError(f"draft length k must be >= 1, got {k}")
    return tokens_per_round * large_cost / (k * small_cost + verify_cost)


# ----------------------------------------------------------------------------- the engine's work


def replay_work(
    mismatch: Sequence[Sequence[bool]],
    k: int | None,
    width: int,
    tokens: int | None = None,
    finished: Sequence[bool] | None = None,
) -> dict:
    """What the engine does on one lockstep batch, replayed from its rows' oracle mismatch flags:
    the large model alone (`k` None) or greedy speculative decoding with draft length `k`, rows
    cut at `tokens` (max_new_tokens; None: the traces' lengths), rows `finished` from the start
    running no rounds, over a left-padded prompt `width` columns wide.

    Returns rounds (lockstep steps or rounds), row_rounds (running rows summed over rounds) and
    forwards: {(model, columns fed): (count, summed cache width after the forward)}. Every row
    is fed in every forward, running or not; rejected drafts stay in the cache as masked
    columns unless every row rejected them (then they are cropped), so a speculative cache
    grows by k + 1 - (drafts cropped) columns a round. The prefills count as ordinary forwards
    (their extra cost is in the setup of `_engine_time`)."""
    finished = list(finished) if finished is not None else [False] * len(mismatch)
    rows = [
        [bool(m) for m in flags[:tokens]] if not done else []
        for flags, done in zip(mismatch, finished, strict=True)
    ]
    forwards: dict[tuple[str, int], list[int]] = {}

    def forward(model: str, columns: int, cache_width: int) -> None:
        entry = forwards.setdefault((model, columns), [0, 0])
        entry[0] += 1
        entry[1] += cache_width

    if k is None:  # one step per token of the longest row; each step feeds one column
        steps = max((len(r) for r in rows), default=0)
        for t in range(steps):
            forward("large", 1, width + t)
        row_rounds = sum(len(r) for r in rows)
        return {
            "rounds": steps,
            "row_rounds": row_rounds,
            "forwards": {key: tuple(v) for key, v in forwards.items()},
        }
    replays = [replay_rounds(r, k) for r in rows]
    rounds = max((len(r) for r in replays), default=0)
    fed_small = 1  # columns the small model lacks at a round's first draft
    for r in range(rounds):
        forward("small", fed_small, width)
        for j in range(1, k):
            forward("small", 1, width + j)
        forward("large", k + 1, width + k)
        # a finished row counts as rejecting every draft; what every row rejected is cropped
        common = min(k - rep[r] if r < len(rep) else k for rep in replays)
        fed_small = 2 if common == 0 else 1  # the last draft (if kept), then the large token
        width += k - common + 1
    row_rounds = sum(len(r) for r in replays)
    return {
        "rounds": rounds,
        "row_rounds": row_rounds,
        "forwards": {key: tuple(v) for key, v in forwards.items()},
    }


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


@dataclass
class SpeedupResult:
    """Acceptance replayed from traces, the engine's work replayed for every timed run, raw
    timings, and predicted against measured speed-ups."""

    acceptance: pd.DataFrame
    timings: pd.DataFrame
    table: pd.DataFrame
    work: pd.DataFrame | None = None


# the timed runs of each method: two probes with every row running, one with half of the rows
# finished from the start (odd rows of each batch), and the full run
RUNS = ("probe_short", "probe_long", "probe_finished", "full")


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
    plan = parse_pairs(pairs, profile)
    task, max_new_tokens = profile_task(profile, task, max_new_tokens)
    examples = load_examples(task, data_dir=data_dir, n_prompts=n_prompts, seed=seed)
    prompts = build_prompts(task, examples, data_dir=data_dir)
    stop = list(get_task(task).stop)
    starts = range(0, len(prompts), batch_size)
    lengths = {
        "probe_short": short,
        "probe_long": long,
        "probe_finished": long,
        "full": max_new_tokens,
    }
    models = models_for(profile)
    acceptance, timings, table, work = [], [], [], []
    for large_name, small_name in plan:
        pair = f"{large_name}-{small_name}"
        large, small, tokenizer = models.get(large_name), models.get(small_name), models.tokenizer
        trace = oracle_trace(traces, task, large_name, small_name)
        trace = trace[trace["prompt_id"] < n_prompts]
        if trace["prompt_id"].nunique() < n_prompts:
            raise ValueError(
                f"the oracle traces of {pair} cover {trace['prompt_id'].nunique()} prompts, "
                f"fewer than n_prompts={n_prompts}"
            )
        replay = draft_acceptance(trace, draft_lengths, batch_size)
        replay.insert(0, "pair", pair)
        acceptance.append(replay)
        methods = {"large": {"method": "large"}} | {
            f"k{k}": {"method": "speculative", "num_draft": k} for k in draft_lengths
        }
        flags = {int(p): g["mismatch"].to_numpy(bool) for p, g in trace.groupby("prompt_id")}
        odd_rows = [i % batch_size % 2 == 1 for i in range(len(prompts))]  # within each batch
        batches = [list(range(s, min(s + batch_size, len(prompts)))) for s in starts]
        widths = [
            Batch.from_prompts(tokenizer, [prompts[i] for i in b], "cpu").width for b in batches
        ]
        for name, how in methods.items():
            for label in RUNS:
                work += work_rows(
                    pair,
                    name,
                    label,
                    how.get("num_draft"),
                    lengths[label],
                    [[flags[i] for i in b] for b in batches],
                    widths,
                )

        def run(how: dict, tokens: int, finished, small=small, large=large, tokenizer=tokenizer):
            models = {"small": small, "large": large}
            engine = Engine(
                models, tokenizer, max_new_tokens=tokens, batch_size=batch_size, stop=stop, **how
            )
            return engine.run(prompts, finished=finished)

        reference = None
        for rep in range(repeats):
            base = {"pair": pair, "repeat": rep}
            costs = forward_costs(
                small, large, tokenizer, prompts[:batch_size], draft_lengths, extra=max_new_tokens
            )
            timings += [
                base
                | {
                    "what": "forward",
                    "model": model,
                    "columns": columns,
                    "width": width,
                    "seconds": s,
                    "units": 1,
                }
                for (model, columns, width), s in costs.items()
            ]
            for name, how in methods.items():
                for label in RUNS:
                    finished = odd_rows if label == "probe_finished" else None
                    seconds, collecting, out = timed(
                        lambda h=how, t=lengths[label], f=finished: run(h, t, f)
                    )
                    units = (
                        _steps(out, batch_size)
                        if how["method"] == "large"
                        else out.summary["large_forwards"]
                    )
                    timings.append(
                        base
                        | {
                            "what": f"{label}_{name}",
                            "seconds": seconds,
                            "units": units,
                            "gc_seconds": collecting,
                        }
                    )
                    if label == "full" and rep == 0:
                        reference = out.texts if name == "large" else reference
                        same = out.texts == reference
                        table.append({"pair": pair, "method": name, "same_as_large": same})
    timing_frame = pd.DataFrame(timings)
    work_frame = pd.DataFrame(work)
    acceptance_frame = pd.concat(acceptance, ignore_index=True)
    checks = pd.DataFrame(table)
    return SpeedupResult(
        acceptance_frame,
        timing_frame,
        speedup_table(acceptance_frame, timing_frame, work_frame, checks),
        work_frame,
    )


def work_rows(pair, method, run, k, tokens, batches, widths) -> list[dict]:
    """`replay_work` of one timed run summed over its batches: one row per forward kind."""
    rounds = row_rounds = 0
    forwards: dict[tuple[str, int], list[int]] = {}
    for rows, width in zip(batches, widths, strict=True):
        finished = [run == "probe_finished" and i % 2 == 1 for i in range(len(rows))]
        done = replay_work(rows, k, width, tokens, finished)
        rounds, row_rounds = rounds + done["rounds"], row_rounds + done["row_rounds"]
        for key, (count, width_sum) in done["forwards"].items():
            entry = forwards.setdefault(key, [0, 0])
            entry[0], entry[1] = entry[0] + count, entry[1] + width_sum
    return [
        {
            "pair": pair,
            "method": method,
            "run": run,
            "rounds": rounds,
            "row_rounds": row_rounds,
            "model": model,
            "columns": columns,
            "count": count,
            "width_sum": width_sum,
        }
        for (model, columns), (count, width_sum) in forwards.items()
    ]


def forward_lines(timings: pd.DataFrame) -> pd.DataFrame:
    """Per pair, model and columns fed: the median forward seconds at the two measured cache
    widths, and the line through them (intercept + slope * cache width)."""
    rows = timings[timings["what"] == "forward"]
    medians = rows.groupby(["pair", "model", "columns", "width"])["seconds"].median()
    lines = []
    for (pair, model, columns), part in medians.groupby(level=[0, 1, 2]):
        width = part.index.get_level_values("width").to_numpy(float)
        seconds = part.to_numpy(float)
        narrow, wide = int(np.argmin(width)), int(np.argmax(width))
        slope = (
            (seconds[wide] - seconds[narrow]) / (width[wide] - width[narrow])
            if width[wide] > width[narrow]
            else 0.0
        )
        lines.append(
            {
                "pair": pair,
                "model": model,
                "columns": int(columns),
                "narrow": seconds[narrow],
                "slope": slope,
                "intercept": seconds[narrow] - slope * width[narrow],
            }
        )
    return pd.DataFrame(lines).set_index(["pair", "model", "columns"])


def forward_seconds(work: pd.DataFrame, lines: pd.DataFrame) -> float:
    """Seconds of the forwards of `work` rows (one run) on the cost `lines` of their pair."""
    total = 0.0
    for row in work.to_dict("records"):
        line = lines.loc[(row["pair"], row["model"], int(row["columns"]))]
        total += row["count"] * line["intercept"] + row["width_sum"] * line["slope"]
    return float(total)


def speedup_table(
    acceptance: pd.DataFrame,
    timings: pd.DataFrame,
    work: pd.DataFrame,
    checks: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Predicted (forward costs only, and engine costs) against measured speed-ups per pair and
    draft length, from `draft_acceptance` rows, the replayed `work` of every timed run and the
    medians of the raw timings."""
    collecting = timings["gc_seconds"].fillna(0.0) if "gc_seconds" in timings else 0.0
    timings = timings.assign(gc_seconds=collecting, net_seconds=timings["seconds"] - collecting)
    columns = ["seconds", "net_seconds", "gc_seconds", "units"]
    medians = timings.groupby(["pair", "what"])[columns].median()
    lines = forward_lines(timings)
    rows = []
    for row in acceptance.to_dict("records"):
        pair, k = row["pair"], int(row["k"])
        m = medians.loc[pair]
        c_small = lines.loc[(pair, "small", 1), "narrow"]
        c_large = lines.loc[(pair, "large", 1), "narrow"]
        c_verify = lines.loc[(pair, "large", k + 1), "narrow"]
        forward = predict_speedup(row["batch_tokens_per_round"], k, c_small, c_large, c_verify)
        on_pair = work[work["pair"] == pair]
        large_time = _engine_time(m, on_pair[on_pair["method"] == "large"], lines, "large")
        spec_time = _engine_time(m, on_pair[on_pair["method"] == f"k{k}"], lines, f"k{k}")
        measured = m.loc["full_large", "seconds"] / m.loc[f"full_k{k}", "seconds"]
        entry = {
            "pair": pair,
            "k": k,
            "tokens_per_round": row["tokens_per_round"],
            "batch_tokens_per_round": row["batch_tokens_per_round"],
            "small_over_large_cost": c_small / c_large,
            "verify_over_large_cost": c_verify / c_large,
            "predicted_speedup_forwards": forward,
            "predicted_speedup_engine": large_time / spec_time,
            "measured_speedup": measured,
            "predicted_seconds_large": large_time,
            "measured_seconds_large": m.loc["full_large", "seconds"],
            "predicted_seconds": spec_time,
            "measured_seconds": m.loc[f"full_k{k}", "seconds"],
            "measured_gc_seconds_large": m.loc["full_large", "gc_seconds"],
            "measured_gc_seconds": m.loc[f"full_k{k}", "gc_seconds"],
            "measured_rounds": m.loc[f"full_k{k}", "units"],
            "predicted_rounds": row["batch_rounds"],
        }
        entry["engine_error"] = entry["predicted_speedup_engine"] / measured - 1
        entry["forwards_error"] = forward / measured - 1
        if checks is not None and len(checks):
            hit = checks[(checks.pair == pair) & (checks.method == f"k{k}")]
            entry["same_as_large"] = bool(hit["same_as_large"].all()) if len(hit) else None
        rows.append(entry)
    return pd.DataFrame(rows)


def engine_costs(medians, work: pd.DataFrame, lines: pd.DataFrame, name: str) -> dict:
    """The engine's costs besides the forwards for method `name`, from its three probes: the
    setup of a run, the cost of a round (or step) whatever runs, and the cost per running row
    and round. Each probe's time, less its full garbage collections and its replayed forwards,
    is setup + a * rounds + b * running row-rounds; the probes with every row running and with
    half of them finished tell a from b (non-negative least squares)."""
    design, target = [], []
    for run in ("probe_short", "probe_long", "probe_finished"):
        part = work[work["run"] == run]
        design.append([1.0, part["rounds"].iloc[0], part["row_rounds"].iloc[0]])
        target.append(medians.loc[f"{run}_{name}", "net_seconds"] - forward_seconds(part, lines))
    (setup, per_round, per_row), _ = nnls(np.array(design), np.array(target))
    return {"setup": setup, "per_round": per_round, "per_row": per_row}


def _engine_time(medians, work: pd.DataFrame, lines: pd.DataFrame, name: str) -> float:
    """Predicted seconds of the full run of method `name`: its replayed forwards on the
    measured cost lines, plus the `engine_costs` of its rounds and running row-rounds."""
    costs = engine_costs(medians, work, lines, name)
    full = work[work["run"] == "full"]
    return float(
        forward_seconds(full, lines)
        + costs["setup"]
        + costs["per_round"] * full["rounds"].iloc[0]
        + costs["per_row"] * full["row_rounds"].iloc[0]
    )


def recommend_draft_length(table: pd.DataFrame, column: str = "measured_speedup") -> dict:
    """Per pair, the draft length with the highest `column` speed-up."""
    best = table.loc[table.groupby("pair", sort=False)[column].idxmax()]
    return dict(zip(best["pair"], best["k"].astype(int), strict=True))


def plot_speedups(table: pd.DataFrame, stem=None):
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
    if stem is not None:
        save_figure(fig, stem)
    return fig
