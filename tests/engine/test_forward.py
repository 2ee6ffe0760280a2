"""HF's forward path (any causal LM that is not a GPT-NeoX): a Llama against the naive reference,
and the reserved KV cache it decodes with."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fsgen.engine import forward
from fsgen.engine.batch import Batch
from fsgen.engine.collaborate import collaborate
from fsgen.engine.forward import HFStream, new_cache
from tests.conftest import PROMPTS
from tests.reference import naive_collaborate


def tiny_llama(tokenizer, hidden: int, layers: int, seed: int) -> LlamaForCausalLM:
    """A random Llama on `tokenizer` with grouped-query attention (float64, eval), seeded."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.5,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).double().eval()


@pytest.fixture(scope="module")
def llamas(tiny_tokenizer):
    torch.set_num_threads(1)
    return tiny_llama(tiny_tokenizer, 16, 1, seed=2), tiny_llama(tiny_tokenizer, 32, 2, seed=1)


@pytest.mark.parametrize(
    "method, router, threshold",
    [
        ("oracle", "threshold", 0.5),
        ("contrastive", "always", None),
        ("speculative", "always", None),
    ],
)
def test_llama_through_hf_forward_matches_naive_reference(
    llamas, tiny_tokenizer, method, router, threshold
):
    """Batched decoding through HF's forward and the reserved cache (ragged left padding,
    speculative crops and masked drafts) gives the naive reference's tokens, prompt by prompt."""
    small, large = llamas
    run = {"method": method, "router": router, "threshold": threshold, "max_new_tokens": 14}
    fast = collaborate(small, large, tiny_tokenizer, PROMPTS, batch_size=3, num_draft=3, **run)
    for i, prompt in enumerate(PROMPTS):
        ref = naive_collaborate(small, large, tiny_tokenizer, prompt, num_draft=3, **run)
        assert fast.tokens[i] == ref["tokens"], f"prompt {i}"
        assert fast.trace[fast.trace.prompt_id == i]["source"].tolist() == ref["sources"]


def test_hf_stream_passes_the_cache_it_owns(llamas):
    small, _ = llamas
    stream = HFStream(small, small.config.vocab_size)
    assert stream.cache_argument in ("cache", "past_key_values")
    kept = stream.cache
    batch = Batch.from_ids([[1, 2, 3], [4, 5]], 0, spare=4)
    stream.advance(batch)
    batch.append(torch.tensor([[6], [7]]))
    stream.advance(batch)
    assert stream.cache is kept and stream.cache.get_seq_length() == batch.width == 4


@pytest.mark.skipif(
    not hasattr(forward, "ReservedLayer"),
    reason="transformers < 4.56 has no cache layers to reserve",
)
def test_reserved_layer_writes_in_place_and_doubles_when_full():
    """Columns land in one buffer that doubles when full, so a long decode reallocates it a
    logarithmic number of times (HF's `DynamicLayer` allocates a new, larger block every step:
    on a CPU those fragment the heap); crops and row selections keep the values."""
    cache = new_cache()
    generator = torch.Generator().manual_seed(0)
    chunks = [torch.randn(3, 2, 5 if i == 0 else 1, 4, generator=generator) for i in range(300)]
    buffers = set()
    for chunk in chunks:
        keys, values = cache.update(chunk, -chunk, 0)
        buffers.add(cache.layers[0].key_buffer.data_ptr())
    expected = torch.cat(chunks, dim=-2)
    assert torch.equal(keys, expected) and torch.equal(values, -expected)
    assert cache.get_seq_length() == 304
    assert len(buffers) <= 8  # 5, 10, 20, ..., 320 columns: 7 buffers for 304 columns
    cache.crop(-4)
    assert cache.get_seq_length() == 300
    keys, _ = cache.update(chunks[0][..., :1, :], chunks[0][..., :1, :], 0)
    assert torch.equal(keys[..., :300, :], expected[..., :300, :])
    assert torch.equal(keys[..., 300:, :], chunks[0][..., :1, :])
    cache.batch_select_indices(torch.tensor([2, 0]))
    assert torch.equal(cache.layers[0].keys[..., :300, :], expected[[2, 0], ..., :300, :])
    with pytest.raises(ValueError, match="negative"):
        cache.crop(3)


def test_hf_stream_hands_freed_memory_back_on_a_cpu(llamas, monkeypatch):
    """Every TRIM_EVERY forwards on a CPU the heap's free pages go back to the system."""
    released = []
    monkeypatch.setattr(forward, "release_freed_memory", lambda: released.append(1) or True)
    small, _ = llamas
    stream = HFStream(small, small.config.vocab_size)
    batch = Batch.from_ids([[1, 2, 3]], 0, spare=2 * forward.TRIM_EVERY)
    for step in range(2 * forward.TRIM_EVERY):
        stream.advance(batch)
        batch.append(torch.tensor([[4 + step % 5]]))
    assert len(released) == 2
