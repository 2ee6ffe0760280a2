"""Wall-clock timing of one call, the way every timing in fsgen is taken."""

from __future__ import annotations

import gc
import time


def timed(call) -> tuple[float, float, object]:
    """Wall seconds of `call()`, run after a full garbage collection with the collector off (as
    `timeit` does: where a full collection lands depends on the whole process's allocation
    history, not on what is timed), the seconds of them spent in full (generation 2) collections
    all the same (one the call asks for), and the call's result."""
    began, collecting = [0.0], [0.0]

    def watch(phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            collecting[0] += time.perf_counter() - began[0]

    gc.collect()
    gc.disable()
    gc.callbacks.append(watch)
    try:
        start = time.perf_counter()
        out = call()
        seconds = time.perf_counter() - start
    finally:
        gc.callbacks.remove(watch)
        gc.enable()
    return seconds, collecting[0], out
