"""Notebooks: committed clean, parameters declared, and each one runs through papermill."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from fsgen.core.source import notebook_files
from fsgen.stages.config import SECTIONS, stage_config
from tests.conftest import (
    REPO,  # noqa: E402
    run_notebook,
)

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
UNTIMED = {
    f"notebooks/{name}.ipynb"
    for name in (
        "00_train_ladder",
        "01_token_logging",
        "05_llm_to_slm",
        "06_routers",
        "09_accelerations",
    )
}


def _dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _passed_parameters(cmd: str) -> tuple[str, dict[str, str]]:
    """The notebook a papermill command runs and the parameters it passes with -p / -y."""
    words = shlex.split(cmd)
    assert words[0] == "papermill", cmd
    assert words[words.index("-k") + 1] == "python3", "run papermill with -k python3"
    notebook = next(w for w in words if w.endswith(".ipynb"))
    # stages whose work grows with the ladder run untimed (hours on a hub profile); the others
    # keep a cell timeout
    timed = "--execution-timeout" in words
    assert timed != (notebook in UNTIMED), f"{notebook}: cell timeout only on the analysis stages"
    params = {}
    for i, word in enumerate(words):
        if word == "-p":
            params[words[i + 1]] = words[i + 2]
        elif word == "-y":
            params.update({k: str(v) for k, v in yaml.safe_load(words[i + 1]).items()})
    return notebook, params


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_holds_literals_only(path):
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for node in ast.parse(cell.source).body:
        assert isinstance(node, ast.Assign), ast.unparse(node)
        ast.literal_eval(node.value)  # raises on anything but a literal


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_fsgen_is_the_first_library_a_notebook_imports(path):
    """`import fsgen` pins the CPU kernels (fsgen.core.threads); numpy and torch read the pins
    when they load, so nothing but the standard library and IPython's display may load before
    it."""
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(
        re.sub(r"^(\s*)[%!].*", r"\1pass", line)  # IPython magics and shell lines
        for c in nb.cells
        if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])
        for line in c.source.splitlines()
    )
    imported = [
        (alias.name if isinstance(node, ast.Import) else node.module).split(".")[0]
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [None])
    ]
    libraries = [n for n in imported if n != "IPython" and n not in sys.stdlib_module_names]
    assert libraries and libraries[0] == "fsgen", f"{path.name} imports {libraries[:3]} first"


def test_every_parameter_dvc_passes_is_declared():
    stages = _dvc_stages()
    assert stages, "dvc.yaml has no stages"
    for name, stage in stages.items():
        notebook, passed = _passed_parameters(stage["cmd"])
        declared = pm.inspect_notebook(str(REPO / notebook))
        missing = sorted(set(passed) - set(declared))
        assert not missing, f"stage {name} passes {missing}, which {notebook} does not declare"
        assert notebook in stage["deps"], f"stage {name} must depend on {notebook}"
        executed = [w for w in shlex.split(stage["cmd"]) if w.endswith(".ipynb")][1]
        assert executed in stage["outs"], f"stage {name} must declare {executed} as an output"


def _notebook_section(notebook: str) -> tuple[str, dict]:
    """The params.yaml section a notebook reads (its `stage_config` call) and its tiny values."""

    cells = nbformat.read(REPO / notebook, as_version=4).cells
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    found = re.findall(r'fsgen\.stage_config\("(\w+)", params_file, tiny\)', code)
    assert len(found) == 1, f"{notebook} must call fsgen.stage_config once, found {found}"
    parameters = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
    tiny = next(
        ast.literal_eval(node.value)
        for node in ast.parse(parameters.source).body
        if node.targets[0].id == "tiny"
    )
    return found[0], tiny


def test_each_stage_reads_its_values_from_its_params_section():
    """A value is written once: params.yaml holds the real ones, the notebook its tiny ones, and
    dvc.yaml passes only the params file and paths. Both sets satisfy the section's schema."""

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in _dvc_stages().items():
        notebook, passed = _passed_parameters(stage["cmd"])
        section, tiny = _notebook_section(notebook)
        assert passed.get("params_file") == "params.yaml", f"stage {name} must pass params_file"
        assert section in stage["params"], f"stage {name} must declare params {section!r}"
        assert "${" not in stage["cmd"], f"stage {name} passes a value on its command line"
        assert set(passed) <= {"params_file"} | {k for k in passed if k.endswith(("_file", "_dir"))}
        real = stage_config(section, REPO / "params.yaml", {})
        small = stage_config(section, "", tiny)
        assert set(real.model_dump()) == set(small.model_dump())
        read = set(SECTIONS[section].reads)  # other sections' values, from their own homes
        assert read <= set(stage["params"]), f"stage {name} reads params {sorted(read)}"
        assert set(params[section]) | {"profile", "executor"} | read >= set(real.model_dump())
        assert not read & set(params[section]), f"{section} repeats values of {sorted(read)}"
        if "profile" in real.model_dump():
            assert "profile" in stage["params"], f"stage {name} reads params.yaml's profile"
            assert real.profile == params["profile"]
        if "executor" in real.model_dump():
            assert "executor" in stage["params"], f"stage {name} reads params.yaml's executor"
            assert real.executor.kind == params["executor"]["kind"]


def test_a_changed_params_value_reaches_the_stage(tmp_path):
    """What `dvc exp run -S token_logging.n_prompts=128 -S profile=tiny` does to params.yaml."""

    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    # the spellings params.yaml's comments give for `dvc exp run -S`, read by DVC's own parser
    apply_overrides(
        tmp_path / "params.yaml",
        [
            "profile=tiny",
            "token_logging.n_prompts=128",
            "routers.pairs=[[t2,t1],[t2,t0]]",
            "routers.target_call_rates=[0.05,0.1]",
        ],
    )
    config = stage_config("token_logging", tmp_path / "params.yaml", {})
    assert (config.profile, config.n_prompts) == ("tiny", 128)
    routers = stage_config("routers", tmp_path / "params.yaml", {})
    assert routers.pairs == [("t2", "t1"), ("t2", "t0")]
    assert routers.target_call_rates == [0.05, 0.1]


@pytest.mark.parametrize(
    "change, named",
    [
        ({"n_prompt": 3}, "n_prompt"),  # a misspelt key
        ({"n_prompts": "many"}, "n_prompts"),  # the wrong type
        ({"n_prompts": 2.5}, "n_prompts"),
    ],
)
def test_a_bad_params_value_names_the_file_and_the_key(tmp_path, change, named):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["token_logging"].update(change)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*token_logging.*{named}"):
        stage_config("token_logging", path, {})
    with pytest.raises(ValueError, match="section 'nope'|unknown stage section 'nope'"):
        stage_config("nope", path, {})


def test_stages_depend_on_every_fsgen_module_they_run():
    """A stage's notebook, and every fsgen module it reaches through imports, are stage deps
    (the package's `__init__` only re-exports, so it is left out), so that editing any code a
    stage runs reruns that stage."""
    for name, stage in _dvc_stages().items():
        notebook, _ = _passed_parameters(stage["cmd"])
        missing = [f for f in notebook_files(REPO / notebook) if f not in stage["deps"]]
        assert not missing, f"stage {name} runs {missing} but does not list them in its deps"


def test_dvc_accepts_the_pipeline():
    dvc = Path(sys.executable).with_name("dvc")
    done = subprocess.run([str(dvc), "dag"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or done.stdout


def test_executed_notebooks_have_their_own_paths():
    executed = [
        [w for w in shlex.split(s["cmd"]) if w.endswith(".ipynb")][1]
        for s in _dvc_stages().values()
    ]
    assert len(executed) == len(set(executed))


def test_dvc_config_turns_off_analytics_and_update_checks():
    config = (REPO / ".dvc" / "config").read_text()
    assert re.search(r"analytics\s*=\s*false", config)
    assert re.search(r"check_update\s*=\s*false", config)


@pytest.fixture()
def sandbox(tmp_path, monkeypatch):
    """A scratch repository root: notebooks write there, never into the checkout."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(REPO / "data" / "paper", tmp_path / "data" / "paper")
    monkeypatch.setenv("FSGEN_ROOT", str(tmp_path))
    return tmp_path


@pytest.mark.slow
@pytest.mark.timeout(360)  # the issues' budgets: 00 in under 2 minutes, the others in seconds
def test_pipeline_notebooks_run_with_tiny_parameters(sandbox):
    run_notebook("00_train_ladder.ipynb", sandbox)
    metrics = json.loads((sandbox / "scratch/metrics/train_ladder.json").read_text())
    for rung in ("t0", "t1", "t2"):
        for key in ("params", "non_embedding_params", "heldout_loss", "accuracy"):
            assert f"{rung}.{key}" in metrics
        assert (sandbox / "data/models/tiny" / rung / "config.json").exists()
    assert "t0-chat.accuracy" in metrics and "t2-chat.accuracy" not in metrics
    timing = json.loads((sandbox / "scratch/metrics/train_ladder_timing.json").read_text())
    assert set(timing) == {f"{m}.train_seconds" for m in ("t0", "t0-chat", "t1", "t1-chat", "t2")}
    results = sandbox / "scratch/results/train_ladder"
    for stem in ("loss_curves", "ladder"):
        assert (results / f"{stem}.png").stat().st_size > 0
        assert (results / f"{stem}.svg").stat().st_size > 0
    assert os.environ["FSGEN_ROOT"] == str(sandbox)

    run_notebook("01_token_logging.ipynb", sandbox)
    metrics = json.loads((sandbox / "scratch/metrics/token_logging.json").read_text())
    assert metrics["tokens"] > 0 and metrics["generations"] > 0
    for key in (
        "synthetic.alone.t2.accuracy",
        "synthetic.oracle.t2-t0.collaboration_frequency",
        "synthetic.proxy.t1-t0.collaboration_frequency",
        "synthetic.speculative.t2-t1.collaboration_frequency",
    ):
        assert key in metrics, key
    assert (sandbox / "scratch/results/token_logging/summary.csv").exists()
    assert list((sandbox / "scratch/logs/traces").glob("*.parquet"))

    run_notebook("02_frequency.ipynb", sandbox)
    metrics = json.loads((sandbox / "scratch/metrics/frequency.json").read_text())
    for key in (
        "synthetic.oracle.t2-t0.collaboration_frequency",
        "synthetic.oracle.t2-t1.accuracy",
        "synthetic.alone.t0.accuracy",
        "synthetic.oracle.share_under_20pct",
        "share_under_20pct",
        "synthetic.oracle.t2.cf_falls_with_small_rung",
    ):
        assert key in metrics, key
    frequency = sandbox / "scratch/results/frequency"
    assert len(pd.read_csv(frequency / "frequency.csv")) == 3 * 5  # 3 pairs x 5 methods
    for stem in ("frequency_heatmaps", "frequency_by_small", "accuracy"):
        assert (frequency / f"{stem}.svg").stat().st_size > 0

    run_notebook("03_scaling_law.ipynb", sandbox)
    metrics = json.loads((sandbox / "scratch/metrics/scaling_law.json").read_text())
    for key in (
        "a",
        "alpha",
        "b",
        "r2",
        "a_low",
        "b_high",
        "loo_rmse",
        "power_law.aic",
        "log_linear.aic",
        "log_sizes.aic",
    ):
        assert f"synthetic.oracle.{key}" in metrics, key
        assert f"paper.gsm8k.oracle.{key}" in metrics, key
    for stem in ("scaling_law", "paper_fits"):
        assert (sandbox / f"scratch/results/scaling_law/{stem}.png").stat().st_size > 0

    run_notebook("04_uncertainty.ipynb", sandbox)
    metrics = json.loads((sandbox / "scratch/metrics/uncertainty.json").read_text())
    for pair in ("t1-t0", "t2-t0", "t2-t1"):
        for key in ("mismatch_rate", "auroc.entropy", "auroc.top1_prob", "auroc.margin"):
            assert f"synthetic.oracle.{pair}.{key}" in metrics, (pair, key)
    for stem in ("position_heatmap", "signal_densities", "entropy_bins", "topk_example"):
        assert (sandbox / f"scratch/results/uncertainty/{stem}.png").stat().st_size > 0

    run_notebook("08_divergence.ipynb", sandbox)
    metrics = json.loads((sandbox / "scratch/metrics/divergence.json").read_text())
    for pair in ("t2-t0", "t2-t1", "all"):
        for key in ("mismatches", "neutral", "divergent", "tokens"):
            assert f"{pair}.{key}" in metrics, (pair, key)
    assert metrics["all.mismatches"] == metrics["all.neutral"] + metrics["all.divergent"]
    for name in ("pairs", "position", "early", "auroc", "mismatches"):
        assert (sandbox / f"scratch/results/divergence/{name}.csv").exists(), name
    assert (sandbox / "scratch/results/divergence/divergence.png").stat().st_size > 0

    run_notebook("06_routers.ipynb", sandbox)
    run_notebook("05_llm_to_slm.ipynb", sandbox)
    run_notebook("09_accelerations.ipynb", sandbox)
    metrics = json.loads((sandbox / "scratch/metrics/accelerations.json").read_text())
    systems = ("large", "small", "router", "speculative", "llm_to_slm_small", "llm_to_slm")
    for system in systems:
        assert 0 <= metrics[f"{system}.accuracy"] <= 1, system
    assert metrics["pair"] == "t2-t1" and metrics["llm_to_slm.pair"] == "t2-t0"
    timing = json.loads((sandbox / "scratch/metrics/accelerations_timing.json").read_text())
    assert {"batch1.front", "batch8.front", "speculative.draft_length"} <= set(timing)
    head_to_head = pd.read_csv(sandbox / "scratch/results/accelerations/head_to_head.csv")
    assert len(head_to_head) == 2 * len(systems) and head_to_head["on_front"].any()
    assert (sandbox / "scratch/results/accelerations/accuracy_vs_time.png").stat().st_size > 0

    run_notebook("07_findings.ipynb", sandbox)
    findings = pd.read_csv(sandbox / "scratch/results/findings/findings.csv")
    assert list(findings.columns[:8]) == [
        "id",
        "paper",
        "claim",
        "paper_figure",
        "ours",
        "low",
        "high",
        "verdict",
    ]
    assert set(findings.verdict) <= {"holds", "does not hold", "inconclusive"}
    by_id = findings.set_index("id")
    assert "nan" not in by_id.loc["llm_to_slm_speed", "detail"]  # stage 05 ran: its speed-ups
    assert "front at batch 1" in by_id.loc["accelerations_pareto", "detail"]
    assert 0 <= by_id.loc["divergent_share", "ours"] <= 1
    assert (sandbox / "scratch/results/findings/findings.png").stat().st_size > 0
    assert 0 <= by_id.loc["cf_under_20pct", "ours"] <= 1
    assert by_id.loc["uncertainty_auroc", "low"] <= by_id.loc["uncertainty_auroc", "ours"]
    metrics = json.loads((sandbox / "scratch/metrics/findings.json").read_text())
    assert metrics["cf_under_20pct.verdict"] == by_id.loc["cf_under_20pct", "verdict"]
    timing = json.loads((sandbox / "scratch/metrics/findings_timing.json").read_text())
    assert "llm_to_slm_speed.verdict" in timing and "llm_to_slm_speed.verdict" not in metrics
    assert "accelerations_pareto.verdict" in timing


@pytest.mark.parametrize(
    "executor, named",
    [("slurm", "executor kind must be one of"), ({"kind": "ray", "retry": 1}, "unknown executor")],
)
def test_a_bad_executor_names_the_file_and_the_key(tmp_path, executor, named):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["executor"] = executor
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*executor.*{named}"):
        stage_config("token_logging", path, {})
    del params["executor"]
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*executor"):
        stage_config("routers", path, {})
