"""The engine against the naive reference: every method x router, uneven batches, early stops."""

from __future__ import annotations

import copy

import pytest
import torch
from scipy.stats import chi2_contingency, chisquare
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from fsgen.engine.batch import Batch
from fsgen.engine.collaborate import collaborate, collaborate_ladder
from fsgen.engine.output import text_decoder
from fsgen.engine.trace import COLUMNS, empty_trace, read_trace, write_trace
from tests.conftest import PROMPTS, check_against_reference, perturbed, tiny_neox


@pytest.fixture(scope="module")
def models(tiny_tokenizer):
    torch.set_num_threads(1)
    large = tiny_neox(tiny_tokenizer, 32, 2, seed=1, extra_vocab=5)  # padded vocabulary, like Qwen
    small = perturbed(large, 0.35, seed=2)
    tuned = perturbed(small, 0.25, seed=3)
    return small, large, tuned


ROUTED = [("always", None), ("never", None), ("threshold", 0.5), ("margin", 0.3), ("entropy", 1.0)]
CASES = [
    (method, router, threshold)
    for method in ("oracle", "contrastive", "contrastive_obrien", "proxy")
    for router, threshold in ROUTED
] + [("speculative", "always", None), ("small", "always", None), ("large", "always", None)]


@pytest.mark.parametrize("method, router, threshold", CASES)
def test_greedy_engine_matches_naive_reference(models, tiny_tokenizer, method, router, threshold):
    check_against_reference(
        models, tiny_tokenizer, method, router, threshold, max_new_tokens=12, stop=["s"]
    )


@pytest.mark.parametrize("method, router, threshold", CASES[1::2] + CASES[-3:-1])
def test_sampling_engine_matches_naive_reference(models, tiny_tokenizer, method, router, threshold):
    check_against_reference(
        models,
        tiny_tokenizer,
        method,
        router,
        threshold,
        max_new_tokens=10,
        do_sample=True,
        temperature=0.8,
        seed=11,
    )


def test_routers_split_the_steps(models, tiny_tokenizer):
    """The fixtures really exercise routing: some steps consulted, some not, some mismatches."""
    small, large, _ = models
    out = collaborate(
        small, large, tiny_tokenizer, PROMPTS, router="threshold", threshold=0.5, max_new_tokens=12
    )
    assert 0 < out.summary["large_calls"] < out.summary["tokens"]
    assert 0 < out.summary["mismatches"]
    spec = collaborate(
        small, large, tiny_tokenizer, PROMPTS, method="speculative", max_new_tokens=12
    )
    assert {"draft", "large"} <= set(spec.trace["source"])


@pytest.mark.parametrize("num_draft", [1, 3, 6])
def test_greedy_speculative_equals_large_alone(models, tiny_tokenizer, num_draft):
    small, large, _ = models
    alone = collaborate(small, large, tiny_tokenizer, PROMPTS, method="large", max_new_tokens=15)
    spec = collaborate(
        small,
        large,
        tiny_tokenizer,
        PROMPTS,
        method="speculative",
        num_draft=num_draft,
        max_new_tokens=15,
        batch_size=3,
    )
    assert spec.tokens == alone.tokens
    assert spec.summary["large_calls"] <= alone.summary["tokens"]


def test_batching_does_not_change_results(models, tiny_tokenizer):
    small, large, tuned = models
    for method in ("contrastive", "speculative", "proxy"):
        runs = [
            collaborate(
                small,
                large,
                tiny_tokenizer,
                PROMPTS,
                method=method,
                small_tuned=tuned,
                router="threshold" if method != "speculative" else "always",
                threshold=0.5,
                max_new_tokens=10,
                batch_size=b,
                do_sample=True,
                seed=3,
            )
            for b in (1, 2, 5)
        ]
        assert runs[0].tokens == runs[1].tokens == runs[2].tokens


def test_trace_schema(models, tiny_tokenizer):
    small, large, _ = models
    out = collaborate(
        small,
        large,
        tiny_tokenizer,
        PROMPTS[:2],
        router="threshold",
        threshold=0.5,
        max_new_tokens=6,
        trace_top_k=4,
    )
    assert list(out.trace.columns) == COLUMNS
    assert all(len(ids) == 4 for ids in out.trace["small_topk_ids"])
    skipped = out.trace[~out.trace["large_called"]]
    assert skipped["large_top1_prob"].isna().all()
    assert (out.trace["small_top1_prob"] >= out.trace["small_topk_probs"].map(min)).all()
    assert out.trace["mismatch_vs_base"].isna().all()


def test_stops_and_exact_lengths(models, tiny_tokenizer):
    small, large, _ = models
    out = collaborate(small, large, tiny_tokenizer, PROMPTS, method="small", max_new_tokens=7)
    assert all(len(t) == 7 for t in out.tokens)
    stopped = collaborate(
        small, large, tiny_tokenizer, PROMPTS, method="small", max_new_tokens=30, stop=["e"]
    )
    for text, tokens in zip(stopped.texts, stopped.tokens, strict=True):
        assert "e" not in text
        assert len(tokens) == 30 or "e" in tiny_tokenizer.decode(tokens)


def test_empty_prompt_list(models, tiny_tokenizer):
    small, large, _ = models
    out = collaborate(small, large, tiny_tokenizer, [])
    assert out.texts == [] and out.tokens == [] and len(out.trace) == 0
    assert out.summary["tokens"] == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "beam"}, r"unknown method 'beam'; valid methods: \[.*'oracle'"),
        ({"router": "coin"}, r"unknown router 'coin'; valid routers: \['always'"),
        ({"method": "proxy"}, r"needs the models \['tuned'\] .*small_tuned="),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1, got 0"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer >= 1, got 2.5"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"stop": "ab"}, "stop must be a list of strings, got the string 'ab'"),
        ({"prompts": "Ann has 3 coins."}, "prompts must be a list of strings, got one string"),
        ({"router": "threshold"}, "router 'threshold' needs a threshold"),
        ({"max_new_tokens": 250}, "exceeds the context of 256 tokens"),
        ({"prompts": ["Ann has 3 coins. " * 80]}, r"prompt of \d+ tokens .* exceeds the context"),
    ],
)
def test_bad_input_is_a_clear_error(models, tiny_tokenizer, kwargs, message):
    small, large, _ = models
    prompts = kwargs.pop("prompts", PROMPTS)
    with pytest.raises(ValueError, match=message):
        collaborate(small, large, tiny_tokenizer, prompts, **kwargs)


def test_different_vocabularies_are_rejected(models, tiny_tokenizer):
    small, large, _ = models
    config = GPTNeoXConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2
    )
    other = GPTNeoXForCausalLM(config).double()
    with pytest.raises(ValueError, match=r"vocabulary sizes \[100, \d+\].*tokenizer has \d+"):
        collaborate(other, large, tiny_tokenizer, PROMPTS)


def test_ladder_wide_logging_equals_pairwise_oracle(models, tiny_tokenizer):
    small, large, tuned = models
    ladder = collaborate_ladder(
        large,
        {"small": small, "tuned": tuned},
        tiny_tokenizer,
        PROMPTS,
        max_new_tokens=9,
        batch_size=2,
        stop=["s"],
    )
    for name, model in (("small", small), ("tuned", tuned)):
        pair = collaborate(
            model, large, tiny_tokenizer, PROMPTS, max_new_tokens=9, batch_size=2, stop=["s"]
        )
        assert ladder[name].tokens == pair.tokens and ladder[name].texts == pair.texts
        assert (
            ladder[name]
            .trace.drop(columns=["small_topk_probs", "large_topk_probs"])
            .equals(pair.trace.drop(columns=["small_topk_probs", "large_topk_probs"]))
        )
        for key in ("tokens", "mismatches", "large_calls", "collaboration_frequency"):
            assert ladder[name].summary[key] == pair.summary[key]


def test_trace_parquet_round_trip(models, tiny_tokenizer, tmp_path):
    small, large, tuned = models
    out = collaborate(
        small,
        large,
        tiny_tokenizer,
        PROMPTS[:3],
        method="proxy",
        small_tuned=tuned,
        router="threshold",
        threshold=0.5,
        max_new_tokens=5,
    )
    first = write_trace(out.trace, tmp_path / "a.parquet")
    back = read_trace(first)
    assert back["token_id"].tolist() == out.trace["token_id"].tolist()
    assert back["mismatch_vs_base"].tolist() == out.trace["mismatch_vs_base"].tolist()
    assert back["large_top1_prob"].isna().tolist() == out.trace["large_top1_prob"].isna().tolist()
    second = write_trace(out.trace, tmp_path / "b.parquet")
    assert first.read_bytes() == second.read_bytes()
    with pytest.raises(ValueError, match=r"trace lacks columns \['token'\]"):
        write_trace(out.trace.drop(columns=["token"]), tmp_path / "c.parquet")


def test_speculative_sampling_matches_sampling_from_large(models, tiny_tokenizer):
    """Lossless: the first token follows the large model's distribution exactly (chi-square),
    and the first two tokens are distributed like plain sampling from the large model."""

    small, large, _ = models
    prompt, n = "Question: Ann has", 600
    spec = collaborate(
        small,
        large,
        tiny_tokenizer,
        [prompt] * n,
        method="speculative",
        num_draft=3,
        max_new_tokens=2,
        batch_size=100,
        do_sample=True,
        seed=5,
    )
    alone = collaborate(
        small,
        large,
        tiny_tokenizer,
        [prompt] * n,
        method="large",
        max_new_tokens=2,
        batch_size=100,
        do_sample=True,
        seed=6,
    )
    assert spec.summary["mismatches"] > 0  # drafts really were rejected and resampled
    ids = torch.tensor([tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        p = torch.softmax(large(ids).logits[0, -1, : len(tiny_tokenizer)].double(), -1)
    first = torch.tensor([t[0] for t in spec.tokens])
    expected = p * n
    common = expected >= 5
    observed = torch.cat(
        [
            torch.bincount(first, minlength=len(p))[common].double(),
            torch.tensor([float((~common[first]).sum())]),
        ]
    )
    wanted = torch.cat([expected[common], expected[~common].sum().view(1)])
    assert chisquare(observed.numpy(), wanted.numpy()).pvalue > 1e-3
    pairs = sorted({tuple(t) for t in spec.tokens + alone.tokens})
    index = {pair: i for i, pair in enumerate(pairs)}
    table = torch.zeros(2, len(pairs))
    for row, run in enumerate((spec, alone)):
        for tokens in run.tokens:
            table[row, index[tuple(tokens)]] += 1
    table = table[:, table.sum(0) >= 10]  # cells with enough counts
    assert chi2_contingency(table.numpy()).pvalue > 1e-3


def test_callable_router_equals_named_router(models, tiny_tokenizer):
    small, large, _ = models

    def unsure(probs):
        return probs.max(-1).values < 0.5

    named = collaborate(
        small, large, tiny_tokenizer, PROMPTS, router="threshold", threshold=0.5, max_new_tokens=8
    )
    custom = collaborate(small, large, tiny_tokenizer, PROMPTS, router=unsure, max_new_tokens=8)
    assert custom.tokens == named.tokens
    assert custom.summary["router"] == "unsure"


@pytest.mark.parametrize("method", ["oracle", "contrastive", "proxy", "speculative", "large"])
def test_eos_stops_rows_and_matches_reference(models, tiny_tokenizer, method):
    """Declare a token the method often emits end-of-sequence: rows stop early, at different
    steps, exactly as in the reference."""

    small, large, tuned = models
    free = collaborate(
        small, large, tiny_tokenizer, PROMPTS, method=method, small_tuned=tuned, max_new_tokens=12
    )
    counts = free.trace["token_id"].value_counts()
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(counts.index[0]))
    out = check_against_reference(models, tokenizer, method, "always", None, max_new_tokens=12)
    eos = tokenizer.eos_token_id
    assert any(t[-1] == eos and len(t) < 12 for t in out.tokens)
    assert all(eos not in t[:-1] for t in out.tokens)
    assert len({len(t) for t in out.tokens}) > 1


@pytest.mark.parametrize("k", [1, 3])
def test_batch_append_positions(k):
    """Appended columns continue each row's positions; masked-out columns take no position."""

    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])  # left padding on row 0
    batch = Batch(torch.ones_like(mask), mask, (mask.cumsum(-1) - 1).clamp(min=0))
    batch.append(torch.full((2, k), 7))
    assert batch.pos[:, 3:].tolist() == [list(range(2, 2 + k)), list(range(3, 3 + k))]
    holes = torch.tensor([[1, 0, 1], [0, 1, 1]])
    batch.append(torch.full((2, 3), 8), holes)
    start = [2 + k, 3 + k]
    assert batch.pos[:, -3:].tolist() == [
        [s, s + 1, s + 1] if r == 0 else [s, s, s + 1] for r, s in enumerate(start)
    ]
    assert batch.mask[:, -3:].tolist() == holes.tolist()


def test_untraced_calls_return_an_empty_trace_with_every_column(models, tiny_tokenizer):
    small, large, _ = models
    for method in ("oracle", "contrastive", "speculative", "small"):
        traced = collaborate(small, large, tiny_tokenizer, PROMPTS, method=method, max_new_tokens=6)
        bare = collaborate(
            small, large, tiny_tokenizer, PROMPTS, method=method, max_new_tokens=6, trace=False
        )
        assert bare.tokens == traced.tokens and bare.texts == traced.texts
        trace = bare.trace
        assert trace.equals(empty_trace()) and list(trace.dtypes) == list(empty_trace().dtypes)
        for key in ("tokens", "large_calls", "mismatches", "large_forwards"):
            assert bare.summary[key] == traced.summary[key], (method, key)


def test_stop_check_decodes_exactly_as_the_tokenizer(tiny_tokenizer):
    """The stop strings are looked for in `text_decoder`'s text: for a plain fast tokenizer it
    calls the backend directly, and the text must be `decode`'s, special tokens, partial UTF-8
    bytes and all; a tokenizer that cleans up spaces keeps its own `decode`."""

    generator = torch.Generator().manual_seed(0)
    vocab = len(tiny_tokenizer)
    sequences = [torch.randint(vocab, (n,), generator=generator).tolist() for n in range(0, 60, 3)]
    sequences.append(
        tiny_tokenizer("héllo wörld, 12 + 30 = 42 ✓")["input_ids"][:-1]
    )  # cut mid-char
    direct = text_decoder(tiny_tokenizer)
    for ids in sequences:
        assert direct(ids) == tiny_tokenizer.decode(ids, skip_special_tokens=False)
    cleaning = copy.deepcopy(tiny_tokenizer)
    cleaning.clean_up_tokenization_spaces = True
    ids = tiny_tokenizer("a , b . c ?")["input_ids"]
    assert text_decoder(cleaning)(ids) == cleaning.decode(ids, skip_special_tokens=False)
