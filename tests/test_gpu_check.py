"""benchmarks/gpu_check.py rehearsed on CPU (`--tiny`): it runs, and its parity checks hold."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_gpu_check_runs_tiny_on_cpu(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gpu_check.json"
    gpu_check.main(["--tiny", "--batches", "1", "2", "--new-tokens", "6", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["tiny"] and "forced" in report["note"]
    for family in ("qwen1.5", "pythia"):
        results = report["families"][family]
        for method in ("oracle", "contrastive", "contrastive_obrien", "proxy", "speculative"):
            assert results[f"{method}.batch2"]["tokens_per_s"] > 0
        versus = results["speculative_vs_hf_assisted.batch1"]
        # greedy speculative decoding gives the large model's tokens, whatever the draft
        assert versus["matches_large_alone"] and versus["hf_assisted_matches_hf_alone"]
        forced = versus["forced"]
        assert forced["copies_large"]["matches_large"] and forced["never_agrees"]["matches_large"]
        # every draft accepted: several tokens per large forward; none: one
        assert forced["copies_large"]["tokens_per_large_forward"] > 1.5
        assert forced["never_agrees"]["tokens_per_large_forward"] <= 1.0 + 1e-9
    assert "fsgen_over_hf" in capsys.readouterr().out
