"""The real model's results beside the embedded ladder's: a profile's outputs kept in a snapshot
(`results/profiles/<profile>/`, `python -m fsgen.stages.report snapshot` after
`dvc exp run -S profile=smollm2`), and its section of docs/results.md."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsgen.core.io import atomic_write_bytes
from fsgen.core.paths import resolve
from fsgen.models.profiles import read_params
from fsgen.stages.tables import fmt, markdown_table

REAL_PROFILE = "smollm2"  # the real model's profile, whose snapshot joins the findings table
SNAPSHOTS = "results/profiles"  # snapshot_profile's folder: results/profiles/<profile>/
SNAPSHOT_FILES = (  # what a profile's snapshot keeps of the workspace's outputs
    "results/train_ladder/ladder.csv",
    "results/token_logging/summary.csv",
    "results/frequency/frequency.csv",
    "results/scaling_law/fits.csv",
    "results/uncertainty/auroc.csv",
    "results/uncertainty/position.csv",
    "results/findings/findings.csv",
    "results/findings/caption.md",
    "metrics/train_ladder.json",
    "metrics/train_ladder_timing.json",
    "metrics/token_logging.json",
    "metrics/frequency.json",
    "metrics/findings.json",
)


def snapshot_profile(root: Path | None = None) -> Path:
    """Copy the workspace's outputs of the profile params.yaml names (after
    `dvc exp run -S profile=smollm2`, say) into results/profiles/<profile>/, replacing an earlier
    snapshot of it, so that they stay beside the embedded ladder's; returns the folder."""
    root = Path(root) if root is not None else resolve(".")
    profile = read_params(root / "params.yaml")["profile"]
    folder = root / SNAPSHOTS / profile
    missing = [f for f in SNAPSHOT_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"profile {profile!r} has no outputs {missing}: run dvc repro")
    for name in SNAPSHOT_FILES:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, (root / name).read_bytes())
    return folder


def _interval(frame: pd.DataFrame, column: str) -> pd.Series:
    """`column` with its 95% interval (`<column>_low`, `<column>_high`) as one text."""
    return frame.apply(
        lambda r: f"{fmt(r[column])} [{fmt(r[column + '_low'])}, {fmt(r[column + '_high'])}]",
        axis=1,
    )


def real_model_section(root: Path, doc_dir: str = ".") -> str:
    """The real model's profile (its snapshot, `snapshot_profile`): the drafts' table and the
    token-logging results, collaboration frequency and accuracy with their intervals."""
    base = root / SNAPSHOTS / REAL_PROFILE
    ladder = pd.read_csv(base / "results/train_ladder/ladder.csv")
    drafts = ladder[["model", "variant", "params", "non_embedding_params", "heldout_loss"]]
    drafts = drafts.assign(agreement=ladder["agreement"])
    summary = pd.read_csv(base / "results/token_logging/summary.csv")
    logged = summary[["task", "method", "large", "small", "prompts", "tokens"]].assign(
        **{
            "CF [95%]": _interval(summary, "collaboration_frequency"),
            "accuracy [95%]": _interval(summary, "accuracy"),
        }
    )
    return "\n\n".join(
        [
            f"### The real model ({REAL_PROFILE} profile)",
            "SmolLM2-135M-Instruct (System 2) and drafts trained on its tokenizer (System 1), "
            "GSM8K in the model's chat format ([real_model.md](real_model.md)). The drafts: "
            "parameters, held-out loss (nats/token, held-out GSM8K training solutions) and "
            "agreement with the large model's greedy answers.",
            markdown_table(drafts),
            "Token logging: collaboration frequency and accuracy (Wilson) with 95% intervals "
            "(`alone`: the model decodes alone; its CF column is empty).",
            markdown_table(logged),
        ]
    )
