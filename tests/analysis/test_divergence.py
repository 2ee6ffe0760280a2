"""Neutral and divergent mismatches on the tiny ladder: branches against a naive reference, the
labels against the scorer, the tables' arithmetic."""

import numpy as np
import pandas as pd
import pytest

from fsgen.analysis import divergence
from fsgen.analysis.findings import Inputs, findings_table
from fsgen.analysis.findings_beyond import (
    beyond_table,
    divergence_router,
    divergent_share,
    early_divergence,
)
from fsgen.analysis.findings_figure import plot_findings
from fsgen.data.tasks import build_prompts, get_task, load_examples, score
from fsgen.engine.batch import encode_prompts
from fsgen.engine.branches import Branch, continue_branches, generation_text
from fsgen.engine.collaborate import collaborate_ladder
from fsgen.models.cache import models_for, release_models
from fsgen.stages import routers
from tests.reference import naive_continue

MAX_NEW = 14
STOP = list(get_task("synthetic").stop)


@pytest.fixture(scope="module")
def oracle(tiny_ladder):
    profile, root = tiny_ladder
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FSGEN_ROOT", str(root))
        models = models_for(profile)
        large, small = models.get("t2"), models.get("t0")
        examples = load_examples("synthetic", n_prompts=6, seed=0)
        prompts = build_prompts("synthetic", examples)
        out = collaborate_ladder(
            large, {"t0": small}, models.tokenizer, prompts, max_new_tokens=MAX_NEW, stop=STOP
        )["t0"]
        prompt_ids = encode_prompts(models.tokenizer, prompts)
        yield large, models.tokenizer, examples, prompt_ids, out
        release_models()


def test_branches_match_the_naive_reference_token_for_token(oracle):
    large, tokenizer, _, prompt_ids, out = oracle
    rows, branches = divergence.mismatch_branches(out.trace)
    assert len(branches) >= 5, "the tiny pair should disagree somewhere"
    fast = continue_branches(
        large, tokenizer, prompt_ids, branches, max_new_tokens=MAX_NEW, batch_size=3, stop=STOP
    )
    for branch, tokens, step in zip(branches, fast, rows["step"], strict=True):
        assert len(branch.prefix) == step + 1 and tokens[: step + 1] == list(branch.prefix)
        reference = naive_continue(
            large,
            tokenizer,
            prompt_ids[branch.prompt],
            branch.prefix,
            max_new_tokens=MAX_NEW,
            stop=STOP,
        )
        assert tokens == reference, f"branch of prompt {branch.prompt} at step {step}"
    # batching does not change a branch
    one = continue_branches(
        large, tokenizer, prompt_ids, branches, max_new_tokens=MAX_NEW, batch_size=1, stop=STOP
    )
    assert one == fast


def test_a_branch_through_the_oracles_own_token_is_the_oracle(oracle):
    large, tokenizer, _, prompt_ids, out = oracle
    own = [Branch(i, (tokens[0],)) for i, tokens in enumerate(out.tokens)]
    continued = continue_branches(
        large, tokenizer, prompt_ids, own, max_new_tokens=MAX_NEW, batch_size=4, stop=STOP
    )
    assert continued == [list(t) for t in out.tokens]
    texts = [generation_text(tokenizer, large, t, STOP) for t in continued]
    assert texts == out.texts


def test_labels_follow_the_scorer(oracle):
    large, tokenizer, examples, prompt_ids, out = oracle
    trace = out.trace
    labelled = divergence.label_mismatches(
        large,
        tokenizer,
        "synthetic",
        trace,
        dict(enumerate(prompt_ids)),
        dict(enumerate(examples)),
        max_new_tokens=MAX_NEW,
        batch_size=4,
        stop=STOP,
    )
    oracle_scores = score("synthetic", out.texts, examples)
    assert labelled["oracle_correct"].tolist() == [
        bool(oracle_scores[p]) for p in labelled["prompt_id"]
    ]
    assert (
        labelled["divergent"] == (labelled["branch_correct"] != labelled["oracle_correct"])
    ).all()


def test_a_mismatch_whose_branch_reaches_the_same_answer_is_neutral(oracle, monkeypatch):
    large, tokenizer, examples, prompt_ids, out = oracle
    generations = divergence.oracle_generations(out.trace)
    rows, branches = divergence.mismatch_branches(out.trace)

    def same_answer(model, tokenizer, prompts, branches, **kwargs):  # the oracle's own text
        return [generations[sorted(generations)[b.prompt]] for b in branches]

    monkeypatch.setattr(divergence, "continue_branches", same_answer)
    labelled = divergence.label_mismatches(
        large,
        tokenizer,
        "synthetic",
        out.trace,
        dict(enumerate(prompt_ids)),
        dict(enumerate(examples)),
        max_new_tokens=MAX_NEW,
        batch_size=4,
        stop=STOP,
    )
    assert len(labelled) == len(rows) and not labelled["divergent"].any()

    wrong = tokenizer(" The answer is 123456.", add_special_tokens=False)["input_ids"]
    gold = {i: e.gold for i, e in enumerate(examples)}

    def right_or_wrong(model, tokenizer, prompts, branches, **kwargs):
        return [
            tokenizer(f" The answer is {gold[b.prompt]}.", add_special_tokens=False)["input_ids"]
            if b.prompt % 2
            else wrong
            for b in branches
        ]

    monkeypatch.setattr(divergence, "continue_branches", right_or_wrong)
    labelled = divergence.label_mismatches(
        large,
        tokenizer,
        "synthetic",
        out.trace,
        dict(enumerate(prompt_ids)),
        dict(enumerate(examples)),
        max_new_tokens=MAX_NEW,
        batch_size=4,
        stop=STOP,
    )
    odd = labelled["prompt_id"] % 2 == 1
    assert (
        labelled.loc[odd, "branch_correct"].all() and not labelled.loc[~odd, "branch_correct"].any()
    )
    assert (
        labelled["divergent"] == (labelled["branch_correct"] != labelled["oracle_correct"])
    ).all()


def _toy() -> tuple[dict, dict]:
    """Two prompts of 10 tokens: prompt 0 has mismatches at steps 0 (divergent) and 5 (neutral),
    prompt 1 one at step 9 (neutral)."""
    trace = pd.DataFrame(
        {
            "prompt_id": np.repeat([0, 1], 10),
            "step": np.tile(np.arange(10), 2),
            "mismatch": [i in (0, 5, 19) for i in range(20)],
            "small_top1_prob": np.linspace(0.9, 0.5, 20),
            "small_margin": np.linspace(0.8, 0.1, 20),
            "small_entropy": np.linspace(0.1, 1.0, 20),
        }
    )
    labels = pd.DataFrame(
        {
            "prompt_id": [0, 0, 1],
            "step": [0, 5, 9],
            "length": [10, 10, 10],
            "decile": [0, 5, 9],
            "divergent": [True, False, False],
        }
    )
    return {"a-b": trace}, {"a-b": labels}


def test_tables_count_and_share():
    traces, labels = _toy()
    pairs = divergence.pair_table(traces, labels, bootstrap=50, seed=0)
    row = pairs[pairs["pair"] == "a-b"].iloc[0]
    assert (row.tokens, row.mismatches, row.neutral, row.divergent) == (20, 3, 2, 1)
    assert row.divergent_share_of_mismatches == pytest.approx(1 / 3)
    assert row.divergent_share_of_tokens == pytest.approx(0.05)
    assert row.divergent_share_of_tokens_low <= 0.05 <= row.divergent_share_of_tokens_high
    assert pairs[pairs["pair"] == "all"].iloc[0].mismatches == 3
    early = divergence.early_divergence(traces, labels, bootstrap=50, seed=0)
    # the one divergent mismatch is in the first decile: 1/2 there against 1/20 overall
    assert early["first_decile_ratio"] == pytest.approx(10.0)
    assert early["divergent_mean_position"] == 0.0
    position = divergence.position_table(traces, labels)
    assert position["tokens"].sum() == 20 and position["divergent"].sum() == 1


def test_findings_rows_follow_their_rules():
    traces, labels = _toy()
    pairs = divergence.pair_table(traces, labels, bootstrap=50, seed=0)
    row = divergent_share(pairs)
    assert row["ours"] == pytest.approx(1 / 3)
    assert row["paper_figure"] == pytest.approx(0.05 / 0.11)
    made_up = pairs.assign(
        divergent_share_of_mismatches_low=0.6, divergent_share_of_mismatches_high=0.7
    )
    assert divergent_share(made_up)["verdict"] == "does not hold"
    made_up = made_up.assign(
        divergent_share_of_mismatches_low=0.2, divergent_share_of_mismatches_high=0.4
    )
    assert divergent_share(made_up)["verdict"] == "holds"
    early = pd.DataFrame([divergence.early_divergence(traces, labels, bootstrap=0, seed=0)])
    assert early_divergence(early)["verdict"] == "inconclusive"  # no interval without resamples
    early = early.assign(first_decile_ratio_low=1.2, first_decile_ratio_high=3.0)
    assert early_divergence(early)["verdict"] == "holds"
    assert early_divergence(pd.DataFrame())["verdict"] == "inconclusive"


def test_bad_branches_are_named(oracle):
    large, tokenizer, _, prompt_ids, _ = oracle
    with pytest.raises(ValueError, match="names prompt 99"):
        continue_branches(large, tokenizer, prompt_ids, [Branch(99, (1,))], max_new_tokens=4)
    with pytest.raises(ValueError, match="prefix of 5 tokens"):
        continue_branches(large, tokenizer, prompt_ids, [Branch(0, (1,) * 5)], max_new_tokens=4)


def test_the_divergence_router_row_compares_with_the_best_mismatch_router():
    def summary(divergent_rate: float) -> pd.DataFrame:
        rates = {"threshold": 0.2, "learned": 0.15, "random": 0.9}
        rates["learned_divergent"] = divergent_rate
        return pd.DataFrame(
            [
                {"large": "a", "small": "b", "router": r, "call_rate_for_95": v}
                for r, v in rates.items()
            ]
        )

    row = divergence_router(summary(0.12))
    assert row["ours"] == pytest.approx(0.8) and row["verdict"] == "holds"
    assert divergence_router(summary(0.3))["verdict"] == "does not hold"
    assert divergence_router(summary(0.3).query("router != 'learned_divergent'"))["verdict"] == (
        "inconclusive"
    )


def test_the_findings_figure_has_a_row_per_claim():
    traces, labels = _toy()
    inputs = Inputs(
        divergence=divergence.pair_table(traces, labels, bootstrap=20, seed=0),
        divergence_early=pd.DataFrame(
            [divergence.early_divergence(traces, labels, bootstrap=20, seed=0)]
        ),
    )
    table = pd.concat([findings_table("synthetic", inputs), beyond_table(inputs)])
    figure = plot_findings(table)
    assert len(figure.axes) == len(table) and "divergent_share" in set(table["id"])
    with pytest.raises(ValueError, match="no rows"):
        plot_findings(table.iloc[:0])


def test_the_router_sweep_adds_the_divergence_trained_router(oracle):
    large, tokenizer, examples, prompt_ids, out = oracle
    labelled = divergence.label_mismatches(
        large,
        tokenizer,
        "synthetic",
        out.trace,
        dict(enumerate(prompt_ids)),
        dict(enumerate(examples)),
        max_new_tokens=MAX_NEW,
        batch_size=4,
        stop=STOP,
    ).assign(pair="t2-t0")
    labelled.loc[labelled.index[::2], "divergent"] = True  # both classes for the fit
    traces = out.trace.assign(task="synthetic", method="oracle", large="t2", small="t0")
    template = routers.SweepRun(None, "", "", "", [], [], "synthetic", {})
    args = (template, traces, [("t2", "t0")], [0.1, 0.3], ("threshold", "learned"), 0, 0.5, 5)
    jobs, rows, _ = routers.plan_sweep(*args, labelled)
    names = [label["router"] for label, _ in rows]
    assert names.count("learned_divergent") == 2 and names.count("learned") == 2
    plain, _, _ = routers.plan_sweep(*args)
    assert len(jobs) == len(plain) + 2
    relabelled = divergence.divergent_trace(traces, labelled, "t2-t0")
    assert relabelled["mismatch"].sum() == labelled["divergent"].sum()
