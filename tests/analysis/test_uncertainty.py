"""Stage 04: positions, signals and AUROC of mismatches on hand-made oracle traces."""

import json

import numpy as np
import pandas as pd
import pytest

from fsgen.analysis.uncertainty import (
    entropy_bins,
    example_generation,
    mismatch_by_decile,
    pair_traces,
    signal_auroc,
)
from fsgen.stages import uncertainty as stage
from fsgen.stages.config import stage_config


def _traces(seed: int = 0) -> pd.DataFrame:
    """Two pairs, 6 prompts of 20 tokens: mismatches happen where System 1 is unsure."""
    rng = np.random.default_rng(seed)
    rows = []
    for pair in (("b", "a"), ("c", "a")):
        for prompt in range(6):
            for step in range(20):
                unsure = rng.random() < 0.3
                top1 = rng.uniform(0.2, 0.5) if unsure else rng.uniform(0.8, 1.0)
                rows.append(
                    {
                        "task": "t",
                        "method": "oracle",
                        "large": pair[0],
                        "small": pair[1],
                        "prompt_id": prompt,
                        "step": step,
                        "token": f"w{step}",
                        "mismatch": unsure and rng.random() < 0.8,
                        "small_top1_prob": top1,
                        "small_margin": top1 - (1 - top1) / 2,
                        "small_entropy": -np.log(top1) * 1.5,
                        "small_topk_probs": [top1, (1 - top1) / 2, (1 - top1) / 4],
                    }
                )
    rows.append({**rows[0], "method": "contrastive"})
    return pd.DataFrame(rows)


def test_positions_and_deciles():
    rows = pair_traces(_traces())
    assert set(rows["method"]) == {"oracle"} and set(rows["pair"]) == {"b-a", "c-a"}
    first = rows[(rows.pair == "b-a") & (rows.prompt_id == 0)]
    assert list(first["decile"]) == [s // 2 for s in range(20)]
    assert first["relative_position"].iloc[0] == 0 and first["relative_position"].iloc[-1] == 1
    deciles = mismatch_by_decile(rows)
    assert len(deciles) == 20 and (deciles["tokens"] == 12).all()
    with pytest.raises(ValueError, match="no traces for method 'speculative'"):
        pair_traces(_traces(), "speculative")


def test_auroc_orients_every_signal_towards_mismatch():
    rows = pair_traces(_traces())
    auroc = signal_auroc(rows)
    assert (auroc[["top1_prob", "margin", "entropy"]] > 0.8).all().all()
    flipped = rows.assign(small_entropy=-rows["small_entropy"])  # now "sure" means high score
    assert (signal_auroc(flipped)["entropy"] < 0.2).all()
    one_class = rows.assign(mismatch=False)
    assert signal_auroc(one_class)["entropy"].isna().all()


def test_auroc_intervals_resample_prompts_and_cover_the_estimate():
    rows = pair_traces(_traces())
    auroc = signal_auroc(rows, bootstrap=50, seed=0)
    for signal in ("top1_prob", "margin", "entropy"):
        assert (auroc[f"{signal}_low"] <= auroc[signal]).all()
        assert (auroc[signal] <= auroc[f"{signal}_high"]).all()
    pd.testing.assert_frame_equal(auroc, signal_auroc(rows, bootstrap=50, seed=0))
    assert "entropy_low" not in signal_auroc(rows)  # no bootstrap asked, no interval


def test_entropy_bins_count_every_token():
    rows = pair_traces(_traces())
    bins = entropy_bins(rows, 5)
    assert bins.groupby("pair")["tokens"].sum().tolist() == [120, 120]
    assert bins["bin"].between(0, 4).all()
    rates = bins.groupby("bin")["mismatch_rate"].mean()
    assert rates.iloc[-1] > rates.iloc[0]  # unsure tokens mismatch more
    with pytest.raises(ValueError, match="bins must be >= 1, got 0"):
        entropy_bins(rows, 0)


def test_example_picks_the_prompt_with_most_mismatches():
    rows = pair_traces(_traces())
    example = example_generation(rows, "c-a", max_tokens=10)
    head = rows[(rows.pair == "c-a") & (rows.step < 10)]
    assert example["prompt_id"].iloc[0] == head.groupby("prompt_id")["mismatch"].sum().idxmax()
    assert list(example["step"]) == list(range(10))
    with pytest.raises(ValueError, match="no trace rows for pair 'z-a'"):
        example_generation(rows, "z-a")


def test_outputs_and_metric_keys(tmp_path):
    config = stage_config(
        "uncertainty",
        "",
        {
            "method": "oracle",
            "entropy_bin_count": 10,
            "example_pair": "b-a",
            "example_tokens": 40,
            "bootstrap": 20,
        },
    )
    paths = stage.Paths(tmp_path / "logs", tmp_path / "m.json", tmp_path / "r")
    auroc = stage.write_outputs(_traces(), config, paths).auroc
    metrics = json.loads((tmp_path / "m.json").read_text())
    for pair in ("b-a", "c-a"):
        for signal in ("top1_prob", "margin", "entropy"):
            for end in ("", "_low", "_high"):
                assert f"t.oracle.{pair}.auroc.{signal}{end}" in metrics
        assert f"t.oracle.{pair}.decile0.mismatch_rate" in metrics
    assert metrics["t.oracle.b-a.auroc.entropy"] == round(auroc.iloc[0]["entropy"], 6)
    for stem in ("position_heatmap", "signal_densities", "entropy_bins", "topk_example"):
        assert (tmp_path / "r" / f"{stem}.png").stat().st_size > 0
    for name in ("auroc", "position", "entropy_bins"):
        assert (tmp_path / "r" / f"{name}.csv").exists()
