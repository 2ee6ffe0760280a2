"""Lists of names given in a parameter: one helper, so every layer reads them the same way."""

from __future__ import annotations

from collections.abc import Sequence


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
