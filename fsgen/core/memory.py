"""Freed memory handed back to the operating system, on a CPU with glibc.

glibc's malloc keeps freed blocks in its heap for reuse and returns pages to the system only from
the heap's top. A decode through transformers' forward allocates, every step and layer, blocks
that grow with the sequence (its attention's repeated keys and values, its masks, the logits), so
each new block fits no earlier hole: a batch of 50 SmolLM2 rows decoded speculatively held
4.7 GB after 96 new tokens, 1.1 GB of them in use (measured by `malloc_trim`). The token-logging
worker of the smollm2 profile grew to 21 GB and was killed. `release_freed_memory` asks glibc to
give back every free page (`malloc_trim(0)`); elsewhere (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_freed_memory() -> bool:
    """Return the heap's free pages to the operating system; whether the C library could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
