"""The results, rendered from the pipeline's committed outputs into two documents.

- `docs/results.md` carries the full results block (every stage's tables and figures) between
  `START` and `END`;
- `README.md` carries the findings table alone (stage 07's claims and verdicts) between
  `FINDINGS_START` and `FINDINGS_END`.

Nothing between the markers is typed by hand: `python -m fsgen.stages.report` rewrites both from
`metrics/` and `results/`, and a test checks that both match a fresh rendering.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fsgen.analysis.estimates import estimate_table
from fsgen.core.io import atomic_write_bytes, read_metrics
from fsgen.core.paths import resolve
from fsgen.models.loss_law import LAW_COLUMNS, with_loss_law
from fsgen.models.profiles import load_profile, read_params
from fsgen.stages.not_run import is_not_run
from fsgen.stages.snapshot import REAL_PROFILE, SNAPSHOTS, real_model_section, snapshot_profile
from fsgen.stages.tables import fmt as _fmt
from fsgen.stages.tables import markdown_table as _table

START = "<!-- results:start (written by `python -m fsgen.stages.report`; do not edit) -->"
END = "<!-- results:end -->"
FINDINGS_START = "<!-- findings:start (written by `python -m fsgen.stages.report`; do not edit) -->"
FINDINGS_END = "<!-- findings:end -->"
README = "README.md"
RESULTS_PAGE = "docs/results.md"


def _read_metrics(path: Path) -> dict:
    return read_metrics(path) if path.exists() else {}


def _number_or_text(value) -> object:
    """A CSV cell that may hold a number or a sentence, as a float when it is a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _figure(alt: str, path: str, doc_dir: str) -> str:
    """A Markdown image of `path` (from the repository root) as a document in `doc_dir` links it."""
    return f"![{alt}]({Path(os.path.relpath(path, doc_dir)).as_posix()})"


def _with_interval(row) -> str:
    ours = _fmt(_number_or_text(row.ours))
    if pd.isna(row.low) or pd.isna(row.high):
        return ours
    return f"{ours} [{_fmt(row.low)}, {_fmt(row.high)}]"


def findings_table(root: Path) -> str:
    """Stage 07's claims, figures, intervals and verdicts as a table, with its caption; where
    the real model's snapshot exists, its figure and verdict in two more columns."""
    table = pd.read_csv(root / "results/findings/findings.csv")
    caption = (root / "results/findings/caption.md").read_text().strip()
    shown = table[["paper", "claim", "paper_figure", "ours", "low", "high", "verdict", "rule"]]
    shown = shown.assign(paper_figure=shown["paper_figure"].map(_number_or_text))
    real = root / SNAPSHOTS / REAL_PROFILE / "results/findings/findings.csv"
    if real.is_file():
        other = pd.read_csv(real).set_index("id")
        figures = {i: _with_interval(r) for i, r in other.iterrows()}
        shown = shown.assign(
            real=table["id"].map(figures).fillna("–"),
            real_verdict=table["id"].map(other["verdict"]).fillna("–"),
        )
        shown = shown[[c for c in shown.columns if c != "rule"] + ["rule"]]
        shown = shown.rename(
            columns={"real": f"{REAL_PROFILE} [95%]", "real_verdict": f"{REAL_PROFILE} verdict"}
        )
    shown = shown.rename(columns={"paper_figure": "paper's figure", "low": "95% low"})
    shown = shown.rename(columns={"high": "95% high"})
    return _table(shown) + "\n\n" + caption


def findings_figure(root: Path, doc_dir: str = ".") -> str:
    """The findings figure (stage 07), where it was written."""
    if not (root / "results/findings/findings.png").exists():
        return ""
    return "\n\n" + _figure("The findings", "results/findings/findings.png", doc_dir)


def findings_section(root: Path, doc_dir: str = ".") -> str:
    heading = "### Findings: each claim, tested (stage 07)\n\n"
    return heading + findings_table(root) + findings_figure(root, doc_dir)


def divergence_section(root: Path, doc_dir: str = ".") -> str:
    pairs = pd.read_csv(root / "results/divergence/pairs.csv")
    shown = pairs[["pair", "prompts", "tokens", "mismatches", "neutral", "divergent"]].copy()
    for name in ("divergent_share_of_tokens", "divergent_share_of_mismatches"):
        shown[name.replace("_", " ")] = [
            f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
            for v, lo, hi in pairs[[name, f"{name}_low", f"{name}_high"]].itertuples(index=False)
        ]
    return (
        "### Which interventions matter (stage 08)\n\n"
        "Each mismatch of the oracle traces branched (System 1's token in place, System 2 "
        "continuing greedily) and scored: divergent when the score changes, neutral otherwise; "
        "95% bootstrap intervals over prompts. R2R, on other models with an LLM verifier: 5% "
        "divergent and 6% neutral of all tokens.\n\n"
        + _table(shown)
        + "\n\n"
        + _figure("Neutral and divergent mismatches", "results/divergence/divergence.png", doc_dir)
    )


def accelerations_section(root: Path, doc_dir: str = ".") -> str:
    table = pd.read_csv(root / "results/accelerations/head_to_head.csv")
    metrics = _read_metrics(root / "metrics/accelerations.json")
    rows = []
    for _, group in table.groupby("system", sort=False):
        first = group.iloc[0]
        row = {"system": first["system"], "models": first["models"], "how": first["detail"]}
        row["accuracy [95%]"] = _with_interval(
            pd.Series(
                {"ours": first.accuracy, "low": first.accuracy_low, "high": first.accuracy_high}
            )
        )
        for item in group.itertuples():
            front = " (front)" if item.on_front else ""
            row[f"batch {item.batch_size}: ms/token"] = f"{item.ms_per_token:.3f}{front}"
            row[f"batch {item.batch_size}: speed-up"] = f"{item.speedup_vs_large:.2f}x"
        rows.append(row)
    return (
        "### Three accelerations, head to head (stage 09)\n\n"
        f"Every system on the same {metrics.get('prompts', '?')} fresh prompts (accuracy with "
        "its Wilson interval) and timed in one process on the first of them, interleaved "
        "(median ms per generated token; speed-up over the large model alone). (front): on the "
        "batch size's Pareto front, no other system at least as accurate and as fast, one of "
        "the two strictly. Pair, router and draft length chosen from stage 06's outputs by the "
        "rules in `fsgen/analysis/accelerations.py`.\n\n"
        + _table(pd.DataFrame(rows))
        + "\n\n"
        + _figure(
            "Accuracy against time per token", "results/accelerations/accuracy_vs_time.png", doc_dir
        )
    )


def _ladder_law(ladder: pd.DataFrame, metrics: dict) -> tuple[pd.DataFrame, dict | None]:
    """The ladder and its loss law as stage 00 wrote them (the table's `LAW_COLUMNS`, the
    metrics' `loss_law.*`); a table written without the columns is fitted here."""
    if set(LAW_COLUMNS) <= set(ladder.columns):
        prefix = "loss_law."
        law = {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}
        return ladder, law or None
    if (ladder["variant"] == "base").sum() >= 4:
        return with_loss_law(ladder)
    return ladder, None


def ladder_section(root: Path, doc_dir: str = ".") -> str:
    ladder = pd.read_csv(root / "results/train_ladder/ladder.csv")
    ladder, law = _ladder_law(ladder, _read_metrics(root / "metrics/train_ladder.json"))
    shown = pd.DataFrame({"model": ladder["model"], "parameters": ladder["params"]})
    shown["held-out loss"] = ladder["heldout_loss"]
    if "loss_residual" in ladder:
        shown["residual vs L(N)"] = ladder["loss_residual"].map(
            lambda r: "" if pd.isna(r) else f"{100 * r:+.1f}%"
        )
    for column, title in (
        ("accuracy", "accuracy (plain)"),
        ("chat_accuracy", "accuracy (chat)"),
        ("expression_accuracy", "accuracy (expression)"),
    ):
        if {column, f"{column}_low", f"{column}_high"} <= set(ladder.columns):
            shown[title] = [
                f"{a:.3f} [{lo:.3f}, {hi:.3f}]"
                for a, lo, hi in ladder[[column, f"{column}_low", f"{column}_high"]].itertuples(
                    index=False
                )
            ]
        elif column in ladder:  # a table written without the intervals
            shown[title] = ladder[column]
    caption = (
        f"Base rungs' held-out loss against L(N) = E + A·(N/N_0)^(-a) fitted over them: "
        f"E = {law['E']:.3f}, A = {law['A']:.3f}, a = {law['a']:.3f}, "
        f"N_0 = {law['n_min']:.0f}; accuracies with Wilson 95% intervals.\n\n"
        if law
        else ""
    )
    return "### The embedded ladder (stage 00)\n\n" + caption + _table(shown)


def frequency_section(root: Path, doc_dir: str = ".") -> str:
    table = pd.read_csv(root / "results/frequency/frequency.csv")
    metrics = _read_metrics(root / "metrics/frequency.json")
    methods = list(dict.fromkeys(table["method"]))
    rows = []
    for (task, pair), group in table.groupby(["task", "pair"], sort=False):
        first = group.iloc[0]
        row = {"task": task, "pair": pair, "r = N_large/N_small": f"{first.ratio:.1f}"}
        by_method = group.set_index("method")
        for method in methods:
            row[f"CF {method}"] = (
                by_method.loc[method, "collaboration_frequency"]
                if method in by_method.index
                else None
            )
        row["acc. System 1"] = first.small_accuracy
        row["acc. System 2"] = first.large_accuracy
        for method in methods:
            row[f"acc. {method}"] = (
                by_method.loc[method, "accuracy"] if method in by_method.index else None
            )
        rows.append(row)
    share = metrics.get("share_under_20pct")
    text = (
        "### Collaboration frequency and accuracy per pair (stages 01-02)\n\n"
        "CF: share of generated tokens where System 2's token differs from System 1's own "
        "choice. Accuracy on the held-out synthetic test prompts.\n\n" + _table(pd.DataFrame(rows))
    )
    if share is not None:
        text += f"\n\nShare of (pair, method) cells with CF under 20%: {_fmt(share, 2)}."
    return (
        text + "\n\n" + _figure("CF per pair", "results/frequency/frequency_heatmaps.png", doc_dir)
    )


def scaling_section(root: Path, doc_dir: str = ".") -> str:
    fits = pd.read_csv(root / "results/scaling_law/fits.csv")
    paper = pd.read_csv(root / "results/scaling_law/paper_fits.csv")
    paper = paper[paper["task"] == "gsm8k"].assign(task="paper Qwen1.5 gsm8k")
    both = pd.concat([fits, paper], ignore_index=True)
    shown = pd.DataFrame(
        {
            "data": both["task"],
            "method": both["method"],
            "points": both["n"],
            "a": both["a"],
            "alpha": both["alpha"],
            "b": both["b"],
            "R²": both["r2"],
            "LOO RMSE": both["loo_rmse"],
            "best form (AIC)": both["best_form"],
        }
    )
    return (
        "### Scaling law CF = b - a·r^(-α) (stage 03)\n\n"
        "Least squares from a = α = b = 1 with every parameter >= 0.05, as the FS-GEN authors "
        "fit it; the paper's published Qwen1.5 GSM8K points refitted the same way below ours.\n\n"
        + _table(shown)
        + "\n\n"
        + _figure("Scaling-law fits", "results/scaling_law/scaling_law.png", doc_dir)
    )


def uncertainty_section(root: Path, doc_dir: str = ".") -> str:
    auroc = pd.read_csv(root / "results/uncertainty/auroc.csv")
    shown = auroc.rename(
        columns={
            "mismatch_rate": "mismatch rate",
            "top1_prob": "AUROC top-1",
            "margin": "AUROC margin",
            "entropy": "AUROC entropy",
        }
    )
    return (
        "### Where System 2 steps in (stage 04)\n\n"
        "How well System 1's own uncertainty predicts a mismatch on the oracle traces (AUROC, "
        "0.5 = chance).\n\n"
        + _table(shown.drop(columns=["tokens"]))
        + "\n\n"
        + _figure("Mismatch rate by position", "results/uncertainty/position_heatmap.png", doc_dir)
    )


def llm_to_slm_section(root: Path, doc_dir: str = ".") -> str:
    table = pd.read_csv(root / "results/llm_to_slm/results.csv")
    metrics = _read_metrics(root / "metrics/llm_to_slm.json")
    rows, notes = [], []
    for (task, system), group in table.groupby(["task", "system"], sort=False):
        first = group.iloc[0]
        row = {
            "task": task,
            "system": system,
            "accuracy": first["accuracy"],
            "95% interval": f"[{first['accuracy_low']:.3f}, {first['accuracy_high']:.3f}]",
            "CF vs large (oracle)": first["collaboration_frequency"],
        }
        for item in group.itertuples():
            row[f"batch {item.batch_size}: s"] = item.seconds
            row[f"batch {item.batch_size}: speed-up"] = f"{item.speedup_vs_large:.2f}x"
        rows.append(row)
    for task in dict.fromkeys(table["task"]):
        closed = metrics.get(f"{task}.gap_closed")
        relative = metrics.get(f"{task}.llm_to_slm.relative_quality")
        if relative is not None:
            notes.append(
                f"On {task}, LLM-to-SLM reaches {100 * relative:.0f}% of the large model's "
                "accuracy"
                + (
                    f" and closes {100 * closed:.0f}% of the fine-tuned small model's gap to it."
                    if closed is not None
                    else "."
                )
            )
    prompts = next((v for k, v in metrics.items() if k.endswith(".prompts")), "?")
    return (
        "### LLM-to-SLM (stage 05)\n\n"
        "The largest rung encodes the prompt once, a projector feeds it to the smallest rung, "
        f"which generates. Accuracy on {prompts} test prompts per task; median wall "
        "time of repeated runs (the large model's encoding included), speed-up over the large "
        "model alone. "
        + " ".join(notes)
        + "\n\n"
        + _table(pd.DataFrame(rows))
        + "\n\n"
        + _figure("Accuracy against time", "results/llm_to_slm/accuracy_vs_time.png", doc_dir)
    )


def routers_section(root: Path, doc_dir: str = ".") -> str:
    summary = pd.read_csv(root / "results/routers/summary.csv")
    summary["pair"] = summary["large"] + "-" + summary["small"]
    calls = summary.pivot_table(
        index=["task", "pair"], columns="router", values="call_rate_for_95", sort=False
    )
    calls.columns = [f"{c}: call rate" for c in calls.columns]
    text = (
        "### Routers (stage 06)\n\n"
        "Share of tokens sent to the large model needed to reach 95% of its accuracy, per "
        "router (decoded for real on fresh prompts; thresholds calibrated on the traces).\n\n"
        + _table(calls.reset_index())
    )
    speedup_file = root / "results/routers/speedup.csv"
    if speedup_file.exists():
        speed = pd.read_csv(speedup_file)
        shown = speed[
            [
                "pair",
                "k",
                "tokens_per_round",
                "predicted_speedup_engine",
                "measured_speedup",
                "engine_error",
            ]
        ].rename(
            columns={
                "k": "draft length",
                "tokens_per_round": "tokens/round",
                "predicted_speedup_engine": "predicted speed-up",
                "measured_speedup": "measured",
                "engine_error": "relative error",
            }
        )
        text += (
            "\n\nSpeculative decoding over the large model alone, predicted from the oracle "
            "traces and measured (timings: one run, on the machine that ran the stage).\n\n"
            + _table(shown)
        )
    return (
        text
        + "\n\n"
        + _figure(
            "Accuracy against call rate", "results/routers/accuracy_vs_call_rate.png", doc_dir
        )
    )


def estimates_section(root: Path, doc_dir: str = ".") -> str:
    params = read_params(root / "params.yaml")
    logging = params["token_logging"]
    hub = [
        load_profile(name, root / "params.yaml")
        for name, spec in params["profiles"].items()
        if spec.get("kind") == "hub"
    ]
    table = estimate_table(
        hub,
        n_prompts=logging["n_prompts"],
        max_new_tokens=logging["max_new_tokens"],
        batch_size=logging["batch_size"],
        methods=logging["methods"].split(","),
    )
    return (
        "### GPU profiles: estimates from the models' shapes (not measurements)\n\n"
        f"Token logging with this `params.yaml` ({logging['n_prompts']} prompts per task, each "
        "profile's own generation length and batch, methods "
        f"{logging['methods']}), bf16, on H100 80GB GPUs at half their bandwidth and compute. "
        "Peak memory is the largest unit's (the oracle holds every rung at once): weights, KV "
        "cache at the longest prompt plus the new tokens, logits, activations; assumptions in "
        "`fsgen/analysis/estimates.py`. Model download and loading time not included. The GPU "
        "path is rehearsed on a fake hub on CPU, not measured (benchmarks/README.md).\n\n"
        + _table(table)
    )


SECTIONS: list[tuple[str, Callable[[Path], str]]] = [
    ("results/findings/findings.csv", findings_section),
    ("results/train_ladder/ladder.csv", ladder_section),
    ("results/frequency/frequency.csv", frequency_section),
    ("results/scaling_law/fits.csv", scaling_section),
    ("results/uncertainty/auroc.csv", uncertainty_section),
    ("results/llm_to_slm/results.csv", llm_to_slm_section),
    ("results/routers/summary.csv", routers_section),
    ("results/divergence/pairs.csv", divergence_section),
    ("results/accelerations/head_to_head.csv", accelerations_section),
    (f"{SNAPSHOTS}/{REAL_PROFILE}/results/token_logging/summary.csv", real_model_section),
    ("params.yaml", estimates_section),
]


def render_results(root: str | os.PathLike | None = None, doc_dir: str = "docs") -> str:
    """The full results block (markers included) from the outputs under `root`, its figures
    linked from a document in `doc_dir` (relative to the repository root: `docs/results.md`); a
    stage the workspace profile skipped has no section."""
    root = Path(root) if root is not None else resolve(".")
    parts = [
        render(root, doc_dir)
        for needed, render in SECTIONS
        if (root / needed).exists() and not is_not_run(root / needed)
    ]
    return "\n\n".join([START, *parts, END])


def render_findings(root: str | os.PathLike | None = None) -> str:
    """The README's findings block (markers included): stage 07's table and its caption."""
    root = Path(root) if root is not None else resolve(".")
    if not (root / "results/findings/findings.csv").exists():
        return "\n\n".join([FINDINGS_START, "No findings yet: run `dvc repro`.", FINDINGS_END])
    block = findings_table(root) + findings_figure(root)
    return "\n\n".join([FINDINGS_START, block, FINDINGS_END])


def _replace_block(path: str | os.PathLike, start: str, end: str, block: str, what: str) -> bool:
    """Replace the text from `start` to `end` (markers included) in `path` with `block`; True if
    the file changed."""
    path = resolve(path)
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {what} block; add the lines {start!r} and {end!r}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = head + block + tail
    if new != text:
        atomic_write_bytes(path, new.encode())
    return new != text


def update_readme(readme: str | os.PathLike = README, root=None) -> bool:
    """Replace the README's findings block with a fresh rendering; True if it changed."""
    block = render_findings(root)
    return _replace_block(readme, FINDINGS_START, FINDINGS_END, block, "findings")


def update_results_page(page: str | os.PathLike = RESULTS_PAGE, root=None) -> bool:
    """Replace the results page's block with a fresh rendering, its figures linked from the
    page's own folder; True if it changed."""
    root = Path(root) if root is not None else resolve(".")
    page_dir = os.path.relpath(resolve(page).parent, root)
    return _replace_block(page, START, END, render_results(root, page_dir), "results")


def main(argv: list[str] | None = None) -> int:
    """`python -m fsgen.stages.report [README [RESULTS_PAGE]]`: update both documents;
    `python -m fsgen.stages.report snapshot`: first keep the workspace profile's outputs."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["snapshot"]:
        print(f"kept {snapshot_profile()}")
        args = args[1:]
    if len(args) > 2 or any(a.startswith("-") for a in args):
        print(f"usage: python -m fsgen.stages.report [{README} [{RESULTS_PAGE}]]", file=sys.stderr)
        return 2
    readme = args[0] if args else README
    page = args[1] if len(args) > 1 else RESULTS_PAGE
    for path, update, what in (
        (readme, update_readme, "findings"),
        (page, update_results_page, "results"),
    ):
        changed = update(path)
        print(f"{path}: {what} {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
