"""The lean GPT-NeoX forward: logits equal HF's (prefill and step by step, left padding, random
configs and the embedded ladder, its static cache grown and cropped), and stage 05's four systems
generate the same tokens through it as through HF's forward."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from fsgen.engine.batch import Batch
from fsgen.engine.collaborate import generate
from fsgen.engine.fast_neox import FastNeoX, attention_mask, supports
from fsgen.engine.forward import HFStream, LeanStream, open_stream
from fsgen.models.llm_to_slm import LLMToSLM, lean_encoding
from fsgen.models.profiles import load_model
from fsgen.stages.llm_to_slm import SYSTEMS, Systems, run_system
from tests.conftest import LLM_PROMPTS as PROMPTS
from tests.conftest import decode_llm_to_slm, randomize_projector

CONFIGS = {
    "parallel-gelu": {},
    "sequential-half-rotary": {"use_parallel_residual": False, "rotary_pct": 0.5},
    "gelu_new-no-bias-tied": {
        "hidden_act": "gelu_new",
        "attention_bias": False,
        "tie_word_embeddings": True,
        "rotary_pct": 0.25,
    },
}


def _random_neox(tokenizer, hidden=24, layers=2, heads=3, seed=0, **overrides):
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer) + 3,  # a padded vocabulary: logits are cut to the tokenizer's
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=3 * hidden,
        max_position_embeddings=128,
        initializer_range=0.3,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config).eval()


def _compare_streams(model, tokenizer, prompts, steps=6, atol=1e-5):
    """Feed the same left-padded batch to an `HFStream` and a `LeanStream`: prefill (logits of
    every column kept), then one column at a time (greedy), then a block of two columns; logits
    of real columns must agree."""
    vocab = len(tokenizer)
    hf_batch = Batch.from_prompts(tokenizer, prompts, "cpu")
    lean_batch = Batch.from_prompts(tokenizer, prompts, "cpu")
    hf = HFStream(model, vocab)
    lean = LeanStream(model, vocab, len(prompts), hf_batch.width + 16)
    real = hf_batch.mask.bool()
    width = hf_batch.width
    a, b = hf.advance(hf_batch, keep=width), lean.advance(lean_batch, keep=width)
    assert a.shape == b.shape == (len(prompts), width, vocab)
    torch.testing.assert_close(b[real], a[real], atol=atol, rtol=0)
    assert hf.seen == lean.seen == width
    for _ in range(steps):
        chosen = a[:, -1].argmax(-1, keepdim=True)
        assert torch.equal(chosen, b[:, -1].argmax(-1, keepdim=True))
        hf_batch.append(chosen)
        lean_batch.append(chosen)
        a, b = hf.advance(hf_batch, keep=1), lean.advance(lean_batch, keep=1)
        assert a.shape == b.shape == (len(prompts), 1, vocab)
        torch.testing.assert_close(b, a, atol=atol, rtol=0)
    block = torch.tensor([[7, 11]] * len(prompts))  # two columns at once, past the prompt
    hf_batch.append(block)
    lean_batch.append(block)
    a, b = hf.advance(hf_batch, keep=2), lean.advance(lean_batch, keep=2)
    assert a.shape == b.shape == (len(prompts), 2, vocab)
    torch.testing.assert_close(b, a, atol=atol, rtol=0)


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_logits_match_hf_on_random_configs(tiny_tokenizer, overrides):
    torch.set_num_threads(1)
    model = _random_neox(tiny_tokenizer, **overrides)
    assert supports(model)
    _compare_streams(model, tiny_tokenizer, PROMPTS)  # left padded: the rows differ in length
    _compare_streams(model, tiny_tokenizer, PROMPTS[:1])  # no padding: the causal fast path


@pytest.mark.parametrize("name", ["e0", "e5"])
def test_logits_match_hf_on_the_embedded_ladder(repo, name):
    folder = repo / "data" / "models" / "embedded" / name
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"no trained {name} (run the train_ladder stage)")
    model, tokenizer = load_model(folder)
    prompts = ["Question: Ann has 3 coins. How many?\nAnswer:", "Question:", "Ben has 12"]
    _compare_streams(model, tokenizer, prompts)
    _compare_decode_loop(model, tokenizer, prompts)


def _compare_decode_loop(model, tokenizer, prompts, steps=6, atol=1e-5):
    """The generation loop (a prefill keeping the last column's logits only, then one column a
    step, the default `keep=1`) of a `LeanStream` whose static cache holds exactly the columns
    it will see, against an `HFStream`: the same logits at every step, so the same tokens."""
    vocab = len(tokenizer)
    batch = Batch.from_prompts(tokenizer, prompts, "cpu")
    lean_batch = Batch.from_prompts(tokenizer, prompts, "cpu")
    hf = HFStream(model, vocab)
    lean = LeanStream(model, vocab, len(prompts), batch.width + steps)
    hf_logits, lean_logits = hf.advance(batch)[:, -1], lean.advance(lean_batch)[:, -1]
    for _ in range(steps):
        torch.testing.assert_close(lean_logits, hf_logits, atol=atol, rtol=0)
        chosen = hf_logits.argmax(-1)  # (B,)
        assert torch.equal(chosen, lean_logits.argmax(-1))
        batch.append(chosen[:, None])
        lean_batch.append(chosen[:, None])
        hf_logits, lean_logits = hf.advance(batch)[:, -1], lean.advance(lean_batch)[:, -1]
    torch.testing.assert_close(lean_logits, hf_logits, atol=atol, rtol=0)
    assert lean.capacity == batch.width  # never grown: the cache was sized for the loop


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_decode_loop_matches_hf_on_random_configs(tiny_tokenizer, overrides):
    torch.set_num_threads(1)
    model = _random_neox(tiny_tokenizer, **overrides)
    _compare_decode_loop(model, tiny_tokenizer, PROMPTS)  # left padded
    _compare_decode_loop(model, tiny_tokenizer, PROMPTS[:1])  # no padding


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_encode_matches_hf_last_hidden_state(tiny_tokenizer, overrides):
    """LLM-to-SLM's lean encoding: `FastNeoX.encode` against HF's `base_model(...)`'s
    `last_hidden_state` at every real prompt column, left padded or not."""
    torch.set_num_threads(1)
    model = _random_neox(tiny_tokenizer, **overrides)
    fast = FastNeoX(model)
    for prompts in (PROMPTS, PROMPTS[:1]):
        batch = Batch.from_prompts(tiny_tokenizer, prompts, "cpu")
        with torch.no_grad():
            hf = model.base_model(
                input_ids=batch.seq, attention_mask=batch.mask, position_ids=batch.pos
            ).last_hidden_state
        lean = fast.encode(batch.seq, batch.mask, batch.pos)
        assert not lean.is_inference()
        real = batch.mask.bool()
        torch.testing.assert_close(lean[real], hf[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("prompts", [PROMPTS, PROMPTS[:1]], ids=["padded", "unpadded"])
def test_lean_cache_grows_and_crops_like_hf(tiny_tokenizer, prompts):
    """A `LeanStream` whose static cache is smaller than the prompt grows it (doubling) on the
    prefill and again while decoding; cropping rejected columns and feeding others instead gives
    HF's logits, and those of a fresh HF stream over the final batch."""
    torch.set_num_threads(1)
    model = _random_neox(tiny_tokenizer, use_parallel_residual=False, rotary_pct=0.5)
    vocab = len(tiny_tokenizer)
    hf_batch = Batch.from_prompts(tiny_tokenizer, prompts, "cpu")
    lean_batch = Batch.from_prompts(tiny_tokenizer, prompts, "cpu")
    width = hf_batch.width
    hf, lean = HFStream(model, vocab), LeanStream(model, vocab, len(prompts), 2)
    assert lean.capacity == 2 < width
    a, b = hf.advance(hf_batch, keep=width), lean.advance(lean_batch, keep=width)
    assert lean.capacity >= width  # grown on the prefill
    real = hf_batch.mask.bool()
    torch.testing.assert_close(b[real], a[real], atol=1e-5, rtol=0)
    capacity = lean.capacity
    while lean_batch.width <= capacity:  # decode past the grown capacity: it grows again
        chosen = a[:, -1].argmax(-1, keepdim=True)
        hf_batch.append(chosen)
        lean_batch.append(chosen)
        a, b = hf.advance(hf_batch), lean.advance(lean_batch)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    assert lean.capacity > capacity and lean.seen == hf.seen == lean_batch.width
    # four drafts, all rejected: crop back, then feed two other columns in their place
    kept = lean_batch.width
    drafts = torch.tensor([[5, 9, 14, 3]] * len(prompts))
    hf_batch.append(drafts)
    lean_batch.append(drafts)
    hf.advance(hf_batch, keep=4)
    lean.advance(lean_batch, keep=4)
    for stream, batch in ((hf, hf_batch), (lean, lean_batch)):
        batch.crop(kept)
        stream.crop(kept)
        assert stream.seen == batch.width == kept
    other = torch.tensor([[11, 7]] * len(prompts))
    hf_batch.append(other)
    lean_batch.append(other)
    a, b = hf.advance(hf_batch, keep=2), lean.advance(lean_batch, keep=2)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    fresh = HFStream(model, vocab).advance(hf_batch.copy(), keep=2)  # no cache history at all
    torch.testing.assert_close(b, fresh, atol=1e-5, rtol=0)
    torch.testing.assert_close(a, fresh, atol=1e-5, rtol=0)


def test_attention_mask_hides_padding_and_the_future():
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    full = attention_mask(mask, 0, 4)[:, 0]  # (B, 4, 4)
    assert full[0].tolist() == [
        [True, False, False, False],
        [False, True, False, False],
        [False, True, True, False],
        [False, True, True, True],
    ]
    assert torch.equal(full[1], torch.ones(4, 4).tril().bool())
    assert attention_mask(mask[1:], 0, 4) is None  # no padding: plainly causal
    assert attention_mask(mask[1:], 3, 4) is None  # one query sees everything
    assert attention_mask(mask[1:], 2, 4)[0, 0].tolist() == [
        [True, True, True, False],
        [True, True, True, True],
    ]


def test_the_four_systems_generate_the_same_tokens_through_the_lean_forward(tiny_tokenizer):
    """Stage 05's systems (the large and small models, a second small one standing in for the
    fine-tuned small model, LLM-to-SLM) through the timed path, `run_system`, at batch 1 and 3:
    the same tokens as through HF's forward, the lean forward named, and the traced loop."""
    torch.set_num_threads(1)
    large = _random_neox(tiny_tokenizer, hidden=32, layers=2, heads=2, seed=1)
    small = _random_neox(tiny_tokenizer, hidden=16, layers=1, heads=2, seed=2)
    tuned = _random_neox(tiny_tokenizer, hidden=16, layers=1, heads=2, seed=3)
    conditioned = _random_neox(tiny_tokenizer, hidden=16, layers=1, heads=2, seed=2)
    model = randomize_projector(
        LLMToSLM(large, conditioned, tiny_tokenizer, tiny_tokenizer, large_source="large")
    )
    systems = Systems(large, small, tuned, model, tiny_tokenizer)
    assert lean_encoding(model)  # the timed path encodes with the lean forward too
    stop = ["\nQuestion:"]
    for batch_size in (1, 3):
        run = {"max_new_tokens": 12, "batch_size": batch_size, "stop": stop}
        tokens = {}
        for name in SYSTEMS:
            timed = run_system(systems, name, PROMPTS, **run)  # the lean forward
            if name == "LLM-to-SLM":
                hf = decode_llm_to_slm(model, PROMPTS, forward="hf", **run)
                lean = decode_llm_to_slm(model, PROMPTS, forward="lean", **run)
                traced = decode_llm_to_slm(model, PROMPTS, trace=True, **run)
            else:
                lm = {"large": large, "small": small, "fine-tuned small": tuned}[name]
                hf = generate(lm, tiny_tokenizer, PROMPTS, forward="hf", **run)
                lean = generate(lm, tiny_tokenizer, PROMPTS, forward="lean", **run)
                traced = generate(lm, tiny_tokenizer, PROMPTS, trace=True, **run)
            assert timed.tokens == hf.tokens == lean.tokens == traced.tokens, (name, batch_size)
            assert len(traced.trace) == sum(map(len, traced.tokens)) > 0
            assert timed.texts == hf.texts
            tokens[name] = timed.tokens
        assert tokens["LLM-to-SLM"] != tokens["small"]  # conditioning shows


def test_only_gpt_neox_takes_the_lean_path():
    other = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50))
    assert not supports(other)
    with pytest.raises(ValueError, match="GPT-NeoX"):
        LeanStream(other, 50, 1, 8)
    batch = Batch.from_ids([[1, 2, 3]], 0)
    assert isinstance(open_stream(other, 50, batch, spare=4), HFStream)  # auto: HF's forward
    with pytest.raises(ValueError, match="GPT-NeoX"):
        open_stream(other, 50, batch, spare=4, forward="lean")
