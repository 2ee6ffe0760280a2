"""Routers: when System 1 asks System 2. A router is a rule on System 1's next-token
distribution that says, per row, whether the large model is consulted."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Router = Callable[[torch.Tensor], torch.Tensor]  # probs (B, V) -> consult (B,) bool


def top2(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two largest probabilities of each row: (top1 (B,), top2 (B,))."""
    values = probs.topk(2, dim=-1).values  # (B, 2)
    return values[:, 0], values[:, 1]


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of each row (B,)."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def always(probs: torch.Tensor) -> torch.Tensor:
    return torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)


def never(probs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(probs.shape[0], dtype=torch.bool, device=probs.device)


def threshold(limit: float) -> Router:
    """Consult when System 1's top-1 probability is below `limit` (FS-GEN uses 0.5)."""
    return lambda probs: top2(probs)[0] < limit


def margin(limit: float) -> Router:
    """Consult when top-1 minus top-2 probability is below `limit`."""
    return lambda probs: (lambda a, b: a - b < limit)(*top2(probs))


def entropy_above(limit: float) -> Router:
    """Consult when System 1's entropy (nats) is above `limit`."""
    return lambda probs: entropy(probs) > limit


ROUTERS = ("always", "never", "threshold", "margin", "entropy")
_NEEDS_THRESHOLD = {"threshold": threshold, "margin": margin, "entropy": entropy_above}


def check_threshold(router: str, value) -> float:
    """`value` as the threshold of `router`: a probability in [0, 1] for `threshold` and
    `margin`, a finite entropy >= 0 (nats) for `entropy`; anything else is a ValueError."""
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if router == "entropy":
        ok, allowed = number is not None and 0 <= number < math.inf, "a number of nats >= 0"
    else:
        ok, allowed = number is not None and 0 <= number <= 1, "a probability in [0, 1]"
    if not ok:
        raise ValueError(f"router {router!r} needs a threshold that is {allowed}, got {value!r}")
    return float(number)


def make_router(router: str | Router, value: float | None = None) -> tuple[str, Router]:
    """Resolve a router name (or callable) into `(name, rule)`."""
    if callable(router):
        return getattr(router, "__name__", "callable"), router
    if router == "always":
        return router, always
    if router == "never":
        return router, never
    if router in _NEEDS_THRESHOLD:
        if value is None:
            raise ValueError(f"router {router!r} needs a threshold, got threshold=None")
        return router, _NEEDS_THRESHOLD[router](check_threshold(router, value))
    raise ValueError(f"unknown router {router!r}; valid routers: {list(ROUTERS)} or a callable")
