"""Predicting speculative decoding's speed-up from oracle traces.

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

The formula counts model forwards only, at the prompt's cache width. The engine cost model
(`speedup_table`) predicts from terms measured on the engine itself, none fitted to the full
runs (they stay the held-out check); what a run does is replayed from the traces
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
  and taken as linear in the width (`forward_lines`, from `fsgen.analysis.speedup.forward_costs`).
- Bookkeeping (choosing, verifying, statistics, stop checks, trace rows) is partly paid per
  round for every row of the batch, running or not (verification and the statistics cover all
  rows), and partly per running row. Three probe runs per method tell them apart
  (`engine_costs`): a short and a long one with every row running, and a long one with half the
  rows finished from the start.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import nnls


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
    if k is None:  # one step per token of the longest row; each step feeds one column
        steps = max((len(r) for r in rows), default=0)
        fed = [("large", 1, width + t) for t in range(steps)]
        return {"rounds": steps, "row_rounds": sum(len(r) for r in rows), "forwards": _tally(fed)}
    replays = [replay_rounds(r, k) for r in rows]
    rounds = max((len(r) for r in replays), default=0)
    fed_small = 1  # columns the small model lacks at a round's first draft
    fed = []  # (model, columns fed, cache width after the forward) of every forward
    for r in range(rounds):
        fed.append(("small", fed_small, width))
        fed += [("small", 1, width + j) for j in range(1, k)]
        fed.append(("large", k + 1, width + k))
        # a finished row counts as rejecting every draft; what every row rejected is cropped
        common = min(k - rep[r] if r < len(rep) else k for rep in replays)
        fed_small = 2 if common == 0 else 1  # the last draft (if kept), then the large token
        width += k - common + 1
    row_rounds = sum(len(r) for r in replays)
    return {"rounds": rounds, "row_rounds": row_rounds, "forwards": _tally(fed)}


def _tally(fed: list[tuple[str, int, int]]) -> dict[tuple[str, int], tuple[int, int]]:
    """{(model, columns fed): (count, summed cache width)} of (model, columns, width) forwards,
    keys in the order first fed."""
    tally: dict[tuple[str, int], list[int]] = {}
    for model, columns, cache_width in fed:
        entry = tally.setdefault((model, columns), [0, 0])
        entry[0] += 1
        entry[1] += cache_width
    return {key: (count, width_sum) for key, (count, width_sum) in tally.items()}


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


# ----------------------------------------------------------------------------- the engine cost model


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
