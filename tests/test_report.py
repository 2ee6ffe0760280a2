"""The README's results block is the pipeline's outputs, and the quick start runs in a minute."""

import nbformat
import pytest

from fsgen.analysis.estimates import estimate_profile, nominal_size
from fsgen.models.profiles import Profile, Rung
from fsgen.stages.report import END, START, render_results, update_readme
from tests.conftest import REPO
from tests.test_notebooks import run_notebook


def test_readme_results_match_the_committed_outputs():
    readme = (REPO / "README.md").read_text()
    assert START in readme and END in readme
    block = START + readme.split(START, 1)[1].split(END, 1)[0] + END
    assert block == render_results(REPO), "README is stale: run `python -m fsgen.stages.report`"


def test_every_number_comes_from_the_outputs(tmp_path):
    (tmp_path / "results/train_ladder").mkdir(parents=True)
    (tmp_path / "results/train_ladder/ladder.csv").write_text(
        "model,variant,params,heldout_loss,accuracy\nx0,base,123,0.5,0.25\n"
    )
    block = render_results(tmp_path)
    assert "| x0 | 123 | 0.500 | 0.250 |" in block
    assert "Collaboration frequency" not in block  # no stage 02 outputs, no section
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\nend\n")
    assert update_readme(readme, tmp_path) and "| x0 | 123 |" in readme.read_text()
    assert not update_readme(readme, tmp_path)
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("\nend\n")
    readme.write_text("no block")
    with pytest.raises(ValueError, match="has no results block"):
        update_readme(readme, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(60)  # the budget for the quick start: under a minute on a CPU
def test_quickstart_runs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("FSGEN_ROOT", str(tmp_path))  # no trained ladder there: random models
    out = run_notebook("00_quickstart.ipynb", tmp_path)
    outputs = [o for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", [])]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {})) for o in outputs)
    assert "two tiny random GPT-NeoX models" in text and "collaboration_frequency" in text


def test_gpu_estimates_from_nominal_sizes():
    assert nominal_size("qwen1.5-1.8b") == 1.8e9 and nominal_size("pythia-70m") == 70e6
    with pytest.raises(ValueError, match="got 'gpt2'"):
        nominal_size("gpt2")
    rungs = tuple(Rung(name=n, model=f"org/{n}") for n in ("m-1b", "m-3b"))
    profile = Profile(name="h", kind="hub", rungs=rungs, dtype="bfloat16", tasks=("gsm8k",))
    out = estimate_profile(
        profile,
        n_prompts=128,
        max_new_tokens=225_000,
        batch_size=64,
        methods=["alone"],
        bandwidth=1e12,
        efficiency=1.0,
    )
    assert out["largest weights (GB)"] == 6.0 and out["peak memory (GB)"] == 9.6  # (3+1)*2*1.2
    # alone: 2 batches x 225k steps per rung, reading 2 GB and 6 GB at 1 TB/s: one hour
    assert out["token logging (GPU-hours)"] == 1.0


def test_every_notebook_is_listed_with_a_colab_badge():
    readme = (REPO / "README.md").read_text()
    colab = "https://colab.research.google.com/github/fsgen/fsgen/blob/main/notebooks/"
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert f"(notebooks/{notebook.name})" in readme, notebook.name
        assert f"{colab}{notebook.name})" in readme, f"no Colab badge for {notebook.name}"
    assert "https://mybinder.org/v2/gh/fsgen/fsgen/" in readme
    assert (REPO / "binder" / "requirements.txt").exists() and (
        REPO / "binder" / "postBuild"
    ).exists()
