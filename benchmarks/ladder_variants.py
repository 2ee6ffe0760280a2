"""Which corpus and schedule let the embedded ladder's small rungs learn: rungs trained exactly as
stage 00 trains them (`train_ladder`, params.yaml's `train_ladder` section, untuned), under one
named variant of the task's operands and the training schedule (same tokens, 2.05M, either way).

| variant            | operands                                     | batch x steps (warm-up) |
|--------------------|----------------------------------------------|-------------------------|
| wide-4x2000        | the earlier task: 1..20, 2..50 x 2..5, 2..99 x 2..9 | 4 x 2000 (100)   |
| one-digit-8x1000   | 1..9 at every level, x 2..3                  | 8 x 1000 (50)           |
| one-digit-4x2000   | 1..9 at every level, x 2..3 (the ladder's)   | 4 x 2000 (100)          |

The earlier ladder itself (wide operands, 8 x 1000) is the baseline: its rows are in git history
(results/train_ladder/ladder.csv before this benchmark). A rung's seed is its place in the list
(`--shapes e0,e2,e4` seeds them 0, 1, 2), as in `train_ladder`. Appends one row per model to
benchmarks/results/ladder_variants.csv: held-out loss (on that variant's own test problems, so
losses compare within a variant), plain, chat and expression accuracy, training seconds (only a
guide: the rows were not all timed on a quiet machine). Run alone:
    python benchmarks/ladder_variants.py one-digit-4x2000 --shapes e0,e2,e4
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from results_table import append_rows  # benchmarks/results_table.py, beside this script

import fsgen
import fsgen.data.synthetic as synthetic
from fsgen.models.ladder import train_ladder
from fsgen.models.profiles import Profile, Rung

RESULTS = Path(__file__).parent / "results" / "ladder_variants.csv"
WIDE = ({1: (1, 9), 2: (1, 20), 3: (2, 50), 4: (2, 99)}, {3: (2, 5), 4: (2, 9)})
ONE_DIGIT = ({1: (1, 9), 2: (1, 9), 3: (1, 9), 4: (1, 9)}, {3: (2, 3), 4: (2, 3)})
SCHEDULES = {
    "8x1000": {"batch_size": 8, "steps": 1000, "warmup_steps": 50},
    "4x2000": {"batch_size": 4, "steps": 2000, "warmup_steps": 100},
}
VARIANTS = {
    "wide-4x2000": (WIDE, SCHEDULES["4x2000"]),
    "one-digit-8x1000": (ONE_DIGIT, SCHEDULES["8x1000"]),
    "one-digit-4x2000": (ONE_DIGIT, SCHEDULES["4x2000"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("--shapes", default="e0,e2,e4")
    args = parser.parse_args()
    (operands, factors), schedule = VARIANTS[args.variant]
    values = fsgen.stage_config("train_ladder", "params.yaml", {})
    config = fsgen.LadderConfig(**(values.model_dump(exclude={"profile"}) | schedule))
    embedded = fsgen.load_profile("embedded")
    rungs = []
    for shape in args.shapes.split(","):
        name = f"{shape}-{args.variant}"
        rungs.append(Rung(name=name, model=name, arch=embedded.rung(shape).arch))
    profile = Profile(name="variants", kind="embedded", rungs=tuple(rungs))
    with tempfile.TemporaryDirectory() as scratch, synthetic.number_ranges(operands, factors):
        ladder, _ = train_ladder(profile, config, scratch, progress=False)
    columns = ["model", "params", "heldout_loss", "accuracy", "accuracy_low", "accuracy_high"]
    columns += ["chat_accuracy", "expression_accuracy", "train_seconds"]
    table = ladder[columns].assign(seed=[config.seed + i for i in range(len(rungs))])
    table.insert(1, "variant", args.variant)
    append_rows(table, RESULTS)


if __name__ == "__main__":
    main()
