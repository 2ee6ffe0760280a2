"""Token logging on a tiny trained ladder: coverage of units, resume after a crash, sharding."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from fsgen.analysis.summary import summarize_logs
from fsgen.analysis.units import plan_units
from fsgen.core.shards import merge_logs
from fsgen.engine.methods import METHODS, logging_methods
from fsgen.models.profiles import load_profile, read_params
from fsgen.stages.token_logging import log_tokens
from tests.conftest import REPO, RUN


def test_units_cover_every_pair():
    profile = load_profile("tiny")  # t0, t1 (tuned) and t2
    units = plan_units(profile, ["synthetic"], ["alone", "oracle", "contrastive", "proxy"], 1)
    keys = {(u.method, u.large, u.small) for u in units}
    assert ("oracle", "t0", "") not in keys and ("oracle", "t2", "") in keys
    assert {
        ("contrastive", "t2", "t0"),
        ("contrastive", "t2", "t1"),
        ("contrastive", "t1", "t0"),
    } <= keys
    assert ("proxy", "t2", "t0") in keys and ("proxy", "t1", "t0") in keys
    assert len([k for k in keys if k[0] == "alone"]) == 3
    with pytest.raises(ValueError, match=r"unknown logging methods \['beam'\]"):
        plan_units(profile, ["synthetic"], ["beam"], 1)


def test_resume_after_a_crash_gives_identical_outputs(tiny_ladder, tmp_path, monkeypatch):
    profile, root = tiny_ladder
    monkeypatch.setenv("FSGEN_ROOT", str(root))
    first = log_tokens(profile, tmp_path / "full", **RUN)
    traces, generations = merge_logs(tmp_path / "full")
    assert first["skipped"] == 0 and first["run"] == first["units"]
    logged = {"alone", "oracle", "contrastive", "contrastive_obrien", "speculative", "proxy"}
    assert set(generations["method"]) == logged == set(logging_methods("all"))
    assert sorted(generations[generations.method == "alone"]["prompt_id"].unique()) == list(
        range(5)
    )
    assert len(traces) == (generations["tokens"]).sum()
    # a crash: the last unit's generations shard never got written, another unit never ran
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "full", crashed)
    keys = sorted(p.stem for p in (crashed / "generations").glob("*.parquet"))
    (crashed / "generations" / f"{keys[-1]}.parquet").unlink()
    (crashed / "generations" / f"{keys[0]}.parquet").unlink()
    (crashed / "traces" / f"{keys[0]}.parquet").unlink()
    resumed = log_tokens(profile, crashed, **RUN)
    assert resumed["run"] == 2 and resumed["skipped"] == first["units"] - 2
    again_traces, again_generations = merge_logs(crashed)
    assert again_traces.equals(traces) and again_generations.equals(generations)
    for folder in ("traces", "generations"):
        for path in (tmp_path / "full" / folder).iterdir():
            assert (crashed / folder / path.name).read_bytes() == path.read_bytes()


def test_workers_write_the_same_bytes(tiny_ladder, tmp_path, monkeypatch):
    profile, root = tiny_ladder
    monkeypatch.setenv("FSGEN_ROOT", str(root))
    run = RUN | {"methods": ["alone", "oracle", "proxy"], "threads": 1}
    one = log_tokens(profile, tmp_path / "one", **run)
    two = log_tokens(profile, tmp_path / "two", workers=2, **run)
    assert {k: one[k] for k in ("units", "run", "skipped")} == {
        k: two[k] for k in ("units", "run", "skipped")
    }
    _assert_same_shards(tmp_path / "one", tmp_path / "two")


def test_oracle_and_each_rung_alone_run_on_more_prompts(tiny_ladder, tmp_path, monkeypatch):
    profile, root = tiny_ladder
    monkeypatch.setenv("FSGEN_ROOT", str(root))
    run = RUN | {"n_prompts": 2, "chunk_size": 2}
    log_tokens(
        profile, tmp_path / "l", methods=["alone", "oracle", "contrastive"], ladder_prompts=5, **run
    )
    generations = merge_logs(tmp_path / "l")[1]
    prompts = generations.groupby("method")["prompt_id"].agg(lambda ids: sorted(set(ids)))
    assert prompts["alone"] == prompts["oracle"] == list(range(5))
    assert prompts["contrastive"] == [0, 1]  # the first of the same selection
    same = generations[generations.prompt_id < 2].groupby("method")["example_id"].agg(sorted)
    assert same["alone"] == same["contrastive"]
    with pytest.raises(ValueError, match=r"ladder_prompts \(1\) must be at least n_prompts \(2\)"):
        log_tokens(profile, tmp_path / "bad", ladder_prompts=1, **run)


def test_a_profile_s_draft_length_reaches_speculative_units_only(
    tiny_ladder, tmp_path, monkeypatch
):
    """`num_draft` of a profile: speculative decoding drafts that many tokens a round (at most
    one draft before each token the large model chose), and the other methods run as before."""
    profile, root = tiny_ladder
    monkeypatch.setenv("FSGEN_ROOT", str(root))
    run = RUN | {"n_prompts": 2, "chunk_size": 2}
    methods = ["alone", "oracle", "contrastive", "speculative"]
    log_tokens(dataclasses.replace(profile, num_draft=1), tmp_path / "l", methods=methods, **run)
    traces, generations = merge_logs(tmp_path / "l")
    assert set(generations["method"]) == set(methods)
    speculative = traces[traces["method"] == "speculative"]
    for _, rows in speculative.groupby(["large", "small", "prompt_id"]):
        drafted = (rows.sort_values("step")["source"] == "draft").astype(int).tolist()
        runs = "".join(map(str, drafted)).split("0")
        assert max(len(r) for r in runs) <= 1


def test_changed_settings_keep_finished_shards(tiny_ladder, tmp_path, monkeypatch):
    profile, root = tiny_ladder
    monkeypatch.setenv("FSGEN_ROOT", str(root))
    run = RUN | {"methods": ["alone"]}
    first = log_tokens(profile, tmp_path / "x", **run)
    assert log_tokens(profile, tmp_path / "x", **run)["skipped"] == first["units"]  # resume
    changed = log_tokens(profile, tmp_path / "x", **(run | {"max_new_tokens": 4}))
    assert changed["skipped"] == 0
    assert merge_logs(tmp_path / "x")[1]["tokens"].max() <= 4
    back = log_tokens(profile, tmp_path / "x", **run)  # the first run's shards were kept
    assert back["skipped"] == first["units"]
    assert merge_logs(tmp_path / "x")[1]["tokens"].max() > 4
    fewer = log_tokens(profile, tmp_path / "x", **(run | {"n_prompts": 3}))  # one full chunk
    assert fewer["run"] == 0 and set(merge_logs(tmp_path / "x")[1]["prompt_id"]) == {0, 1, 2}
    more_methods = log_tokens(profile, tmp_path / "x", **(RUN | {"methods": ["alone", "oracle"]}))
    assert more_methods["skipped"] == first["units"]
    dropped = log_tokens(profile, tmp_path / "x", **run)  # oracle dropped, its shards kept
    assert dropped["run"] == 0 and set(merge_logs(tmp_path / "x")[1]["method"]) == {"alone"}
    assert any("+oracle+" in p.name for p in (tmp_path / "x" / "generations").iterdir())
    reseeded = log_tokens(profile, tmp_path / "x", **(run | {"seed": 1}))  # run-wide: afresh
    assert reseeded["skipped"] == 0
    assert not any("+oracle+" in p.name for p in (tmp_path / "x" / "generations").iterdir())


def test_a_foreign_folder_is_refused_and_untouched(tiny_ladder, tmp_path, monkeypatch):
    profile, root = tiny_ladder
    monkeypatch.setenv("FSGEN_ROOT", str(root))
    data = tmp_path / "data"
    for name in ("models/e0/model.safetensors", "paper/fig1.png", "logs/old.parquet"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(name.encode())
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=f"{data} is not empty and fsgen did not make it"):
        log_tokens(profile, data, **RUN)
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


_KILLED_RUN = """
import os, signal, sys
from fsgen.core.shards import ShardStore
from fsgen.models.profiles import load_profile
from fsgen.stages.token_logging import log_tokens
import torch

torch.set_num_threads(int(sys.argv[4]))  # the test's own: float sums depend on the thread count
writes, write = [0], ShardStore.write
def write_then_die(self, key, frame, run=""):
    writes[0] += 1
    if writes[0] == int(sys.argv[2]):  # SIGKILL between a unit's trace and generations shards
        os.kill(os.getpid(), signal.SIGKILL)
    return write(self, key, frame, run)
ShardStore.write = write_then_die
log_tokens(load_profile("tiny"), sys.argv[1], **eval(sys.argv[3]))
"""


def test_a_killed_run_resumes_to_identical_bytes(tiny_ladder, tmp_path, monkeypatch):
    profile, root = tiny_ladder
    monkeypatch.setenv("FSGEN_ROOT", str(root))
    run = RUN | {"methods": ["alone", "oracle"]}
    whole = log_tokens(profile, tmp_path / "whole", **run)
    threads = str(torch.get_num_threads())
    env = {**os.environ, "FSGEN_ROOT": str(root), "OMP_NUM_THREADS": threads}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(tmp_path / "killed"), "5", repr(run), threads],
        env=env,
        cwd=REPO,
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    resumed = log_tokens(profile, tmp_path / "killed", **run)
    assert resumed["skipped"] == 2 and resumed["run"] == whole["units"] - 2
    _assert_same_shards(tmp_path / "whole", tmp_path / "killed")


def _assert_same_shards(expected, actual):
    """Both log folders hold the same trace and generation shards, byte for byte."""
    for folder in ("traces", "generations"):
        names = sorted(p.name for p in (expected / folder).iterdir())
        assert names == sorted(p.name for p in (actual / folder).iterdir())
        for name in names:
            wanted = (expected / folder / name).read_bytes()
            assert (actual / folder / name).read_bytes() == wanted, name


def test_summary_table(tiny_ladder, tmp_path, monkeypatch):
    profile, root = tiny_ladder
    monkeypatch.setenv("FSGEN_ROOT", str(root))
    log_tokens(profile, tmp_path / "s", **(RUN | {"methods": ["oracle", "proxy"]}))
    table = summarize_logs(*merge_logs(tmp_path / "s"))
    oracle = table[table.method == "oracle"]
    assert set(zip(oracle.large, oracle.small, strict=True)) == {
        ("t1", "t0"),
        ("t2", "t0"),
        ("t2", "t1"),
    }
    assert ((table.collaboration_frequency >= 0) & (table.collaboration_frequency <= 1)).all()
    assert (table.prompts == 5).all() and table.accuracy.between(0, 1).all()
    assert (table[table.method == "oracle"].collaboration_frequency_vs_base == 0).all()
    for name in ("collaboration_frequency", "accuracy"):
        inside = table[f"{name}_low"].le(table[name]) & table[name].le(table[f"{name}_high"])
        assert inside.all(), table[[name, f"{name}_low", f"{name}_high"]]
    again = summarize_logs(*merge_logs(tmp_path / "s"))
    pd.testing.assert_frame_equal(table, again)  # the bootstrap is seeded


def test_logging_methods_read_params_yaml_and_strings():
    """The value `dvc repro` passes (params.yaml's) and the notebook's own parse agree."""

    everything = ["alone", *(name for name, m in METHODS.items() if m.pairs)]
    assert logging_methods(read_params()["token_logging"]["methods"]) == everything
    assert logging_methods("all") == everything
    assert logging_methods(" alone, oracle ") == ["alone", "oracle"]
    assert logging_methods(["oracle"]) == ["oracle"]
    with pytest.raises(ValueError, match=r"unknown logging methods \['beam'\]"):
        logging_methods("alone,beam")
