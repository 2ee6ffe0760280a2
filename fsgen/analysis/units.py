"""Token-logging units: the pieces of work of stage 01 and what one unit decodes.

The work is cut into units (task x method x pair x chunk of prompts), grouped by large rung. The
plan follows the method registry (`fsgen.engine.methods.METHODS`), so a method added there is
logged too:

- `alone`: every rung generates by itself (greedy), for accuracy of System 1 and System 2 alone.
- a ladder-wide method (`oracle`): one generation per large rung, scored by every smaller rung.
- a method that runs the tuned small model (`proxy`): every pair whose small rung has a tuned
  variant, on prompts in the chat format.
- every other method of a pair (`contrastive`, `contrastive_obrien`, `speculative`): every pair
  (large rung > small rung).

A unit's key names what decides its result besides the run-wide settings (its task, method,
rungs, chunk, number of prompts and `max_new_tokens`). `log_unit` decodes one unit in whatever
process runs it, with this process's model cache (`fsgen.models.cache`), and returns its trace
and generations; the stage writes them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from fsgen.data.tasks import get_task, score
from fsgen.engine.collaborate import collaborate, collaborate_ladder
from fsgen.engine.methods import get_method, logging_methods
from fsgen.models.cache import ModelCache, models_for
from fsgen.models.profiles import Profile
from fsgen.models.prompts import profile_prompts


@dataclass(frozen=True)
class Unit:
    """One piece of logging work."""

    task: str
    method: str
    large: str  # the rung that generates (for `alone`, the rung itself)
    small: str  # "" for `alone` and for `oracle`, which covers every smaller rung
    chunk: int
    prompts: int = 0  # how many prompts the chunk holds (0: not yet sized)
    max_new_tokens: int = 0

    @property
    def key(self) -> str:
        key = f"{self.task}+{self.method}+{self.large}+{self.small or '-'}+c{self.chunk:04d}"
        return key + f"+n{self.prompts}+m{self.max_new_tokens}"


def plan_units(
    profile: Profile,
    tasks: Sequence[str],
    methods: Sequence[str],
    n_chunks: int,
    ladder_chunks: int | None = None,
) -> list[Unit]:
    """Every unit of a logging run, grouped by large rung so models can be loaded once.

    Methods of a pair run `n_chunks` chunks of prompts; the cheap ones, each rung `alone` and
    the ladder-wide `oracle`, run `ladder_chunks` (default: as many)."""
    methods = logging_methods(methods)
    ladder_chunks = n_chunks if ladder_chunks is None else ladder_chunks
    units = []
    for task in tasks:
        for j, large in enumerate(profile.rungs):
            for method in methods:
                chunks = ladder_chunks if runs_ladder_prompts(method) else n_chunks
                for small in _smalls(method, profile.rungs[:j]):
                    units += [Unit(task, method, large.name, small, c) for c in range(chunks)]
    return units


def runs_ladder_prompts(method: str) -> bool:
    """Whether `method` is logged on the larger, ladder-wide prompt set (`alone`, `oracle`)."""
    return method == "alone" or get_method(method).ladder_wide


def _smalls(method: str, smaller) -> list[str]:
    """The small rungs a unit of `method` pairs with a large rung ("": the unit covers them)."""
    if method == "alone":
        return [""]
    spec = get_method(method)
    if spec.ladder_wide:
        return [""] if smaller else []
    return [s.name for s in smaller if s.tuned or not spec.uses_tuned]


def needed_models(unit: Unit, profile: Profile) -> set[tuple[str, bool]]:
    """The models `unit` runs, as (rung name, tuned) keys of the model cache."""
    if unit.method == "alone":
        return {(unit.large, False)}
    spec = get_method(unit.method)
    if spec.ladder_wide:
        smaller = profile.rungs[: [r.name for r in profile.rungs].index(unit.large)]
        return {(unit.large, False)} | {(r.name, False) for r in smaller}
    needed = {(unit.large, False), (unit.small, False)}
    return needed | ({(unit.small, True)} if spec.uses_tuned else set())


def run_unit(
    unit,
    cache: ModelCache,
    prompts,
    examples,
    offset: int,
    *,
    max_new_tokens: int,
    batch_size: int,
    trace_top_k: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decode one unit; returns (trace, generations) with the unit's columns added."""
    task = get_task(unit.task)
    kwargs = {
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "trace_top_k": trace_top_k,
        "stop": list(task.stop),
    }
    drafts = unit.method != "alone" and get_method(unit.method).drafts
    if drafts and cache.profile.num_draft is not None:  # the profile's speculative draft length
        kwargs["num_draft"] = cache.profile.num_draft
    large = cache.get(unit.large)
    tokenizer = cache.tokenizer
    if unit.method == "alone":
        results = {"": collaborate(large, large, tokenizer, prompts, method="large", **kwargs)}
    elif get_method(unit.method).ladder_wide:
        smalls = {
            name: cache.get(name)
            for name, tuned in sorted(needed_models(unit, cache.profile))
            if name != unit.large
        }
        results = collaborate_ladder(large, smalls, tokenizer, prompts, **kwargs)
    else:
        small = cache.get(unit.small)
        tuned = cache.get(unit.small, tuned=True) if get_method(unit.method).uses_tuned else None
        results = {
            unit.small: collaborate(
                small, large, tokenizer, prompts, method=unit.method, small_tuned=tuned, **kwargs
            )
        }
    traces, generations = [], []
    for small_name, out in sorted(results.items()):
        labels = {
            "task": unit.task,
            "method": unit.method,
            "large": unit.large,
            "small": small_name,
        }
        trace = out.trace.assign(**labels)
        trace["prompt_id"] = trace["prompt_id"] + offset
        traces.append(trace)
        generations.append(
            pd.DataFrame(
                {
                    **labels,
                    "prompt_id": range(offset, offset + len(prompts)),
                    "example_id": [e.id for e in examples],
                    "text": out.texts,
                    "tokens": [len(t) for t in out.tokens],
                    "correct": score(unit.task, out.texts, examples),
                }
            )
        )
    return pd.concat(traces, ignore_index=True), pd.concat(generations, ignore_index=True)


def model_set(unit: Unit, profile: Profile) -> tuple[tuple[str, bool], ...]:
    """The models `unit` holds at once, sorted: units with the same set share their loads."""
    return tuple(sorted(needed_models(unit, profile)))


def models_large_first(unit: Unit, profile: Profile) -> list[tuple[str, bool]]:
    """The models of `unit`, the large rung first (the estimate sizes activations by it)."""
    return sorted(needed_models(unit, profile), key=lambda item: item != (unit.large, False))


@dataclass(frozen=True)
class UnitJob:
    """One unit to decode (a `log_tokens` job): its examples and where they start in the
    selection, and the decoding settings."""

    profile: Profile
    unit: Unit
    examples: list
    offset: int
    data_dir: str | os.PathLike | None
    batch_size: int
    trace_top_k: int


def log_unit(job: UnitJob) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Decode `job`'s unit: its trace, its generations and the models loaded for it (a worker
    keeps the models of its last unit, so the next unit of the same models loads none)."""
    unit, profile = job.unit, job.profile
    cache = models_for(profile)
    loads_before = cache.loads
    cache.keep(needed_models(unit, profile))
    cache.get(unit.large)  # loads the tokenizer with the first model
    # proxy tuning steers the base large model toward the tuned small one: its prompts are in the
    # tuned models' chat format (a profile in the chat style asks every method so, zero-shot)
    tuned = unit.method != "alone" and get_method(unit.method).uses_tuned
    prompts = profile_prompts(
        profile,
        unit.task,
        job.examples,
        data_dir=job.data_dir,
        tokenizer=cache.tokenizer,
        tuned=tuned,
    )
    trace, generations = run_unit(
        unit,
        cache,
        prompts,
        job.examples,
        job.offset,
        max_new_tokens=unit.max_new_tokens,
        batch_size=job.batch_size,
        trace_top_k=job.trace_top_k,
    )
    return trace, generations, cache.loads - loads_before


def unit_cost(unit: Unit, profile: Profile) -> float:
    """A unit's rough compute: its prompts times the `compute_weight` of the models it runs."""
    return unit.prompts * sum(
        profile.rung(name).compute_weight for name, _ in needed_models(unit, profile)
    )
