"""Which interventions matter: neutral and divergent mismatches.

On an oracle trace System 2 wrote every token, and a *mismatch* is a token where System 1's
greedy choice differed. Put System 1's token there instead, let System 2 continue greedily to the
end (`fsgen.engine.branches.continue_branches`), and score the branch with the task's own
scorer: the mismatch is *divergent* when the branch's score differs from the oracle generation's,
*neutral* otherwise (R2R, Fu et al. 2025, asks the same with an LLM verifier; here the verifier
is the exact scorer).

Intervals are percentile bootstraps over prompts (the tokens of one generation move together).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fsgen.analysis.uncertainty import LESS_SURE, SIGNALS
from fsgen.core.stats import bootstrap_over_units, bootstrap_ratio_interval, weighted_auroc
from fsgen.data.tasks import score
from fsgen.engine.branches import Branch, continue_branches, generation_text

# R2R (Fu et al. 2025, "R2R: efficiently navigating divergent reasoning paths with small-large
# model token routing"): of all tokens 89% identical, 6% neutral, 5% divergent, on its own
# models (DeepSeek-R1 distills) with an LLM verifier: a different family and verifier.
R2R_SHARES = {"identical": 0.89, "neutral": 0.06, "divergent": 0.05}
R2R_DIVERGENT_OF_MISMATCHES = R2R_SHARES["divergent"] / (
    R2R_SHARES["divergent"] + R2R_SHARES["neutral"]
)
TRACE_COLUMNS = ("prompt_id", "step", "token_id", "mismatch", "small_topk_ids", *SIGNALS.values())


def first_prompts(trace: pd.DataFrame, n_prompts: int) -> pd.DataFrame:
    """The rows of the first `n_prompts` prompt ids of an oracle trace, in token order."""
    missing = [c for c in TRACE_COLUMNS if c not in trace.columns]
    if missing:
        raise ValueError(f"trace lacks columns {missing}; expected an oracle trace")
    if n_prompts < 1:
        raise ValueError(f"n_prompts must be >= 1, got {n_prompts!r}")
    ids = sorted(set(int(i) for i in trace["prompt_id"]))[:n_prompts]
    rows = trace[trace["prompt_id"].isin(ids)]
    return rows.sort_values(["prompt_id", "step"], kind="stable").reset_index(drop=True)


def oracle_generations(trace: pd.DataFrame) -> dict[int, list[int]]:
    """Each prompt's generated ids, read from its trace rows (in step order)."""
    return {
        int(pid): [int(t) for t in rows["token_id"]]
        for pid, rows in trace.groupby("prompt_id", sort=True)
    }


def mismatch_branches(trace: pd.DataFrame) -> tuple[pd.DataFrame, list[Branch]]:
    """Every mismatch of an oracle trace as a branch: the oracle's tokens before it, then System
    1's token (its top-1) in place of System 2's. Returns the mismatch rows (prompt id, step,
    both tokens, System 1's signals, the generation's length and the step's decile) and the
    branches, their `prompt` the position of the prompt id in sorted order."""
    generations = oracle_generations(trace)
    order = {pid: k for k, pid in enumerate(sorted(generations))}
    rows = trace[trace["mismatch"].astype(bool)].copy()
    rows["small_token_id"] = [int(ids[0]) for ids in rows["small_topk_ids"]]
    same = rows["small_token_id"] == rows["token_id"]
    if same.any():
        raise ValueError(
            f"{int(same.sum())} mismatch rows have System 1's top-1 equal to the emitted token; "
            "expected an oracle trace (the emitted token is System 2's)"
        )
    rows["length"] = [len(generations[int(p)]) for p in rows["prompt_id"]]
    rows["decile"] = np.minimum(rows["step"] * 10 // rows["length"], 9).astype(int)
    branches = [
        Branch(order[int(p)], (*generations[int(p)][: int(s)], int(t)))
        for p, s, t in zip(rows["prompt_id"], rows["step"], rows["small_token_id"], strict=True)
    ]
    keep = ["prompt_id", "step", "token_id", "small_token_id", *SIGNALS.values(), "length"]
    return rows[[*keep, "decile"]].reset_index(drop=True), branches


def label_mismatches(
    large,
    tokenizer,
    task: str,
    trace: pd.DataFrame,
    prompt_ids: dict[int, list[int]],
    examples: dict[int, object],
    *,
    max_new_tokens: int,
    batch_size: int,
    stop,
) -> pd.DataFrame:
    """Each mismatch of one pair's oracle `trace` with its branch decoded by `large` and scored:
    `oracle_correct`, `branch_correct`, `branch_tokens`, and `divergent` (the scores differ).
    `prompt_ids` and `examples` are keyed by prompt id."""
    rows, branches = mismatch_branches(trace)
    ids = sorted(oracle_generations(trace))
    missing = [p for p in ids if p not in prompt_ids or p not in examples]
    if missing:
        raise ValueError(f"no prompt or example for prompt ids {missing[:5]} of the trace")
    generations = oracle_generations(trace)
    oracle_texts = [generation_text(tokenizer, large, generations[p], stop) for p in ids]
    oracle_scores = score(task, oracle_texts, [examples[p] for p in ids])
    if any(s is None for s in oracle_scores):
        raise ValueError(f"task {task!r} leaves generations unscored: divergence needs a scorer")
    by_prompt = dict(zip(ids, oracle_scores, strict=True))
    continued = continue_branches(
        large,
        tokenizer,
        [prompt_ids[p] for p in ids],
        branches,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stop=stop,
    )
    texts = [generation_text(tokenizer, large, tokens, stop) for tokens in continued]
    branch_scores = score(task, texts, [examples[int(p)] for p in rows["prompt_id"]])
    rows["oracle_correct"] = [bool(by_prompt[int(p)]) for p in rows["prompt_id"]]
    rows["branch_correct"] = [bool(s) for s in branch_scores]
    rows["branch_tokens"] = [len(tokens) for tokens in continued]
    rows["divergent"] = rows["oracle_correct"] != rows["branch_correct"]
    return rows


def _per_prompt(tokens: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """Per prompt: tokens, mismatches, divergent mismatches."""
    counts = tokens.groupby("prompt_id").size().rename("tokens").to_frame()
    grouped = labelled.groupby("prompt_id")
    counts["mismatches"] = grouped.size()
    counts["divergent"] = grouped["divergent"].sum()
    return counts.fillna(0).astype(int)


def pair_table(
    traces: dict[str, pd.DataFrame], labels: dict[str, pd.DataFrame], *, bootstrap: int, seed: int
) -> pd.DataFrame:
    """Per pair (and all pairs pooled, `pair` "all"): tokens, mismatches, neutral, divergent;
    the shares of all tokens of each and the divergent share of mismatches, with bootstrap 95%
    intervals over prompts (pooled: a prompt's counts summed over the pairs)."""
    counts = {pair: _per_prompt(traces[pair], labels[pair]) for pair in labels}
    if counts:
        counts["all"] = pd.concat(counts.values()).groupby(level=0).sum()
    rows = []
    for pair, table in counts.items():
        tokens, mismatches, divergent = (table[c].to_numpy() for c in table.columns)
        neutral = mismatches - divergent
        row = {"pair": pair, "prompts": len(table), "tokens": int(tokens.sum())}
        row |= {"mismatches": int(mismatches.sum()), "neutral": int(neutral.sum())}
        row["divergent"] = int(divergent.sum())
        for name, top, bottom in (
            ("divergent_share_of_tokens", divergent, tokens),
            ("neutral_share_of_tokens", neutral, tokens),
            ("mismatch_share_of_tokens", mismatches, tokens),
            ("divergent_share_of_mismatches", divergent, mismatches),
        ):
            row[name] = top.sum() / bottom.sum() if bottom.sum() else float("nan")
            low, high = bootstrap_ratio_interval(top, bottom, resamples=bootstrap, seed=seed)
            row[f"{name}_low"], row[f"{name}_high"] = low, high
        rows.append(row)
    return pd.DataFrame(rows)


def position_table(traces: dict[str, pd.DataFrame], labels: dict[str, pd.DataFrame]):
    """Per pair and decile of the generation: tokens, mismatches, divergent and their rates."""
    rows = []
    for pair, labelled in labels.items():
        trace = traces[pair]
        length = trace.groupby("prompt_id")["step"].transform("size")
        deciles = np.minimum(trace["step"] * 10 // length, 9)
        tokens = deciles.value_counts().reindex(range(10), fill_value=0)
        for decile in range(10):
            here = labelled[labelled["decile"] == decile]
            n = int(tokens[decile])
            rows.append(
                {
                    "pair": pair,
                    "decile": decile,
                    "tokens": n,
                    "mismatches": len(here),
                    "divergent": int(here["divergent"].sum()),
                    "mismatch_rate": len(here) / n if n else float("nan"),
                    "divergent_rate": here["divergent"].sum() / n if n else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def _divergent_flags(trace: pd.DataFrame, labelled: pd.DataFrame) -> list[bool]:
    """Whether each row of `trace` is one of the divergent mismatches of `labelled`."""
    keys = zip(labelled["prompt_id"], labelled["step"], labelled["divergent"], strict=True)
    divergent = {(int(p), int(s)) for p, s, d in keys if d}
    rows = zip(trace["prompt_id"], trace["step"], strict=True)
    return [(int(p), int(s)) in divergent for p, s in rows]


def _token_frame(traces: dict[str, pd.DataFrame], labels: dict[str, pd.DataFrame]):
    """Every token of every pair with its decile and whether it is a divergent mismatch (a
    prompt's tokens of every pair resample together, by prompt id)."""
    parts = []
    for pair, labelled in labels.items():
        trace = traces[pair][["prompt_id", "step", "mismatch", *SIGNALS.values()]].copy()
        length = trace.groupby("prompt_id")["step"].transform("size")
        trace["decile"] = np.minimum(trace["step"] * 10 // length, 9)
        trace["divergent"] = _divergent_flags(trace, labelled)
        parts.append(trace.assign(pair=pair))
    return pd.concat(parts, ignore_index=True)


def early_divergence(
    traces: dict[str, pd.DataFrame], labels: dict[str, pd.DataFrame], *, bootstrap: int, seed: int
) -> dict[str, float]:
    """Pooled over pairs: the first decile's divergent rate over the overall divergent rate (as
    stage 04 asks of all mismatches), with a bootstrap interval over prompts; and the mean
    relative position of divergent and of neutral mismatches (0: first token, 1: last)."""
    tokens = _token_frame(traces, labels)
    first = (tokens["decile"] == 0).to_numpy()
    divergent = tokens["divergent"].to_numpy()

    def ratio(weights: np.ndarray) -> float:
        overall = (weights * divergent).sum() / weights.sum()
        head = (weights * divergent * first).sum() / max((weights * first).sum(), 1)
        return float(head / overall) if overall else float("nan")

    low, high = bootstrap_over_units(
        tokens["prompt_id"].to_numpy(), ratio, resamples=bootstrap, seed=seed
    )
    labelled = pd.concat(labels.values(), ignore_index=True)
    position = labelled["step"] / (labelled["length"] - 1).clip(lower=1)
    return {
        "first_decile_ratio": ratio(np.ones(len(tokens))),
        "first_decile_ratio_low": low,
        "first_decile_ratio_high": high,
        "divergent_mean_position": float(position[labelled["divergent"]].mean()),
        "neutral_mean_position": float(position[~labelled["divergent"]].mean()),
    }


def divergence_auroc(
    traces: dict[str, pd.DataFrame], labels: dict[str, pd.DataFrame], *, bootstrap: int, seed: int
) -> pd.DataFrame:
    """Per pair and signal of System 1's uncertainty: the AUROC for a mismatch (over all
    tokens, stage 04's question on these prompts), for a divergent mismatch (over all tokens),
    and for divergent among the mismatches (divergent against neutral), each with a bootstrap
    interval over prompts."""
    tokens = _token_frame(traces, labels)
    rows = []
    for pair, frame in tokens.groupby("pair", sort=False):
        mismatch = frame["mismatch"].astype(bool).to_numpy()
        divergent = frame["divergent"].to_numpy()
        units = frame["prompt_id"].to_numpy()
        for signal, column in SIGNALS.items():
            u = LESS_SURE[signal] * frame[column].to_numpy(dtype=float)
            row = {"pair": pair, "signal": signal}
            for target, labels_, keep in (
                ("mismatch", mismatch, np.ones_like(mismatch)),
                ("divergent", divergent, np.ones_like(mismatch)),
                ("divergent_among_mismatches", divergent, mismatch),
            ):
                y, s, kept = labels_[keep], u[keep], units[keep]
                row[target] = weighted_auroc(y, s)
                low, high = bootstrap_over_units(
                    kept,
                    lambda w, y=y, s=s: weighted_auroc(y, s, w),
                    resamples=bootstrap,
                    seed=seed,
                )
                row[f"{target}_low"], row[f"{target}_high"] = low, high
            rows.append(row)
    return pd.DataFrame(rows)


def divergence_metrics(pairs: pd.DataFrame, early: dict, auroc: pd.DataFrame) -> dict:
    """Flat metrics: per pair the counts and shares, the pooled position figures, and each
    pair's entropy AUROCs."""
    metrics: dict[str, object] = {}
    for row in pairs.to_dict("records"):
        for key, value in row.items():
            if key != "pair":
                metrics[f"{row['pair']}.{key}"] = round(float(value), 6)
    metrics |= {f"all.{k}": round(float(v), 6) for k, v in early.items()}
    for row in auroc[auroc["signal"] == "entropy"].to_dict("records"):
        for target in ("mismatch", "divergent", "divergent_among_mismatches"):
            metrics[f"{row['pair']}.entropy_auroc_{target}"] = round(float(row[target]), 6)
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and np.isnan(v))}


def plot_divergence(pairs: pd.DataFrame, position: pd.DataFrame) -> plt.Figure:
    """Left: each pair's tokens split into identical, neutral and divergent (shares, with R2R's
    for reference). Right: the mismatch and divergent rates by decile of the generation."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    shown = pairs[pairs["pair"] != "all"]
    names = [*shown["pair"], "R2R (reference)"]
    divergent = [*shown["divergent_share_of_tokens"], R2R_SHARES["divergent"]]
    neutral = [*shown["neutral_share_of_tokens"], R2R_SHARES["neutral"]]
    y = np.arange(len(names))
    left.barh(y, divergent, color="tab:red", label="divergent")
    left.barh(y, neutral, left=divergent, color="tab:orange", label="neutral")
    left.set_yticks(y, names)
    left.set_xlabel("share of all generated tokens (the rest: identical)")
    left.legend(loc="lower right")
    left.set_title("mismatches that change the outcome")
    for pair, rows in position.groupby("pair", sort=False):
        (line,) = right.plot(rows["decile"], rows["mismatch_rate"], ls="--", alpha=0.6)
        right.plot(rows["decile"], rows["divergent_rate"], color=line.get_color(), label=pair)
    right.set_xlabel("decile of the generation (dashed: all mismatches, solid: divergent)")
    right.set_ylabel("rate per token")
    right.legend(fontsize=8)
    right.set_title("where they fall")
    figure.tight_layout()
    return figure


def divergent_trace(trace: pd.DataFrame, mismatches: pd.DataFrame, pair: str) -> pd.DataFrame:
    """The rows of one pair's oracle `trace` on the prompts stage 08 branched, with `mismatch`
    set to whether the row is a divergent mismatch: the same scores, the target a router
    calibrated on divergence learns (`mismatches`: stage 08's labelled mismatches)."""
    labelled = mismatches[mismatches["pair"] == pair]
    if labelled.empty:
        raise ValueError(
            f"no labelled mismatches for pair {pair!r}; have {sorted(set(mismatches['pair']))}"
        )
    rows = trace[trace["prompt_id"] <= labelled["prompt_id"].max()].copy()  # the first prompts
    rows["mismatch"] = _divergent_flags(rows, labelled)
    return rows.reset_index(drop=True)
