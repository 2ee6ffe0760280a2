"""Names given in a parameter: lists of them, and model sizes in them, read the same way by every
layer."""

from __future__ import annotations

import re
from collections.abc import Sequence

_UNITS = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


def parse_size(name: str) -> float:
    """A nominal model size such as "1.8B", "410m" or "72B" as a number of parameters."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KkMmBbTt])\s*", str(name))
    if not match:
        raise ValueError(f"expected a model size like '1.8B' or '410M', got {name!r}")
    return float(match.group(1)) * _UNITS[match.group(2).upper()]


def name_list(value: object, what: str = "names") -> list[str]:
    """`value` as a non-empty list of names, each stripped of surrounding spaces.

    A list or tuple of strings is taken as it is; one string is a comma-separated list (so one
    name is a list of one, never read letter by letter). Anything else, an empty list or an
    empty name is a ValueError naming `what` and the value.
    """
    items: Sequence[object] | None = None
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = value
    names = [item.strip() for item in items or () if isinstance(item, str)]
    if not items or len(names) != len(items) or not all(names):
        raise ValueError(
            f"{what} must be one or more names (a list, or one comma-separated string), "
            f"got {value!r}"
        )
    return names
