"""Methods: how the models' next-token logits combine on a consulted step.

A method is one small function `combine(view) -> scores (B, V)`; the engine emits the argmax
(or a sample) of the scores. `view` holds System 1's logits `s`, the large model's `l`, the base
small model's `b` (proxy tuning only) and the method's `alpha` and `beta`. Adding a method means
adding one function and one `Method` entry. Speculative decoding, which drafts and verifies
rather than combines, lives in the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LogitView:
    """The logits of one step, (B, V) each, over the tokenizer's vocabulary."""

    s: torch.Tensor  # System 1 (the small model, or the tuned small model for proxy)
    l: torch.Tensor | None  # the large model (None when not run)  # noqa: E741
    b: torch.Tensor | None  # the base small model (proxy only)
    alpha: float
    beta: float


def oracle(view: LogitView) -> torch.Tensor:
    """FS-GEN's oracle decoding: the large model decides."""
    return view.l


def plausible(l: torch.Tensor, alpha: float) -> torch.Tensor:  # noqa: E741
    """Tokens with large-model probability at least alpha times its top probability (B, V)."""
    return l >= math.log(alpha) + l.max(dim=-1, keepdim=True).values


def contrastive(view: LogitView) -> torch.Tensor:
    """FS-GEN's contrastive decoding: s + beta*(l - s) over the plausible tokens."""
    scores = view.s + view.beta * (view.l - view.s)
    return scores.masked_fill(~plausible(view.l, view.alpha), -math.inf)


def contrastive_obrien(view: LogitView) -> torch.Tensor:
    """O'Brien & Lewis (2023): (1+beta)*l - beta*s over the plausible tokens."""
    scores = (1 + view.beta) * view.l - view.beta * view.s
    return scores.masked_fill(~plausible(view.l, view.alpha), -math.inf)


def proxy(view: LogitView) -> torch.Tensor:
    """Proxy tuning (Liu et al. 2024): l + alpha*(t - b), t the tuned small logits."""
    return view.l + view.alpha * (view.s - view.b)


def system1(view: LogitView) -> torch.Tensor:
    """A model alone: its own logits."""
    return view.s


@dataclass(frozen=True)
class Method:
    """A decoding method: its rule, which models it needs, and its default alpha and beta."""

    name: str
    combine: Callable[[LogitView], torch.Tensor]
    source: str  # trace `source` of a consulted token
    uses_large: bool = True
    uses_tuned: bool = False
    alpha: float = 1.0
    beta: float = 0.5


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("oracle", oracle, "large"),
        Method("contrastive", contrastive, "combined", alpha=0.1, beta=0.5),
        Method("contrastive_obrien", contrastive_obrien, "combined", alpha=0.1, beta=0.5),
        Method("proxy", proxy, "combined", uses_tuned=True, alpha=1.0),
        Method("small", system1, "small", uses_large=False),
        Method("large", system1, "large", uses_large=False),
        Method("speculative", oracle, "large"),
    )
}


def get_method(name: str) -> Method:
    """The method called `name`, or a ValueError listing the valid ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}")
    return METHODS[name]
