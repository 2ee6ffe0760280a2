"""Stage 05: LLM-to-SLM against the large model alone, the small model alone and the small model
fine-tuned on the same budget.

`run(config, paths)` is the whole stage: it trains LLM-to-SLM and the fine-tuned small model
(checkpoints under `paths.out_dir`), measures the four systems' greedy accuracy and collaboration
frequency on each task's test split, times them on the same decoding loop, and writes the
deterministic metrics (`paths.metrics_file`), the timings apart (`paths.timing_file`), and the
CSV tables and figures (`paths.results_dir`). The functions below it compute and return; only
`run` and `train_systems` (the checkpoints) write files.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from fsgen.core.determinism import compute_threads, use_deterministic_algorithms
from fsgen.core.io import write_metrics
from fsgen.core.paths import resolve
from fsgen.core.plots import plot_training_curves, save_figure
from fsgen.core.timing import timed
from fsgen.data.scoring import accuracy, accuracy_interval
from fsgen.data.tasks import build_prompts, get_task, load_examples, score
from fsgen.engine.collaborate import Collaboration, collaborate_ladder, generate
from fsgen.models.llm_to_slm import ConditionedSmall, LLMToSLM, load_large, same_vocabulary
from fsgen.models.llm_to_slm_training import (
    TrainConfig,
    fine_tune_small,
    mixed_training_pairs,
    task_list,
    train_llm_to_slm,
)
from fsgen.models.profiles import Profile, count_parameters, load_model, load_profile
from fsgen.stages.config import LLMToSLM as LLMToSLMConfig
from fsgen.stages.config import StagePaths
from fsgen.stages.not_run import left_out

SYSTEMS = ("large", "small", "fine-tuned small", "LLM-to-SLM")
KEYS = dict(zip(SYSTEMS, ("large", "small", "fine_tuned_small", "llm_to_slm"), strict=True))
BUDGET = TrainConfig()  # the default training budget


@dataclass(frozen=True)
class Paths(StagePaths):
    """The stage's files and folders (the notebook's path parameters)."""

    out_dir: Path  # the checkpoints: llm_to_slm/ and fine_tuned_small/
    metrics_file: Path  # deterministic metrics
    timing_file: Path  # wall times and speed-ups
    results_dir: Path  # CSV tables and figures


@dataclass(frozen=True)
class Result:
    """What the stage computed: the pair, the training curves, the quality table (one row per
    task and system), the timing summary (median seconds and speed-ups) and the two joined."""

    pair: dict[str, str]
    curves: pd.DataFrame
    quality: pd.DataFrame
    speed: pd.DataFrame
    table: pd.DataFrame


def run(config: LLMToSLMConfig, paths: Paths) -> Result:
    """The stage: pair, train, evaluate, time, then write metrics, timings, tables and figures
    (`loss_curves` and `accuracy_vs_time`, PNG and SVG, under `paths.results_dir`)."""
    compute_threads(config.threads)
    use_deterministic_algorithms()  # sets CUBLAS_WORKSPACE_CONFIG first
    profile = load_profile(config.profile, config.params_file)
    if (skipped := left_out("llm_to_slm", profile, Result)) is not None:
        return skipped
    pair = stage_pair(profile, **config.pair().model_dump())
    budget = TrainConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        warmup_steps=config.warmup_steps,
        seed=config.seed,
    )
    systems = train_systems(
        profile,
        pair,
        out_dir=paths.out_dir,
        tasks=config.tasks,
        train_pairs=config.train_pairs,
        config=budget,
        layer=config.layer,
        fusion=config.fusion,
        projector_hidden=config.projector_hidden or None,
    )
    save_figure(plot_training_curves(systems.curves), paths.results_dir / "loss_curves")
    quality = evaluate_systems(
        systems,
        tasks=config.tasks,
        n_prompts=config.n_prompts,
        seed=config.seed,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.eval_batch_size,
    )
    timing = time_systems(
        systems,
        tasks=config.tasks,
        n_prompts=config.timing_prompts,
        seed=config.seed,
        max_new_tokens=config.max_new_tokens,
        batch_sizes=config.batch_sizes,
        repeats=config.repeats,
    )
    speed = summarize_timing(timing)
    write_metrics(paths.metrics_file, quality_metrics(quality, systems))
    write_metrics(paths.timing_file, timing_metrics(speed))
    table = speed.merge(quality, on=["task", "system"])
    results = paths.results_dir
    results.mkdir(parents=True, exist_ok=True)
    quality.to_csv(results / "quality.csv", index=False, float_format="%.6g")
    systems.curves.to_csv(results / "loss_curves.csv", index=False, float_format="%.6g")
    table.to_csv(results / "results.csv", index=False, float_format="%.6g")
    save_figure(plot_llm_to_slm(table), results / "accuracy_vs_time")
    return Result(pair, systems.curves, quality, speed, table)


# ----------------------------------------------------------------------------- the systems


@dataclass
class Systems:
    """What stage 05 compares: the large model alone (the pair's baseline: the large model
    itself, or for an encoder such as T5's, a causal LM named as the pair's `baseline`; None if
    none), the small model, the fine-tuned small model and LLM-to-SLM, with the training curves
    of the last two."""

    large: torch.nn.Module | None
    small: torch.nn.Module
    fine_tuned: torch.nn.Module
    llm_to_slm: LLMToSLM
    tokenizer: object  # the small model's
    names: dict[str, str] = field(default_factory=dict)  # which models made up the pair
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)


def stage_pair(profile: Profile, large: str, small: str, baseline: str = "") -> dict[str, str]:
    """The (large, small) pair and the large baseline as names, sources and revisions: a name is
    a rung of `profile` (its source and revision are the rung's) or a path / hub id (revision
    main). `baseline` ("": the large model itself) is the model the speed-up and the gap closed
    are measured against; an encoder-decoder large model (T5) cannot generate alone, so its
    pairing names a causal LM sharing the small model's tokenizer."""
    chosen = {"large": large, "small": small}
    for role, name in chosen.items():
        if not name:
            raise ValueError(f"no {role} model given for profile {profile.name!r}, got {name!r}")
    chosen["baseline"] = baseline
    rungs = {r.name: r for r in profile.rungs}
    pair = dict(chosen)
    for role, name in chosen.items():
        rung = rungs.get(name)
        pair[f"{role}_source"] = rung.model if rung else name
        pair[f"{role}_revision"] = rung.revision if rung else "main"
    return pair


def train_systems(
    profile: Profile,
    pair: dict[str, str],
    *,
    out_dir: str | os.PathLike,
    tasks: str | Sequence[str] = "synthetic",
    train_pairs: int = 2000,
    config: TrainConfig = BUDGET,
    layer: int = -1,
    fusion: str = "add",
    projector_hidden: int | None = None,
    progress: bool = True,
) -> Systems:
    """Load the pair, train LLM-to-SLM and the fine-tuned small baseline on the same budget
    (`train_pairs` pairs of each of `tasks`, interleaved), and save both checkpoints under
    `out_dir` (`llm_to_slm/`, `fine_tuned_small/`)."""
    load = {"dtype": profile.dtype, "device": profile.device}
    large, large_tok = load_large(pair["large_source"], revision=pair["large_revision"], **load)
    load["revision"] = pair["small_revision"]
    small, small_tok = load_model(pair["small_source"], **load)
    pairs = mixed_training_pairs(tasks, train_pairs, seed=config.seed)
    conditioned_small, _ = load_model(pair["small_source"], **load)
    model = LLMToSLM(
        large,
        conditioned_small,
        large_tok,
        small_tok,
        large_source=pair["large_source"],
        layer=layer,
        fusion=fusion,
        projector_hidden=projector_hidden,
        seed=config.seed,
    )
    curve = train_llm_to_slm(model, pairs, config, progress=progress)
    fine_tuned, _ = load_model(pair["small_source"], **load)
    baseline = fine_tune_small(fine_tuned, small_tok, pairs, config, progress=progress)
    out_dir = resolve(out_dir)
    model.save_pretrained(out_dir / "llm_to_slm")
    fine_tuned.save_pretrained(out_dir / "fine_tuned_small")
    small_tok.save_pretrained(out_dir / "fine_tuned_small")
    curves = pd.DataFrame(
        [{"model": "LLM-to-SLM", "step": s, "loss": v} for s, v in enumerate(curve)]
        + [{"model": "fine-tuned small", "step": s, "loss": v} for s, v in enumerate(baseline)]
    )
    names = {"large": pair["large"], "small": pair["small"], "baseline": pair.get("baseline", "")}
    return Systems(
        baseline_model(pair, model, small_tok, profile),
        small,
        fine_tuned,
        model,
        small_tok,
        names,
        curves,
    )


def baseline_model(pair: dict[str, str], model: LLMToSLM, small_tokenizer, profile: Profile):
    """The large model alone that LLM-to-SLM is compared with: the pair's `baseline` (a causal
    LM reading the small model's tokenizer), else the large model when it can generate, else
    None (no speed-up or gap-closed figure)."""
    if not pair.get("baseline"):
        return None if model.encoder_decoder else model.large
    baseline, tokenizer = load_model(
        pair["baseline_source"],
        revision=pair["baseline_revision"],
        dtype=profile.dtype,
        device=profile.device,
    )
    if not same_vocabulary(tokenizer, small_tokenizer):
        raise ValueError(
            f"the baseline {pair['baseline']!r} must read the small model's tokenizer (the "
            f"four systems decode the same prompts), but its vocabulary differs from "
            f"{pair['small']!r}'s"
        )
    return baseline


def _compared(systems: Systems) -> tuple[str, ...]:
    """The systems that can generate: without a baseline, an encoder (T5's) cannot alone."""
    return SYSTEMS if systems.large is not None else SYSTEMS[1:]


def run_system(systems: Systems, name: str, prompts, **kwargs) -> Collaboration:
    """Generate with one of the compared systems (greedy; the same loop, the engine's
    `generate`, for all four); LLM-to-SLM's summary adds `encode_seconds`, the large model's
    share of the time."""
    if name == "LLM-to-SLM":
        small, inputs = systems.llm_to_slm.decoder(prompts)
        result = generate(small, **inputs, **kwargs)
        result.summary["method"] = "llm_to_slm"
        result.summary["encode_seconds"] = small.encode_seconds
        return result
    model = {
        "large": systems.large,
        "small": systems.small,
        "fine-tuned small": systems.fine_tuned,
    }[name]
    return generate(model, systems.tokenizer, prompts, **kwargs)


# ----------------------------------------------------------------------------- measuring


def evaluate_systems(
    systems: Systems,
    *,
    tasks: str | Sequence[str] = "synthetic",
    n_prompts: int = 100,
    seed: int = 0,
    max_new_tokens: int = 160,
    batch_size: int = 50,
) -> pd.DataFrame:
    """Accuracy of the systems on each task's test split (greedy), and the collaboration
    frequency (oracle against the large model) of each small system: one row per task and
    system."""
    return pd.concat(
        [
            _evaluate_task(systems, task, n_prompts, seed, max_new_tokens, batch_size)
            for task in task_list(tasks)
        ],
        ignore_index=True,
    )


def _evaluate_task(systems, task, n_prompts, seed, max_new_tokens, batch_size) -> pd.DataFrame:
    examples = load_examples(task, n_prompts=n_prompts, seed=seed, split="test")
    prompts = build_prompts(task, examples)
    stop = list(get_task(task).stop)
    run = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "stop": stop}
    rows = []
    for name in _compared(systems):
        result = run_system(systems, name, prompts, **run)
        scores = score(task, result.texts, examples)
        low, high = accuracy_interval(scores)
        rows.append(
            {
                "task": task,
                "system": name,
                "accuracy": accuracy(scores),
                "accuracy_low": low,
                "accuracy_high": high,
                "tokens_per_prompt": result.summary["tokens"] / len(prompts),
            }
        )
    table = pd.DataFrame(rows)
    table["collaboration_frequency"] = float("nan")
    if systems.llm_to_slm.shared_vocab and "large" in _compared(systems):
        smalls = {
            "small": systems.small,
            "fine-tuned small": systems.fine_tuned,
            "LLM-to-SLM": ConditionedSmall(systems.llm_to_slm),
        }
        oracle = collaborate_ladder(systems.large, smalls, systems.tokenizer, prompts, **run)
        for name, result in oracle.items():
            table.loc[table.system == name, "collaboration_frequency"] = result.summary[
                "collaboration_frequency"
            ]
    table["prompts"] = len(prompts)
    return table


def time_systems(
    systems: Systems,
    *,
    tasks: str | Sequence[str] = "synthetic",
    n_prompts: int = 8,
    seed: int = 0,
    max_new_tokens: int = 160,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 3,
) -> pd.DataFrame:
    """Wall time of each system on the same test prompts of each task at each batch size,
    `repeats` times (systems interleaved within a repeat); one row per task, system, batch size
    and repeat.

    LLM-to-SLM's time includes the large model's encoding (`encode_seconds` says how much). Each
    run is timed by `fsgen.core.timing.timed`: after a full garbage collection, with the collector off
    (a full collection walks the whole process heap, large after training)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows = []
    for task in task_list(tasks):
        examples = load_examples(task, n_prompts=n_prompts, seed=seed, split="test")
        rows += _time_task(
            systems, task, build_prompts(task, examples), max_new_tokens, batch_sizes, repeats
        )
    return pd.DataFrame(rows)


def _time_task(systems, task, prompts, max_new_tokens, batch_sizes, repeats) -> list[dict]:
    stop = list(get_task(task).stop)
    rows = []
    for repeat in range(repeats):
        for batch_size in batch_sizes:
            for name in _compared(systems):
                run = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "stop": stop}
                seconds, _, result = timed(
                    lambda n=name, r=run: run_system(systems, n, prompts, **r)
                )
                rows.append(
                    {
                        "task": task,
                        "system": name,
                        "batch_size": batch_size,
                        "repeat": repeat,
                        "seconds": seconds,
                        "tokens": result.summary["tokens"],
                        "encode_seconds": result.summary.get("encode_seconds", 0.0),
                    }
                )
    return rows


def summarize_timing(timing: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per task, system and batch size, and the speed-up over the large model
    alone (large-alone time / the system's time, on the same prompts)."""
    table = (
        timing.groupby(["task", "batch_size", "system"], sort=False)
        .agg(
            seconds=("seconds", statistics.median),
            tokens=("tokens", "median"),
            encode_seconds=("encode_seconds", statistics.median),
        )
        .reset_index()
    )
    large = table[table.system == "large"].set_index(["task", "batch_size"])["seconds"]
    keys = pd.MultiIndex.from_frame(table[["task", "batch_size"]])
    table["speedup_vs_large"] = large.reindex(keys).to_numpy() / table["seconds"].to_numpy()
    table["ms_per_token"] = 1000 * table["seconds"] / table["tokens"].clip(lower=1)
    return table


# ----------------------------------------------------------------------------- metrics


def quality_metrics(quality: pd.DataFrame, systems: Systems) -> dict[str, object]:
    """The deterministic metrics: per task, accuracies with their intervals, parameter counts and
    collaboration frequencies (`_task_metrics`), then the final training losses."""
    params = {
        "large": count_parameters(systems.large)["total"] if systems.large is not None else None,
        "small": count_parameters(systems.small)["total"],
        "fine-tuned small": count_parameters(systems.fine_tuned)["total"],
        "LLM-to-SLM": sum(p.numel() for p in systems.llm_to_slm.parameters()),
    }
    metrics: dict[str, object] = {}
    for task, rows in quality.groupby("task", sort=False):
        metrics |= _task_metrics(task, rows, params)
    if not systems.curves.empty:
        last = systems.curves.groupby("model")["loss"].last()
        metrics["llm_to_slm.final_train_loss"] = float(last["LLM-to-SLM"])
        metrics["fine_tuned_small.final_train_loss"] = float(last["fine-tuned small"])
    return metrics


def timing_metrics(speed: pd.DataFrame) -> dict[str, object]:
    """The timings `<task>.<system>.batch<b>.<name>` of `summarize_timing`'s table: median
    seconds, milliseconds per token, the speed-up over the large model, and LLM-to-SLM's
    encoding seconds."""
    timings: dict[str, object] = {}
    for row in speed.itertuples():
        prefix = f"{row.task}.{KEYS[row.system]}.batch{row.batch_size}"
        timings[f"{prefix}.seconds"] = row.seconds
        timings[f"{prefix}.ms_per_token"] = row.ms_per_token
        timings[f"{prefix}.speedup_vs_large"] = row.speedup_vs_large
        if row.system == "LLM-to-SLM":
            timings[f"{prefix}.encode_seconds"] = row.encode_seconds
    return timings


def _task_metrics(task: str, quality: pd.DataFrame, params: dict) -> dict:
    """One task's metrics `<task>.<system>.<name>`: accuracy with its interval, parameters, the
    collaboration frequency of each small system; LLM-to-SLM's accuracy relative to the large
    model's, and the share of the fine-tuned small model's gap to the large one it closes."""
    metrics: dict[str, object] = {f"{task}.prompts": int(quality["prompts"].iloc[0])}
    for row in quality.itertuples():
        stem = f"{task}.{KEYS[row.system]}"
        for name in ("accuracy", "accuracy_low", "accuracy_high"):
            metrics[f"{stem}.{name}"] = getattr(row, name)
        metrics[f"{stem}.params"] = params[row.system]
        if row.system != "large":
            metrics[f"{stem}.collaboration_frequency"] = row.collaboration_frequency
    acc = quality.set_index("system")["accuracy"]
    large = acc.get("large")
    gap = large - acc["fine-tuned small"] if large is not None else 0.0
    closed = (acc["LLM-to-SLM"] - acc["fine-tuned small"]) / gap if gap else None
    metrics[f"{task}.gap_closed"] = closed
    metrics[f"{task}.llm_to_slm.relative_quality"] = acc["LLM-to-SLM"] / large if large else None
    return metrics


# ----------------------------------------------------------------------------- figures


def plot_llm_to_slm(table: pd.DataFrame) -> plt.Figure:
    """Accuracy against median wall time, one marker per system and batch size (one panel per
    task of `table`, `run`'s results table)."""
    sns.set_theme(style="whitegrid", context="notebook")
    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    data = table.assign(batch=table["batch_size"].map(lambda b: f"batch {b}"))
    for ax, task in zip(axes[0], tasks, strict=True):
        sns.scatterplot(
            data=data[data.task == task],
            x="seconds",
            y="accuracy",
            hue="system",
            style="batch",
            s=90,
            ax=ax,
            legend=ax is axes[0][-1],
        )
        ax.set_xscale("log")
        ax.set(
            xlabel="median wall time (s, log scale)",
            ylabel=f"{task} accuracy (test split)",
            title=f"LLM-to-SLM on {task}: quality against time",
        )
    return fig
