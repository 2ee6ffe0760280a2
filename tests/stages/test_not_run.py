"""A stage a profile skips writes every output dvc.yaml declares for it, saying so, and the
findings read those outputs as missing figures."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fsgen.stages import accelerations, divergence, llm_to_slm, routers
from fsgen.stages.not_run import declared_outputs, empty_result, write_not_run


@pytest.mark.parametrize("stage", ["llm_to_slm", "routers", "divergence", "accelerations"])
def test_a_skipped_stage_writes_every_declared_output(stage, tmp_path):
    paths = write_not_run(stage, "smollm2", root=tmp_path)
    assert paths == declared_outputs(stage, "smollm2", root=tmp_path) and paths
    for path in paths:
        assert path.exists(), path
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
