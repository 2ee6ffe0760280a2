"""The engine's one forward: a model fed the columns of a `Batch` it has not seen yet.

A stream is one model over one batch: it keeps the model's KV cache and the number of columns
the model has seen. `advance(batch, keep)` feeds the missing columns in one forward pass and
returns the logits of the last `keep` of them (the prefill computes no logits for the rest of
the prompt); `crop(width)` forgets columns, for rejected drafts. So a model runs only when it is
needed and catches up on every column since its last call at once.

`open_stream` chooses the forward: GPT-NeoX models (the embedded ladder, Pythia) run through
`fsgen.engine.fast_neox`, a lean forward over a static KV cache whose logits equal HF's; any
other causal LM runs through its own HF forward with a `DynamicCache` whose layers write into
buffers that double when full (`ReservedLayer`). Every stage, method and
benchmark goes through this choice. Logits stay on the model's device; only what a caller
explicitly moves crosses to the host.
"""

from __future__ import annotations

import inspect
from typing import Protocol

import torch
from transformers import DynamicCache

try:  # transformers >= 4.56: a cache made of layer objects
    from transformers.cache_utils import Cache, DynamicLayer
except ImportError:  # older: the plain DynamicCache
    Cache = DynamicLayer = None

from fsgen.core.memory import release_freed_memory
from fsgen.engine import fast_neox
from fsgen.engine.batch import Batch

FORWARDS = ("auto", "lean", "hf")


class Stream(Protocol):
    """One model over a `Batch`: its KV cache and how many columns it has seen."""

    seen: int
    device: torch.device

    def advance(self, batch: Batch, keep: int = 1) -> torch.Tensor:
        """Feed the unseen columns; float logits (B, keep, vocab) of the last `keep` fed."""
        ...

    def crop(self, width: int) -> None:
        """Forget cached columns past `width`."""
        ...


def model_device(model) -> torch.device:
    """The device a model takes its inputs on (its first parameter's)."""
    return next(model.parameters()).device


if DynamicLayer is not None:

    class ReservedLayer(DynamicLayer):
        """One layer's keys and values, (B, H, length, D) views of buffers that double when full
        and are written in place. HF's `DynamicLayer` concatenates a new tensor every step: on a
        CPU those ever larger, long-lived blocks fragment the heap until a batch of 50 GSM8K
        rows holds 14 GB for 1 GB of cache (`tests/engine/test_forward.py` bounds the growth)."""

        def lazy_initialization(self, key_states, value_states) -> None:
            self.device, self.length = key_states.device, 0
            self.key_buffer = self.value_buffer = None
            self.is_initialized = True

        def _reserve(self, key_states, value_states, width: int) -> None:
            rows, heads, _, _ = key_states.shape
            capacity = max(width, 2 * self.key_buffer.shape[-2] if self.length else width)
            key_buffer = key_states.new_empty(rows, heads, capacity, key_states.shape[-1])
            value_buffer = value_states.new_empty(rows, heads, capacity, value_states.shape[-1])
            if self.length:
                key_buffer[..., : self.length, :] = self.key_buffer[..., : self.length, :]
                value_buffer[..., : self.length, :] = self.value_buffer[..., : self.length, :]
            self.key_buffer, self.value_buffer = key_buffer, value_buffer

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start, end = self.length, self.length + key_states.shape[-2]
            if self.key_buffer is None or end > self.key_buffer.shape[-2]:
                self._reserve(key_states, value_states, end)
            self.key_buffer[..., start:end, :] = key_states
            self.value_buffer[..., start:end, :] = value_states
            self.length = end
            self.keys = self.key_buffer[..., :end, :]
            self.values = self.value_buffer[..., :end, :]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError(f"crop takes a negative count, got {tokens_to_remove}")
            if self.is_initialized and tokens_to_remove:
                self.length = max(self.length + tokens_to_remove, 0)
                self.keys = self.key_buffer[..., : self.length, :]
                self.values = self.value_buffer[..., : self.length, :]

        def batch_select_indices(self, indices) -> None:
            if self.get_seq_length():
                self.key_buffer = self.key_buffer[indices, ...]
                self.value_buffer = self.value_buffer[indices, ...]
                self.keys = self.key_buffer[..., : self.length, :]
                self.values = self.value_buffer[..., : self.length, :]

        def batch_repeat_interleave(self, repeats: int) -> None:
            raise NotImplementedError("fsgen's streams never repeat rows")

        def reorder_cache(self, beam_idx) -> None:
            raise NotImplementedError("fsgen's streams never reorder rows")

    class ReservedCache(DynamicCache):
        """A `DynamicCache` of `ReservedLayer`s, one per decoder layer, added as HF updates them."""

        def __init__(self):
            Cache.__init__(self, layer_class_to_replicate=ReservedLayer)


def new_cache():
    """The KV cache an HF stream starts from: reserved layers where transformers has layers."""
    return ReservedCache() if DynamicLayer is not None else DynamicCache()


TRIM_EVERY = 8  # HF forwards on a CPU between two `release_freed_memory` calls


class HFStream:
    """Any HF causal LM, fed through its own forward with the cache of `new_cache`. On a CPU,
    every `TRIM_EVERY` forwards hand the heap's freed pages back (`fsgen.core.memory`): the
    forward's ever longer temporary blocks otherwise fragment it, so that a speculative decode of
    50 SmolLM2 rows held 4.7 GB for 1.1 GB in use after 96 tokens, and 2.1-2.8 GB with the trim
    at the same speed (trimming after every forward kept no less)."""

    def __init__(self, model, vocab: int):
        self.model, self.vocab = model, vocab
        self.device = model_device(model)  # looked up once: HF's `device` walks the parameters
        self.cache = new_cache()  # updated in place by every forward
        self.seen = 0
        # transformers 5 names the forward's cache argument `cache`; older ones `past_key_values`
        parameters = inspect.signature(model.forward).parameters
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self.forwards = 0

    @torch.inference_mode()  # cheaper per op than no_grad: no version counters, no views
    def advance(self, batch: Batch, keep: int = 1) -> torch.Tensor:
        start, end = self.seen, batch.width
        mask = batch.mask
        mask = None if bool(mask.all()) else mask.to(self.device)  # no holes: the causal path
        out = self.model(
            input_ids=batch.seq[:, start:end].to(self.device),
            attention_mask=mask,
            position_ids=batch.pos[:, start:end].to(self.device),
            use_cache=True,
            logits_to_keep=keep,
            **{self.cache_argument: self.cache},
        )
        self.seen = end
        self.forwards += 1
        if self.device.type == "cpu" and self.forwards % TRIM_EVERY == 0:
            release_freed_memory()
        return out.logits[..., -keep:, : self.vocab].float()  # (B, keep, V)

    def crop(self, width: int) -> None:
        if self.seen > width:
            self.cache.crop(width - self.seen)  # a negative count: drop that many columns
            self.seen = width


class LeanStream:
    """A GPT-NeoX model (or a wrapper exposing `causal_lm` and `embed_columns`, as LLM-to-SLM's
    `ConditionedSmall` does) run by `FastNeoX` over a static KV cache of `capacity` columns,
    which doubles when a batch outgrows it. Pass `fast` to reuse one `FastNeoX` across calls."""

    def __init__(self, model, vocab: int, rows: int, capacity: int, fast=None):
        self.model, self.vocab = model, vocab
        self.fast = fast if fast is not None else fast_neox.FastNeoX(fast_neox.causal_lm(model))
        self.device = self.fast.device
        self.embed_columns = getattr(model, "embed_columns", None)
        self.rows, self.capacity = rows, max(capacity, 1)
        self.fast.cover(self.capacity)
        self.cache = self.fast.new_cache(rows, self.capacity)
        self.seen = 0

    def _grow(self, width: int) -> None:
        capacity = max(width, 2 * self.capacity)
        self.fast.cover(capacity)
        cache = self.fast.new_cache(self.rows, capacity)
        for (keys, values), (new_keys, new_values) in zip(self.cache, cache, strict=True):
            new_keys[:, :, : self.seen] = keys[:, :, : self.seen]
            new_values[:, :, : self.seen] = values[:, :, : self.seen]
        self.cache, self.capacity = cache, capacity

    @torch.inference_mode()
    def advance(self, batch: Batch, keep: int = 1) -> torch.Tensor:
        start, end = self.seen, batch.width
        if end > self.capacity:
            self._grow(end)
        device = self.device
        ids = batch.seq[:, start:end].to(device)  # (B, k)
        embeds = self.embed_columns(ids, start) if self.embed_columns is not None else None
        logits = self.fast.forward(
            self.cache,
            start,
            batch.pos[:, start:end].to(device),
            fast_neox.attention_mask(batch.mask.to(device), start, end),
            input_ids=ids if embeds is None else None,
            inputs_embeds=embeds,
            keep=keep,
        )  # (B, keep, V)
        self.seen = end
        return logits[..., : self.vocab].float()

    def crop(self, width: int) -> None:
        self.seen = min(self.seen, width)  # later columns are overwritten, never attended


def open_stream(model, vocab: int, batch: Batch, *, spare: int, forward: str = "auto") -> Stream:
    """A stream of `model` over `batch` (room for `spare` more columns): the lean forward for
    GPT-NeoX models, HF's forward for the rest (`forward`: auto, lean or hf)."""
    if forward not in FORWARDS:
        raise ValueError(f"forward must be one of {FORWARDS}, got {forward!r}")
    lean = fast_neox.supports(model)
    if forward == "lean" and not lean:
        raise ValueError(f"forward='lean' runs GPT-NeoX models only, got {type(model).__name__}")
    if lean and forward != "hf":
        return LeanStream(model, vocab, batch.rows, batch.width + spare)
    return HFStream(model, vocab)
