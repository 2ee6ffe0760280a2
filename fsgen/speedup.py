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

The formula counts model forwards only. The engine also spends time per round and per step on
bookkeeping (choosing, verifying, stop checks, trace rows); `speedup_study` measures that
directly: two short runs of each method give the time of a step or round with every row
running (the slope); less the forwards, spread over the rows, that is the bookkeeping per
running row. The engine cost model is then setup + forwards per lockstep round + bookkeeping per
row-round, with the rounds (and rows still running in each) replayed from the traces.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from fsgen.routing import oracle_trace, parse_pairs


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
        table.append({
            "k": k,
            "tokens": tokens,
            "rounds": len(accepted),
            "tokens_per_round": tokens / len(accepted),
            "accepted_per_round": float(np.mean(accepted)),
            "acceptance_at_k": float(np.mean([a >= k for a in reached])) if reached else np.nan,
            "iid_tokens_per_round": (1 - agree ** (k + 1)) / (1 - agree) if agree < 1 else k + 1,
            "rows": len(ids),
            "batches": len(batches),
            "batch_steps": sum(max(len(rows[p]) for p in b) for b in batches),
            "batch_rounds": sum(max(len(replays[p]) for p in b) for b in batches),
        })  # fmt: skip
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


# ----------------------------------------------------------------------------- measuring costs


@torch.no_grad()
def forward_costs(small, large, tokenizer, prompts, draft_lengths, inner: int = 5) -> dict:
    """Median seconds of one small forward over one new column, one large forward over one
    column and one large forward over k+1 columns, after a prefill of `prompts` (one batch)."""
    from fsgen.decoding import Batch, Stream, prefill

    vocab = len(tokenizer)
    timings: dict[str, list[float]] = {}
    for name, model, widths in (("small", small, [1]),
                                ("large", large, [1] + [k + 1 for k in draft_lengths])):  # fmt: skip
        batch = Batch.from_prompts(tokenizer, prompts, torch.device("cpu"))
        stream = Stream(model, vocab)
        prefill(stream, batch)
        width = batch.width
        filler = batch.seq[:, -1:]  # (B, 1) any real token will do
        for _ in range(inner):
            for w in widths:
                batch.append(filler.repeat(1, w))  # (B, w)
                began = time.perf_counter()
                stream.advance(batch)
                timings.setdefault(f"{name}_{w}", []).append(time.perf_counter() - began)
                batch.crop(width)
                stream.crop(width)
    return {key: statistics.median(values) for key, values in timings.items()}


def _timed(call) -> tuple[float, object]:
    began = time.perf_counter()
    out = call()
    return time.perf_counter() - began, out


def _steps(out, batch_size: int) -> int:
    """Lockstep steps of a run of the large model alone: the longest row of each batch."""
    lengths = [len(t) for t in out.tokens]
    return sum(max(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size))


@dataclass
class SpeedupResult:
    """Acceptance replayed from traces, raw timings, and predicted against measured speed-ups."""

    acceptance: pd.DataFrame
    timings: pd.DataFrame
    table: pd.DataFrame


def speedup_study(
    profile,
    traces: pd.DataFrame,
    pairs: str | Sequence[str],
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
    speed-ups. Every timing is repeated `repeats` times, interleaved (forward costs, short probe
    runs, full runs of every method in turn), and the medians are used."""
    from fsgen.decoding import collaborate
    from fsgen.routing import _load
    from fsgen.tasks import build_prompts, get_task, load_examples

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    short, long = probe_tokens
    if not 0 < short < long:
        raise ValueError(f"probe_tokens must be two increasing lengths, got {probe_tokens}")
    examples = load_examples(task, data_dir=data_dir, n_prompts=n_prompts, seed=seed)
    prompts = build_prompts(task, examples, data_dir=data_dir)
    stop = list(get_task(task).stop)
    cache: dict = {}
    acceptance, timings, table = [], [], []
    for large_name, small_name in parse_pairs(pairs):
        large, tokenizer = _load(cache, profile, large_name)
        small, _ = _load(cache, profile, small_name)
        trace = oracle_trace(traces, task, large_name, small_name)
        trace = trace[trace["prompt_id"] < n_prompts]
        if trace["prompt_id"].nunique() < n_prompts:
            raise ValueError(
                f"the oracle traces of {large_name}-{small_name} cover "
                f"{trace['prompt_id'].nunique()} prompts, fewer than n_prompts={n_prompts}"
            )
        replay = draft_acceptance(trace, draft_lengths, batch_size)
        replay.insert(0, "pair", f"{large_name}-{small_name}")
        acceptance.append(replay)
        methods = {"large": {"method": "large"}} | {
            f"k{k}": {"method": "speculative", "num_draft": k} for k in draft_lengths
        }

        def run(how: dict, tokens: int, small=small, large=large, tokenizer=tokenizer):
            pair = (large, large) if how["method"] == "large" else (small, large)
            return collaborate(*pair, tokenizer, prompts, max_new_tokens=tokens,
                               batch_size=batch_size, stop=stop, **how)  # fmt: skip

        reference = None
        for rep in range(repeats):
            base = {"pair": f"{large_name}-{small_name}", "repeat": rep}
            costs = forward_costs(small, large, tokenizer, prompts[:batch_size], draft_lengths)
            timings += [base | {"what": f"forward_{key}", "seconds": s, "units": 1}
                        for key, s in costs.items()]  # fmt: skip
            for name, how in methods.items():
                for tokens, label in ((short, "probe_short"), (long, "probe_long"),
                                      (max_new_tokens, "full")):  # fmt: skip
                    seconds, out = _timed(lambda how=how, tokens=tokens: run(how, tokens))
                    units = (_steps(out, batch_size) if how["method"] == "large"
                             else out.summary["large_forwards"])  # fmt: skip
                    timings.append(base | {"what": f"{label}_{name}", "seconds": seconds,
                                           "units": units})  # fmt: skip
                    if label == "full" and rep == 0:
                        reference = out.texts if name == "large" else reference
                        same = out.texts == reference
                        table.append({"pair": base["pair"], "method": name, "same_as_large": same})
    timing_frame = pd.DataFrame(timings)
    acceptance_frame = pd.concat(acceptance, ignore_index=True)
    checks = pd.DataFrame(table)
    return SpeedupResult(
        acceptance_frame, timing_frame, speedup_table(acceptance_frame, timing_frame, checks)
    )


def speedup_table(
    acceptance: pd.DataFrame, timings: pd.DataFrame, checks: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Predicted (forward costs only, and engine costs) against measured speed-ups per pair and
    draft length, from `draft_acceptance` rows and the medians of the raw timings."""
    medians = timings.groupby(["pair", "what"])[["seconds", "units"]].median()
    rows = []
    for row in acceptance.to_dict("records"):
        pair, k = row["pair"], int(row["k"])
        m = medians.loc[pair]
        c_small, c_large = m.loc["forward_small_1", "seconds"], m.loc["forward_large_1", "seconds"]
        c_verify = m.loc[f"forward_large_{k + 1}", "seconds"]
        forward = predict_speedup(row["batch_tokens_per_round"], k, c_small, c_large, c_verify)
        rows_per_batch = row["rows"] / row["batches"]
        large_time = _engine_time(m, "large", c_large, row["batch_steps"], row["tokens"],
                                  rows_per_batch)  # fmt: skip
        spec_time = _engine_time(m, f"k{k}", k * c_small + c_verify, row["batch_rounds"],
                                 row["rounds"], rows_per_batch)  # fmt: skip
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


def _engine_time(medians, name: str, forward: float, steps: int, row_steps: int,
                 rows: float) -> float:  # fmt: skip
    """Predicted seconds of a run: setup, plus per lockstep step (or round) its forwards, plus
    per running row and step the engine's bookkeeping. The two probe runs (every row running)
    give the setup (intercept) and the time of a step (slope); the slope less the forwards,
    spread over the batch's rows, is the bookkeeping per running row."""
    t1, u1 = medians.loc[f"probe_short_{name}", ["seconds", "units"]]
    t2, u2 = medians.loc[f"probe_long_{name}", ["seconds", "units"]]
    if u2 > u1:
        slope = (t2 - t1) / (u2 - u1)
        setup = t1 - slope * u1
    else:  # the probes stopped as early as each other: no setup term
        slope, setup = t2 / max(u2, 1), 0.0
    per_row = max(slope - forward, 0.0) / rows
    return float(setup + forward * steps + per_row * row_steps)


def recommend_draft_length(table: pd.DataFrame, column: str = "measured_speedup") -> dict:
    """Per pair, the draft length with the highest `column` speed-up."""
    best = table.loc[table.groupby("pair", sort=False)[column].idxmax()]
    return dict(zip(best["pair"], best["k"].astype(int), strict=True))


def plot_speedups(table: pd.DataFrame, stem=None):
    """Predicted (two cost models) and measured speed-up against draft length, one panel per
    pair; the dotted line marks no speed-up."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from fsgen.plots import save_figure

    sns.set_theme(style="whitegrid", context="notebook")
    long = table.melt(id_vars=["pair", "k"], var_name="estimate", value_name="speed-up",
                      value_vars=["predicted_speedup_forwards", "predicted_speedup_engine",
                                  "measured_speedup"])  # fmt: skip
    long["estimate"] = long["estimate"].str.replace("_speedup", "").str.replace("_", " ")
    pairs = list(dict.fromkeys(table["pair"]))
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
    for ax, pair in zip(axes[0], pairs, strict=True):
        sns.lineplot(data=long[long.pair == pair], x="k", y="speed-up", hue="estimate",
                     style="estimate", markers=True, dashes=False, ax=ax)  # fmt: skip
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set(title=f"speculative decoding, {pair}", xlabel="draft length k",
               ylabel="speed-up over the large model alone")  # fmt: skip
        ax.set_xticks(sorted(table["k"].unique()))
    fig.tight_layout()
    if stem is not None:
        save_figure(fig, stem)
    return fig
