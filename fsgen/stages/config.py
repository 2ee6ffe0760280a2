"""Each stage's values, written once: the real ones in its section of `params.yaml`, the tiny ones
in its notebook's parameters cell.

A notebook calls `stage_config(section, params_file, tiny)`: with `params_file` (what
`dvc repro` passes) the values come from that file's section (and its top-level `profile`), so
`dvc exp run -S token_logging.n_prompts=128` reaches the notebook; with `params_file=""` they are
the notebook's own tiny values. Either way they are checked against the section's schema below:
an unknown or missing key, or a value of the wrong type, is an error naming the file, the key and
what was expected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
)

from fsgen.core.executor import Executor, as_executor
from fsgen.core.io import read_yaml
from fsgen.core.names import name_list
from fsgen.core.paths import resolve


def _split_commas(value: Any) -> Any:
    """'a,b' -> ['a', 'b'] (a list written as one string, as on a command line); else as is."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _pair_items(value: Any) -> Any:
    """Pairs as data: [large, small] lists or {large: ..., small: ...} mappings (rung names may
    hold hyphens, so a pair is never a string to split); "auto" is left for the stage."""
    if value == "auto" or not isinstance(value, list):
        return value
    return [
        [item.get("large"), item.get("small")]
        if isinstance(item, dict) and set(item) == {"large", "small"}
        else item
        for item in value
    ]


def _one_pair(value: Any) -> Any:
    """One pair as data: [large, small] or {large: ..., small: ...}; "auto" is left for the stage."""
    if isinstance(value, dict) and set(value) == {"large", "small"}:
        return [value["large"], value["small"]]
    return value


# Values within their meaning: counts of things (>= 1), counts that may be none (>= 0), seeds,
# shares and probabilities in [0, 1], rates > 0; floats finite; whole numbers never booleans
Count = Annotated[int, Strict(), Field(ge=1)]
Size = Annotated[int, Strict(), Field(ge=0)]  # a count that may be 0, an offset or a seed
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]  # a split: some on each side
Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # a learning rate
StrList = Annotated[list[str], BeforeValidator(name_list)]
ExecutorSpec = Annotated[Executor, BeforeValidator(as_executor)]
Pairs = Annotated[Literal["auto"] | list[tuple[str, str]], BeforeValidator(_pair_items)]
Pair = Annotated[Literal["auto"] | tuple[str, str], BeforeValidator(_one_pair)]
Workers = Literal["auto"] | Count  # worker processes: "auto" (as many as the cores hold) or a count
CountList = Annotated[list[Count], BeforeValidator(_split_commas)]
ShareList = Annotated[list[Share], BeforeValidator(_split_commas)]


class StageConfig(BaseModel):
    """The values of one stage: every key required, none unknown, types checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uses_profile: ClassVar[bool] = True  # whether the stage reads params.yaml's `profile`
    uses_executor: ClassVar[bool] = False  # whether it fans out jobs (params.yaml's `executor`)
    # values of other stages' sections the stage reads too, each given to it as a mapping under
    # that section's name (their one home stays that section): {section: (key, ...)}
    reads: ClassVar[dict[str, tuple[str, ...]]] = {}
    _params_file: str = PrivateAttr(default="")  # where the values came from ("": tiny values)

    @property
    def params_file(self) -> str:
        """The params file the values were read from, where the stage also finds its profile
        ("": the notebook's tiny values, whose profiles are the repository's params.yaml)."""
        return self._params_file


class Drafts(BaseModel):
    """How a packaged profile's drafts train (see `fsgen.models.drafts.DraftConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    data_dir: str  # GSM8K's training questions: "" is $FSGEN_DATA_DIR, else the hub
    data: Literal["distilled", "gold"]  # the large model's answers, or the gold solutions
    distill_questions: Count  # distilled: the first training questions the large model answers
    block_size: Count
    batch_size: Count
    steps: Count
    warmup_steps: Size
    heldout_questions: Count  # the last training questions, never trained on
    reference_answers: Count  # of those, answered by the large model for the agreement
    eval_batch_size: Count


class TrainLadder(StageConfig):
    """Stage 00: how the embedded ladder is trained (see `fsgen.models.ladder.LadderConfig`)."""

    uses_executor: ClassVar[bool] = True
    profile: str
    executor: ExecutorSpec  # where the rungs train: "local" processes or "ray" tasks
    seed: Size
    vocab_size: Count
    train_problems: Count
    test_problems: Count
    block_size: Count
    batch_size: Count
    steps: Count
    warmup_steps: Size
    tune_problems: Size
    tune_steps: Size
    tune_lr: Rate
    chat_share: Share  # share of the base corpus's problems also told as a bare-answer dialogue
    expression_share: Share  # share also told as a formula (the expression task's format)
    max_new_tokens: Count
    threads: Count  # CPU threads each rung trains on (the weights' float sums depend on the count)
    workers: Workers  # rungs trained at once, each in its own process (wall time only)
    drafts: Drafts  # a packaged profile's drafts (the embedded ladder ignores it)


class TokenLogging(StageConfig):
    """Stage 01: which methods are logged on how many prompts of each task."""

    uses_executor: ClassVar[bool] = True
    profile: str
    executor: ExecutorSpec  # where the units run: "local" processes or "ray" tasks
    methods: str | list[str]  # "all" (the registry's every method), or their names
    data_dir: str  # a local data directory (like ../shared/data); "": FSGEN_DATA_DIR or none
    n_prompts: Count  # prompts per task for the methods of a pair
    ladder_prompts: Count  # prompts per task for each rung alone and the ladder-wide oracle
    chunk_size: Count
    max_new_tokens: Count
    batch_size: Count
    seed: Size
    bootstrap: Count  # resamples of the prompts for each collaboration frequency's interval
    threads: Count  # CPU threads each unit computes on (the traces' float sums depend on the count)
    workers: Workers  # units decoded at once, each in its own process (wall time only)


class Frequency(StageConfig):
    """Stage 02: which parameter count of the ladder table sizes a rung."""

    profile: str
    size_column: str


class ScalingLaw(StageConfig):
    """Stage 03: the scaling-law fits and the paper's dataset they are drawn beside."""

    uses_profile: ClassVar[bool] = False
    uses_executor: ClassVar[bool] = True
    executor: ExecutorSpec  # where the groups are fitted: "local" processes or "ray" tasks
    bootstrap: Size
    seed: Size
    paper_dataset: str
    workers: Workers  # groups fitted at once, each in its own process (wall time only)


class Uncertainty(StageConfig):
    """Stage 04: the uncertainty study on one method's traces."""

    uses_profile: ClassVar[bool] = False
    method: str
    entropy_bin_count: Count
    example_pair: str  # the top-k example's pair, like "e3-e0"; "": the widest pair logged
    example_tokens: Count
    bootstrap: Size  # resamples of the prompts for each AUROC's interval


class LLMToSLMPair(BaseModel):
    """The large model that encodes and the small one that generates (a rung name or a path),
    and the large model alone they are measured against ("": the large model itself; an
    encoder such as T5's cannot generate, so its pairing names a causal LM here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    large: str
    small: str
    baseline: str = ""


class LLMToSLM(StageConfig):
    """Stage 05: LLM-to-SLM against the large model and a fine-tuned small one."""

    profile: str
    pairs: dict[str, LLMToSLMPair]  # per profile
    tasks: StrList  # trained on together (pairs interleaved), evaluated and timed one by one
    layer: int  # hidden layer of a decoder-only large model (-1: the last)
    fusion: str  # "add" or "replace"
    projector_hidden: Size  # 0: the wider of the two models
    train_pairs: Count
    steps: Count
    batch_size: Count
    lr: Rate
    warmup_steps: Size
    n_prompts: Count
    eval_batch_size: Count
    timing_prompts: Count
    batch_sizes: CountList
    repeats: Count
    max_new_tokens: Count
    seed: Size
    threads: Count

    def pair(self) -> LLMToSLMPair:
        """The pair of this config's profile."""
        if self.profile not in self.pairs:
            raise ValueError(
                f"llm_to_slm.pairs has no pair for profile {self.profile!r} (it has "
                f"{sorted(self.pairs)}): add llm_to_slm.pairs.{self.profile}.large and .small"
            )
        return self.pairs[self.profile]


class Routers(StageConfig):
    """Stage 06: the router sweep and the speed-up study."""

    uses_executor: ClassVar[bool] = True
    profile: str
    executor: ExecutorSpec  # where the sweep's runs decode: "local" processes or "ray" tasks
    task: str  # "": the profile's first task
    data_dir: str  # "": the data directory the token logs were made from
    pairs: Pairs  # [[large, small], ...]; "auto": the largest rung with the two below it
    target_call_rates: ShareList
    n_prompts: Count
    prompt_offset: Size
    seed: Size
    fit_fraction: Fraction
    top_k: Count
    max_new_tokens: Count
    batch_size: Count
    speedup_pairs: Pairs  # as pairs; []: no speed-up study
    draft_lengths: CountList
    speedup_prompts: Size
    repeats: Count
    probe_tokens: CountList
    threads: Count
    workers: Workers  # sweep runs decoded at once, each in its own process (not the speed-up study)


class Divergence(StageConfig):
    """Stage 08: neutral and divergent mismatches, branched from the oracle traces."""

    profile: str
    task: str  # "": the profile's first task
    data_dir: str  # "": the data directory the token logs were made from
    pairs: Pairs  # [[large, small], ...]; "auto": the largest rung with the two below it
    n_prompts: Count  # the first of the logged selection, per pair
    batch_size: Count  # branches continued at once
    bootstrap: Size  # resamples of the prompts for each interval
    seed: Size  # the bootstrap's
    threads: Count


class RouterFit(BaseModel):
    """How stage 06 fits its learned router and which fresh prompts its sweep decodes (the
    `routers` section's values), which a stage that re-calibrates one of its routers reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fit_fraction: Fraction
    top_k: Count
    seed: Size
    prompt_offset: Size
    n_prompts: Count


class LLMToSLMPairs(BaseModel):
    """Stage 05's pairs per profile (the `llm_to_slm` section's), which a stage that decodes
    with its checkpoint reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    pairs: dict[str, LLMToSLMPair]


class Accelerations(StageConfig):
    """Stage 09: the large model alone, the small one alone, the best router, speculative
    decoding and LLM-to-SLM, head to head on the same fresh prompts."""

    reads: ClassVar[dict[str, tuple[str, ...]]] = {
        "routers": ("fit_fraction", "top_k", "seed", "prompt_offset", "n_prompts"),
        "llm_to_slm": ("pairs",),
    }
    profile: str
    task: str  # "": the profile's first task
    data_dir: str  # "": the data directory the token logs were made from
    pair: Pair  # [large, small] of stage 06's pairs; "auto": the rule in the stage module
    n_prompts: Count  # the fresh prompts every system decodes for its accuracy
    batch_size: Count  # the accuracy pass's batch
    timing_prompts: Count  # the first of them, timed
    batch_sizes: CountList  # timed at each
    repeats: Count  # timed runs per system and batch size, interleaved
    max_new_tokens: Count
    threads: Count
    routers: RouterFit  # stage 06's `routers` section: how its learned router is fitted
    llm_to_slm: LLMToSLMPairs  # stage 05's `llm_to_slm` section: its pair per profile


class Findings(StageConfig):
    """Stage 07: the findings table (its verdict rules are fixed in fsgen.analysis.findings)."""

    uses_profile: ClassVar[bool] = False
    task: str  # the task whose frequencies, fits and traces the FS-GEN rows read
    llm_to_slm_task: str  # the task of stage 05 the LLM-to-SLM rows read


SECTIONS: dict[str, type[StageConfig]] = {
    "train_ladder": TrainLadder,
    "token_logging": TokenLogging,
    "frequency": Frequency,
    "scaling_law": ScalingLaw,
    "uncertainty": Uncertainty,
    "llm_to_slm": LLMToSLM,
    "routers": Routers,
    "divergence": Divergence,
    "accelerations": Accelerations,
    "findings": Findings,
}


@dataclass(frozen=True)
class StagePaths:
    """The files and folders a stage reads and writes, as its notebook's parameters cell names
    them (`dvc repro` passes the pipeline's, the defaults are a scratch folder's). Each stage
    module declares its own `Paths(StagePaths)`; every field is resolved from the repository
    root, so a stage runs the same from any working directory."""

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, str | os.PathLike) or not str(value):
                raise ValueError(
                    f"{type(self).__module__}.{type(self).__name__}.{field.name}: expected a "
                    f"path (a non-empty string), got {value!r}"
                )
            object.__setattr__(self, field.name, resolve(value))


def stage_config(section: str, params_file: str | os.PathLike, tiny: dict) -> StageConfig:
    """The stage's values: `params_file`'s `section` (and top-level `profile` and `executor`)
    when a file is given, else the notebook's `tiny` values; validated against the section's
    schema."""
    if section not in SECTIONS:
        raise ValueError(f"unknown stage section {section!r}; sections: {sorted(SECTIONS)}")
    schema = SECTIONS[section]
    if params_file:
        params = read_yaml(params_file)
        values = params.get(section)
        if not isinstance(values, dict):
            raise ValueError(f"{params_file} has no {section!r} section (a mapping of values)")
        values = dict(values)
        if schema.uses_profile:
            values["profile"] = params.get("profile")
            _check_models_dir(params, params_file)
        if schema.uses_executor:
            values["executor"] = params.get("executor", "")  # missing: an error naming it
        for other, keys in schema.reads.items():
            read = params.get(other)
            if not isinstance(read, dict):
                raise ValueError(
                    f"{params_file} has no {other!r} section, whose {list(keys)} stage "
                    f"{section!r} reads"
                )
            values[other] = {key: read[key] for key in keys if key in read}  # missing: named
        where = f"{params_file}, section {section!r}"
    else:
        values, where = dict(tiny), f"the notebook's tiny values for {section!r}"
    try:
        config = schema.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or section}: {e['msg']} (got {e.get('input')!r})"
            for e in error.errors()
        )
        raise ValueError(f"invalid values in {where}: {problems}") from None
    config._params_file = str(params_file or "")
    return config


def _check_models_dir(params: dict, params_file: str | os.PathLike) -> None:
    """Under DVC a profile's models are the train_ladder stage's output, data/models/${profile}:
    a profile that points them elsewhere would train outside it (and DVC would fail the stage)."""
    name = params.get("profile")
    spec = (params.get("profiles") or {}).get(name)
    if isinstance(spec, dict) and spec.get("models_dir", f"data/models/{name}") != (
        expected := f"data/models/{name}"
    ):
        raise ValueError(
            f"{params_file}: profile {name!r} sets models_dir {spec['models_dir']!r}, but the "
            f"train_ladder stage's output is data/models/${{profile}}: remove the key (its "
            f"models then go to {expected})"
        )
