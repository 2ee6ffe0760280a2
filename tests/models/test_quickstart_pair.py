"""The quick start's shipped pair: it loads, the large model is the better one, it collaborates
in the task's format, and its record matches the builder that should have made it."""

import re
from dataclasses import asdict

import pytest
import torch
from safetensors import safe_open

import fsgen
from fsgen.data.synthetic import generate_problems, plain_document
from fsgen.models.ladder import WALL_TIME_ONLY
from fsgen.models.profiles import read_params
from fsgen.models.quickstart_pair import (
    ASSETS,
    ROLES,
    QuickstartPairConfig,
    load_quickstart_pair,
    read_record,
)
from fsgen.models.train import heldout_loss
from fsgen.stages.quickstart import marked_texts, quickstart_models, quickstart_prompts

# the worked format: "<name> has <n> <things>. ... The answer is <n>."
WORKED = re.compile(r"^ ?[A-Z]\w* has \d+ \w+\..* The answer is \d+\.", re.DOTALL)


@pytest.fixture(scope="module")
def pair():
    return load_quickstart_pair()


def test_pair_loads_in_float32_from_float16_files(pair):
    small, large, tokenizer = pair
    for model in (small, large):
        assert not model.training
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert model.config.vocab_size == len(tokenizer)
    assert sum(p.numel() for p in large.parameters()) > 2 * sum(
        p.numel() for p in small.parameters()
    )
    for role in ROLES:
        with safe_open(ASSETS / role / "model.safetensors", framework="pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}


def test_large_model_has_the_lower_heldout_loss_on_fresh_problems(pair):
    small, large, tokenizer = pair
    fresh = generate_problems(40, split="test", seed=4242)  # not the record's held-out seed
    docs = [plain_document(p) for p in fresh]
    small_loss, large_loss = (
        heldout_loss(small, tokenizer, docs),
        heldout_loss(large, tokenizer, docs),
    )
    assert large_loss < small_loss - 0.02, (small_loss, large_loss)


def test_collaboration_on_the_quickstart_prompts_answers_in_the_worked_format(pair):
    small, large, tokenizer = pair
    result = fsgen.collaborate(
        small,
        large,
        tokenizer,
        quickstart_prompts(),
        method="oracle",
        router="threshold",
        threshold=0.5,
        max_new_tokens=160,
        stop=["\n\n"],
    )
    for text in result.texts:
        assert WORKED.match(text), text
    assert 0 < result.summary["large_calls"] < result.summary["tokens"]
    marked = marked_texts(result.trace)
    assert len(marked) == 3
    assert [m.replace("[", "").replace("]", "") for m in marked] == [
        "".join(g["token"]) for _, g in result.trace.groupby("prompt_id")
    ]


def test_record_matches_the_builder_settings():
    record = read_record()
    assert record["settings"] == asdict(QuickstartPairConfig()), (
        "stale quick-start assets: run `python -m fsgen.models.quickstart_pair`"
    )
    small, large = (record["models"][role] for role in ROLES)
    assert large["heldout_loss"] < small["heldout_loss"]
    assert small["shape"] == record["settings"]["small"]


def test_auto_loads_the_packaged_pair_without_a_ladder(tmp_path, monkeypatch):
    monkeypatch.setenv("FSGEN_ROOT", str(tmp_path))
    *_, description = quickstart_models("auto")
    assert description.startswith("packaged pair")
    with pytest.raises(ValueError, match="'random'"):
        quickstart_models("random")


def test_the_builder_trains_as_params_yaml_trains_the_ladder():
    params = read_params()
    config = asdict(QuickstartPairConfig())
    shared = {  # the settings that decide the weights (not how many processes train)
        k: v for k, v in params["train_ladder"].items() if k in config and k not in WALL_TIME_ONLY
    }
    assert shared == {k: config[k] for k in shared}, "QuickstartPairConfig differs from params.yaml"
    assert {"steps", "batch_size", "threads", "seed"} <= set(shared)
    rungs = {r["name"]: r for r in params["profiles"]["embedded"]["rungs"]}
    for role, rung in (("small", "e0"), ("large", "e2")):
        assert config[role] == {k: v for k, v in rungs[rung].items() if k != "name"}, role
