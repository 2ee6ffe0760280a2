"""Faults: a failed stage rerun keeps the previous results (DVC `persist`, atomic writes)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fsgen.core.io import read_metrics, write_metrics
from tests.conftest import REPO

DVC = Path(sys.executable).with_name("dvc")


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _results(stage: dict):
    """The stage's committed results: its outputs kept out of the cache (metrics, tables, plots)."""
    for kind in ("outs", "metrics", "plots"):
        for entry in stage.get(kind, []):
            if isinstance(entry, dict):
                ((path, options),) = entry.items()
                if options.get("cache") is False:
                    yield path, options


def test_every_committed_result_survives_a_failed_rerun_in_dvc_yaml():
    """DVC deletes a stage's outputs before running it unless they persist; results committed
    to git (cache: false) must persist, and each stage rewrites them completely when it ends."""
    loose = [
        (name, path)
        for name, stage in _stages().items()
        for path, options in _results(stage)
        if not options.get("persist")
    ]
    assert not loose, f"outputs DVC would delete before a rerun: {loose}"


@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed next to this Python")
def test_a_failed_rerun_keeps_the_previous_results(tmp_path):
    """A stage with the real token_logging stage's outputs, whose command now fails: after
    `dvc repro` the previous metrics and tables are still there, byte for byte."""
    stage = _stages()["token_logging"]
    fake = {key: stage[key] for key in ("outs", "metrics", "plots") if key in stage}
    fake["cmd"] = "python -c 'import sys; sys.exit(3)'"
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"token_logging": fake}}))
    before = {}
    for path, _ in _results(stage):
        target = tmp_path / path
        if path.endswith(".json"):
            write_metrics(target, {"accuracy": 0.5})
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("previous results\n")
        before[path] = target.read_bytes()
    run = lambda *args: subprocess.run(  # noqa: E731
        [str(DVC), *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert run("init", "--no-scm").returncode == 0
    failed = run("repro", "token_logging")
    assert failed.returncode != 0, failed.stdout
    for path, data in before.items():
        assert (tmp_path / path).read_bytes() == data, path
    assert read_metrics(tmp_path / "metrics/token_logging.json") == {"accuracy": 0.5}
    shutil.rmtree(tmp_path / ".dvc")
