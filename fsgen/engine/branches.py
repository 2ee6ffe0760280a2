"""Branches: a generation continued by a model from a prefix it did not write.

A branch is a prompt, the tokens generated so far, and one token put in place of the next one
(System 1's choice where System 2 chose another); `continue_branches` lets a model continue each
branch greedily to the end, through the engine's loop, stopping rule and forward, many branches
per batch. The stopping rule reads the whole generation, prefix included, so a branch stops
where a generation that had emitted the same tokens itself would: at `max_new_tokens` generated
tokens in all, at an end id, or once its text holds a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fsgen.engine.collaborate import Engine
from fsgen.engine.output import StopRule, text_decoder


@dataclass(frozen=True)
class Branch:
    """A point to continue from: the prompt's index, and the generated tokens so far, ending
    with the token put in place (`prefix`)."""

    prompt: int
    prefix: tuple[int, ...]


def _vocab(tokenizer, models) -> int:
    """The tokenizer's vocabulary, which every model's must hold."""
    vocab = len(tokenizer)
    if any(model.config.vocab_size < vocab for model in models):
        sizes = sorted({model.config.vocab_size for model in models})
        raise ValueError(f"models of vocabulary sizes {sizes} for a tokenizer of {vocab} tokens")
    return vocab


class _IdsEngine(Engine):
    """The engine fed token ids (prompt plus prefix) instead of texts to tokenize."""

    def _prepare(self, prompts, models):
        vocab = _vocab(self.tokenizer, models)
        ids = [list(row) for row in prompts]
        if ids:
            self._check_lengths(ids, models)
        return ids, vocab


def _check_branches(prompt_ids, branches, max_new_tokens: int, vocab: int) -> None:
    for i, branch in enumerate(branches):
        if not isinstance(branch, Branch):
            raise ValueError(f"branch {i} must be a Branch, got {type(branch).__name__}")
        if not 0 <= branch.prompt < len(prompt_ids):
            raise ValueError(
                f"branch {i} names prompt {branch.prompt}, expected one of the "
                f"{len(prompt_ids)} prompts (0 to {len(prompt_ids) - 1})"
            )
        if not 1 <= len(branch.prefix) <= max_new_tokens:
            raise ValueError(
                f"branch {i} has a prefix of {len(branch.prefix)} tokens, expected 1 to "
                f"max_new_tokens={max_new_tokens} (the generated tokens and the one put in place)"
            )
        if not all(isinstance(t, int) and 0 <= t < vocab for t in branch.prefix):
            raise ValueError(f"branch {i}'s prefix holds ids outside [0, {vocab}): {branch.prefix}")


def _cut(rule: StopRule, tokens: list[int], decode, start: int) -> list[int]:
    """`tokens` up to the first stop of `rule` after its first `start` tokens."""
    end = min(len(tokens), rule.max_new_tokens)
    text = decode(tokens[:end])
    if not any(t in rule.ids for t in tokens[start:end]) and not any(
        s in text for s in rule.strings
    ):
        return tokens[:end]
    for k in range(start, end + 1):
        if k and rule.stops(tokens[:k], decode):
            return tokens[:k]
    return tokens[:end]


def continue_branches(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    branches: Sequence[Branch],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    stop: Sequence[str] | None = None,
    forward: str = "auto",
) -> list[list[int]]:
    """Each branch's whole generation (its prefix, then `model`'s greedy continuation), within
    `max_new_tokens` generated tokens and cut at the first stop of the engine's rule read over
    the whole generation. Branches are decoded `batch_size` at a time, those with the most room
    left first, so that a batch's rows need about as many steps."""
    models = [model]
    vocab = _vocab(tokenizer, models)
    _check_branches(prompt_ids, branches, max_new_tokens, vocab)
    rule = StopRule.build(tokenizer, models, stop, max_new_tokens)
    decode = text_decoder(tokenizer)
    results: list[list[int] | None] = [None] * len(branches)
    pending = []
    for i, branch in enumerate(branches):
        prefix = list(branch.prefix)
        if rule.stops(prefix, decode):  # the token put in place ends the generation
            results[i] = prefix
        else:
            pending.append(i)
    pending.sort(key=lambda i: (len(branches[i].prefix), i))
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        room = max_new_tokens - min(len(branches[i].prefix) for i in chunk)
        engine = _IdsEngine(
            {"small": model},
            tokenizer,
            method="small",
            max_new_tokens=room,
            batch_size=len(chunk),
            stop=stop,
            trace=False,
            forward=forward,
        )
        rows = [[*prompt_ids[branches[i].prompt], *branches[i].prefix] for i in chunk]
        out = engine.run(rows)
        for i, tokens in zip(chunk, out.tokens, strict=True):
            prefix = list(branches[i].prefix)
            results[i] = _cut(rule, prefix + list(tokens), decode, len(prefix))
    return [list(r) for r in results]


def generation_text(tokenizer, model, tokens: Sequence[int], stop: Sequence[str] | None) -> str:
    """A generation's text as the engine returns it: decoded with special tokens, cut before
    its first stop."""
    rule = StopRule.build(tokenizer, [model], stop, max(1, len(tokens)))
    return rule.cut_text(text_decoder(tokenizer)(list(tokens)))
