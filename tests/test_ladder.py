import copy

import pytest
import torch
import yaml

from fsgen.data.synthetic import generate_problems, plain_document
from fsgen.models.profiles import (
    ModelUnavailableError,
    count_parameters,
    load_model,
    load_profile,
    read_params,
)
from fsgen.models.train import build_model, heldout_loss


def test_repository_profiles_parse():
    embedded = load_profile("embedded")
    assert embedded.kind == "embedded" and len(embedded.rungs) >= 4
    assert embedded.rungs[0].model == f"{embedded.models_dir}/{embedded.rungs[0].name}"
    assert embedded.rungs[0].tuned.endswith("-chat") and embedded.rungs[-1].tuned is None
    pythia = load_profile("pythia")
    assert [r.model for r in pythia.rungs][:2] == [
        "EleutherAI/pythia-70m",
        "EleutherAI/pythia-160m",
    ]
    qwen = load_profile("qwen1.5")
    assert qwen.rungs[0].tuned == "Qwen/Qwen1.5-0.5B-Chat"
    assert all(r.revision == "main" for r in qwen.rungs)
    assert load_profile().name == read_params()["profile"]


def test_unknown_profile_and_rung_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown profile 'gpt5'.*embedded"):
        load_profile("gpt5")
    with pytest.raises(ValueError, match=r"unknown rung 'e99'.*e0"):
        load_profile("embedded").rung("e99")


def test_bad_profile_entries(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "profiles": {
                    "p": {
                        "kind": "hub",
                        "rungs": [
                            {"name": "a", "model": "x/a"},
                            {"name": "b", "model": "x/b", "dtype": "int4"},
                        ],
                    }
                }
            }
        )
    )
    with pytest.raises(ValueError, match=r"rung 'b': unknown keys \['dtype'\]"):
        load_profile("p", params)
    params.write_text(
        yaml.safe_dump(
            {
                "profiles": {
                    "p": {
                        "kind": "hub",
                        "dtype": "fp8",
                        "rungs": [{"name": "a", "model": "x/a"}, {"name": "b", "model": "x/b"}],
                    }
                }
            }
        )
    )
    with pytest.raises(ValueError, match="dtype must be one of .* got 'fp8'"):
        load_profile("p", params)


def _save_tiny(tokenizer, folder, hidden=16, layers=1):
    arch = {"hidden_size": hidden, "num_layers": layers, "num_heads": 2}
    model = build_model(arch, len(tokenizer), tokenizer, 128, seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def test_loader_on_a_saved_tiny_model(tiny_tokenizer, tmp_path):
    saved = _save_tiny(tiny_tokenizer, tmp_path / "m")
    model, tokenizer = load_model(tmp_path / "m", dtype="float32", device="cpu")
    assert type(model).__name__ == "GPTNeoXForCausalLM"
    assert tokenizer.get_vocab() == tiny_tokenizer.get_vocab()
    shipped = copy.deepcopy(tiny_tokenizer)  # as most hub tokenizers ship: right, no pad token
    shipped.padding_side, shipped.pad_token = "right", None
    shipped.save_pretrained(tmp_path / "m")
    _, raw = load_model(tmp_path / "m", dtype="float32", device="cpu")
    assert raw.padding_side == "right" and raw.pad_token is None  # left as shipped
    for a, b in zip(saved.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    half, _ = load_model(tmp_path / "m", dtype="bfloat16", with_tokenizer=False)
    assert next(half.parameters()).dtype == torch.bfloat16


def test_parameter_counts(tiny_tokenizer):
    model = build_model(
        {"hidden_size": 16, "num_layers": 2, "num_heads": 2},
        len(tiny_tokenizer),
        tiny_tokenizer,
        128,
        seed=0,
    )
    counts = count_parameters(model)
    vocab = len(tiny_tokenizer)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] - counts["non_embedding"] == 2 * vocab * 16  # untied in and out


def test_same_seed_same_weights(tiny_tokenizer):
    arch = {"hidden_size": 16, "num_layers": 1, "num_heads": 2}
    a = build_model(arch, len(tiny_tokenizer), tiny_tokenizer, 64, seed=5)
    b = build_model(arch, len(tiny_tokenizer), tiny_tokenizer, 64, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_missing_hub_model_offline_names_the_embedded_profile():
    # a model the session's fake hub (conftest.FAKE_HUB_MODELS) never holds
    with pytest.raises(ModelUnavailableError, match="unreachable.*'embedded' profile"):
        load_model("EleutherAI/pythia-12b", revision="main")


def test_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model folder at"):
        load_model(tmp_path / "nothing" / "here")


def test_bad_dtype_or_device():
    with pytest.raises(ValueError, match="dtype must be one of .* got 'int3'"):
        load_model("x", dtype="int3")
    with pytest.raises(ValueError, match="device must be one of .* got 'tpu'"):
        load_model("x", device="tpu")


def test_heldout_loss_does_not_depend_on_padding(tiny_tokenizer):
    model = build_model(
        {"hidden_size": 16, "num_layers": 1, "num_heads": 2},
        len(tiny_tokenizer),
        tiny_tokenizer,
        512,
        seed=0,
    )
    docs = [plain_document(p) for p in generate_problems(6, levels=[1, 4], seed=2)]
    batched = heldout_loss(model, tiny_tokenizer, docs, batch_size=6)
    one_by_one = heldout_loss(model, tiny_tokenizer, docs, batch_size=1)
    assert abs(batched - one_by_one) < 1e-4
