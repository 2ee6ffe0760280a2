"""A stage a profile skips writes every output dvc.yaml declares for it, saying so, and the
findings read those outputs as missing figures."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fsgen.stages import accelerations, divergence, llm_to_slm, routers
from fsgen.stages.not_run import declared_outputs, empty_result, is_not_run, write_not_run
from fsgen.stages.report import render_results


@pytest.mark.parametrize("stage", ["llm_to_slm", "routers", "divergence", "accelerations"])
def test_a_skipped_stage_writes_every_declared_output(stage, tmp_path):
    paths = write_not_run(stage, "smollm2", root=tmp_path)
    assert paths == declared_outputs(stage, "smollm2", root=tmp_path) and paths
    for path in paths:
        assert path.exists(), path
        assert is_not_run(path) == (path.suffix in (".json", ".csv"))
        if path.suffix == ".json":
            assert json.loads(path.read_text()) == {"not_run": 1}
        elif path.suffix == ".csv":
            assert pd.read_csv(path).empty
        elif path.suffix in (".png", ".svg"):
            assert path.stat().st_size > 0
    assert not any("outputs/notebooks" in str(p) for p in paths)  # papermill writes that


def test_a_skipped_stages_result_is_empty():
    for module in (llm_to_slm, routers, divergence, accelerations):
        result = empty_result(module.Result)
        tables = [v for v in vars(result).values() if isinstance(v, pd.DataFrame)]
        assert tables and all(t.empty for t in tables)


def test_the_report_leaves_out_the_stages_a_profile_skipped(tmp_path):
    """`make real` renders the report over the smollm2 workspace, where four stages are not run."""
    for stage in ("llm_to_slm", "routers", "divergence", "accelerations"):
        write_not_run(stage, "smollm2", root=tmp_path)
    (tmp_path / "results/train_ladder").mkdir(parents=True)
    (tmp_path / "results/train_ladder/ladder.csv").write_text(
        "model,variant,params,heldout_loss,accuracy\nx0,base,123,0.5,0.25\n"
    )
    block = render_results(tmp_path)
    assert "| x0 | 123 |" in block and "LLM-to-SLM" not in block and "not_run" not in block
