"""Learning rates for rungs of the embedded ladder: each rung trained exactly as stage 00 trains it
(params.yaml's `train_ladder` section: same corpus, blocks, batch order and initialisation seed,
the seed of its place in the ladder; untuned) at each of several learning rates, `workers` runs
at once. Appends one row per run to benchmarks/results/lr_sweep.csv: held-out loss, the mean
training loss of the last 200 steps (`tail_train_loss`: blocks no step has seen before, as the
2000 x 4 blocks are fewer than one epoch, so it is a loss on fresh data that never touches the
test problems), and plain, chat and expression accuracy with Wilson intervals. The losses and
accuracies are deterministic; the seconds are only a guide. Learning rates are absolute, or
`x<factor>` times the rung's own in params.yaml. Run alone:
    python benchmarks/lr_sweep.py e5 0.0012,0.003
    python benchmarks/lr_sweep.py e0,e1,e2,e3,e4 x0.6,x1.6
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import pandas as pd
from results_table import append_rows  # benchmarks/results_table.py, beside this script

import fsgen
from fsgen.models.ladder import RECORD, RungJob, build_corpus, train_rungs

RESULTS = Path(__file__).parent / "results" / "lr_sweep.csv"


TAIL_STEPS = 200  # the training steps whose mean loss is `tail_train_loss`


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shapes", help="comma-separated rungs of the embedded profile, e.g. e5")
    parser.add_argument("lrs", help="comma-separated learning rates, or x<factor> of the rung's")
    args = parser.parse_args()
    values = fsgen.stage_config("train_ladder", "params.yaml", {})
    config = fsgen.LadderConfig(**values.model_dump(exclude={"profile"}))
    profile = fsgen.load_profile("embedded")
    names = [r.name for r in profile.rungs]
    corpus = build_corpus(config)
    if len(corpus.blocks) < config.steps * config.batch_size:
        raise ValueError("the schedule repeats blocks: the tail loss would not be on fresh data")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        jobs = []
        for shape in args.shapes.split(","):
            index = names.index(shape)
            rung = profile.rungs[index]
            for value in args.lrs.split(","):
                lr = rung.arch["lr"] * float(value[1:]) if value.startswith("x") else float(value)
                name = f"{shape}-lr{lr:g}"
                arch = {**rung.arch, "lr": lr}
                swept = dataclasses.replace(rung, name=name, arch=arch, tuned=None)
                jobs.append(RungJob(swept, index, config, Path(scratch), name, name, corpus, False))
        seconds = train_rungs(jobs, config, progress=False)
        for job in jobs:
            record = json.loads((job.base_dir / RECORD).read_text())
            rows.append(
                record["row"]
                | {
                    "lr": job.rung.arch["lr"],
                    "final_train_loss": record["losses"][-1],
                    "tail_train_loss": sum(record["losses"][-TAIL_STEPS:]) / TAIL_STEPS,
                    "train_seconds": seconds[job.rung.name],
                }
            )
    table = pd.DataFrame(rows)
    columns = ["model", "lr", "params", "heldout_loss", "final_train_loss", "tail_train_loss"]
    columns += ["accuracy", "accuracy_low", "accuracy_high", "chat_accuracy"]
    columns += ["expression_accuracy", "train_seconds"]
    append_rows(table[columns], RESULTS)


if __name__ == "__main__":
    main()
