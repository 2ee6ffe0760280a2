"""The engine: every generation in fsgen goes through `decode_batch`, one loop with one stopping
rule (`fsgen.engine.output.StopRule`) and one forward (`fsgen.engine.forward.open_stream`).

`collaborate` decodes prompts with a small model (System 1) and a large model (System 2) by a
method of `fsgen.engine.methods.METHODS`; `collaborate_ladder` runs the oracle's one generation
for a whole ladder of small models; `generate` is a model alone. `Engine` is the object behind
all three, for callers that need the batch-level knobs (rows that start finished, say).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from fsgen.engine.batch import Batch, encode_prompts, padding_id
from fsgen.engine.forward import FORWARDS, model_device, open_stream
from fsgen.engine.methods import Method, get_method
from fsgen.engine.output import Output, StopRule, check_stop
from fsgen.engine.routers import Router, always, make_router
from fsgen.engine.sampler import Sampler
from fsgen.engine.strategies import Speculative, TeacherForced, TokenLevel
from fsgen.engine.trace import empty_trace


@dataclass
class Collaboration:
    """What the engine returns: texts, generated ids, the token trace and a summary."""

    texts: list[str]
    tokens: list[list[int]]
    trace: pd.DataFrame
    summary: dict = field(default_factory=dict)


def condition_on_prompts(models, batch: Batch) -> None:
    """Hand a new prompt batch to the models conditioned on their prompts (such as LLM-to-SLM's
    `ConditionedSmall`); plain causal LMs need nothing."""
    for model in {id(m): m for m in models if m is not None}.values():
        hook = getattr(model, "condition_on_prompts", None)
        if hook is not None:
            hook(batch)


def decode_batch(strategy, batch: Batch, output: Output) -> dict[str, Output]:
    """The loop: prefill, one step at a time until every row has stopped, then the strategy's
    finish. Returns the outputs the strategy makes of it ({"": output} but for teacher forcing,
    one per small model)."""
    strategy.prefill(batch, output)
    while not output.all_done():
        strategy.step(batch, output)
    return strategy.finish(batch, output)


def _vocab(tokenizer, models) -> int:
    vocab = len(tokenizer)
    sizes = {m.config.vocab_size for m in models}
    if any(size < vocab for size in sizes):
        names = [getattr(m.config, "_name_or_path", "?") for m in models]
        raise ValueError(
            f"models and tokenizer disagree: vocabulary sizes {sorted(sizes)} for {names}, "
            f"tokenizer has {vocab}; the models must share one tokenizer"
        )
    return vocab


def _check_number(name: str, value, low: float, *, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value >= low:
        expected = f"an integer >= {low}" if integer else f"a number >= {low}"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    if not integer and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def _check_weights(method: Method, alpha, beta) -> None:
    """alpha and beta within their meaning: contrastive methods keep the tokens whose large-model
    probability is at least alpha times the top one (0 < alpha <= 1); beta and proxy tuning's
    alpha are finite weights."""
    for name, value in (("alpha", alpha), ("beta", beta)):
        _check_number(name, value, -math.inf)
    if method.name.startswith("contrastive") and not 0 < alpha <= 1:
        raise ValueError(
            f"alpha of {method.name!r} (the plausibility cut, a share of the large model's top "
            f"probability) must be in (0, 1], got {alpha!r}"
        )
    if method.name.startswith("contrastive") and beta < 0:
        raise ValueError(
            f"beta of {method.name!r} (how far to move toward the large model's difference "
            f"from the small one) must be >= 0, got {beta!r}"
        )


def _parameters(model) -> int | None:
    try:
        return sum(p.numel() for p in model.parameters())
    except (AttributeError, TypeError):
        return None


def _check_sizes(method: Method, models: Mapping[str, object]) -> None:
    """Warn when System 2 (large) is smaller than System 1 (small): the roles look swapped."""
    if "small" not in models or "large" not in models or models["small"] is models["large"]:
        return
    small, large = _parameters(models["small"]), _parameters(models["large"])
    if small and large and large < small:
        warnings.warn(
            f"the large model has fewer parameters ({large:,}) than the small one ({small:,}) "
            f"for method {method.name!r}: are small and large swapped?",
            stacklevel=4,
        )


class Engine:
    """One configured decoding: the models by role (`small`, `large`, `tuned`), the method, the
    router, sampling and stopping. `run(prompts)` decodes. Given `smalls` ({name: model})
    instead of a `small` model, it is the ladder-wide oracle: `run_ladder(prompts)` scores one
    greedy generation of `large` with every model of `smalls`."""

    def __init__(
        self,
        models: Mapping[str, object],
        tokenizer,
        *,
        method: str = "oracle",
        router: str | Router = "always",
        threshold: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        num_draft: int = 5,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        do_sample: bool = False,
        temperature: float = 1.0,
        trace_top_k: int = 10,
        seed: int = 0,
        stop: Sequence[str] | None = None,
        trace: bool = True,
        forward: str = "auto",
        prompt_tokenizer=None,
        smalls: Mapping[str, object] | None = None,
    ):
        self.method: Method = get_method(method)
        self.router_name, self.router = make_router(router, threshold)
        # The oracle's fast path: System 1 never changes the text, so one greedy generation of
        # the large model, scored by each small model in one forward, is the whole run.
        self.teacher_forced = self.method.ladder_wide and self.router is always and not do_sample
        if smalls is not None:
            if not self.teacher_forced:
                raise ValueError(
                    "several small models (smalls=) need the greedy oracle with router 'always', "
                    f"got method {method!r}, router {self.router_name!r}, do_sample={do_sample!r}"
                )
            if not smalls:
                raise ValueError(f"smalls names no small model, got {smalls!r}")
            models = {**models, "small": next(iter(smalls.values()))}
        self.smalls = dict(smalls) if smalls is not None else None
        _check_number("max_new_tokens", max_new_tokens, 1, integer=True)
        _check_number("batch_size", batch_size, 1, integer=True)
        _check_number("trace_top_k", trace_top_k, 1, integer=True)
        if self.method.drafts:
            _check_number("num_draft", num_draft, 1, integer=True)
        _check_number("temperature", temperature, 0.0)
        _check_number("seed", seed, 0, integer=True)
        if seed >= 2**63:
            raise ValueError(f"seed must be below 2**63 (a 64-bit generator seed), got {seed!r}")
        if do_sample and temperature == 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature!r}")
        if forward not in FORWARDS:
            raise ValueError(f"forward must be one of {FORWARDS}, got {forward!r}")
        missing = [role for role in self.method.roles if models.get(role) is None]
        if missing:
            hint = " (the tuned small model: small_tuned=)" if "tuned" in missing else ""
            raise ValueError(f"method {method!r} needs the models {missing}{hint}, got None")
        self.models = {role: models[role] for role in self.method.roles}
        for model in [*self.models.values(), *(self.smalls or {}).values()]:
            model.eval()  # decoding never runs dropout
        self.tokenizer = tokenizer
        self.prompt_tokenizer = prompt_tokenizer or tokenizer
        self.alpha = self.method.alpha if alpha is None else alpha
        self.beta = self.method.beta if beta is None else beta
        _check_weights(self.method, self.alpha, self.beta)
        _check_sizes(self.method, self.models)
        self.num_draft, self.max_new_tokens, self.batch_size = num_draft, max_new_tokens, batch_size
        self.do_sample, self.temperature, self.seed = do_sample, temperature, seed
        self.trace_top_k, self.trace, self.forward = trace_top_k, trace, forward
        self.stop = check_stop(stop)
        self.extra = num_draft + 1 if self.method.drafts else 0

    # ------------------------------------------------------------------------- checks

    def _check_lengths(self, prompts: list[list[int]], models) -> None:
        longest = max(map(len, prompts))
        for model in models:
            context = getattr(model.config, "max_position_embeddings", None)
            name = model.config._name_or_path or type(model).__name__
            if context is not None and self.extra and longest + self.extra > context:
                raise ValueError(
                    f"num_draft={self.num_draft} is too large: a prompt of {longest} tokens plus "
                    f"num_draft + 1 = {self.extra} draft positions exceed the context of "
                    f"{context} tokens of {name}; choose num_draft < {context - longest}"
                )
            if context is not None and longest + self.max_new_tokens + self.extra > context:
                extra = f" plus num_draft + 1 = {self.extra}" if self.extra else ""
                raise ValueError(
                    f"prompt of {longest} tokens plus max_new_tokens={self.max_new_tokens}{extra} "
                    f"exceeds the context of {context} tokens of {name}"
                )

    def _prepare(self, prompts: Sequence[str], models) -> tuple[list[list[int]], int]:
        if isinstance(prompts, str):
            raise ValueError(f"prompts must be a list of strings, got one string {prompts[:40]!r}")
        ids = encode_prompts(self.prompt_tokenizer, prompts)
        vocab = _vocab(self.tokenizer, models)
        if self.trace_top_k > vocab:
            raise ValueError(
                f"trace_top_k={self.trace_top_k!r} is more tokens than the vocabulary holds "
                f"({vocab}): the trace keeps each position's top k, so k <= {vocab}"
            )
        if ids:
            self._check_lengths(ids, models)
        return ids, vocab

    # ------------------------------------------------------------------------- strategies

    def _spare(self) -> int:
        """Columns a batch is first given room for: the new tokens, plus a speculative round's
        drafts. Masked drafts can widen a speculative batch further; batches and lean caches
        then grow by doubling, so the worst case is never allocated up front."""
        return self.max_new_tokens + self.extra

    def _stream(self, model, vocab: int, batch: Batch):
        return open_stream(model, vocab, batch, spare=self._spare(), forward=self.forward)

    def _token_level(self, batch: Batch, sampler: Sampler, vocab: int) -> TokenLevel:
        roles, method = self.models, self.method
        system1 = self._stream(roles[method.system1], vocab, batch)
        large = self._stream(roles["large"], vocab, batch) if method.pairs else None
        base = self._stream(roles["small"], vocab, batch) if method.base else None
        return TokenLevel(
            method,
            self.router,
            sampler,
            system1,
            large,
            base,
            self.alpha,
            self.beta,
            self.trace,
            system1_is_large=method.system1 == "large",
        )

    def _strategy(self, batch: Batch, sampler: Sampler, vocab: int):
        if self.method.drafts:
            small = self._stream(self.models["small"], vocab, batch)
            large = self._stream(self.models["large"], vocab, batch)
            return Speculative(sampler, small, large, self.num_draft, self.trace)
        if not self.teacher_forced:
            return self._token_level(batch, sampler, vocab)
        large = self._stream(self.models["large"], vocab, batch)
        alone = TokenLevel(
            get_method("large"), always, sampler, large, trace=self.trace, system1_is_large=True
        )
        smalls = self.smalls if self.smalls is not None else {"": self.models["small"]}
        forward = self.forward
        return TeacherForced(
            alone, smalls, lambda model, b: open_stream(model, vocab, b, spare=0, forward=forward)
        )

    # ------------------------------------------------------------------------- running

    def _batches(self, ids: list[list[int]], device):
        pad = padding_id(self.prompt_tokenizer)
        for start in range(0, len(ids), self.batch_size):
            rows = list(range(start, min(start + self.batch_size, len(ids))))
            yield rows, Batch.from_ids([ids[i] for i in rows], pad, device, spare=self._spare())

    def _runs(self, prompts, finished: Sequence[bool] | None = None):
        """Decode every batch; yields (outputs by small name, stats, seconds)."""
        every = [*self.models.values(), *(self.smalls or {}).values()]
        models = list({id(model): model for model in every}.values())
        ids, vocab = self._prepare(prompts, models)
        if finished is not None and len(finished) != len(ids):
            raise ValueError(f"finished has {len(finished)} entries for {len(ids)} prompts")
        device = model_device(self.models[self.method.system1])
        rule = StopRule.build(self.tokenizer, models, self.stop, self.max_new_tokens)
        for rows, batch in self._batches(ids, device):
            began = time.perf_counter()
            start = None if finished is None else [bool(finished[i]) for i in rows]
            output = Output(self.tokenizer, rows, rule, self.trace_top_k, start, self.trace)
            sampler = Sampler(self.do_sample, self.temperature, self.seed, rows, device)
            condition_on_prompts(models, batch)
            strategy = self._strategy(batch, sampler, vocab)
            outputs = decode_batch(strategy, batch, output)
            yield outputs, strategy.stats(), time.perf_counter() - began

    def run(self, prompts: Sequence[str], finished: Sequence[bool] | None = None) -> Collaboration:
        """Decode `prompts`; `finished` marks prompts whose rows start done (fed, never
        emitting: how the speed-up study measures the cost of finished rows)."""
        if self.smalls is not None:
            raise ValueError("an engine over several small models runs with run_ladder(prompts)")
        started = time.perf_counter()
        outputs, forwards, rounds = [], 0, 0
        for produced, stats, _ in self._runs(prompts, finished=finished):
            outputs.append(produced[""])
            forwards += stats["large_forwards"]
            rounds += stats.get("large_calls", 0)
        seconds = time.perf_counter() - started
        calls = rounds if self.method.drafts else None  # a call is a verification round
        return _collect(outputs, self.method.name, self.router_name, forwards, seconds, calls)

    def run_ladder(self, prompts: Sequence[str]) -> dict[str, Collaboration]:
        """The oracle for every model of `smalls` with one greedy generation of `large`."""
        if self.smalls is None:
            raise ValueError("run_ladder needs the engine built with smalls={name: model}")
        smalls = self.smalls
        parts: dict[str, list[Output]] = {name: [] for name in smalls}
        forwards, seconds = 0, 0.0
        for produced, stats, spent in self._runs(prompts):
            for name in smalls:
                parts[name].append(produced[name])
            forwards += stats["large_forwards"]
            seconds += spent
        share = seconds / max(1, len(smalls))  # the shared generation, split evenly
        return {
            name: _collect(outputs, "oracle", "always", forwards, share)
            for name, outputs in parts.items()
        }


def _collect(outputs: list[Output], method, router, forwards, seconds, calls=None) -> Collaboration:
    """Texts, tokens, the concatenated trace and the summary of a call's batches."""
    texts = [t for o in outputs for t in o.texts()]
    tokens = [t for o in outputs for t in o.tokens]
    if any(o.traced() for o in outputs):
        trace = pd.concat([o.trace() for o in outputs], ignore_index=True)
    else:
        trace = empty_trace()
    tally = {key: sum(o.tally[key] for o in outputs) for key in outputs[0].tally} if outputs else {}
    n_tokens = sum(len(t) for t in tokens)
    large_calls = calls if calls is not None else tally.get("large_calls", 0)
    mismatches = tally.get("mismatches", 0)
    summary = {
        "method": method,
        "router": router,
        "prompts": len(tokens),
        "tokens": n_tokens,
        "large_calls": large_calls,
        "mismatches": mismatches,
        "collaboration_frequency": mismatches / n_tokens if n_tokens else 0.0,
        "call_rate": large_calls / n_tokens if n_tokens else 0.0,
        "large_forwards": forwards,
        "wall_seconds": seconds,
    }
    if get_method(method).base and n_tokens:
        vs_base = tally["mismatches_vs_base"]
        summary["mismatches_vs_base"] = vs_base
        summary["collaboration_frequency_vs_base"] = vs_base / n_tokens
    return Collaboration(texts, tokens, trace, summary)


def collaborate(
    small,
    large,
    tokenizer,
    prompts: Sequence[str],
    *,
    method: str = "oracle",
    router: str | Router = "always",
    threshold: float | None = None,
    small_tuned=None,
    alpha: float | None = None,
    beta: float | None = None,
    num_draft: int = 5,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    trace_top_k: int = 10,
    seed: int = 0,
    stop: Sequence[str] | None = None,
    trace: bool = True,
    forward: str = "auto",
) -> Collaboration:
    """A small model (System 1) and a large model (System 2) decode `prompts` together.

    Methods: `oracle`, `contrastive` (FS-GEN's form), `contrastive_obrien`, `proxy` (System 1 is
    `small_tuned`), `speculative`, and `small` / `large` alone. The router decides, per row and
    step, whether the large model is consulted (`always`, `never`, `threshold`, `margin`,
    `entropy`, or a callable on System 1's probabilities (B, V) returning (B,) bools). The
    tokenizer is used as `from_pretrained` returns it (any padding side, no pad token needed;
    it is never changed). Generation stops at the tokenizer's and the models' end ids, at `stop`
    strings (special tokens included) and at `max_new_tokens`. `trace=False` skips the token
    trace (faster); `forward` picks the forward (`auto`: the lean one for GPT-NeoX models).
    Returns texts, generated ids, the token trace (see `fsgen.engine.trace`) and a summary.
    """
    models = {"small": small, "large": large, "tuned": small_tuned}
    engine = Engine(
        models,
        tokenizer,
        method=method,
        router=router,
        threshold=threshold,
        alpha=alpha,
        beta=beta,
        num_draft=num_draft,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        do_sample=do_sample,
        temperature=temperature,
        trace_top_k=trace_top_k,
        seed=seed,
        stop=stop,
        trace=trace,
        forward=forward,
    )
    return engine.run(prompts)


def collaborate_ladder(
    large,
    smalls: Mapping[str, object],
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    trace_top_k: int = 10,
    stop: Sequence[str] | None = None,
) -> dict[str, Collaboration]:
    """Ladder-wide oracle logging: one greedy generation by `large`, scored by every small model.

    Returns, per small model, the same result as `collaborate(small, large, ..., method="oracle",
    router="always")`, at the cost of one generation instead of one per pair.
    """
    engine = Engine(
        {"large": large},
        tokenizer,
        method="oracle",
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        trace_top_k=trace_top_k,
        stop=stop,
        smalls=smalls,
    )
    return engine.run_ladder(prompts)


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    stop: Sequence[str] | None = None,
    trace: bool = False,
    prompt_tokenizer=None,
    forward: str = "auto",
) -> Collaboration:
    """A model alone: `collaborate(method="small")` through the same loop, the trace off by
    default. `prompt_tokenizer` (default `tokenizer`) tokenizes the prompts when they are read in
    another vocabulary than the output (LLM-to-SLM with a T5 encoder)."""
    engine = Engine(
        {"small": model},
        tokenizer,
        method="small",
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        do_sample=do_sample,
        temperature=temperature,
        seed=seed,
        stop=stop,
        trace=trace,
        forward=forward,
        prompt_tokenizer=prompt_tokenizer,
    )
    return engine.run(prompts)
