"""Stage 09 on the tiny ladder: stages 01, 05 and 06 as their notebooks' tiny values run them,
then the head-to-head: its systems decode the prompts past the offset, its metrics are
byte-identical on a rerun, and what it cannot compare is refused or left out by name."""

import json
import shutil

import nbformat
import pandas as pd
import pytest

from fsgen.data.scoring import accuracy
from fsgen.data.tasks import build_prompts, get_task, load_examples, score
from fsgen.engine.collaborate import generate
from fsgen.models.cache import models_for, release_models
from fsgen.models.profiles import load_profile
from fsgen.stages import accelerations, llm_to_slm, routers
from fsgen.stages.config import stage_config
from fsgen.stages.token_logging import log_tokens
from tests.conftest import REPO

# end to end, and one worker builds the module's inputs once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("accelerations")]
PATHS = (
    "logs_dir",
    "llm_to_slm_dir",
    "routers_file",
    "speedup_file",
    "divergence_file",
    "metrics_file",
    "timing_file",
    "results_dir",
)


def notebook_parameters(name: str) -> dict:
    """The parameters cell of a notebook, evaluated (literals only)."""
    cells = nbformat.read(REPO / "notebooks" / name, as_version=4).cells
    cell = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
    values: dict = {}
    exec(cell.source, values)  # noqa: S102 (a literals-only cell, tested in test_notebooks)
    return values


@pytest.fixture(scope="module")
def stage_inputs(tiny_ladder):
    """The tiny ladder's root with stage 01's oracle logs and stages 05 and 06 run on their tiny
    values; yields the root and stage 09's tiny parameters."""
    profile, root = tiny_ladder
    log_tokens(
        profile,
        root / "scratch/logs",
        methods=["alone", "oracle"],
        n_prompts=6,
        chunk_size=6,
        max_new_tokens=16,
        batch_size=8,
        progress=False,
    )
    values = notebook_parameters("06_routers.ipynb")
    routers.run(
        stage_config("routers", "", values["tiny"]),
        routers.Paths(*(values[k] for k in PATHS[:1] + PATHS[5:] + ("divergence_file",))),
    )
    values = notebook_parameters("05_llm_to_slm.ipynb")
    llm_to_slm.run(
        stage_config("llm_to_slm", "", values["tiny"]),
        llm_to_slm.Paths(*(values[k] for k in ("out_dir", *PATHS[5:]))),
    )
    yield root, notebook_parameters("09_accelerations.ipynb")
    release_models()


def run_stage(values: dict, change: dict | None = None, **paths):
    config = stage_config("accelerations", "", values["tiny"] | (change or {}))
    return accelerations.run(config, accelerations.Paths(*(paths.get(k, values[k]) for k in PATHS)))


def test_the_stage_compares_every_system_on_the_prompts_past_the_offset(stage_inputs):
    root, values = stage_inputs
    result = run_stage(values)
    tiny = values["tiny"]
    systems = ["large", "small", "router", "speculative", "llm_to_slm_small", "llm_to_slm"]
    assert list(result.table["system"]) == systems * 2
    assert list(result.table["batch_size"]) == [1] * 6 + [8] * 6
    assert result.choices["pair"] == "t2-t1" and result.choices["llm_to_slm.pair"] == "t2-t0"
    assert result.choices["speculative.same_as_large"] == 1  # greedy: the large model's tokens
    assert len(result.timing) == 6 * 2 * tiny["repeats"]

    # the large model alone, decoded here on the examples past the offset, scores as the stage
    profile = load_profile("tiny")
    offset = tiny["routers"]["prompt_offset"] + tiny["routers"]["n_prompts"]
    count = tiny["n_prompts"]
    examples = load_examples("synthetic", n_prompts=offset + count, seed=0)[offset:]
    models = models_for(profile)
    out = generate(
        models.get("t2"),
        models.tokenizer,
        build_prompts("synthetic", examples),
        max_new_tokens=tiny["max_new_tokens"],
        batch_size=tiny["batch_size"],
        stop=list(get_task("synthetic").stop),
    )
    metrics = json.loads((root / values["metrics_file"]).read_text())
    assert metrics["large.accuracy"] == accuracy(score("synthetic", out.texts, examples))
    assert metrics["large.tokens"] == out.summary["tokens"]
    assert metrics["prompts"] == count
    assert not any("seconds" in key or "ms_per_token" in key for key in metrics)

    # a rerun: the same deterministic metrics, byte for byte (the timings apart)
    first = (root / values["metrics_file"]).read_bytes()
    run_stage(values)
    assert (root / values["metrics_file"]).read_bytes() == first
    timing = json.loads((root / values["timing_file"]).read_text())
    assert timing["speculative.draft_length"] in (1, 2) and timing["stage_seconds"] > 0
    written = pd.read_csv(root / values["results_dir"] / "head_to_head.csv")
    assert set(written["system"]) == set(systems)


def test_llm_to_slm_joins_only_on_the_same_large_model(stage_inputs):
    _, values = stage_inputs
    config = stage_config("accelerations", "", values["tiny"])
    profile = load_profile("tiny")
    assert accelerations.llm_to_slm_pair(config, profile, "t2") == ("t2", "t0")
    assert accelerations.llm_to_slm_pair(config, profile, "t1") is None
    other = values["tiny"] | {"llm_to_slm": {"pairs": {"embedded": {"large": "e5", "small": "e0"}}}}
    assert (
        accelerations.llm_to_slm_pair(stage_config("accelerations", "", other), profile, "t2")
        is None
    )


def test_missing_or_unmatched_inputs_are_named(stage_inputs, tmp_path):
    root, values = stage_inputs
    with pytest.raises(ValueError, match="stage 06 not run"):
        run_stage(values, routers_file=tmp_path / "none.csv", results_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="no router of pair t2-t0"):
        run_stage(values, {"pair": ["t2", "t0"]}, results_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="no token logs"):
        run_stage(values, logs_dir=tmp_path / "none", results_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="accelerations.*pair"):
        stage_config("accelerations", "", values["tiny"] | {"pair": "t2-t1"})
    config = json.loads(
        (root / values["llm_to_slm_dir"] / "llm_to_slm/llm_to_slm.json").read_text()
    )
    folder = tmp_path / "llm_to_slm"
    shutil.copytree(root / values["llm_to_slm_dir"] / "llm_to_slm", folder)
    (folder / "llm_to_slm.json").write_text(json.dumps(config | {"large": "elsewhere"}))
    with pytest.raises(ValueError, match="trained on the large model 'elsewhere'"):
        run_stage(values, llm_to_slm_dir=tmp_path, results_dir=tmp_path / "out")
