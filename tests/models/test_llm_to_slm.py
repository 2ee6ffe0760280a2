"""LLM-to-SLM: frozen large model, response-only loss, persistence, the batched cached generation
against a naive reference, different tokenizers, System 1 in `collaborate`, a T5 encoder, and the
stage notebook."""

from __future__ import annotations

import copy
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from transformers import T5Config, T5EncoderModel

from fsgen.data.synthetic import expression_document, generate_problems, plain_document
from fsgen.data.tokenizer import train_tokenizer
from fsgen.engine.batch import Batch
from fsgen.engine.collaborate import collaborate, generate
from fsgen.models.llm_to_slm import (
    ConditionedSmall,
    LLMToSLM,
    load_large,
    response_labels,
)
from fsgen.models.llm_to_slm_training import (
    Pair,
    TrainConfig,
    encode_pairs,
    fine_tune_small,
    mixed_training_pairs,
    small_response_loss,
    train_llm_to_slm,
    training_pairs,
)
from fsgen.models.profiles import load_profile
from fsgen.stages.config import stage_config
from fsgen.stages.llm_to_slm import stage_pair
from fsgen.stages.train_ladder import build_ladder
from tests.conftest import (
    LLM_PROMPTS,
    REPO,
    TINY,
    decode_llm_to_slm,
    randomize_projector,
    run_notebook,
    tiny_neox,
)
from tests.reference import _end_ids, naive_collaborate

PAIRS = [
    Pair(d.split("\nAnswer:")[0] + "\nAnswer:", d.split("\nAnswer:")[1])
    for d in map(plain_document, generate_problems(12, seed=3))
]
BUDGET = TrainConfig(steps=3, batch_size=4, lr=1e-2, warmup_steps=1)


def _neox(tokenizer, hidden, layers, seed):
    return tiny_neox(tokenizer, hidden, layers, seed)


@pytest.fixture(scope="module")
def other_tokenizer():
    """A second, smaller byte-level BPE: tokenizes the same text differently."""
    problems = generate_problems(80, seed=11)
    return train_tokenizer([plain_document(p) for p in problems], 270)


@pytest.fixture()
def pair(tiny_tokenizer):
    torch.set_num_threads(1)
    large = _neox(tiny_tokenizer, 32, 2, seed=1)
    small = _neox(tiny_tokenizer, 16, 1, seed=2)
    return large, small


@pytest.fixture()
def model(pair, tiny_tokenizer):
    large, small = pair
    built = LLMToSLM(large, small, tiny_tokenizer, tiny_tokenizer, large_source="large")
    return randomize_projector(built)


# ----------------------------------------------------------------------------- naive reference


def _naive_prompt_logits(model: LLMToSLM, prompt_ids: list[int], generated: list[int]):
    """Full recompute, batch 1, no cache: fused prompt embeddings then the generated tokens."""
    with torch.no_grad():
        ids = torch.tensor([prompt_ids])
        prompt = model.prompt_embeddings(ids, torch.ones_like(ids))  # (1, P, D)
        tail = model.small.get_input_embeddings()(torch.tensor([generated], dtype=torch.long))
        embeds = torch.cat([prompt, tail], 1)  # (1, P + n, D)
        return model.small(inputs_embeds=embeds).logits[0]  # (P + n, V)


def naive_generate(
    model: LLMToSLM,
    prompt: str,
    *,
    prompt_id: int,
    max_new_tokens: int,
    do_sample=False,
    seed=0,
    stop=(),
) -> list[int]:
    prompt_ids = model.large_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    tokenizer, vocab = model.small_tokenizer, len(model.small_tokenizer)
    end_ids = _end_ids(tokenizer, [model.small], stop)  # the engine's stopping rule
    generator = torch.Generator().manual_seed(seed * 1_000_003 + prompt_id)
    tokens: list[int] = []
    while True:
        scores = _naive_prompt_logits(model, prompt_ids, tokens)[-1, :vocab].float()
        if do_sample:
            probs = torch.softmax(scores.double(), -1)
            token = int(torch.multinomial(probs, 1, generator=generator)[0])
        else:
            token = int(scores.argmax())
        tokens.append(token)
        text = tokenizer.decode(tokens, skip_special_tokens=False)
        if len(tokens) >= max_new_tokens or token in end_ids or any(s in text for s in stop):
            return tokens


class NaiveConditioned:
    """System 1 for `tests.reference.naive_collaborate`: recomputes everything from its prompt."""

    def __init__(self, model: LLMToSLM, prompt_ids: list[int]):
        self.model, self.prompt_ids = model, prompt_ids

    def __call__(self, ids: torch.Tensor):
        seq = ids[0].tolist()
        assert seq[: len(self.prompt_ids)] == self.prompt_ids
        logits = _naive_prompt_logits(self.model, self.prompt_ids, seq[len(self.prompt_ids) :])
        return SimpleNamespace(logits=logits[None])


# ----------------------------------------------------------------------------- training


def test_training_leaves_the_large_model_bit_identical(model):
    before = {k: v.clone() for k, v in model.large.state_dict().items()}
    small_before = {k: v.clone() for k, v in model.small.state_dict().items()}
    projector_before = model.projector[2].weight.clone()
    losses = train_llm_to_slm(model, PAIRS, BUDGET, progress=False)
    assert len(losses) == BUDGET.steps and all(loss > 0 for loss in losses)
    after = model.large.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in model.large.parameters())
    assert not model.large.training
    assert not torch.equal(projector_before, model.projector[2].weight)
    assert any(not torch.equal(v, model.small.state_dict()[k]) for k, v in small_before.items())


def test_loss_covers_response_tokens_only(model, tiny_tokenizer):
    data = encode_pairs(PAIRS[:3], tiny_tokenizer, tiny_tokenizer)
    p_ids, p_mask, r_ids, r_mask = data.collate([0, 1, 2])
    assert (p_mask[:, 0] == 0).any() or (p_mask == 1).all()  # prompts are left padded
    assert all(ids[-1] == tiny_tokenizer.eos_token_id for ids in data.responses)
    labels = response_labels(p_ids.shape[1], r_ids, r_mask)
    assert (labels[:, : p_ids.shape[1]] == -100).all()
    assert torch.equal(labels[:, p_ids.shape[1] :] != -100, r_mask.bool())
    # the loss is the mean cross entropy over response positions, computed by hand
    loss = model(p_ids, p_mask, r_ids, r_mask)
    with torch.no_grad():
        prompt = model.prompt_embeddings(p_ids, p_mask)
        embeds = torch.cat([prompt, model.small.get_input_embeddings()(r_ids)], 1)
        mask = torch.cat([p_mask, r_mask], 1)
        logits = model.small(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        ).logits
    width, terms = p_ids.shape[1], []
    for row in range(len(r_ids)):
        for j in range(int(r_mask[row].sum())):  # response token j sits at column width + j
            target = r_ids[row, j]
            terms.append(-torch.log_softmax(logits[row, width + j - 1].float(), -1)[target])
    assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-6)
    # what the response padding holds, and what the prompt would predict, make no difference
    noisy = r_ids.masked_fill(r_mask == 0, 7)
    assert torch.allclose(model(p_ids, p_mask, noisy, r_mask), loss, atol=1e-9)
    plain = small_response_loss(model.small, p_ids, p_mask, r_ids, r_mask)
    assert torch.allclose(small_response_loss(model.small, p_ids, p_mask, noisy, r_mask), plain)


def test_fine_tuned_baseline_trains_the_small_model_alone(pair, tiny_tokenizer):
    _, small = pair
    before = {k: v.clone() for k, v in small.state_dict().items()}
    losses = fine_tune_small(small, tiny_tokenizer, PAIRS, BUDGET, progress=False)
    assert len(losses) == BUDGET.steps
    assert any(not torch.equal(v, small.state_dict()[k]) for k, v in before.items())
    again = _neox(tiny_tokenizer, 16, 1, seed=2)
    assert fine_tune_small(again, tiny_tokenizer, PAIRS, BUDGET, progress=False) == losses


def test_save_and_load_give_identical_outputs(model, tiny_tokenizer, tmp_path):
    train_llm_to_slm(model, PAIRS, BUDGET, progress=False)
    model.large.save_pretrained(tmp_path / "large")
    tiny_tokenizer.save_pretrained(tmp_path / "large")
    model.large_source = str(tmp_path / "large")
    model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "llm_to_slm.json").read_text())
    assert config["large"] == str(tmp_path / "large") and config["fusion"] == "add"
    assert not list((tmp_path / "ckpt").glob("large*"))  # the large model is not copied
    loaded = LLMToSLM.from_pretrained(tmp_path / "ckpt", dtype="float32")
    model.float()
    run = {"max_new_tokens": 8, "batch_size": 2}
    assert (
        decode_llm_to_slm(loaded, LLM_PROMPTS, **run).tokens
        == decode_llm_to_slm(model, LLM_PROMPTS, **run).tokens
    )
    p_ids, p_mask, r_ids, r_mask = encode_pairs(PAIRS[:2], tiny_tokenizer, tiny_tokenizer).collate(
        [0, 1]
    )
    assert torch.equal(loaded(p_ids, p_mask, r_ids, r_mask), model(p_ids, p_mask, r_ids, r_mask))


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
def test_batched_cached_generation_matches_naive_reference(model, do_sample):
    stop = ["\nQuestion:"]
    run = {"max_new_tokens": 10, "batch_size": 3, "do_sample": do_sample, "seed": 4, "stop": stop}
    fast = decode_llm_to_slm(model, LLM_PROMPTS, **run)
    traced = decode_llm_to_slm(
        model, LLM_PROMPTS, trace=True, **run
    )  # the engine's token-level loop
    for i, prompt in enumerate(LLM_PROMPTS):
        ref = naive_generate(
            model, prompt, prompt_id=i, max_new_tokens=10, do_sample=do_sample, seed=4, stop=stop
        )
        assert fast.tokens[i] == ref, f"prompt {i}"
        assert traced.tokens[i] == ref, f"prompt {i}"
    assert len(traced.trace) == sum(map(len, traced.tokens)) > 0
    assert fast.texts == traced.texts and fast.summary["encode_seconds"] > 0
    # the plain small model through the same loop equals collaborate's; conditioning changes it
    small = (model.small, model.small_tokenizer)
    plain = collaborate(*small[:1], model.small, small[1], LLM_PROMPTS, method="small", **run)
    assert generate(*small, LLM_PROMPTS, **run).tokens == plain.tokens != fast.tokens


def test_replace_fusion_ignores_the_small_prompt_embedding(pair, tiny_tokenizer):
    large, small = pair
    model = randomize_projector(
        LLMToSLM(large, small, tiny_tokenizer, tiny_tokenizer, fusion="replace")
    )
    ids = torch.tensor([[5, 9, 14]])
    fused = model.prompt_embeddings(ids, torch.ones_like(ids))
    with torch.no_grad():
        small.get_input_embeddings().weight.add_(1.0)
    assert torch.equal(fused, model.prompt_embeddings(ids, torch.ones_like(ids)))
    fast = decode_llm_to_slm(model, LLM_PROMPTS[:3], max_new_tokens=6, batch_size=2)
    for i, prompt in enumerate(LLM_PROMPTS[:3]):
        assert fast.tokens[i] == naive_generate(model, prompt, prompt_id=i, max_new_tokens=6)


def test_different_tokenizers_align_prompt_positions(tiny_tokenizer, other_tokenizer):
    large = _neox(tiny_tokenizer, 32, 2, seed=1)
    small = _neox(other_tokenizer, 16, 1, seed=2)
    model = LLMToSLM(large, small, tiny_tokenizer, other_tokenizer, large_source="large")
    assert not model.shared_vocab
    assert model.prompt_embedding.weight.shape == (len(tiny_tokenizer), 16)
    # prompts in the large tokenization, responses in the small one
    data = encode_pairs(PAIRS[:2], model.large_tokenizer, model.small_tokenizer)
    assert data.prompts[0] == tiny_tokenizer(PAIRS[0].prompt, add_special_tokens=False)["input_ids"]
    assert data.responses[0][:-1] == other_tokenizer(PAIRS[0].response)["input_ids"]
    assert data.prompts[0] != other_tokenizer(PAIRS[0].prompt)["input_ids"]
    # the small model's prompt columns are exactly the large model's
    batch = Batch.from_prompts(tiny_tokenizer, LLM_PROMPTS[:2], "cpu")
    wrapper = ConditionedSmall(model)
    wrapper.condition_on_prompts(batch)
    assert (
        wrapper.prompt.shape[:2]
        == batch.seq.shape
        == model.encode(batch.seq, batch.mask, batch.pos).shape[:2]
    )
    train_llm_to_slm(model, PAIRS, BUDGET, progress=False)
    assert model.prompt_embedding.weight.abs().sum() > 0  # trained, from zeros
    fast = decode_llm_to_slm(model, LLM_PROMPTS, max_new_tokens=8, batch_size=2)
    for i, prompt in enumerate(LLM_PROMPTS):
        assert fast.tokens[i] == naive_generate(model, prompt, prompt_id=i, max_new_tokens=8)
    # texts are decoded in the small vocabulary, special tokens kept, cut before a stop id
    end_ids = _end_ids(other_tokenizer, [small], None)
    for tokens, text in zip(fast.tokens, fast.texts, strict=True):
        shown = tokens[:-1] if tokens[-1] in end_ids else tokens
        assert text == other_tokenizer.decode(shown, skip_special_tokens=False)


def test_bad_inputs_name_the_value(pair, tiny_tokenizer, model):
    large, small = pair
    with pytest.raises(ValueError, match="'concat'"):
        LLMToSLM(large, small, tiny_tokenizer, tiny_tokenizer, fusion="concat")
    with pytest.raises(ValueError, match="got 7"):
        LLMToSLM(large, small, tiny_tokenizer, tiny_tokenizer, layer=7)
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="lr must be > 0, got -1"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1, got 0"):
        decode_llm_to_slm(model, LLM_PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        training_pairs("synthetic", 0)
    with pytest.raises(ValueError, match="'mt_bench' has no train split"):
        training_pairs("mt_bench", 3)
    with pytest.raises(ValueError, match="before condition_on_prompts"):
        ConditionedSmall(model)(torch.tensor([[1, 2]]))
    wrapper = ConditionedSmall(model)
    wrapper.condition_on_prompts(Batch.from_prompts(tiny_tokenizer, LLM_PROMPTS[:2], "cpu"))
    with pytest.raises(ValueError, match="3 rows"):
        wrapper(torch.tensor([[1], [2], [3]]))
    # a right-padded tokenizer is used as shipped (the engine pads itself), never changed
    right = copy.deepcopy(tiny_tokenizer)
    right.padding_side = "right"
    built = LLMToSLM(large, small, right, right)
    assert built.large_tokenizer is right and built.small_tokenizer is right
    assert right.padding_side == "right"
    run = {"max_new_tokens": 6, "batch_size": 3}
    assert decode_llm_to_slm(randomize_projector(built), LLM_PROMPTS, **run).tokens == [
        naive_generate(built, prompt, prompt_id=i, max_new_tokens=6)
        for i, prompt in enumerate(LLM_PROMPTS)
    ]
    assert right.padding_side == "right"


def test_training_pairs_use_the_ladder_format():
    pairs = training_pairs("synthetic", 5, seed=2)
    problems = generate_problems(5, split="train", seed=2)
    for pair, problem in zip(pairs, problems, strict=True):
        assert pair.prompt + pair.response == plain_document(problem)
        assert pair.prompt.endswith("\nAnswer:") and pair.response.startswith(" ")
    formulas = training_pairs("expression", 5, seed=2)
    for pair, problem in zip(formulas, problems, strict=True):
        assert pair.prompt + pair.response == expression_document(problem)
    mixed = mixed_training_pairs(["synthetic", "expression"], 5, seed=2)
    assert mixed[0::2] == pairs and mixed[1::2] == formulas  # interleaved, one of each in turn
    assert mixed_training_pairs("synthetic", 5, seed=2) == pairs
    with pytest.raises(ValueError, match=r"tasks must be one or more names .* got \[\]"):
        mixed_training_pairs([], 5)


# ----------------------------------------------------------------------------- System 1


@pytest.mark.parametrize(
    ("method", "router", "threshold"),
    [("oracle", "always", None), ("oracle", "threshold", 0.5), ("speculative", "always", None)],
)
def test_conditioned_small_as_system1_matches_naive_reference(model, method, router, threshold):
    tokenizer, large = model.small_tokenizer, model.large
    system1 = ConditionedSmall(model)
    run = {"method": method, "router": router, "threshold": threshold}
    run |= {"max_new_tokens": 10, "num_draft": 3}
    fast = collaborate(system1, large, tokenizer, LLM_PROMPTS, batch_size=2, **run)
    for i, prompt in enumerate(LLM_PROMPTS):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ref = naive_collaborate(
            NaiveConditioned(model, prompt_ids), large, tokenizer, prompt, prompt_id=i, **run
        )
        assert fast.tokens[i] == ref["tokens"], f"prompt {i}"
        rows = fast.trace[fast.trace.prompt_id == i]
        assert rows["source"].tolist() == ref["sources"], f"prompt {i}"
        assert int(rows["mismatch"].sum()) == ref["mismatches"], f"prompt {i}"
    plain = collaborate(model.small, large, tokenizer, LLM_PROMPTS, batch_size=2, **run)
    assert plain.trace["small_top1_prob"].tolist() != fast.trace["small_top1_prob"].tolist()


# ----------------------------------------------------------------------------- T5 encoder


def test_t5_encoder_variant(tiny_tokenizer, tmp_path):
    torch.set_num_threads(1)
    config = T5Config(
        vocab_size=len(tiny_tokenizer),
        d_model=24,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=3,
        pad_token_id=tiny_tokenizer.pad_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
        decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(tmp_path / "t5")
    shipped = copy.deepcopy(tiny_tokenizer)
    shipped.padding_side = "right"  # load_large leaves the tokenizer as it is shipped
    shipped.save_pretrained(tmp_path / "t5")
    large, large_tokenizer = load_large(tmp_path / "t5")
    assert isinstance(large, T5EncoderModel) and large_tokenizer.padding_side == "right"
    assert large_tokenizer.pad_token == tiny_tokenizer.pad_token
    small = _neox(tiny_tokenizer, 16, 1, seed=2).float()
    model = LLMToSLM(
        large, small, large_tokenizer, tiny_tokenizer, large_source=str(tmp_path / "t5"), layer=1
    )
    assert model.encoder_decoder and model.shared_vocab
    assert model.projector[0].in_features == 24 and model.projector[2].out_features == 16
    before = {k: v.clone() for k, v in large.state_dict().items()}
    train_llm_to_slm(model, PAIRS, BUDGET, progress=False)
    assert all(torch.equal(before[k], v) for k, v in large.state_dict().items())
    fast = decode_llm_to_slm(model, LLM_PROMPTS, max_new_tokens=8, batch_size=3)
    for i, prompt in enumerate(LLM_PROMPTS):
        assert fast.tokens[i] == naive_generate(model, prompt, prompt_id=i, max_new_tokens=8)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = LLMToSLM.from_pretrained(tmp_path / "ckpt")
    assert isinstance(loaded.large, T5EncoderModel) and loaded.layer == 1
    assert (
        decode_llm_to_slm(loaded, LLM_PROMPTS, max_new_tokens=8, batch_size=3).tokens == fast.tokens
    )


# ----------------------------------------------------------------------------- the stage


def test_stage_pair_comes_from_params(tmp_path, monkeypatch):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.setenv("FSGEN_ROOT", str(tmp_path))

    config = stage_config("llm_to_slm", "params.yaml", {})
    assert config.profile == "embedded"
    profile = load_profile(config.profile)
    pair = stage_pair(profile, **config.pair().model_dump())
    assert (pair["large"], pair["small"]) == ("e5", "e0")
    assert pair["large_source"] == "data/models/embedded/e5"
    assert stage_pair(profile, "e5", "e1")["small_source"] == "data/models/embedded/e1"
    hub = load_profile("pythia")
    pythia = config.pairs["pythia"]
    assert "t5" in stage_pair(hub, pythia.large, pythia.small)["large_source"].lower()
    with pytest.raises(ValueError, match="no small model"):
        stage_pair(profile, "e5", "")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_notebook_05_runs_with_tiny_parameters(tmp_path, monkeypatch):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.setenv("FSGEN_ROOT", str(tmp_path))
    build_ladder(load_profile("tiny"), TINY, progress=False)
    run_notebook("05_llm_to_slm.ipynb", tmp_path)
    metrics = json.loads((tmp_path / "scratch/metrics/llm_to_slm.json").read_text())
    timing = json.loads((tmp_path / "scratch/metrics/llm_to_slm_timing.json").read_text())
    for task in ("synthetic", "expression"):  # the notebook's tiny tasks
        for system in ("large", "small", "fine_tuned_small", "llm_to_slm"):
            assert 0 <= metrics[f"{task}.{system}.accuracy"] <= 1
        for system in ("small", "fine_tuned_small", "llm_to_slm"):
            assert 0 <= metrics[f"{task}.{system}.collaboration_frequency"] <= 1
        assert f"{task}.gap_closed" in metrics and f"{task}.llm_to_slm.relative_quality" in metrics
        for batch in (1, 8):
            assert timing[f"{task}.llm_to_slm.batch{batch}.speedup_vs_large"] > 0
            assert timing[f"{task}.llm_to_slm.batch{batch}.encode_seconds"] > 0
    assert not any("seconds" in key or "speedup" in key for key in metrics)
    results = tmp_path / "scratch/results/llm_to_slm"
    assert (results / "results.csv").exists() and (results / "quality.csv").exists()
    assert (results / "accuracy_vs_time.png").stat().st_size > 0
    assert (results / "accuracy_vs_time.svg").stat().st_size > 0
    assert (tmp_path / "scratch/llm_to_slm/llm_to_slm/llm_to_slm.json").exists()
    assert (tmp_path / "scratch/llm_to_slm/fine_tuned_small/config.json").exists()
