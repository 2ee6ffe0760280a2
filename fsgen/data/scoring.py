"""Answer extraction shared by the tasks: numbers as people write them."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?")


def parse_number(text: str) -> int | float | None:
    """`text` as a number, tolerant of "1,000", "$18", "18.0" and a trailing full stop."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value


def last_number(text: str) -> int | float | None:
    """The last number written in `text`, or None when there is none."""
    matches = _NUMBER.findall(text)
    return parse_number(matches[-1]) if matches else None
