"""The one stopping rule, and what a call returns per prompt: tokens, texts and trace rows.

A row stops at `max_new_tokens`, at a stop id, or when its text contains a stop string:

- stop ids: the tokenizer's end-of-text, every id of each model's
  `generation_config.eos_token_id` (a list for most chat models), and every stop string that is
  a special token of the tokenizer (`<|im_end|>`, `<|end|>`), checked on ids;
- stop strings: checked on the text decoded *with* special tokens, so a stop string that
  contains a special token fires too.

The stopping token is kept in the row's tokens (and trace); the returned text is the decoded
text (special tokens included) cut before the first stop, string or stop id, either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from fsgen.engine.trace import empty_trace


def _ids(value) -> set[int]:
    """An eos setting (None, an int or a list of ints) as a set of ids."""
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


def special_tokens(tokenizer) -> dict[str, int]:
    """The tokenizer's special tokens: text -> id."""
    found = {
        token.content: index
        for index, token in tokenizer.added_tokens_decoder.items()
        if token.special
    }
    for token in tokenizer.all_special_tokens:
        index = tokenizer.convert_tokens_to_ids(token)
        if isinstance(index, int):
            found.setdefault(token, index)
    return found


def check_stop(stop: Sequence[str] | None) -> tuple[str, ...]:
    """`stop` as a tuple of non-empty strings; a single string is refused (it would otherwise be
    read character by character)."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        raise ValueError(f"stop must be a list of strings, got the string {stop!r}; use [{stop!r}]")
    stop = tuple(stop)
    bad = [s for s in stop if not isinstance(s, str) or not s]
    if bad:
        raise ValueError(f"stop strings must be non-empty strings, got {bad!r}")
    return stop


class StopRule:
    """When a row stops: `max_new_tokens`, a stop id, or a stop string (module docstring)."""

    def __init__(self, ids: Iterable[int], strings: Sequence[str], max_new_tokens: int, cut=()):
        self.ids = frozenset(ids)
        self.strings = tuple(strings)
        self.max_new_tokens = max_new_tokens
        self.cut = tuple(dict.fromkeys((*self.strings, *cut)))  # what texts are cut at

    @classmethod
    def build(cls, tokenizer, models, stop: Sequence[str] | None, max_new_tokens: int) -> StopRule:
        """The rule for a call: the tokenizer's and the models' end ids, and `stop`."""
        stop = check_stop(stop)
        ids = _ids(tokenizer.eos_token_id)
        for model in models:
            config = getattr(model, "generation_config", None)
            ids |= _ids(getattr(config, "eos_token_id", None))
        special = special_tokens(tokenizer)
        ids |= {special[s] for s in stop if s in special}
        cut = [tokenizer.decode([i], skip_special_tokens=False) for i in sorted(ids)]
        return cls(ids, stop, max_new_tokens, [c for c in cut if c])

    def stops(self, tokens: list[int], decode: Callable[[list[int]], str]) -> bool:
        """Whether a row whose generated tokens are `tokens` is done."""
        if len(tokens) >= self.max_new_tokens or tokens[-1] in self.ids:
            return True
        if not self.strings:
            return False
        text = decode(tokens)
        return any(s in text for s in self.strings)

    def cut_text(self, text: str) -> str:
        """`text` up to its first stop."""
        cuts = [text.index(s) for s in self.cut if s in text]
        return text[: min(cuts)] if cuts else text


def text_decoder(tokenizer) -> Callable[[list[int]], str]:
    """`ids -> tokenizer.decode(ids, skip_special_tokens=False)`.

    For a fast (Rust-backed) tokenizer that neither overrides decoding nor cleans up
    tokenization spaces, transformers' `decode` is its backend's `decode` plus per-call input
    conversions that cost more than the decoding itself on every step; this calls the backend
    directly, so the text is the same string. Any other tokenizer keeps its own `decode`.
    """
    kind = type(tokenizer)
    plain = (
        isinstance(tokenizer, TokenizersBackend)
        and kind.decode is PreTrainedTokenizerBase.decode
        and kind._decode is TokenizersBackend._decode
        and not tokenizer.clean_up_tokenization_spaces
    )
    if plain:
        backend = tokenizer.backend_tokenizer
        return lambda ids: backend.decode(ids, skip_special_tokens=False)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False)


class Output:
    """Generated tokens and trace rows of each prompt of a batch, with per-row stopping.

    `finished` marks rows that start done: they are fed like the others but emit nothing."""

    def __init__(
        self,
        tokenizer,
        prompt_ids: Sequence[int],
        rule: StopRule,
        trace_top_k: int,
        finished: Sequence[bool] | None = None,
        keep_rows: bool = True,
    ):
        self.tokenizer, self.prompt_ids, self.rule = tokenizer, list(prompt_ids), rule
        self.k, self.keep_rows = trace_top_k, keep_rows
        self.tally = {"large_calls": 0, "mismatches": 0, "mismatches_vs_base": 0}
        self.tokens: list[list[int]] = [[] for _ in self.prompt_ids]
        self.rows: list[dict] = []
        self.frames: list[pd.DataFrame] = []
        self.done = list(finished) if finished is not None else [False] * len(self.prompt_ids)
        self.decode = text_decoder(tokenizer)

    @property
    def max_new_tokens(self) -> int:
        return self.rule.max_new_tokens

    def all_done(self) -> bool:
        return all(self.done)

    def active(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Which rows are still running (B,) bool."""
        return torch.tensor([not d for d in self.done], device=device)

    def emit(self, row: int, token: int, record: dict) -> None:
        """Append one token to a row (if it is still running) and its trace row (`record`
        holds at least large_called, mismatch and mismatch_vs_base)."""
        if self.accept(row, [token]):
            self._count(record["large_called"], record["mismatch"], record["mismatch_vs_base"])
            if self.keep_rows:
                step = len(self.tokens[row]) - 1
                self.rows.append(
                    {"prompt_id": self.prompt_ids[row], "step": step, "token_id": token} | record
                )

    def _count(self, calls, mismatches, vs_base) -> None:
        self.tally["large_calls"] += int(calls)
        self.tally["mismatches"] += int(mismatches)
        self.tally["mismatches_vs_base"] += int(bool(vs_base))

    def accept(self, row: int, tokens: list[int]) -> int:
        """Append tokens to a row until it stops; returns how many were taken (no trace rows)."""
        taken = 0
        for token in tokens:
            if self.done[row]:
                break
            self.tokens[row].append(token)
            taken += 1
            self.done[row] = self.rule.stops(self.tokens[row], self.decode)
        return taken

    def add_rows(self, frame: pd.DataFrame) -> None:
        """Trace rows built in bulk (they must carry prompt_id, step and the flags)."""
        self._count(
            frame["large_called"].sum(),
            frame["mismatch"].sum(),
            frame["mismatch_vs_base"].astype(bool).sum(),
        )
        if self.keep_rows:
            self.frames.append(frame)

    def texts(self) -> list[str]:
        """Decoded generations (special tokens kept), each cut before its first stop."""
        return [self.rule.cut_text(self.decode(tokens)) for tokens in self.tokens]

    def traced(self) -> bool:
        """Whether any trace row was recorded."""
        return bool(self.rows) or any(len(f) for f in self.frames)

    def trace(self) -> pd.DataFrame:
        """The trace rows of the batch, in prompt and step order, with every schema column."""
        parts = [pd.DataFrame(self.rows)] if self.rows else []
        parts += [f for f in self.frames if len(f)]
        if not parts:
            return empty_trace()
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        ids = frame["token_id"].astype(int)
        unique = ids.unique()
        text = dict(zip(unique, self.tokenizer.batch_decode([[t] for t in unique]), strict=True))
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
