"""Where stage 00's wall time goes on a small CPU: the six-rung embedded ladder trained as stage 00
trains it (`train_ladder`, params.yaml's corpus and shapes) but shortened (`--steps` steps, 10
tuning steps, 20 held-out problems), once in one process on 2 threads (the stage's earlier
setting) and once in 2 worker processes on 1 thread each (today's). Prints both wall times and
their ratio, measured in this one run. Run alone (a job beside it changes both):
    python benchmarks/bench_workers.py [--steps 100]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import fsgen
from fsgen.models.ladder import train_ladder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    values = fsgen.stage_config("train_ladder", "params.yaml", {})
    config = fsgen.LadderConfig(**values.model_dump(exclude={"profile"}))
    config = dataclasses.replace(
        config, steps=args.steps, warmup_steps=10, tune_steps=10, test_problems=20
    )
    profile = fsgen.load_profile("embedded")
    seconds = {}
    for workers, threads in ((1, 2), (2, 1)):
        setting = dataclasses.replace(config, workers=workers, threads=threads)
        with tempfile.TemporaryDirectory() as scratch:
            began = time.perf_counter()
            train_ladder(profile, setting, scratch, progress=False)
            seconds[workers, threads] = time.perf_counter() - began
        print(f"{workers} worker(s) x {threads} thread(s): {seconds[workers, threads]:.1f} s")
    print(f"2 x 1 thread takes {seconds[2, 1] / seconds[1, 2]:.2f} of the wall time of 1 x 2")


if __name__ == "__main__":
    main()
