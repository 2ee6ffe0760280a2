"""Learning rates for one rung of the embedded ladder: the rung trained exactly as stage 00 trains
it (params.yaml's `train_ladder` section: same corpus, blocks, batch order and initialisation
seed, the seed of its place in the ladder; untuned) at each of several learning rates, `workers`
at once. Appends one row per learning rate to benchmarks/results/lr_sweep.csv: held-out loss and
plain, chat and expression accuracy with Wilson intervals. The losses and accuracies are
deterministic; the seconds are only a guide. Run alone:
    python benchmarks/lr_sweep.py e5 0.0012,0.003
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
from fsgen.core.parallel import run_jobs
from fsgen.models.train import RECORD, RungJob, build_corpus, train_rung

RESULTS = Path(__file__).parent / "results" / "lr_sweep.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shape", help="a rung of the embedded profile, e.g. e5")
    parser.add_argument("lrs", help="comma-separated learning rates")
    args = parser.parse_args()
    values = fsgen.stage_config("train_ladder", "params.yaml", {})
    config = fsgen.LadderConfig(**values.model_dump(exclude={"profile"}))
    profile = fsgen.load_profile("embedded")
    index = [r.name for r in profile.rungs].index(args.shape)
    rung = profile.rungs[index]
    corpus = build_corpus(config)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        jobs = []
        for lr in (float(v) for v in args.lrs.split(",")):
            name = f"{args.shape}-lr{lr:g}"
            swept = dataclasses.replace(rung, name=name, arch={**rung.arch, "lr": lr}, tuned=None)
            jobs.append(RungJob(swept, index, config, Path(scratch), name, name, corpus, False))
        run_jobs(train_rung, jobs, workers=config.workers, threads=config.threads)
        for job in jobs:
            record = json.loads((job.base_dir / RECORD).read_text())
            row = record["row"] | {
                "lr": job.rung.arch["lr"],
                "final_train_loss": record["losses"][-1],
            }
            rows.append(row)
    table = pd.DataFrame(rows)
    columns = ["model", "lr", "params", "heldout_loss", "final_train_loss", "accuracy"]
    columns += ["accuracy_low", "accuracy_high", "chat_accuracy", "expression_accuracy"]
    columns += ["train_seconds"]
    table = table[columns]
    append_rows(table, RESULTS)


if __name__ == "__main__":
    main()
