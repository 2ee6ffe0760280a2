"""Methods: how the models' next-token logits combine on a consulted step.

A method is one small function `combine(view) -> scores (B, V)`; the engine emits the argmax
(or a sample) of the scores. `view` holds System 1's logits `s`, the large model's `l`, the base
small model's `b` (proxy tuning only) and the method's `alpha` and `beta`. Adding a method means
adding one function and one `Method` entry: the engine, token logging and the stages read the
registry. Speculative decoding drafts and verifies rather than combines: its entry says so, and
the engine runs it with its draft-and-verify strategy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    """A decoding method: its combining rule, the models it runs, and its default alpha and beta.

    `system1` is the role of the model that decodes (`small`, `large`, or `tuned`, the tuned
    small model); `consults` says whether the large model can be consulted (routed steps, or
    verification); `base` whether the base small model's logits enter the rule (proxy tuning);
    `drafts` whether the large model verifies System 1's drafts instead of combining (speculative
    decoding); `ladder_wide` whether one generation serves every small model at once (oracle)."""

    name: str
    combine: Callable[[LogitView], torch.Tensor]
    source: str  # trace `source` of a consulted token
    system1: str = "small"
    consults: bool = True
    base: bool = False
    drafts: bool = False
    ladder_wide: bool = False
    alpha: float = 1.0
    beta: float = 0.5

    @property
    def roles(self) -> tuple[str, ...]:
        """The models the method runs: its System 1, the large model, the base small model."""
        roles = [self.system1]
        if self.consults and "large" not in roles:
            roles.append("large")
        if self.base and "small" not in roles:
            roles.append("small")
        return tuple(roles)

    @property
    def uses_tuned(self) -> bool:
        return "tuned" in self.roles

    @property
    def pairs(self) -> bool:
        """Whether the method runs a pair of rungs (a large and a small one), not one alone."""
        return self.consults and self.system1 != "large"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("oracle", oracle, "large", ladder_wide=True),
        Method("contrastive", contrastive, "combined", alpha=0.1, beta=0.5),
        Method("contrastive_obrien", contrastive_obrien, "combined", alpha=0.1, beta=0.5),
        Method("speculative", oracle, "large", drafts=True),
        Method("proxy", proxy, "combined", system1="tuned", base=True, alpha=1.0),
        Method("small", system1, "small", consults=False),
        Method("large", system1, "large", system1="large", consults=False),
    )
}


def pair_methods() -> list[str]:
    """The methods that run a pair of rungs (a large and a small one), in registry order: what
    token logging logs beside each rung alone, and what every later stage reports."""
    return [name for name, method in METHODS.items() if method.pairs]


def logging_methods(methods: str | Sequence[str] = "all") -> list[str]:
    """The methods token logging runs: "all" (each rung `alone`, then every pair method of the
    registry), or their names as a comma-separated string or a list."""
    valid = ["alone", *pair_methods()]
    if isinstance(methods, str):
        methods = valid if methods.strip() == "all" else methods.split(",")
    chosen = [m.strip() for m in methods if m.strip()]
    unknown = sorted(set(chosen) - set(valid))
    if unknown or not chosen:
        raise ValueError(f"unknown logging methods {unknown or chosen}; valid: {valid}")
    return chosen


def get_method(name: str) -> Method:
    """The method called `name`, or a ValueError listing the valid ones."""
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}")
    return METHODS[name]
