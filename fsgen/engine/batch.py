"""The token columns every model of a call shares.

A batch is a ragged set of rows stored as one rectangle of columns: `seq` (token ids), `mask`
(1 for a real token, 0 for left padding or a rejected draft) and `pos` (position ids). The
buffers are allocated with spare capacity and grow by doubling, so appending a column is a slice
assignment, not a copy of the whole rectangle. The engine builds batches itself from token ids,
left padded with any id (padding is masked out), so a tokenizer is used as the hub ships it,
whatever its padding side and whether or not it has a pad token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt, without special tokens added and without padding. A prompt that
    is not a string, or that is empty (or tokenizes to nothing: a model needs one token of
    context to predict from), is a ValueError naming its index."""
    if isinstance(prompts, str):
        raise ValueError(f"prompts must be a list of strings, got one string {prompts[:40]!r}")
    prompts = list(prompts)
    if not prompts:
        return []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValueError(
                f"prompt {i} must be a string, got {type(prompt).__name__} {prompt!r:.60}"
            )
        if not prompt:
            raise ValueError(f"prompt {i} is empty: a prompt needs at least one token of context")
    ids = list(tokenizer(prompts, add_special_tokens=False)["input_ids"])
    for i, row in enumerate(ids):
        if not row:
            raise ValueError(f"prompt {i} ({prompts[i]!r:.60}) tokenizes to no tokens")
    return ids


def padding_id(tokenizer) -> int:
    """The id left padding is filled with: the pad token, else end-of-text, else 0 (the id does
    not matter, padded columns are masked out)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0


class Batch:
    """Token columns shared by every model of a call: ids, attention mask and positions."""

    def __init__(self, seq: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, spare: int = 0):
        rows, width = seq.shape
        capacity = width + max(spare, 0)
        self._seq = seq.new_zeros(rows, capacity)  # (B, capacity)
        self._mask = mask.new_zeros(rows, capacity)
        self._pos = pos.new_zeros(rows, capacity)
        self._seq[:, :width], self._mask[:, :width], self._pos[:, :width] = seq, mask, pos
        self.width = width
        self._next = mask.sum(-1, keepdim=True)  # (B, 1): each row's next position

    @classmethod
    def from_ids(
        cls, ids: Sequence[Sequence[int]], pad_id: int, device="cpu", spare: int = 0
    ) -> Batch:
        """A left-padded batch of token id lists (B rows), room for `spare` more columns."""
        if not ids:
            raise ValueError("a batch needs at least one prompt, got none")
        width = max(len(row) for row in ids)
        seq = torch.full((len(ids), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            if row:
                seq[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                mask[i, width - len(row) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)
        return cls(seq.to(device), mask.to(device), pos.to(device), spare)

    @classmethod
    def from_prompts(cls, tokenizer, prompts: Sequence[str], device="cpu", spare: int = 0):
        """A left-padded batch of `prompts`, tokenized without special tokens."""
        return cls.from_ids(
            encode_prompts(tokenizer, prompts), padding_id(tokenizer), device, spare
        )

    @property
    def seq(self) -> torch.Tensor:
        return self._seq[:, : self.width]  # (B, L)

    @property
    def mask(self) -> torch.Tensor:
        return self._mask[:, : self.width]  # (B, L)

    @property
    def pos(self) -> torch.Tensor:
        return self._pos[:, : self.width]  # (B, L)

    @property
    def rows(self) -> int:
        return self._seq.shape[0]

    @property
    def device(self) -> torch.device:
        return self._seq.device

    def copy(self, spare: int = 0) -> Batch:
        """An independent copy with room for `spare` more columns."""
        return Batch(self.seq, self.mask, self.pos, spare)

    def next_positions(self) -> torch.Tensor:
        """Position id of the next real token of each row (B,)."""
        return self._next[:, 0]

    def _reserve(self, columns: int) -> None:
        needed = self.width + columns
        if needed <= self._seq.shape[1]:
            return
        capacity = max(needed, 2 * self._seq.shape[1])
        for name in ("_seq", "_mask", "_pos"):
            old = getattr(self, name)
            new = old.new_zeros(old.shape[0], capacity)
            new[:, : self.width] = old[:, : self.width]
            setattr(self, name, new)

    def append(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Append columns (B, k) of tokens, real unless `mask` says otherwise."""
        k = ids.shape[1]
        self._reserve(k)
        start, end = self.width, self.width + k
        if mask is None:  # all real: consecutive positions
            mask = torch.ones_like(ids)
            pos = self._next if k == 1 else self._next + torch.arange(k, device=ids.device)
        else:
            mask = mask.to(ids.dtype)
            pos = self._next + (mask.cumsum(-1) - mask).clamp(min=0)  # (B, k)
        self._seq[:, start:end], self._mask[:, start:end], self._pos[:, start:end] = ids, mask, pos
        self._next = self._next + mask.sum(-1, keepdim=True)
        self.width = end

    def mask_out(self, row: int, start: int) -> None:
        """Mark the columns of `row` from `start` on as not real (rejected drafts)."""
        self._mask[row, start : self.width] = 0
        self._next[row, 0] = self._mask[row, : self.width].sum()

    def crop(self, width: int) -> None:
        """Keep the first `width` columns."""
        if width < self.width:
            self.width = width
            self._next = self._mask[:, :width].sum(-1, keepdim=True)
