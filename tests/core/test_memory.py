"""Freed memory handed back to the operating system."""

from __future__ import annotations

import platform

import pytest

from fsgen.core.memory import release_freed_memory


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_gives_freed_holes_back():
    """Blocks freed between blocks still in use stay resident until they are released."""
    blocks = [bytearray(b"x" * 50_000) for _ in range(4000)]  # 200 MB on the heap (below mmap's)
    kept = blocks[::20]  # every 20th block pins the heap around the holes
    del blocks
    before = resident_bytes()
    assert release_freed_memory()
    assert before - resident_bytes() > 100 * 2**20
    del kept
