"""How much of the embedded ladder's loss plateau is the learning rate and how much the seed:
rungs of two shapes trained exactly as stage 00 trains them (`train_ladder`, params.yaml's
`train_ladder` section: same corpus, same blocks in the same order, same steps), each at its
ladder learning rate and at twice it, and at several initialisation seeds (a rung's seed is the
ladder seed plus its place in the profile, so the copies below differ only in their seed).

Prints one row per model: shape, learning rate, seed, held-out loss and plain accuracy with its
Wilson interval, training seconds; and writes benchmarks/results/ladder_sweep.csv. Not a test and
not a timing (the loss and accuracy are deterministic; the seconds are only a guide). Run alone:
    python benchmarks/ladder_sweep.py [--shapes e2,e3] [--seeds 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

import fsgen
from fsgen.models.ladder import train_ladder
from fsgen.models.profiles import Profile, Rung

RESULTS = Path(__file__).parent / "results" / "ladder_sweep.csv"


def sweep_profile(shapes: list[str], seeds: int) -> Profile:
    """Copies of the embedded profile's `shapes`: `seeds` at the ladder learning rate and
    `seeds` at twice it, untuned."""
    embedded = fsgen.load_profile("embedded")
    rungs = []
    for shape in shapes:
        arch = embedded.rung(shape).arch
        for factor in (1, 2):
            for copy in range(seeds):
                name = f"{shape}-lr{factor}x-{copy}"
                rungs.append(Rung(name=name, model=name, arch={**arch, "lr": arch["lr"] * factor}))
    return Profile(name="sweep", kind="embedded", rungs=tuple(rungs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="e2,e3")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    values = fsgen.stage_config("train_ladder", "params.yaml", {})
    config = fsgen.LadderConfig(**values.model_dump(exclude={"profile"}))
    profile = sweep_profile(args.shapes.split(","), args.seeds)
    with tempfile.TemporaryDirectory() as scratch:
        ladder, _ = train_ladder(profile, config, args.out or scratch, progress=False)
    ladder.insert(1, "lr", [r.arch["lr"] for r in profile.rungs])
    ladder.insert(2, "seed", [config.seed + i for i in range(len(profile.rungs))])
    columns = ["model", "lr", "seed", "params", "heldout_loss", "accuracy", "accuracy_low"]
    columns += ["accuracy_high", "expression_accuracy", "train_seconds"]
    table = ladder[columns]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS, index=False, float_format="%.6g")
    with pd.option_context("display.width", 140, "display.precision", 4):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
