import copy
import functools
import json

import pandas as pd
import pytest
import torch
import yaml

from fsgen.core.paths import resolve
from fsgen.data.synthetic import generate_problems, plain_document
from fsgen.models import ladder as ladder_module
from fsgen.models.ladder import RECORD, LadderConfig, remove_stale_models, train_ladder
from fsgen.models.loss_law import fit_loss_law, with_loss_law
from fsgen.models.profiles import (
    ModelUnavailableError,
    count_parameters,
    load_model,
    load_profile,
    read_params,
)
from fsgen.models.train import build_model, heldout_loss
from fsgen.stages.config import stage_config
from fsgen.stages.train_ladder import Paths, write_ladder_outputs
from tests.conftest import TINY

SMALL = TINY  # the tiny ladder of the token-logging tests


def test_every_profiles_models_are_in_the_stages_declared_output(tmp_path):
    """`dvc exp run -S profile=<name>` writes data/models/<name>, which dvc.yaml declares as
    data/models/${profile}; a stage refuses a profile that points its models elsewhere."""
    stages = yaml.safe_load(resolve("dvc.yaml").read_text())["stages"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stages["train_ladder"]["outs"]]
    assert "data/models/${profile}" in outs
    for name in read_params("params.yaml")["profiles"]:
        assert load_profile(name).models_dir == f"data/models/{name}"
    params = read_params("params.yaml") | {"profile": "tiny"}
    params["profiles"]["tiny"]["models_dir"] = "scratch/models/tiny"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"'tiny' sets models_dir 'scratch/models/tiny'"):
        stage_config("train_ladder", path, {})


def test_repository_profiles_parse():
    embedded = load_profile("embedded")
    assert embedded.kind == "embedded" and len(embedded.rungs) >= 6
    assert embedded.rungs[0].model == f"{embedded.models_dir}/{embedded.rungs[0].name}"
    assert all(r.tuned.endswith(f"{r.name}-chat") for r in embedded.rungs)  # the largest too
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


def _weights(folder):
    return {f.name: f.read_bytes() for f in sorted(folder.glob("*.safetensors"))}


def test_a_killed_ladder_resumes_without_retraining_to_identical_weights(tmp_path, monkeypatch):
    profile = load_profile("tiny")  # t0, t1 (tuned) and t2 (not tuned)
    whole, whole_curves = train_ladder(profile, SMALL, tmp_path / "whole", progress=False)
    trained, real = [], ladder_module.train_causal_lm

    def counted(*args, desc, crash_after=None, **kwargs):
        if len(trained) == crash_after:  # t0 and t0-chat are saved, t1 is mid-training
            raise KeyboardInterrupt("killed")
        trained.append(desc)
        return real(*args, desc=desc, **kwargs)

    monkeypatch.setattr(ladder_module, "train_causal_lm", functools.partial(counted, crash_after=2))
    with pytest.raises(KeyboardInterrupt):
        train_ladder(profile, SMALL, tmp_path / "resumed", progress=False)
    assert trained == ["t0", "t0-chat"]
    assert (tmp_path / "resumed/t0-chat" / RECORD).is_file()
    assert not (tmp_path / "resumed/t1").exists()  # nothing half-written under a rung's name

    trained.clear()
    monkeypatch.setattr(
        ladder_module,
        "train_causal_lm",
        lambda *a, desc, **k: [trained.append(desc)] and real(*a, desc=desc, **k),
    )
    ladder, curves = train_ladder(profile, SMALL, tmp_path / "resumed", progress=False)
    assert trained == ["t1", "t1-chat", "t2"]  # finished rungs are read back, not retrained
    for name in ("t0", "t0-chat", "t1", "t1-chat", "t2"):
        assert _weights(tmp_path / "resumed" / name) == _weights(tmp_path / "whole" / name)
    columns = [c for c in whole.columns if c != "train_seconds"]
    pd.testing.assert_frame_equal(ladder[columns], whole[columns])
    pd.testing.assert_frame_equal(curves, whole_curves)

    trained.clear()
    train_ladder(profile, SMALL, tmp_path / "resumed", progress=False)
    assert trained == []  # all done
    changed = LadderConfig(**{**vars(SMALL), "tune_steps": 3})
    train_ladder(profile, changed, tmp_path / "resumed", progress=False)
    assert trained == ["t0-chat", "t1-chat"]  # only what the change affects is retrained


def test_workers_train_the_same_weights(tmp_path):
    profile = load_profile("tiny")
    one, one_curves = train_ladder(profile, SMALL, tmp_path / "one", progress=False)
    parallel = LadderConfig(**{**vars(SMALL), "workers": 2})
    two, two_curves = train_ladder(profile, parallel, tmp_path / "two", progress=False)
    for name in ("t0", "t0-chat", "t1", "t1-chat", "t2"):
        assert _weights(tmp_path / "two" / name) == _weights(tmp_path / "one" / name)
        # the record holds no timings, so DVC sees the same folder from every run
        record = (tmp_path / "two" / name / RECORD).read_bytes()
        assert record == (tmp_path / "one" / name / RECORD).read_bytes()
    columns = [c for c in one.columns if c != "train_seconds"]
    pd.testing.assert_frame_equal(two[columns], one[columns])
    pd.testing.assert_frame_equal(two_curves, one_curves)
    assert (two["train_seconds"] > 0).all()
    trained = train_ladder(profile, SMALL, tmp_path / "two", progress=False)[0]  # workers=1
    assert trained["train_seconds"].isna().all()  # read back: not trained by this run


def test_a_folder_fsgen_did_not_write_is_refused_and_left_alone(tmp_path):
    foreign = tmp_path / "models/t0"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"models/t0 exists but was not written by fsgen"):
        train_ladder(load_profile("tiny"), SMALL, tmp_path / "models", progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_stale_models_removed_only_when_fsgen_wrote_them_for_this_profile(tmp_path):
    ours, foreign, kept = tmp_path / "old", tmp_path / "theirs", tmp_path / "t0"
    leftover, hidden = tmp_path / ".t0.abc123.tmp", tmp_path / ".cache"  # a killed save; not ours
    other, unnamed = tmp_path / "e3", tmp_path / "older"  # another profile's; a record naming none
    for folder in (ours, foreign, kept, leftover, hidden, other, unnamed):
        folder.mkdir()
    for folder, profile in ((ours, "tiny"), (kept, "tiny"), (other, "embedded")):
        (folder / RECORD).write_text(json.dumps({"profile": profile}))
    (unnamed / RECORD).write_text("{}")
    assert remove_stale_models(tmp_path, keep={"t0"}, profile="tiny") == [".t0.abc123.tmp", "old"]
    assert not ours.exists() and not leftover.exists()
    assert all(f.exists() for f in (foreign, kept, hidden, other, unnamed))


def test_loss_law_fit_recovers_a_known_curve():
    params = [39e3, 80e3, 166e3, 434e3, 924e3, 1976e3]
    losses = [0.2 + 0.5 * (n / params[0]) ** -0.4 for n in params]
    law = fit_loss_law(params, losses)
    assert law["E"] == pytest.approx(0.2, rel=1e-3) and law["A"] == pytest.approx(0.5, rel=1e-3)
    assert law["a"] == pytest.approx(0.4, rel=1e-3) and law["max_abs_residual"] < 1e-6
    ladder = pd.DataFrame(
        {
            "model": [f"m{i}" for i in range(6)] + ["m0-chat"],
            "variant": ["base"] * 6 + ["tuned"],
            "params": [*params, params[0]],
            "heldout_loss": [*losses[:5], losses[5] * 1.2, 0.9],  # the largest rung 20% off
        }
    )
    table, law = with_loss_law(ladder)
    assert table["loss_residual"].iloc[5] > 0.03 and pd.isna(table["loss_residual"].iloc[6])
    assert abs(table["loss_residual"].iloc[:5]).max() < table["loss_residual"].iloc[5]
    # one definition of a residual: the fit's largest is the table's largest
    assert law["max_abs_residual"] == pytest.approx(table["loss_residual"].abs().max(), rel=1e-9)
    with pytest.raises(ValueError, match="need >= 4"):
        fit_loss_law(params[:3], losses[:3])


def test_the_ladder_table_carries_the_loss_law(tmp_path):
    params = [39e3, 80e3, 166e3, 434e3, 924e3]
    losses = [0.2 + 0.5 * (n / params[0]) ** -0.4 for n in params]
    ladder = pd.DataFrame(
        {
            "model": [f"m{i}" for i in range(5)] + ["m0-chat"],
            "variant": ["base"] * 5 + ["tuned"],
            "params": [*params, params[0]],
            "heldout_loss": [*losses, 0.9],
            "train_seconds": [1.0] * 6,
        }
    )
    curves = pd.DataFrame(columns=["model", "step", "loss"])
    metrics, results = tmp_path / "m.json", tmp_path / "results"
    written = write_ladder_outputs(ladder, curves, Paths(metrics, tmp_path / "t.json", results))
    table = pd.read_csv(results / "ladder.csv")
    assert {"fitted_loss", "loss_residual"} <= set(table.columns)
    assert "train_seconds" not in table and "train_seconds" in written
    assert table["loss_residual"].iloc[:5].abs().max() < 1e-4
    assert pd.isna(table["loss_residual"].iloc[5]) and pd.isna(table["fitted_loss"].iloc[5])
    law = json.loads(metrics.read_text())
    assert law["loss_law.a"] == pytest.approx(0.4, rel=1e-3)
    assert law["m4.loss_residual"] == pytest.approx(written["loss_residual"].iloc[4])


def test_the_tiny_ladder_table_has_the_loss_law_columns_empty(tmp_path):
    ladder, curves = train_ladder(load_profile("tiny"), SMALL, tmp_path / "models", progress=False)
    metrics, results = tmp_path / "m.json", tmp_path / "results"
    write_ladder_outputs(ladder, curves, Paths(metrics, tmp_path / "t.json", results))
    table = pd.read_csv(results / "ladder.csv")
    assert {"fitted_loss", "loss_residual"} <= set(table.columns)  # 3 base rungs: nothing fitted
    assert table["loss_residual"].isna().all() and table["fitted_loss"].isna().all()
    assert not any(k.startswith("loss_law.") for k in json.loads(metrics.read_text()))
