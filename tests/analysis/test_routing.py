"""Routers that pay off: calibration, the learned and random routers, curve summaries, the
speculative acceptance replay, the speed-up formula and engine cost model, and notebook 06 on a
tiny ladder."""

from __future__ import annotations

import ast
import gc
import json
import math
import shutil

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fsgen.analysis.routing import (
    KINDS,
    area_under_curve,
    calibrate_router,
    call_rate_to_reach,
    fit_learned_router,
    parse_pairs,
    random_router,
    split_prompts,
    uncertainty,
)
from fsgen.analysis.speedup_model import (
    draft_acceptance,
    predict_speedup,
    replay_rounds,
    replay_work,
    speedup_table,
    work_rows,
)
from fsgen.core.shards import merge_logs
from fsgen.core.timing import timed
from fsgen.engine import forward
from fsgen.engine.batch import Batch
from fsgen.engine.collaborate import Engine, collaborate
from fsgen.models.profiles import load_profile
from fsgen.stages import routers
from fsgen.stages.config import stage_config
from fsgen.stages.token_logging import log_tokens
from fsgen.stages.train_ladder import build_ladder
from tests.conftest import PROMPTS, REPO, TINY, perturbed, run_notebook, tiny_neox


def synthetic_trace(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Oracle-like rows: random small-model distributions over 20 tokens; a mismatch is likelier
    where System 1 is unsure."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 20)) * rng.uniform(0.5, 6.0, size=(n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # (n, 20)
    top = -np.sort(-probs, axis=1)
    entropy = -(probs * np.log(probs)).sum(1)
    mismatch = rng.uniform(size=n) < (1 - top[:, 0]) * 0.8
    return pd.DataFrame(
        {
            "prompt_id": np.arange(n) // 50,
            "step": np.arange(n) % 50,
            "mismatch": mismatch,
            "small_top1_prob": top[:, 0],
            "small_margin": top[:, 0] - top[:, 1],
            "small_entropy": entropy,
            "small_topk_probs": list(top[:, :10]),
        }
    )


def routed(trace: pd.DataFrame, kind: str, threshold: float, learned=None) -> np.ndarray:
    """Apply each router's own rule (not the calibration's score) to trace rows."""
    if kind == "threshold":
        return trace["small_top1_prob"].to_numpy() < threshold
    if kind == "margin":
        return trace["small_margin"].to_numpy() < threshold
    if kind == "entropy":
        return trace["small_entropy"].to_numpy() > threshold
    return learned.score_trace(trace) > threshold


@pytest.fixture(scope="module")
def trace():
    return synthetic_trace()


@pytest.fixture(scope="module")
def learned(trace):
    return fit_learned_router(trace[trace.prompt_id < 20])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", [0.0, 0.1, 0.37, 1.0])
def test_calibration_hits_the_target_call_rate(trace, learned, kind, target):
    cal = calibrate_router(trace, kind, target_call_rate=target, learned=learned)
    consulted = routed(trace, kind, cal.threshold, learned)
    assert consulted.mean() == pytest.approx(cal.predicted_call_rate)
    assert abs(cal.predicted_call_rate - target) <= 1 / len(trace)
    missed = (trace["mismatch"].to_numpy() & ~consulted).sum()
    assert cal.predicted_agreement == pytest.approx(1 - missed / len(trace))


@pytest.mark.parametrize("kind", ["threshold", "entropy", "learned"])
def test_accuracy_floor_takes_the_cheapest_threshold(trace, learned, kind):
    floor = 0.97
    cal = calibrate_router(trace, kind, min_accuracy=floor, learned=learned)
    assert cal.predicted_agreement >= floor
    # brute force over every distinct cut of the score: none cheaper reaches the floor
    u = uncertainty(trace, kind, learned)
    mismatch = trace["mismatch"].to_numpy()
    for cut in np.unique(u):
        consulted = u >= cut
        agreement = 1 - (mismatch & ~consulted).sum() / len(u)
        if agreement >= floor:
            assert consulted.mean() >= cal.predicted_call_rate - 1e-12
    assert calibrate_router(trace, kind, min_accuracy=1.0, learned=learned).predicted_agreement == 1


def test_calibration_rejects_bad_inputs(trace, learned):
    with pytest.raises(ValueError, match="exactly one of target_call_rate and min_accuracy"):
        calibrate_router(trace, "threshold")
    with pytest.raises(ValueError, match=r"target_call_rate=0.1, min_accuracy=0.9"):
        calibrate_router(trace, "threshold", 0.1, 0.9)
    with pytest.raises(ValueError, match=r"target_call_rate must be in \[0, 1\], got 1.5"):
        calibrate_router(trace, "threshold", 1.5)
    with pytest.raises(ValueError, match=r"min_accuracy must be in \[0, 1\], got -0.1"):
        calibrate_router(trace, "margin", min_accuracy=-0.1)
    with pytest.raises(ValueError, match="unknown router kind 'beam'"):
        calibrate_router(trace, "beam", 0.1)
    with pytest.raises(ValueError, match="needs learned="):
        calibrate_router(trace, "learned", 0.1)
    with pytest.raises(ValueError, match="trace lacks columns"):
        calibrate_router(trace.drop(columns=["mismatch"]), "threshold", 0.1)
    with pytest.raises(ValueError, match="no rows"):
        calibrate_router(trace.iloc[:0], "threshold", 0.1)
    with pytest.raises(ValueError, match="'e3-e2'"):
        parse_pairs("e3-e2")  # pairs are data, never a string to split
    with pytest.raises(ValueError, match="'e3e1'"):
        parse_pairs([["e3", "e2"], "e3e1"])


def test_pairs_are_data_and_auto_follows_the_profile():
    profile = load_profile("pythia")
    hub = [["pythia-410m", "pythia-70m"], {"large": "pythia-1b", "small": "pythia-160m"}]
    assert parse_pairs(hub, profile) == [
        ("pythia-410m", "pythia-70m"),
        ("pythia-1b", "pythia-160m"),
    ]
    assert parse_pairs("auto", profile) == [
        ("pythia-12b", "pythia-2.8b"),
        ("pythia-12b", "pythia-6.9b"),
    ]
    with pytest.raises(ValueError, match="pythia-7m"):
        parse_pairs([["pythia-410m", "pythia-7m"]], profile)


def test_split_prompts_is_deterministic_and_disjoint():
    fit, held = split_prompts(range(10), 0.5, seed=3)
    assert (fit, held) == split_prompts(range(9, -1, -1), 0.5, seed=3)
    assert not set(fit) & set(held) and sorted(fit + held) == list(range(10))
    with pytest.raises(ValueError, match=r"fit_fraction must be in \(0, 1\), got 1"):
        split_prompts(range(10), 1)


def test_learned_router_is_deterministic_and_beats_chance(trace, learned):
    again = fit_learned_router(trace[trace.prompt_id < 20])
    assert np.array_equal(again.coef, learned.coef) and again.intercept == learned.intercept

    held = trace[trace.prompt_id >= 20]
    assert roc_auc_score(held["mismatch"], learned.score_trace(held)) > 0.6


def test_learned_router_in_collaborate_agrees_with_rows(tiny_tokenizer):
    torch.set_num_threads(1)
    large = tiny_neox(tiny_tokenizer, 32, 2, seed=1)
    small = perturbed(large, 0.35, seed=2)
    oracle = collaborate(small, large, tiny_tokenizer, PROMPTS, max_new_tokens=12, batch_size=3)
    assert oracle.trace["mismatch"].any() and not oracle.trace["mismatch"].all()
    router_model = fit_learned_router(oracle.trace)
    threshold = float(np.median(router_model.score_trace(oracle.trace)))
    router = router_model.router(threshold)
    probs = torch.softmax(torch.randn(7, len(tiny_tokenizer), dtype=torch.float64) * 3, -1)
    batch = router(probs)  # (7,)
    assert batch.dtype == torch.bool and batch.shape == (7,)
    assert batch.tolist() == [bool(router(probs[i : i + 1])[0]) for i in range(7)]
    assert torch.equal(router_model.score(probs), router_model.score(probs))
    runs = [
        collaborate(
            small, large, tiny_tokenizer, PROMPTS, router=router, max_new_tokens=12, batch_size=3
        )
        for _ in range(2)
    ]
    assert runs[0].texts == runs[1].texts
    assert 0 < runs[0].summary["call_rate"] < 1
    # each routed row was chosen by the rule: recompute the score from the small model's own
    # distribution at that position (teacher-forced over the emitted tokens)
    row = runs[0].trace.iloc[0]
    ids = tiny_tokenizer(PROMPTS[0], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        first = torch.softmax(small(ids).logits[:, -1, : len(tiny_tokenizer)].double(), -1)
    assert bool(router(first)[0]) == bool(row["large_called"])


def test_random_router_call_rate_and_seed():
    probs = torch.full((20000, 5), 0.2)
    hits = random_router(0.3, seed=1)(probs)
    assert hits.float().mean().item() == pytest.approx(0.3, abs=0.015)
    assert torch.equal(hits, random_router(0.3, seed=1)(probs))
    assert not torch.equal(hits, random_router(0.3, seed=2)(probs))
    assert not random_router(0.0)(probs).any() and random_router(1.0)(probs).all()
    with pytest.raises(ValueError, match=r"call_rate must be in \[0, 1\], got 1.2"):
        random_router(1.2)


def test_replay_rounds_on_known_runs():
    flags = [False, False, True, False, False, False, True]
    assert replay_rounds(flags, 2) == [2, 2, 0]  # 3 + 3 + 1 tokens
    assert replay_rounds(flags, 3) == [2, 3]  # 3 + 4 tokens
    assert replay_rounds(flags, 1) == [1, 0, 1, 1]  # 2 + 1 + 2 + 2 tokens
    assert replay_rounds([], 4) == []
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        replay_rounds(flags, 0)
    trace = pd.DataFrame(
        {
            "prompt_id": [0] * 7 + [1] * 3,
            "step": list(range(7)) + [2, 0, 1],  # out of order: replay sorts by step
            "mismatch": flags + [True, True, True],
        }
    )
    table = draft_acceptance(trace, [2, 3]).set_index("k")
    assert table.loc[2, "rounds"] == 3 + 3 and table.loc[3, "rounds"] == 2 + 3
    assert table.loc[2, "tokens_per_round"] == pytest.approx(10 / 6)
    assert table.loc[2, "batch_steps"] == 7 and table.loc[2, "batch_rounds"] == 3
    assert table.loc[3, "batch_rounds"] == 3  # the second prompt is the slowest
    assert table.loc[2, "accepted_per_round"] == pytest.approx(4 / 6)
    split = draft_acceptance(trace, [2], batch_size=1).set_index("k")
    assert split.loc[2, "batch_steps"] == 10 and split.loc[2, "batch_rounds"] == 6


def test_predicted_speedup_formula():
    assert predict_speedup(3.0, 2, 0.1, 1.0, 1.2) == pytest.approx(3.0 / 1.4)
    assert predict_speedup(2.0, 1, 0.5, 2.0, 2.0) == pytest.approx(2.0 * 2.0 / 2.5)
    with pytest.raises(ValueError, match="costs must be positive"):
        predict_speedup(2.0, 1, 0.0, 1.0, 1.0)


def test_replay_work_on_known_runs():
    rows = [[False, False, True, False, False, False, True], [True, True, True]]
    # k=2, prompt width 5. Row 0 accepts 2, 2, 0; row 1 rejects every draft. Rounds 1 and 2: some
    # row accepted both drafts, nothing is cropped and the cache grows by 3; round 3: every row
    # rejected both drafts, they are cropped and it grows by 1. The small model feeds 2 columns at
    # a round's first draft after a round that kept its last draft (1 in the first round: the
    # prefill, counted as an ordinary forward).
    work = replay_work(rows, 2, 5)
    assert work["rounds"] == 3 and work["row_rounds"] == 6
    assert work["forwards"] == {
        ("small", 1): (4, 5 + 6 + 9 + 12),  # first draft of round 1, second drafts of every round
        ("small", 2): (2, 8 + 11),
        ("large", 3): (3, 7 + 10 + 13),  # verification after the k drafts
    }
    alone = replay_work(rows, None, 5)  # one step a token of the longest row, every row fed
    assert alone == {"rounds": 7, "row_rounds": 10, "forwards": {("large", 1): (7, 5 * 7 + 21)}}
    cut = replay_work(rows, 2, 5, tokens=2)  # max_new_tokens=2: row 0 ends in its first round
    assert cut["rounds"] == 2 and cut["row_rounds"] == 3
    assert cut["forwards"][("large", 3)] == (2, 7 + 10)  # round 2 crops row 1's two drafts
    done = replay_work(rows, 2, 5, finished=[False, True])  # a finished row rejects everything
    assert done["rounds"] == 3 and done["row_rounds"] == 3
    assert done["forwards"] == work["forwards"]
    assert replay_work(rows, 2, 5, finished=[True, True])["rounds"] == 0


def test_replay_work_matches_the_engine(tiny_tokenizer, monkeypatch):
    """The replayed forwards (columns fed, cache widths) and rounds are the engine's own, for
    the large model alone and speculative decoding, with and without rows finished at start."""

    torch.set_num_threads(1)
    large = tiny_neox(tiny_tokenizer, 32, 2, seed=1)
    small = perturbed(large, 0.35, seed=2)
    oracle = collaborate(small, large, tiny_tokenizer, PROMPTS, max_new_tokens=12, batch_size=8)
    flags = [g["mismatch"].to_numpy(bool) for _, g in oracle.trace.groupby("prompt_id")]
    assert any(f.any() for f in flags) and not all(f.all() for f in flags)
    width = Batch.from_prompts(tiny_tokenizer, PROMPTS, "cpu").width
    seen, kinds = [], set()

    def recorder(advance):
        def recording(stream, batch, keep=1):
            first, fed = stream.seen == 0, batch.width - stream.seen
            logits = advance(stream, batch, keep)
            name = "large" if stream.model is large else "small"
            seen.append((name, first, fed, batch.width))
            kinds.add(type(stream).__name__)
            return logits

        return recording

    for stream in (forward.HFStream, forward.LeanStream):  # whichever forward the engine opens
        monkeypatch.setattr(stream, "advance", recorder(stream.advance))
    odd_rows = [i % 8 % 2 == 1 for i in range(len(PROMPTS))]  # batch_size 8
    for k, finished in ((None, False), (1, False), (2, False), (3, True), (None, True)):
        seen.clear()
        how = {"method": "large"} if k is None else {"method": "speculative", "num_draft": k}
        runner = Engine(
            {"small": small, "large": large}, tiny_tokenizer, max_new_tokens=10, batch_size=8, **how
        )
        out = runner.run(PROMPTS, finished=odd_rows if finished else None)
        if finished:
            assert all(not tokens for tokens in out.tokens[1::2]) and any(out.tokens[0::2])
        run = "probe_finished" if finished else "full"
        rows = work_rows("p", "m", run, k, 10, [flags], [width])
        replayed = {(r["model"], r["columns"]): (r["count"], r["width_sum"]) for r in rows}
        engine: dict = {}
        for model, first, columns, cache_width in seen:  # a prefill counts as 1 or k+1 columns
            columns = (1 if model == "small" or k is None else k + 1) if first else columns
            count, total = engine.get((model, columns), (0, 0))
            engine[(model, columns)] = (count + 1, total + cache_width)
        assert replayed == engine, (k, finished)
        assert kinds == {"LeanStream"}  # GPT-NeoX models: the engine's lean forward
        rounds = out.summary["large_forwards"] if k else max(map(len, out.tokens))
        assert rows[0]["rounds"] == rounds
        assert rows[0]["row_rounds"] == (out.summary["large_calls"] if k else out.summary["tokens"])


def test_engine_cost_model_recovers_known_costs():
    """Timings made from known costs (forwards linear in the cache width, setup, per round, per
    running row, and a garbage-collection pause in one probe) give back the full runs' times."""
    rows = [[False, False, True, False, False, False, True] * 3, [True, False] * 9]
    batches, widths = [rows, rows[::-1]], [6, 9]
    lines = {
        ("large", 1): (0.004, 2e-5),
        ("large", 2): (0.005, 3e-5),
        ("large", 3): (0.006, 4e-5),
        ("small", 1): (0.001, 1e-5),
        ("small", 2): (0.0012, 1e-5),
    }
    engine = {
        "large": (0.05, 0.002, 0.0003),
        "k1": (0.06, 0.003, 0.0008),
        "k2": (0.07, 0.004, 0.0009),
    }
    lengths = {"probe_short": 4, "probe_long": 12, "probe_finished": 12, "full": 40}
    work, timings, truth = [], [], {}
    for name, k in (("large", None), ("k1", 1), ("k2", 2)):
        for run, tokens in lengths.items():
            part = work_rows("p", name, run, k, tokens, batches, widths)
            work += part
            forwards = sum(
                r["count"] * lines[(r["model"], r["columns"])][0]
                + r["width_sum"] * lines[(r["model"], r["columns"])][1]
                for r in part
            )
            setup, per_round, per_row = engine[name]
            seconds = (
                setup + forwards + per_round * part[0]["rounds"] + per_row * part[0]["row_rounds"]
            )
            pause = 0.25 if (name, run) == ("k2", "probe_long") else 0.0
            truth[(name, run)] = seconds
            timings.append(
                {
                    "pair": "p",
                    "repeat": 0,
                    "what": f"{run}_{name}",
                    "seconds": seconds + pause,
                    "gc_seconds": pause,
                    "units": part[0]["rounds"],
                }
            )
    for (model, columns), (intercept, slope) in lines.items():
        for width in (20, 180):
            timings.append(
                {
                    "pair": "p",
                    "repeat": 0,
                    "what": "forward",
                    "model": model,
                    "columns": columns,
                    "width": width,
                    "units": 1,
                    "seconds": intercept + slope * width,
                }
            )
    flags = pd.DataFrame(
        {
            "prompt_id": [0] * 21 + [1] * 18,
            "step": list(range(21)) + list(range(18)),
            "mismatch": rows[0] + rows[1],
        }
    )
    acceptance = draft_acceptance(flags, [1, 2]).assign(pair="p")
    table = speedup_table(acceptance, pd.DataFrame(timings), pd.DataFrame(work)).set_index("k")
    for k in (1, 2):
        assert table.loc[k, "predicted_seconds"] == pytest.approx(truth[(f"k{k}", "full")])
        assert table.loc[k, "predicted_seconds_large"] == pytest.approx(truth[("large", "full")])
        assert table.loc[k, "measured_speedup"] == pytest.approx(
            truth[("large", "full")] / truth[(f"k{k}", "full")]
        )
        assert table.loc[k, "engine_error"] == pytest.approx(0, abs=1e-9)
    c_large = lines[("large", 1)][0] + 20 * lines[("large", 1)][1]  # at the narrower width
    assert table.loc[2, "verify_over_large_cost"] == pytest.approx(
        (lines[("large", 3)][0] + 20 * lines[("large", 3)][1]) / c_large
    )


def test_timed_counts_full_garbage_collections():
    seconds, collecting, out = timed(lambda: gc.collect(2) >= 0)
    assert out is True and 0 < collecting <= seconds
    seconds, collecting, out = timed(lambda: sum(range(1000)))
    assert out == 499500 and collecting == 0.0 and seconds > 0


def test_area_and_call_rate_to_reach_on_known_curves():
    assert area_under_curve([0, 0.5, 1], [0, 0.5, 1]) == pytest.approx(0.5)
    assert area_under_curve([1, 0], [1, 1]) == pytest.approx(1.0)
    assert call_rate_to_reach([0, 0.5, 1], [0, 0.5, 1], 0.95) == pytest.approx(0.95)
    x, y = [1, 0, 0.2], [0.3, 0.1, 0.3]  # unsorted on purpose
    assert call_rate_to_reach(x, y, 0.285) == pytest.approx(0.2 * 0.185 / 0.2)
    assert call_rate_to_reach(x, y, 0.05) == 0
    assert math.isnan(call_rate_to_reach(x, y, 0.31))
    with pytest.raises(ValueError, match=r"call rates must lie in \[0, 1\]"):
        area_under_curve([0, 1.5], [0, 1])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_notebook_06_on_a_tiny_ladder(tmp_path, monkeypatch):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.setenv("FSGEN_ROOT", str(tmp_path))
    profile = load_profile("tiny")
    build_ladder(profile, TINY, progress=False)
    log_tokens(
        profile,
        tmp_path / "scratch/logs",
        methods=["alone", "oracle"],
        n_prompts=4,
        chunk_size=4,
        max_new_tokens=16,
        batch_size=8,
        progress=False,
    )
    run_notebook("06_routers.ipynb", tmp_path)
    metrics = json.loads((tmp_path / "scratch/metrics/routers.json").read_text())
    for router in ("threshold", "margin", "entropy", "learned", "random"):
        assert f"synthetic.t2-t1.{router}.auc" in metrics
        assert f"synthetic.t2-t1.{router}.call_rate_for_95" in metrics
        assert f"synthetic.t2-t1.{router}.at0.1.call_rate" in metrics
    assert "synthetic.t2-t1.learned.holdout_mismatch_auc" in metrics
    assert "speculative.t2-t1.k2.tokens_per_round" in metrics
    assert not any("seconds" in k or "speedup" in k for k in metrics)
    timing = json.loads((tmp_path / "scratch/metrics/routers_timing.json").read_text())
    assert "speculative.t2-t1.k1.measured_speedup" in timing
    assert timing["speculative.t2-t1.recommended_k"] in (1, 2)
    results = tmp_path / "scratch/results/routers"
    for name in (
        "runs.csv",
        "summary.csv",
        "acceptance.csv",
        "speedup.csv",
        "accuracy_vs_call_rate.png",
        "accuracy_vs_wall_time.svg",
        "speedup.png",
    ):
        assert (results / name).stat().st_size > 0, name
    runs = pd.read_csv(results / "runs.csv")
    assert set(runs.router) == {"small", "large", *KINDS, "random"}

    # the same sweep in two worker processes: the same rows, whichever process ran each
    traces, _ = merge_logs(tmp_path / "scratch/logs")
    tiny = {"max_new_tokens": 16, "batch_size": 8, "n_prompts": 4, "prompt_offset": 4}
    parallel = routers.sweep_routers(
        profile, traces, [["t2", "t1"]], target_call_rates=[0.1, 0.3], workers=2, **tiny
    ).runs.drop(columns=["wall_seconds"])
    written = pd.read_csv(results / "runs.csv")  # the notebook's sweep, in one process
    pd.testing.assert_frame_equal(
        parallel, written, check_dtype=False, check_exact=False, rtol=1e-5
    )

    # the stage without the speed-up study: the sweep's files as the notebook wrote them, none
    # of the study's, and its metrics without the speculative ones
    nb = nbformat.read(REPO / "notebooks/06_routers.ipynb", as_version=4)
    parameters = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    tiny = next(
        ast.literal_eval(node.value)
        for node in ast.parse(parameters.source).body
        if node.targets[0].id == "tiny"
    )
    bare = tmp_path / "scratch/bare"
    paths = routers.Paths(
        "scratch/logs", bare / "routers.json", bare / "timing.json", bare / "out", bare / "none.csv"
    )
    result = routers.run(stage_config("routers", "", tiny | {"speedup_pairs": []}), paths)
    assert result.acceptance is None and result.speedups is None
    for name in ("runs.csv", "summary.csv", "holdout_auc.csv"):
        assert (bare / "out" / name).read_bytes() == (results / name).read_bytes(), name
    assert not list((bare / "out").glob("speedup*")) and not (bare / "out/acceptance.csv").exists()
    assert (bare / "out/accuracy_vs_call_rate.png").read_bytes() == (
        results / "accuracy_vs_call_rate.png"
    ).read_bytes()
    assert set(result.metrics) == {k for k in metrics if not k.startswith("speculative.")}
    assert json.loads((bare / "routers.json").read_text()).keys() == result.metrics.keys()
