"""Stage 09, three accelerations head to head: on the same fresh prompts, in one process, the
large model alone, the small model alone, the best router at 95% of the large model's accuracy,
greedy speculative decoding at its best draft length and LLM-to-SLM (with its own small model
alone), each with its accuracy (Wilson 95% interval) and median wall time per generated token at
each batch size, and which of them are on the Pareto front (`fsgen.analysis.accelerations`: the
choices' rules, the measurements and the Pareto rule).

The prompts are the task's `n_prompts` test examples of the token logs' selection (their seed and
data directory) that follow the router sweep's (`routers.prompt_offset + routers.n_prompts` on):
past the prompts token logging traced
(the router's calibration, the draft length's speed-up study) and the router sweep decoded (the
router's choice), so that no system was chosen or calibrated on them. The large model is the
pair's; LLM-to-SLM joins when its large model is that one (stage 05's pair of the profile).

Writes `head_to_head.csv` (one row per system and batch size), `timings.csv` (every timed run)
and the figure `accuracy_vs_time` under `results_dir`; the deterministic metrics (accuracies,
the choices that read no timing) in `metrics_file`; the timings, the draft length and the Pareto
set in `timing_file`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsgen.analysis import accelerations
from fsgen.analysis.routing import oracle_trace, profile_task
from fsgen.core.determinism import compute_threads
from fsgen.core.io import write_metrics
from fsgen.core.plots import save_figure
from fsgen.core.shards import merge_logs
from fsgen.data.tasks import get_task, load_examples
from fsgen.models.cache import models_for, release_models
from fsgen.models.llm_to_slm import CONFIG_FILE, LLMToSLM
from fsgen.models.profiles import Profile, load_profile
from fsgen.models.prompts import profile_prompts
from fsgen.stages.config import Accelerations, StagePaths
from fsgen.stages.divergence import logged_selection
from fsgen.stages.not_run import left_out

CHECKPOINT = "llm_to_slm"  # stage 05's LLM-to-SLM folder under its out_dir


@dataclass(frozen=True)
class Paths(StagePaths):
    logs_dir: Path  # stage 01's token logs: the oracle traces the router is calibrated on
    llm_to_slm_dir: Path  # stage 05's checkpoints
    routers_file: Path  # stage 06's summary.csv: the pair and the router
    speedup_file: Path  # stage 06's speedup.csv: the draft length
    divergence_file: Path  # stage 08's mismatches.csv (absent: no learned_divergent)
    metrics_file: Path
    timing_file: Path  # the timings, the draft length and the Pareto set
    results_dir: Path


@dataclass(frozen=True)
class Result:
    table: pd.DataFrame  # per system and batch size: accuracy, interval, ms per token, front
    timing: pd.DataFrame  # every timed run
    choices: dict  # the pair, the router and its call rate, the draft length, LLM-to-SLM's pair
    seconds: float


def _table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def llm_to_slm_pair(config: Accelerations, profile: Profile, large: str) -> tuple[str, str] | None:
    """Stage 05's (large, small) of the profile when it can join the head-to-head: both rungs of
    the profile, its large model the pair's `large`, no other baseline; else None."""
    pair = config.llm_to_slm.pairs.get(profile.name)
    rungs = {rung.name for rung in profile.rungs}
    if pair is None or pair.baseline or pair.large != large or pair.small not in rungs:
        return None
    return pair.large, pair.small


def load_llm_to_slm(folder: Path, profile: Profile, large_name: str, large, tokenizer):
    """Stage 05's LLM-to-SLM checkpoint on the already loaded large model; None where stage 05
    wrote none (a profile that skips it)."""
    if not (folder / CONFIG_FILE).is_file():
        return None
    recorded = json.loads((folder / CONFIG_FILE).read_text())["large"]
    if recorded != profile.rung(large_name).model:
        raise ValueError(
            f"the LLM-to-SLM checkpoint at {folder} was trained on the large model {recorded!r}, "
            f"expected {profile.rung(large_name).model!r} (rung {large_name}): rerun stage 05"
        )
    return LLMToSLM.from_pretrained(
        folder, large=large, large_tokenizer=tokenizer, dtype=profile.dtype, device=profile.device
    )


def run(config: Accelerations, paths: Paths) -> Result:
    """The head-to-head, written under `paths` (see the module docstring)."""
    started = time.perf_counter()
    compute_threads(config.threads)
    profile = load_profile(config.profile, config.params_file)
    if (skipped := left_out("accelerations", profile, Result)) is not None:
        return skipped
    task, max_new_tokens = profile_task(profile, config.task, config.max_new_tokens)
    seed, logged_dir = logged_selection(paths.logs_dir)
    data_dir = config.data_dir or logged_dir
    summary, speedup = _table(paths.routers_file), _table(paths.speedup_file)
    stage_05 = config.llm_to_slm.pairs.get(profile.name)
    llm_large = stage_05.large if stage_05 is not None else None
    pair = (
        tuple(config.pair)
        if config.pair != "auto"
        else accelerations.choose_pair(summary, task, llm_large)
    )
    router, call_rate = accelerations.best_router(summary, task, pair)
    draft_length = accelerations.best_draft_length(speedup, pair)
    traces, _ = merge_logs(paths.logs_dir)
    divergence = _table(paths.divergence_file)
    calibration = accelerations.recalibrate(
        oracle_trace(traces, task, *pair),
        router,
        call_rate,
        fit_fraction=config.routers.fit_fraction,
        top_k=config.routers.top_k,
        seed=config.routers.seed,
        divergence=divergence if "pair" in divergence else None,
        pair=f"{pair[0]}-{pair[1]}",
    )
    del traces
    offset = config.routers.prompt_offset + config.routers.n_prompts  # past the router sweep's
    examples = load_examples(
        task, data_dir=data_dir, n_prompts=offset + config.n_prompts, seed=seed
    )[offset:]
    prompts = profile_prompts(profile, task, examples, data_dir=data_dir)
    decoding = {"max_new_tokens": max_new_tokens, "stop": list(get_task(task).stop)}
    models = models_for(profile)
    try:
        large, small, tokenizer = models.get(pair[0]), models.get(pair[1]), models.tokenizer
        systems = accelerations.pair_systems(
            large, small, tokenizer, pair, calibration, draft_length
        )
        joined = llm_to_slm_pair(config, profile, pair[0])
        model = None
        if joined is not None:
            folder = paths.llm_to_slm_dir / CHECKPOINT
            model = load_llm_to_slm(folder, profile, pair[0], large, tokenizer)
        if model is not None:
            alone = models.get(joined[1]) if joined[1] != pair[1] else None
            systems += accelerations.llm_to_slm_systems(model, alone, tokenizer, joined)
        quality, outputs = accelerations.measure_accuracy(
            systems, prompts, examples, task, batch_size=config.batch_size, decoding=decoding
        )
        timing = accelerations.time_systems(
            systems,
            prompts[: config.timing_prompts],
            batch_sizes=config.batch_sizes,
            repeats=config.repeats,
            decoding=decoding,
        )
    finally:
        release_models()
    choices = {
        "task": task,
        "pair": f"{pair[0]}-{pair[1]}",
        "router.kind": router,
        "router.target_call_rate": call_rate,
        "router.predicted_call_rate": calibration.predicted_call_rate,
        "llm_to_slm.pair": f"{joined[0]}-{joined[1]}" if model is not None else "left out",
        "speculative.same_as_large": int(outputs["speculative"].texts == outputs["large"].texts),
    }
    result = Result(
        accelerations.head_to_head(quality, timing),
        timing,
        choices | {"speculative.draft_length": draft_length},
        time.perf_counter() - started,
    )
    write_outputs(result, quality, choices, draft_length, paths)
    return result


def write_outputs(result: Result, quality, choices: dict, draft_length: int, paths: Paths) -> None:
    """head_to_head.csv, timings.csv, the figure, the metrics and the timings."""
    results = paths.results_dir
    results.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(results / "head_to_head.csv", index=False, float_format="%.6g")
    result.timing.to_csv(results / "timings.csv", index=False, float_format="%.6g")
    save_figure(accelerations.plot_head_to_head(result.table), results / "accuracy_vs_time")
    write_metrics(paths.metrics_file, accelerations.accuracy_metrics(quality, choices))
    timings = accelerations.timing_metrics(result.table, draft_length)
    write_metrics(paths.timing_file, timings | {"stage_seconds": round(result.seconds, 3)})
