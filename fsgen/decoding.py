"""The collaborative decoding engine: one batched, KV-cached loop serves every method.

The batch is a ragged set of rows stored as one rectangle of columns: `seq` (token ids), `mask`
(1 for a real token, 0 for left padding or a rejected draft) and `pos` (position ids). Every
model keeps its own KV cache and the number of columns it has seen; `advance` feeds it the
columns it lacks in one forward pass. So the large model is run only on steps where some row
consults it, catching up on every column since its last call at once; and speculative decoding
crops the drafts that every row rejected and masks out the rest, row by row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessor, LogitsProcessorList

from fsgen.methods import LogitView, Method, get_method
from fsgen.routers import Router, make_router
from fsgen.trace import STAT_FIELDS, distribution_stats, empty_trace


@dataclass
class Collaboration:
    """What `collaborate` returns: texts, generated ids, the token trace and a summary."""

    texts: list[str]
    tokens: list[list[int]]
    trace: pd.DataFrame
    summary: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- batch state


@dataclass
class Batch:
    """Token columns shared by every model of a call: ids, attention mask and positions."""

    seq: torch.Tensor  # (B, L)
    mask: torch.Tensor  # (B, L)
    pos: torch.Tensor  # (B, L)

    @classmethod
    def from_prompts(cls, tokenizer, prompts: Sequence[str], device) -> Batch:
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        mask = enc["attention_mask"].to(device)  # (B, P), left padded
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return cls(enc["input_ids"].to(device), mask, pos)

    @property
    def width(self) -> int:
        return self.seq.shape[1]

    def next_positions(self) -> torch.Tensor:
        """Position id of the next real token of each row (B,)."""
        return self.mask.sum(-1)

    def append(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Append columns (B, k) of tokens, real unless `mask` says otherwise."""
        start = self.mask.sum(-1, keepdim=True)  # (B, 1): each row's next position
        if mask is None:  # all real: consecutive positions
            mask, k = torch.ones_like(ids), ids.shape[1]
            pos = start if k == 1 else start + torch.arange(k, device=ids.device)  # (B, k)
        else:
            mask = mask.to(ids.dtype)
            pos = start + (mask.cumsum(-1) - mask).clamp(min=0)  # (B, k)
        self.seq = torch.cat([self.seq, ids], dim=1)
        self.mask = torch.cat([self.mask, mask], dim=1)
        self.pos = torch.cat([self.pos, pos], dim=1)

    def crop(self, width: int) -> None:
        """Keep the first `width` columns."""
        self.seq, self.mask, self.pos = (
            self.seq[:, :width],
            self.mask[:, :width],
            self.pos[:, :width],
        )


class Stream:
    """One model over a `Batch`: its KV cache and how many columns it has seen."""

    def __init__(self, model, vocab: int):
        self.model, self.vocab = model, vocab
        self.device = model.device  # looked up once: an HF model's `device` walks its parameters
        self.cache = DynamicCache()
        self.seen = 0

    @torch.inference_mode()  # cheaper per op than no_grad: no version counters, no view tracking
    def advance(self, batch: Batch) -> torch.Tensor:
        """Feed the columns not yet seen; logits of every fed column (B, k, vocab), inference
        tensors (read them, or copy them before changing them in place)."""
        start, end = self.seen, batch.width
        device = self.device
        mask = batch.mask[:, :end]
        mask = None if bool(mask.all()) else mask.to(device)  # no holes: the causal fast path
        out = self.model(
            input_ids=batch.seq[:, start:end].to(device),
            attention_mask=mask,
            position_ids=batch.pos[:, start:end].to(device),
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache, self.seen = out.past_key_values, end
        return out.logits[..., : self.vocab].float().to(batch.seq.device)

    def crop(self, width: int) -> None:
        """Forget cached columns past `width`."""
        if self.seen > width:
            self.cache.crop(width - self.seen)  # a negative count: drop that many columns
            self.seen = width


def condition_on_prompts(models, batch: Batch) -> None:
    """Hand a new prompt batch to the models that are conditioned on their prompts (such as
    `fsgen.llm_to_slm.ConditionedSmall`); plain causal LMs need nothing."""
    for model in {id(m): m for m in models if m is not None}.values():
        if hasattr(model, "condition_on_prompts"):
            model.condition_on_prompts(batch)


def prefill(stream: Stream, batch: Batch) -> torch.Tensor:
    """Run the prompt through a model; next-token logits of each row (B, V)."""
    return stream.advance(batch)[:, -1]


# ----------------------------------------------------------------------------- choosing tokens


class Sampler:
    """Greedy, or sampling with one seeded generator per prompt, so results do not depend on
    how prompts are batched."""

    def __init__(self, do_sample: bool, temperature: float, seed: int, prompt_ids: Sequence[int]):
        self.do_sample, self.temperature = do_sample, temperature
        self.generators = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in prompt_ids]

    def probs(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.softmax(scores.double() / self.temperature, dim=-1)  # (B, V)

    def choose(self, scores: torch.Tensor) -> torch.Tensor:
        """One token per row from scores (B, V)."""
        if not self.do_sample:
            return scores.argmax(-1)
        probs = self.probs(scores)
        return torch.stack(
            [
                torch.multinomial(p, 1, generator=g)[0]
                for p, g in zip(probs, self.generators, strict=True)
            ]
        )

    def uniform(self, row: int) -> float:
        return torch.rand(1, generator=self.generators[row], dtype=torch.float64).item()


# ----------------------------------------------------------------------------- stopping and traces


def text_decoder(tokenizer) -> Callable[[list[int]], str]:
    """`ids -> tokenizer.decode(ids, skip_special_tokens=True)`, the text the stop strings are
    looked for in after every token.

    For a fast (Rust-backed) tokenizer that neither overrides decoding nor cleans up
    tokenization spaces, transformers' `decode` is its backend's `decode` plus per-call input
    conversions that cost more than the decoding itself on every step; this calls the backend
    directly, so the text is the same string. Any other tokenizer keeps its own `decode`.
    """
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    kind = type(tokenizer)
    plain = (
        isinstance(tokenizer, TokenizersBackend)
        and kind.decode is PreTrainedTokenizerBase.decode
        and kind._decode is TokenizersBackend._decode
        and not tokenizer.clean_up_tokenization_spaces
    )
    if plain:
        backend = tokenizer.backend_tokenizer
        return lambda ids: backend.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)


class Output:
    """Generated tokens and trace rows of each prompt, with per-row stopping."""

    def __init__(self, tokenizer, prompt_ids, max_new_tokens, stop, trace_top_k):
        self.tokenizer, self.prompt_ids = tokenizer, list(prompt_ids)
        self.max_new_tokens, self.stop, self.k = max_new_tokens, list(stop or []), trace_top_k
        self.tokens: list[list[int]] = [[] for _ in self.prompt_ids]
        self.rows: list[dict] = []
        self.frames: list[pd.DataFrame] = []
        self.done = [False] * len(self.prompt_ids)
        self.eos = tokenizer.eos_token_id
        self.decode = text_decoder(tokenizer)

    def active(self) -> torch.Tensor:
        return torch.tensor([not d for d in self.done])

    def emit(self, row: int, token: int, record: dict) -> None:
        """Append one token to a row (if it is still running) and its trace row."""
        if self.accept(row, [token]):
            step = len(self.tokens[row]) - 1
            self.rows.append(
                {"prompt_id": self.prompt_ids[row], "step": step, "token_id": token} | record
            )

    def accept(self, row: int, tokens: list[int]) -> int:
        """Append tokens to a row until it stops; returns how many were taken (no trace rows)."""
        taken = 0
        for token in tokens:
            if self.done[row]:
                break
            self.tokens[row].append(token)
            taken += 1
            self.done[row] = (
                len(self.tokens[row]) >= self.max_new_tokens
                or token == self.eos
                or self._stopped(row)
            )
        return taken

    def _stopped(self, row: int) -> bool:
        """Whether a row's text contains a stop string (decoded once, not once per string)."""
        if not self.stop:
            return False
        text = self._text(row)
        return any(s in text for s in self.stop)

    def add_rows(self, frame: pd.DataFrame) -> None:
        """Trace rows built in bulk (they must carry prompt_id and step)."""
        self.frames.append(frame)

    def _text(self, row: int) -> str:
        return self.decode(self.tokens[row])

    def texts(self) -> list[str]:
        """Decoded generations, each cut before the first stop string it contains."""
        texts = []
        for row in range(len(self.tokens)):
            text = self._text(row)
            cuts = [text.index(s) for s in self.stop if s in text]
            texts.append(text[: min(cuts)] if cuts else text)
        return texts

    def traced(self) -> bool:
        """Whether any trace row was recorded."""
        return bool(self.rows) or any(len(f) for f in self.frames)

    def trace(self) -> pd.DataFrame:
        parts = [pd.DataFrame(self.rows)] if self.rows else []
        parts += [f for f in self.frames if len(f)]
        if not parts:
            return empty_trace()
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        ids = frame["token_id"].astype(int)
        text = dict(
            zip(ids.unique(), self.tokenizer.batch_decode([[t] for t in ids.unique()]), strict=True)
        )
        frame["token"] = ids.map(text)
        base = empty_trace()
        for column in base.columns:
            if column not in frame:
                frame[column] = None
        return (
            frame[list(base.columns)]
            .sort_values(["prompt_id", "step"], kind="stable")
            .reset_index(drop=True)
        )


def stat_record(prefix: str, stats: dict | None, row: int) -> dict:
    """Trace fields of one model's distribution for one row (nulls when not consulted)."""
    if stats is None:
        return {f"{prefix}_{f}": None for f in STAT_FIELDS}
    return {
        f"{prefix}_top1_prob": float(stats["top1_prob"][row]),
        f"{prefix}_entropy": float(stats["entropy"][row]),
        f"{prefix}_margin": float(stats["margin"][row]),
        f"{prefix}_topk_ids": stats["topk_ids"][row].tolist(),
        f"{prefix}_topk_probs": stats["topk_probs"][row].float().tolist(),
    }


# ----------------------------------------------------------------------------- token-level methods


@dataclass
class Models:
    """The models a method runs: System 1, the large model, and the base small model (proxy)."""

    system1: Stream
    large: Stream | None
    base: Stream | None
    system1_is_large: bool = False


def decode_one_token(
    models: Models,
    batch: Batch,
    logits: dict[str, torch.Tensor],
    method: Method,
    router: Router,
    sampler: Sampler,
    output: Output,
    alpha: float,
    beta: float,
) -> int:
    """One step of a token-level method for every running row; returns 1 if the large model ran.

    `logits` holds each model's next-token logits ('s', and 'b' for proxy) for the current
    columns; the large model's are computed here, only if some running row consults it.
    """
    s = logits["s"]  # (B, V)
    s_stats = distribution_stats(s, output.k)
    active = output.active()
    consult = (
        router(torch.softmax(s.double(), -1)) & active if models.large else torch.zeros_like(active)
    )
    large_ran = 0
    l = None  # noqa: E741
    if consult.any():
        l = models.large.advance(batch)[:, -1]  # noqa: E741 - catches up on every column since its last call
        large_ran = 1
    scores = s
    if l is not None:
        combined = method.combine(LogitView(s=s, l=l, b=logits.get("b"), alpha=alpha, beta=beta))
        scores = torch.where(consult.unsqueeze(-1), combined, s)  # (B, V)
    chosen = sampler.choose(scores)  # (B,) one draw per row, whoever decides
    s_argmax = s.argmax(-1)
    l_stats = distribution_stats(l, output.k) if l is not None else None
    b_argmax = logits["b"].argmax(-1) if "b" in logits else None
    for row in range(len(chosen)):
        if not active[row]:
            continue
        called = bool(consult[row])
        record = {
            "source": method.source
            if called
            else ("large" if models.system1_is_large else "small"),
            "large_called": called or models.system1_is_large,
            "mismatch": called and int(chosen[row]) != int(s_argmax[row]),
            "mismatch_vs_base": None
            if b_argmax is None
            else int(chosen[row]) != int(b_argmax[row]),
        }
        if models.system1_is_large:  # the large model alone: its stats go in the large columns
            small, large = stat_record("small", None, row), stat_record("large", s_stats, row)
        else:
            small = stat_record("small", s_stats, row)
            large = stat_record("large", l_stats if called else None, row)
        output.emit(row, int(chosen[row]), record | small | large)
    batch.append(chosen.unsqueeze(-1))
    return large_ran


def token_level_decode(models, batch, method, router, sampler, output, alpha, beta) -> dict:
    """Run a token-level method until every row stops; returns engine statistics."""
    logits = {"s": prefill(models.system1, batch)}
    if models.base is not None:
        logits["b"] = prefill(models.base, batch)
    large_forwards = 0
    while not all(output.done):
        large_forwards += decode_one_token(
            models, batch, logits, method, router, sampler, output, alpha, beta
        )
        if all(output.done):
            break
        logits["s"] = models.system1.advance(batch)[:, -1]
        if models.base is not None:
            logits["b"] = models.base.advance(batch)[:, -1]
    return {"large_forwards": large_forwards}


# ----------------------------------------------------------------------------- speculative decoding


def speculative_decode(
    small: Stream, large: Stream, batch: Batch, sampler: Sampler, output: Output, num_draft: int
) -> dict:
    """Draft `num_draft` tokens with the small model, verify them in one large forward.

    Greedy: accept drafts while they equal the large argmax, then emit the large token (a
    correction, or a bonus when all pass): the output equals the large model's alone. Sampling:
    accept a draft with probability min(1, p/q), else resample from norm(max(0, p - q)).
    Rejected drafts that every row rejected are cropped from the caches; the rest are masked.
    """
    k, rounds, large_calls = num_draft, 0, 0
    while not all(output.done):
        rounds += 1
        active = output.active()  # (B,)
        large_calls += int(active.sum())  # verification rounds per row
        start = batch.width - 1  # column of the last emitted token
        q_logits, drafts = [], []
        for _ in range(k):
            q = small.advance(batch)[:, -1]  # (B, V), feeding whatever it has not seen
            drafts.append(sampler.choose(q))
            q_logits.append(q)
            batch.append(drafts[-1].unsqueeze(-1))
        p_logits = large.advance(batch)[:, -(k + 1) :]  # (B, k+1, V): after last, d1..dk
        q_all, d_all = torch.stack(q_logits, 1), torch.stack(drafts, 1)  # (B, k, V), (B, k)
        verdicts = [
            _verify_row(r, p_logits[r], q_all[r], d_all[r], sampler) for r in range(len(d_all))
        ]
        accepted = torch.tensor([v[0] for v in verdicts])  # (B,)
        _record_round(output, active, verdicts, d_all, q_all, p_logits)
        # drop rejected drafts: crop what every running row rejected, mask the rest per row
        rejected = torch.where(active, k - accepted, torch.full_like(accepted, k))
        common = int(rejected.min())
        if common:
            batch.crop(batch.width - common)
            small.crop(batch.width)
            large.crop(batch.width)
        for row in range(len(d_all)):
            if active[row] and rejected[row] > common:
                batch.mask[row, start + 1 + int(accepted[row]) :] = 0
        batch.append(torch.tensor([[v[1]] for v in verdicts]))
    return {"large_forwards": rounds, "large_calls": large_calls}


def _record_round(output: Output, active, verdicts, d_all, q_all, p_logits) -> None:
    """Emit each running row's accepted drafts and final token, with their trace rows."""
    k = d_all.shape[1]
    q_stats, p_stats = _flat_stats(q_all, output.k), _flat_stats(p_logits, output.k)
    for row, (accepted, token, source) in enumerate(verdicts):
        if not active[row]:
            continue
        taken = output.accept(row, d_all[row, :accepted].tolist() + [token])
        if not taken:
            continue
        final = [j == accepted for j in range(taken)]
        frame = {
            "prompt_id": output.prompt_ids[row],
            "step": range(len(output.tokens[row]) - taken, len(output.tokens[row])),
            "token_id": output.tokens[row][-taken:],
            "source": [source if f else "draft" for f in final],
            "large_called": True,
            "mismatch": [f and source == "large" for f in final],
            "mismatch_vs_base": None,
        }
        for name, values in q_stats.items():  # no small distribution for a bonus token
            frame[f"small_{name}"] = [values[row * k + j] if j < k else None for j in range(taken)]
        for name, values in p_stats.items():
            frame[f"large_{name}"] = [values[row * (k + 1) + j] for j in range(taken)]
        output.add_rows(pd.DataFrame(frame))


def _verify_row(row, p_logits, q_logits, drafts, sampler: Sampler) -> tuple[int, int, str]:
    """Accepted drafts of one row, the token emitted after them, and its source."""
    k = len(drafts)
    if not sampler.do_sample:
        target = p_logits.argmax(-1)  # (k+1,)
        accepted = 0
        while accepted < k and int(drafts[accepted]) == int(target[accepted]):
            accepted += 1
        return accepted, int(target[accepted]), "bonus" if accepted == k else "large"
    p, q = sampler.probs(p_logits), sampler.probs(q_logits)  # (k+1, V), (k, V)
    for j in range(k):
        d = int(drafts[j])
        if sampler.uniform(row) < min(1.0, float(p[j, d] / q[j, d])):
            continue
        residual = (p[j] - q[j]).clamp(min=0)
        residual = residual / residual.sum() if residual.sum() > 0 else p[j]
        token = int(torch.multinomial(residual, 1, generator=sampler.generators[row]))
        return j, token, "large"
    token = int(torch.multinomial(p[k], 1, generator=sampler.generators[row]))
    return k, token, "bonus"


# ----------------------------------------------------------------------------- fast oracle


@torch.no_grad()
def oracle_fast(small, large, tokenizer, batch: Batch, output: Output, vocab: int) -> dict:
    """Oracle with router `always`, greedy: batched cached generation by the large model, then
    one teacher-forced forward of the small model over the generated sequences."""
    large_logits, generated = generate_large(large, tokenizer, batch, output.max_new_tokens, vocab)
    score_with_small(small, batch, generated, large_logits, output, vocab)
    return {"large_forwards": generated.shape[1]}


class TokenizerVocabulary(LogitsProcessor):
    """Never choose ids past the tokenizer's vocabulary (models such as Qwen pad theirs)."""

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, self.vocab :] = -float("inf")
        return scores


@torch.no_grad()
def generate_large(large, tokenizer, batch: Batch, max_new_tokens: int, vocab: int):
    """Greedy batched generation with the large model: (logits (B, n, V), tokens (B, n))."""
    device = large.device
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    out = large.generate(
        input_ids=batch.seq.to(device),
        attention_mask=batch.mask.to(device),
        generation_config=config,
        logits_processor=LogitsProcessorList([TokenizerVocabulary(vocab)]),
    )
    generated = out.sequences[:, batch.width :].cpu()  # (B, n)
    logits = torch.stack(out.logits, 1)[..., :vocab].float().cpu()  # (B, n, V)
    return logits, generated


@torch.no_grad()
def score_with_small(
    small, batch: Batch, generated, large_logits, output: Output, vocab: int
) -> None:
    """Teacher-force `generated` (B, n) through a small model and record oracle trace rows."""
    prompt_width = batch.width
    scored = Batch(batch.seq.clone(), batch.mask.clone(), batch.pos.clone())
    scored.append(generated)
    device = small.device
    logits = (
        small(
            input_ids=scored.seq.to(device),
            attention_mask=scored.mask.to(device),
            position_ids=scored.pos.to(device),
        )
        .logits[:, prompt_width - 1 : -1, :vocab]
        .float()
        .cpu()
    )  # (B, n, V)
    rows, n = generated.shape
    taken = [output.accept(row, generated[row].tolist()) for row in range(rows)]
    keep = np.concatenate([np.arange(row * n, row * n + t) for row, t in enumerate(taken)])  # flat
    mismatch = (generated != logits.argmax(-1)).reshape(-1).numpy()  # (B*n,)
    frame = {
        "prompt_id": np.repeat(output.prompt_ids, taken),
        "step": keep % n,
        "token_id": generated.reshape(-1).numpy()[keep],
        "source": "large",
        "large_called": True,
        "mismatch": mismatch[keep],
        "mismatch_vs_base": None,
    }
    for prefix, flat in (("small", logits), ("large", large_logits)):
        for name, values in _flat_stats(flat, output.k).items():
            frame[f"{prefix}_{name}"] = list(values[keep]) if values.ndim > 1 else values[keep]
    output.add_rows(pd.DataFrame(frame))


def _flat_stats(logits: torch.Tensor, k: int) -> dict:
    """`distribution_stats` of every position of (B, n, V) logits, as numpy arrays over B*n."""
    stats = distribution_stats(logits.reshape(-1, logits.shape[-1]), k)
    return {
        "top1_prob": stats["top1_prob"].float().numpy(),
        "entropy": stats["entropy"].float().numpy(),
        "margin": stats["margin"].float().numpy(),
        "topk_ids": stats["topk_ids"].numpy(),
        "topk_probs": stats["topk_probs"].float().numpy(),
    }


# ----------------------------------------------------------------------------- the public call


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


def _check_lengths(tokenizer, prompts, models, max_new_tokens, extra: int) -> None:
    longest = max(map(len, tokenizer(list(prompts), add_special_tokens=False)["input_ids"]))
    for model in models:
        context = getattr(model.config, "max_position_embeddings", None)
        if context is not None and longest + max_new_tokens + extra > context:
            raise ValueError(
                f"prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the "
                f"context of {context} tokens of {model.config._name_or_path or type(model).__name__}"
            )


def _check_call(tokenizer, prompts, models, max_new_tokens, batch_size, extra: int = 0) -> int:
    """Validate a decoding call's shared arguments; returns the vocabulary to compare over."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    vocab = _vocab(tokenizer, models)
    if prompts:
        _check_lengths(tokenizer, prompts, models, max_new_tokens, extra)
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token first")
    if tokenizer.padding_side != "left":
        raise ValueError(
            f"batched decoding needs left padding, got padding_side={tokenizer.padding_side!r}"
        )
    return vocab


def _batches(tokenizer, prompts: list[str], batch_size: int):
    """(prompt ids, left-padded `Batch`) for each run of `batch_size` prompts."""
    for start in range(0, len(prompts), batch_size):
        ids = list(range(start, min(start + batch_size, len(prompts))))
        yield ids, Batch.from_prompts(tokenizer, [prompts[i] for i in ids], torch.device("cpu"))


def _assemble(outputs: list[Output]) -> tuple[list[str], list[list[int]], pd.DataFrame]:
    """Texts, tokens and the concatenated trace of the batches' outputs, in prompt order."""
    texts = [t for o in outputs for t in o.texts()]
    tokens = [t for o in outputs for t in o.tokens]
    if not any(o.traced() for o in outputs):  # untraced calls: skip concatenating empty traces
        return texts, tokens, empty_trace()
    return texts, tokens, pd.concat([o.trace() for o in outputs], ignore_index=True)


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
) -> Collaboration:
    """A small model (System 1) and a large model (System 2) decode `prompts` together.

    Methods: `oracle`, `contrastive` (FS-GEN's form), `contrastive_obrien`, `proxy` (System 1 is
    `small_tuned`), `speculative`, and `small` / `large` alone. The router decides, per row and
    step, whether the large model is consulted (`always`, `never`, `threshold`, `margin`,
    `entropy`, or a callable on System 1's probabilities (B, V) returning (B,) bools).
    Returns texts, generated ids, a token trace (see `fsgen.trace`) and a summary.
    """
    spec = get_method(method)
    router_name, rule = make_router(router, threshold)
    if spec.uses_tuned and small_tuned is None:
        raise ValueError(f"method {method!r} needs small_tuned (the tuned small model), got None")
    if method == "speculative" and num_draft < 1:
        raise ValueError(f"num_draft must be >= 1, got {num_draft}")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    alpha = spec.alpha if alpha is None else alpha
    beta = spec.beta if beta is None else beta
    prompts = list(prompts)
    started = time.perf_counter()
    in_use = {"small": [small], "large": [large], "proxy": [small, large, small_tuned]}.get(
        method, [small, large]
    )
    extra = num_draft + 1 if method == "speculative" else 0
    vocab = _check_call(tokenizer, prompts, in_use, max_new_tokens, batch_size, extra)
    outputs, large_forwards, verification_rounds = [], 0, 0
    for ids, batch in _batches(tokenizer, prompts, batch_size):
        output = Output(tokenizer, ids, max_new_tokens, stop, trace_top_k)
        sampler = Sampler(do_sample, temperature, seed, ids)
        condition_on_prompts(in_use, batch)
        if method == "speculative":
            stats = speculative_decode(
                Stream(small, vocab), Stream(large, vocab), batch, sampler, output, num_draft
            )
        elif method == "oracle" and router_name == "always" and not do_sample:
            stats = oracle_fast(small, large, tokenizer, batch, output, vocab)
        else:  # `small` and `large` run no large stream, so their router is never consulted
            models = _models(method, small, large, small_tuned, vocab)
            stats = token_level_decode(models, batch, spec, rule, sampler, output, alpha, beta)
        outputs.append(output)
        large_forwards += stats["large_forwards"]
        verification_rounds += stats.get("large_calls", 0)
    texts, tokens, trace = _assemble(outputs)
    if method == "speculative":  # a call is a verification round, not a token
        large_calls = verification_rounds
    else:
        large_calls = int(trace["large_called"].sum()) if len(trace) else 0
    seconds = time.perf_counter() - started
    summary = _summary(tokens, trace, method, router_name, large_calls, large_forwards, seconds)
    return Collaboration(texts, tokens, trace, summary)


def collaborate_ladder(
    large,
    smalls: dict[str, object],
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
    prompts = list(prompts)
    vocab = _check_call(tokenizer, prompts, [large, *smalls.values()], max_new_tokens, batch_size)
    parts: dict[str, list] = {name: [] for name in smalls}
    seconds = dict.fromkeys(smalls, 0.0)
    for ids, batch in _batches(tokenizer, prompts, batch_size):
        began = time.perf_counter()
        large_logits, generated = generate_large(large, tokenizer, batch, max_new_tokens, vocab)
        shared = (time.perf_counter() - began) / max(1, len(smalls))
        for name, small in smalls.items():
            began = time.perf_counter()
            output = Output(tokenizer, ids, max_new_tokens, stop, trace_top_k)
            condition_on_prompts([small], batch)
            score_with_small(small, batch, generated, large_logits, output, vocab)
            parts[name].append(output)
            seconds[name] += shared + time.perf_counter() - began
    results = {}
    for name, outputs in parts.items():
        texts, tokens, trace = _assemble(outputs)
        calls = int(trace["large_called"].sum()) if len(trace) else 0
        forwards = sum(max((len(t) for t in o.tokens), default=0) for o in outputs)
        summary = _summary(tokens, trace, "oracle", "always", calls, forwards, seconds[name])
        results[name] = Collaboration(texts, tokens, trace, summary)
    return results


def _models(method, small, large, small_tuned, vocab) -> Models:
    if method == "large":
        return Models(Stream(large, vocab), None, None, system1_is_large=True)
    if method == "small":
        return Models(Stream(small, vocab), None, None)
    if method == "proxy":
        return Models(Stream(small_tuned, vocab), Stream(large, vocab), Stream(small, vocab))
    return Models(Stream(small, vocab), Stream(large, vocab), None)


def _summary(
    tokens, trace: pd.DataFrame, method, router, large_calls, large_forwards, seconds
) -> dict:
    n_tokens = sum(len(t) for t in tokens)
    mismatches = int(trace["mismatch"].sum()) if len(trace) else 0
    summary = {
        "method": method,
        "router": router,
        "prompts": len(tokens),
        "tokens": n_tokens,
        "large_calls": large_calls,
        "mismatches": mismatches,
        "collaboration_frequency": mismatches / n_tokens if n_tokens else 0.0,
        "call_rate": large_calls / n_tokens if n_tokens else 0.0,
        "large_forwards": large_forwards,
        "wall_seconds": seconds,
    }
    if method == "proxy" and len(trace):
        vs_base = int(trace["mismatch_vs_base"].astype(bool).sum())
        summary["mismatches_vs_base"] = vs_base
        summary["collaboration_frequency_vs_base"] = vs_base / n_tokens if n_tokens else 0.0
    return summary
