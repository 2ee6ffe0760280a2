"""The engine's behaviour on its own terms: speculative verification on stub models with fixed
logits, the stopping rule (special-token stop strings, lists of end ids, text cuts), raw
tokenizers as the hub ships them, logits computed only where needed, and untraced calls."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from scipy.stats import binomtest, chisquare
from transformers import AutoTokenizer

from fsgen.engine import fast_neox, forward
from fsgen.engine.collaborate import Engine, collaborate, generate
from fsgen.engine.sampler import Sampler
from fsgen.engine.strategies import accept_greedy, accept_sampled
from tests.conftest import PROMPTS, check_against_reference, perturbed, tiny_neox

METHODS = ["oracle", "contrastive", "contrastive_obrien", "proxy", "speculative", "small", "large"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tiny_tokenizer):
    large = tiny_neox(tiny_tokenizer, 32, 2, seed=1, extra_vocab=5)
    small = perturbed(large, 0.35, seed=2)
    tuned = perturbed(small, 0.25, seed=3)
    return small, large, tuned


def _run(models, tokenizer, method, **kwargs):
    small, large, tuned = models
    kwargs = {"max_new_tokens": 12, "batch_size": 2} | kwargs
    return collaborate(small, large, tokenizer, PROMPTS, method=method, small_tuned=tuned, **kwargs)


# ----------------------------------------------------------------------------- accept rules


def test_accept_greedy_rejects_the_first_draft_and_corrects():
    assert accept_greedy([5, 6, 7], [1, 6, 7, 8]) == (0, 1, "large")


def test_accept_greedy_accepts_every_draft_and_adds_the_bonus():
    assert accept_greedy([5, 6, 7], [5, 6, 7, 8]) == (3, 8, "bonus")


def test_accept_greedy_stops_at_the_first_disagreement():
    assert accept_greedy([5, 6, 7], [5, 6, 9, 8]) == (2, 9, "large")
    assert accept_greedy([5, 9, 7], [5, 6, 7, 8]) == (1, 6, "large")  # later agreement ignored


def _logits(*rows):
    return torch.tensor(rows, dtype=torch.float64).log()  # probabilities -> logits (0 -> -inf)


def test_accept_sampled_accepts_every_draft_when_p_equals_q():
    q = _logits([0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25])
    p = torch.cat([q, _logits([0.0, 0.0, 1.0, 0.0])])  # the bonus position is certain
    sampler = Sampler(True, 1.0, seed=0, prompt_ids=[0])
    for _ in range(200):
        drafts = torch.multinomial(q.exp(), 1).flatten()
        assert accept_sampled(0, p, q, drafts, sampler) == (2, 2, "bonus")


def test_accept_sampled_always_rejects_a_draft_p_rules_out():
    p = _logits([0.0, 0.5, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25])
    q = _logits([0.6, 0.1, 0.3, 0.0])
    sampler = Sampler(True, 1.0, seed=0, prompt_ids=[0])
    verdicts = [accept_sampled(0, p, q, torch.tensor([0]), sampler) for _ in range(3000)]
    assert {(accepted, source) for accepted, _, source in verdicts} == {(0, "large")}
    counts = torch.bincount(torch.tensor([token for _, token, _ in verdicts]), minlength=4)
    assert counts[0] == counts[2] == 0  # p(0) = 0; p(2) = q(2): no residual mass
    residual = torch.tensor([0.4, 0.2], dtype=torch.float64) / 0.6  # norm(max(0, p - q))
    test = chisquare(counts[[1, 3]].double().numpy(), (residual * len(verdicts)).numpy())
    assert test.pvalue > 1e-3


def test_accept_sampled_accepts_with_probability_p_over_q():
    p = _logits([0.4, 0.6], [0.5, 0.5])
    q = _logits([0.8, 0.2])
    sampler = Sampler(True, 1.0, seed=1, prompt_ids=[0])
    verdicts = [accept_sampled(0, p, q, torch.tensor([0]), sampler) for _ in range(2000)]
    accepted = sum(v[0] for v in verdicts)
    assert binomtest(accepted, len(verdicts), 0.5).pvalue > 1e-3
    rejected = [token for n, token, _ in verdicts if n == 0]
    assert set(rejected) == {1}  # the residual max(0, p - q) is all on token 1


# ----------------------------------------------------------------------------- stub models


class LengthCache:
    """A KV cache that only counts its columns and records how it was cropped."""

    def __init__(self):
        self.length, self.crops = 0, []

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, count: int) -> None:
        self.crops.append(count)
        self.length = self.length + count if count < 0 else count


class TableLM(torch.nn.Module):
    """A causal LM whose next-token logits depend only on the last input token: `following[t]`
    is the token that follows t. It takes HF's call with the `LengthCache` the stream starts from
    (`stub_caches` puts it there), records each new one, and checks the attention mask spans the
    cached and the new columns."""

    def __init__(self, following: list[int], eos_token_id: int, name: str):
        super().__init__()
        vocab = len(following)
        table = torch.zeros(vocab, vocab)
        table[torch.arange(vocab), torch.tensor(following)] = 5.0
        self.register_buffer("table", table)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the engine reads the device off it
        self.config = SimpleNamespace(
            vocab_size=vocab, max_position_embeddings=512, _name_or_path=name
        )
        self.generation_config = SimpleNamespace(eos_token_id=eos_token_id)
        self.caches: list[LengthCache] = []

    def forward(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=True,
        logits_to_keep=0,
    ):
        assert isinstance(past_key_values, LengthCache)
        if not any(cache is past_key_values for cache in self.caches):
            assert past_key_values.length == 0
            self.caches.append(past_key_values)
        columns = input_ids.shape[1]
        assert position_ids.shape == input_ids.shape
        if attention_mask is not None:
            assert attention_mask.shape[1] == past_key_values.length + columns
        past_key_values.length += columns
        logits = self.table[input_ids]  # (B, L, V)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits, past_key_values=past_key_values)


STUB_PROMPTS = ["Question: Ann has 3 coins.", "Ben"]
WRONG = 200  # what the small stub drafts where it disagrees


def _stubs(tokenizer, agree: str):
    """The large stub walks a cycle of six tokens (from any token off the cycle it enters at the
    first); the second prompt ends on the cycle's third token. The small stub agrees with it
    `never`, `always`, or (`partial`) after the cycle's first three tokens only."""
    last = [tokenizer(p, add_special_tokens=False)["input_ids"][-1] for p in STUB_PROMPTS]
    cycle = [100, 101, last[1], 103, 104, 105]
    assert last[0] not in cycle and len(set(cycle)) == 6 and WRONG not in cycle
    vocab = len(tokenizer)
    following = [cycle[0]] * vocab
    for i, token in enumerate(cycle):
        following[token] = cycle[(i + 1) % 6]
    agreed = {"never": set(), "always": set(range(vocab)), "partial": set(cycle[:3])}[agree]
    drafts = [t if i in agreed else WRONG for i, t in enumerate(following)]
    eos = tokenizer.eos_token_id
    return TableLM(drafts, eos, "small-stub"), TableLM(following, eos, "large-stub"), cycle


@pytest.fixture
def stub_caches(monkeypatch):
    """HF streams start from a `LengthCache`, which the stub models understand."""
    monkeypatch.setattr(forward, "new_cache", LengthCache)


def _speculate(tokenizer, agree, num_draft, max_new_tokens):
    small, large, cycle = _stubs(tokenizer, agree)
    kwargs = {"max_new_tokens": max_new_tokens, "batch_size": 2}
    spec = collaborate(
        small, large, tokenizer, STUB_PROMPTS, method="speculative", num_draft=num_draft, **kwargs
    )
    crops = [cache.crops for model in (small, large) for cache in model.caches]
    alone = collaborate(small, large, tokenizer, STUB_PROMPTS, method="large", **kwargs)
    assert spec.tokens == alone.tokens
    sources = [spec.trace[spec.trace.prompt_id == i]["source"].tolist() for i in range(2)]
    spec.summary["crops"] = dict(zip(("small", "large"), crops, strict=True))
    return spec, sources, cycle


@pytest.mark.usefixtures("stub_caches")
def test_stub_speculation_never_agreeing_emits_one_large_token_per_round(tiny_tokenizer):
    spec, sources, _ = _speculate(tiny_tokenizer, "never", num_draft=3, max_new_tokens=7)
    assert sources == [["large"] * 7] * 2
    assert spec.summary["large_forwards"] == 7  # one round per token of each row
    assert spec.summary["large_calls"] == 14
    assert spec.summary["mismatches"] == 14


@pytest.mark.usefixtures("stub_caches")
def test_stub_speculation_always_agreeing_emits_k_plus_one_tokens_per_round(tiny_tokenizer):
    spec, sources, cycle = _speculate(tiny_tokenizer, "always", num_draft=3, max_new_tokens=12)
    assert sources == [(["draft"] * 3 + ["bonus"]) * 3] * 2
    assert spec.summary["large_forwards"] == 3 and spec.summary["large_calls"] == 6
    assert spec.summary["mismatches"] == 0
    assert spec.tokens[0] == (cycle * 2)[:12]


@pytest.mark.usefixtures("stub_caches")
def test_stub_speculation_partial_agreement_takes_the_rounds_counted_by_hand(tiny_tokenizer):
    spec, sources, cycle = _speculate(tiny_tokenizer, "partial", num_draft=2, max_new_tokens=9)
    c0, c1, c2, c3, c4, c5 = cycle
    assert spec.tokens == [
        [c0, c1, c2, c3, c4, c5, c0, c1, c2],
        [c3, c4, c5, c0, c1, c2, c3, c4, c5],
    ]
    # rounds of row 0: [c0] [c1 c2 +c3] [c4] [c5] [c0] [c1 c2 (bonus cut by max_new_tokens)]
    assert sources[0] == ["large", "draft", "draft", "bonus", "large", "large", "large"] + [
        "draft",
        "draft",
    ]
    # rounds of row 1: [c3 +c4] [c5] [c0] [c1 c2 +c3] [c4] [c5]
    assert sources[1] == ["draft", "large", "large", "large", "draft", "draft", "bonus"] + [
        "large",
        "large",
    ]
    assert spec.summary["large_forwards"] == 6 and spec.summary["large_calls"] == 12
    # drafts both rows rejected are cropped: rounds 1, 3 and 5 (1, 2, 2 columns); the small
    # stub never saw its last draft, so it forgets one column less
    assert spec.summary["crops"] == {"small": [-1, -1], "large": [-1, -2, -2]}


@pytest.mark.usefixtures("stub_caches")
def test_stub_speculation_is_greedy_decoding_of_the_large_stub_for_any_k(tiny_tokenizer):
    for agree in ("never", "always", "partial"):
        for num_draft in (1, 4):
            _speculate(tiny_tokenizer, agree, num_draft, max_new_tokens=10)  # asserts equality


# ----------------------------------------------------------------------------- stopping rule


def _swap_output_rows(model, a: int, b: int):
    """A copy of `model` that predicts token a where it predicted b and the other way round."""
    copied = copy.deepcopy(model)
    with torch.no_grad():
        weight = copied.get_output_embeddings().weight
        weight[[a, b]] = weight[[b, a]]
    return copied


@pytest.fixture(scope="module")
def end_models(models, tiny_tokenizer):
    """The models with `<|end|>` in the place of the most frequent token every method emits."""
    runs = [_run(models, tiny_tokenizer, method, trace=False).tokens for method in METHODS]
    shared = set.intersection(*({t for row in rows for t in row} for rows in runs))
    counts = Counter(t for rows in runs for row in rows for t in row if t in shared)
    end = tiny_tokenizer.convert_tokens_to_ids("<|end|>")
    token = counts.most_common(1)[0][0]
    return tuple(_swap_output_rows(m, token, end) for m in models), end


@pytest.mark.parametrize("method", METHODS)
def test_special_token_stop_string_stops_the_row_when_emitted(end_models, tiny_tokenizer, method):
    models, end = end_models
    free = _run(models, tiny_tokenizer, method)
    # the naive reference stops at the same tokens, trace included
    out = check_against_reference(
        models, tiny_tokenizer, method, "always", None, max_new_tokens=12, stop=["<|end|>"]
    )
    assert any(end in row for row in free.tokens)
    for tokens, full, text in zip(out.tokens, free.tokens, out.texts, strict=True):
        expected = full[: full.index(end) + 1] if end in full else full
        assert tokens == expected  # stopped the step <|end|> was emitted, not later
        assert "<|end|>" not in text
        if tokens[-1] == end:
            assert text == tiny_tokenizer.decode(tokens[:-1], skip_special_tokens=False)
    assert any(t[-1] == end and len(t) < 12 for t in out.tokens)
    assert len(out.trace) == sum(map(len, out.tokens))


def _two_stop_ids(rows: list[list[int]], specials: set[int]) -> tuple[int, int]:
    """Two ids such that some row meets the first one before the second and another row the
    second before the first."""
    candidates = sorted({t for row in rows for t in row[1:] if t not in specials})
    for a in candidates:
        for b in candidates:

            def first(row, x):
                return row.index(x) if x in row else math.inf

            stop_a = any(first(r, a) < first(r, b) for r in rows)
            stop_b = any(first(r, b) < first(r, a) for r in rows)
            if a != b and stop_a and stop_b:
                return a, b
    raise AssertionError("no two stop ids split the rows")


def _with_eos(models, ids):
    copies = tuple(copy.deepcopy(m) for m in models)
    for model in copies:
        model.generation_config.eos_token_id = list(ids)
    return copies


@pytest.mark.parametrize("method", METHODS)
def test_a_list_of_model_end_ids_stops_at_either(models, tiny_tokenizer, method):
    free = _run(models, tiny_tokenizer, method, trace=False)
    specials = set(tiny_tokenizer.all_special_ids)
    a, b = _two_stop_ids(free.tokens, specials)
    assert tiny_tokenizer.eos_token_id not in (a, b)
    ending = _with_eos(models, (a, b))
    out = check_against_reference(ending, tiny_tokenizer, method, "always", None, max_new_tokens=12)
    for tokens, full in zip(out.tokens, free.tokens, strict=True):
        stops = [i for i, t in enumerate(full) if t in (a, b)]
        assert tokens == (full[: stops[0] + 1] if stops else full)
    assert {t[-1] for t in out.tokens} >= {a, b}


@pytest.mark.parametrize("method", ["contrastive", "speculative", "small"])
def test_texts_are_cut_at_the_first_stop_string_or_stop_id(models, tiny_tokenizer, method):
    decode = tiny_tokenizer.decode
    strung = _run(models, tiny_tokenizer, method, stop=["s"], trace=False).tokens
    by_string = [row for row in strung if "s" in decode(row)]
    specials = set(tiny_tokenizer.all_special_ids)
    a = next(  # an end id some rows emit and some row stopped by "s" does not
        t
        for t in sorted({t for row in strung for t in row[1:]} - specials)
        if any(t not in row for row in by_string) and "s" not in decode([t])
    )
    out = _run(_with_eos(models, (a,)), tiny_tokenizer, method, stop=["s"])
    cuts = ["s", decode([a]), tiny_tokenizer.eos_token]
    ends = {"id": 0, "string": 0}
    for tokens, text in zip(out.tokens, out.texts, strict=True):
        full = decode(tokens, skip_special_tokens=False)
        found = [full.index(c) for c in cuts if c in full]
        assert text == (full[: min(found)] if found else full)
        assert "s" not in decode(tokens[:-1]) and a not in tokens[:-1]
        ends["id"] += tokens[-1] == a
        ends["string"] += "s" in decode(tokens)
    assert ends["id"] and ends["string"]  # both kinds of stop are exercised


# ----------------------------------------------------------------------------- raw tokenizers


def _state(tokenizer) -> dict:
    state = {k: copy.deepcopy(v) for k, v in vars(tokenizer).items() if k != "_tokenizer"}
    return state | {"backend": tokenizer.backend_tokenizer.to_str()}


def _same_results(a, b):
    assert a.tokens == b.tokens and a.texts == b.texts
    assert a.trace.equals(b.trace)
    assert {k: v for k, v in a.summary.items() if k != "wall_seconds"} == {
        k: v for k, v in b.summary.items() if k != "wall_seconds"
    }


@pytest.fixture(scope="module")
def raw_tokenizer(tiny_tokenizer):
    raw = copy.deepcopy(tiny_tokenizer)
    raw.padding_side = "right"
    raw.pad_token = None
    assert raw.pad_token_id is None
    return raw


@pytest.mark.parametrize("method", METHODS)
def test_right_padded_tokenizer_without_pad_token_gives_the_same_results(
    models, tiny_tokenizer, raw_tokenizer, method
):
    before = _state(raw_tokenizer)
    raw = _run(models, raw_tokenizer, method, max_new_tokens=8)
    assert _state(raw_tokenizer) == before
    assert raw_tokenizer.padding_side == "right" and raw_tokenizer.pad_token is None
    _same_results(raw, _run(models, tiny_tokenizer, method, max_new_tokens=8))


def test_a_reloaded_raw_tokenizer_decodes_like_the_original(models, tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["padding_side"] = "right"
    config.pop("pad_token", None)
    config_path.write_text(json.dumps(config))
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.padding_side == "right" and reloaded.pad_token is None
    before = _state(reloaded)
    for method in ("contrastive", "speculative"):
        _same_results(
            _run(models, reloaded, method, max_new_tokens=8),
            _run(models, tiny_tokenizer, method, max_new_tokens=8),
        )
    small = models[0]
    alone = generate(small, reloaded, PROMPTS, max_new_tokens=8, batch_size=2)
    expected = generate(small, tiny_tokenizer, PROMPTS, max_new_tokens=8, batch_size=2)
    assert alone.tokens == expected.tokens and alone.texts == expected.texts
    assert _state(reloaded) == before


# ----------------------------------------------------------------------------- logits kept


def _record_hf_calls(monkeypatch, model, log: list):
    original = model.forward

    def forward(*args, **kwargs):
        out = original(*args, **kwargs)
        log.append((kwargs["input_ids"].shape[1], kwargs["logits_to_keep"], out.logits.shape[1]))
        return out

    monkeypatch.setattr(model, "forward", forward)


@pytest.mark.parametrize("method", ["contrastive", "small", "large", "speculative"])
def test_hf_forward_computes_logits_of_the_needed_columns_only(
    models, tiny_tokenizer, monkeypatch, method
):
    small, large, _ = (copy.deepcopy(m) for m in models)
    calls = {"small": [], "large": []}
    _record_hf_calls(monkeypatch, small, calls["small"])
    _record_hf_calls(monkeypatch, large, calls["large"])
    k = 3
    router = "threshold" if method == "contrastive" else "always"
    collaborate(
        small,
        large,
        tiny_tokenizer,
        PROMPTS,
        method=method,
        router=router,
        threshold=0.5,
        num_draft=k,
        max_new_tokens=6,
        batch_size=2,
        forward="hf",
    )
    wanted = {"small": 1, "large": k + 1 if method == "speculative" else 1}
    for name, log in calls.items():
        for fed, keep, computed in log:
            assert keep == computed == wanted[name], (name, fed)
    runs = [log for log in calls.values() if log]
    assert all(log[0][0] > 1 for log in runs)  # the prefill feeds the prompt, keeps one
    if method == "speculative":
        assert calls["large"][0][0] > k + 1


@pytest.mark.parametrize("method", ["contrastive", "speculative", "oracle"])
def test_lean_forward_computes_logits_of_the_needed_columns_only(
    models, tiny_tokenizer, monkeypatch, method
):
    small, large, _ = models
    log = []
    original = fast_neox.FastNeoX.forward

    def forward(self, cache, start, position_ids, *args, keep=0, **kwargs):
        out = original(self, cache, start, position_ids, *args, keep=keep, **kwargs)
        name = "large" if self.embed is large.gpt_neox.embed_in.weight else "small"
        log.append((name, position_ids.shape[1], keep, out.shape[1]))
        return out

    monkeypatch.setattr(fast_neox.FastNeoX, "forward", forward)
    k, n = 3, 6
    out = collaborate(
        small, large, tiny_tokenizer, PROMPTS[:2], method=method, num_draft=k, max_new_tokens=n
    )
    assert all(keep == computed for _, _, keep, computed in log)
    keeps = {(name, keep) for name, _, keep, _ in log}
    if method == "speculative":
        assert keeps == {("small", 1), ("large", k + 1)}
    elif method == "oracle":  # teacher forcing: one pass over the generated columns
        generated = max(map(len, out.tokens))
        assert keeps == {("large", 1), ("small", generated + 1)}
        scored = [fed for name, fed, _, _ in log if name == "small"]
        assert scored[0] > generated + 1
    else:
        assert keeps == {("small", 1), ("large", 1)}
    assert {fed for name, fed, _, _ in log if name == "small"} - {1}  # a prefill of many columns


# ----------------------------------------------------------------------------- untraced calls


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("do_sample", [False, True])
def test_untraced_call_returns_what_the_traced_call_does(models, tiny_tokenizer, method, do_sample):
    kwargs = {"router": "threshold", "threshold": 0.5} if method in METHODS[:4] else {}
    kwargs |= {"do_sample": do_sample, "seed": 4, "max_new_tokens": 8}
    traced = _run(models, tiny_tokenizer, method, **kwargs)
    bare = _run(models, tiny_tokenizer, method, trace=False, **kwargs)
    assert bare.tokens == traced.tokens and bare.texts == traced.texts
    assert len(bare.trace) == 0 and len(traced.trace) == traced.summary["tokens"]
    assert {k: v for k, v in bare.summary.items() if k != "wall_seconds"} == {
        k: v for k, v in traced.summary.items() if k != "wall_seconds"
    }


def test_an_engine_over_several_small_models_is_the_greedy_oracle_only(models, tiny_tokenizer):
    small, large, _ = models
    smalls = {"a": small, "b": copy.deepcopy(small)}
    ladder = Engine({"large": large}, tiny_tokenizer, max_new_tokens=6, smalls=smalls)
    results = ladder.run_ladder(PROMPTS[:2])
    alone = collaborate(small, large, tiny_tokenizer, PROMPTS[:2], max_new_tokens=6)
    assert set(results) == {"a", "b"} and results["a"].tokens == alone.tokens
    with pytest.raises(ValueError, match="run_ladder"):
        ladder.run(PROMPTS[:2])
    with pytest.raises(ValueError, match="'threshold'"):
        Engine({"large": large}, tiny_tokenizer, router="threshold", threshold=0.5, smalls=smalls)
    with pytest.raises(ValueError, match="do_sample=True"):
        Engine({"large": large}, tiny_tokenizer, do_sample=True, smalls=smalls)
    with pytest.raises(ValueError, match="smalls="):
        Engine({"large": large, "small": small}, tiny_tokenizer).run_ladder(PROMPTS[:2])
