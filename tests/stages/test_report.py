"""The README's findings table and docs/results.md are the pipeline's outputs, and the quick start
runs in a minute."""

import json
import os

import nbformat
import pandas as pd
import pytest

from fsgen.analysis.estimates import (
    estimate_profile,
    fitting_batch,
    model_shape,
    nominal_size,
    unit_memory,
)
from fsgen.core.paths import resolve
from fsgen.models.profiles import load_profile
from fsgen.stages.report import (
    END,
    FINDINGS_END,
    FINDINGS_START,
    START,
    findings_table,
    ladder_section,
    main,
    render_findings,
    render_results,
    update_readme,
    update_results_page,
)
from fsgen.stages.snapshot import SNAPSHOT_FILES, snapshot_profile
from tests.conftest import REPO, run_notebook


def _block(text: str, start: str, end: str) -> str:
    assert start in text and end in text
    return start + text.split(start, 1)[1].split(end, 1)[0] + end


def test_readme_findings_match_the_committed_outputs():
    readme = (REPO / "README.md").read_text()
    block = _block(readme, FINDINGS_START, FINDINGS_END)
    assert block == render_findings(REPO), "README is stale: run `python -m fsgen.stages.report`"
    assert START not in readme  # the full results live in docs/results.md


def test_results_page_matches_the_committed_outputs():
    page = (REPO / "docs/results.md").read_text()
    block = _block(page, START, END)
    assert block == render_results(REPO, "docs"), (
        "docs/results.md is stale: run `python -m fsgen.stages.report`"
    )
    for figure in block.split("](")[1:]:  # every figure is linked from docs/, and exists
        if figure.startswith("../"):
            assert (REPO / "docs" / figure.split(")", 1)[0]).resolve().is_file(), figure
    assert "](results/" not in block


def test_every_number_comes_from_the_outputs(tmp_path):
    (tmp_path / "results/train_ladder").mkdir(parents=True)
    (tmp_path / "results/train_ladder/ladder.csv").write_text(
        "model,variant,params,heldout_loss,accuracy\nx0,base,123,0.5,0.25\n"
    )
    block = render_results(tmp_path)
    assert "| x0 | 123 | 0.500 | 0.250 |" in block  # no intervals, no fit: plain numbers
    assert "Collaboration frequency" not in block  # no stage 02 outputs, no section
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs/results.md"
    page.write_text(f"intro\n{START}\nold\n{END}\nend\n")
    assert update_results_page(page, tmp_path) and "| x0 | 123 |" in page.read_text()
    assert not update_results_page(page, tmp_path)
    assert page.read_text().startswith("intro\n") and page.read_text().endswith("\nend\n")
    page.write_text("no block")
    with pytest.raises(ValueError, match="has no results block"):
        update_results_page(page, tmp_path)


def test_findings_block_and_figure_links(tmp_path):
    (tmp_path / "results/findings").mkdir(parents=True)
    (tmp_path / "results/findings/findings.csv").write_text(
        "paper,claim,paper_figure,ours,low,high,verdict,rule\n"
        "P,a claim,qualitative,0.5,0.4,0.6,holds,low > 0.3\n"
    )
    (tmp_path / "results/findings/caption.md").write_text("One row per claim.\n")
    block = render_findings(tmp_path)
    assert block.startswith(FINDINGS_START) and block.endswith(FINDINGS_END)
    assert "| P | a claim | qualitative | 0.500 | 0.400 | 0.600 | holds | low > 0.3 |" in block
    assert "One row per claim." in block and "###" not in block  # the README gives the heading
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{FINDINGS_START}\n{FINDINGS_END}\nend\n")
    assert update_readme(readme, tmp_path) and "| P | a claim |" in readme.read_text()
    assert not update_readme(readme, tmp_path)
    with pytest.raises(ValueError, match="has no findings block"):
        update_readme(tmp_path / "results/findings/caption.md", tmp_path)
    assert "No findings yet" in render_findings(tmp_path / "nowhere")
    frequency = (
        "task,pair,method,ratio,collaboration_frequency,small_accuracy,large_accuracy,accuracy"
    )
    (tmp_path / "results/frequency").mkdir()
    (tmp_path / "results/frequency/frequency.csv").write_text(
        f"{frequency}\nsynthetic,b-a,oracle,2.0,0.1,0.2,0.3,0.3\n"
    )
    figure = "results/frequency/frequency_heatmaps.png"
    assert f"](../{figure})" in render_results(tmp_path, "docs")
    assert f"]({figure})" in render_results(tmp_path, ".")


def test_the_cli_updates_both_documents(tmp_path, capsys):
    readme, page = tmp_path / "README.md", tmp_path / "results.md"
    readme.write_text(f"{FINDINGS_START}\n{FINDINGS_END}\n")
    page.write_text(f"{START}\n{END}\n")
    assert main(["--help"]) == 2
    assert main([str(readme), str(page)]) == 0  # outputs under the repository: the real ones
    assert "findings updated" in capsys.readouterr().out
    assert _block(readme.read_text(), FINDINGS_START, FINDINGS_END) == render_findings(REPO)
    page_dir = os.path.relpath(tmp_path, REPO)  # the figures linked from where the page is
    assert _block(page.read_text(), START, END) == render_results(REPO, page_dir)
    assert main([str(readme), str(page)]) == 0
    assert capsys.readouterr().out.count("already up to date") == 2


@pytest.mark.slow
@pytest.mark.timeout(60)  # the budget for the quick start: under a minute on a CPU
def test_quickstart_runs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("FSGEN_ROOT", str(tmp_path))  # no trained ladder there: the packaged pair
    out = run_notebook("00_quickstart.ipynb", tmp_path)
    outputs = [o for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", [])]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {})) for o in outputs)
    assert "packaged pair (fsgen/assets/quickstart)" in text and "collaboration_frequency" in text
    assert "The answer is" in text  # trained models: answers in the task's worked format


def test_gpu_estimates_from_nominal_sizes():
    assert nominal_size("qwen1.5-1.8b") == 1.8e9 and nominal_size("pythia-70m") == 70e6
    with pytest.raises(ValueError, match="got 'gpt2'"):
        nominal_size("gpt2")


def test_shapes_give_the_real_parameter_counts():
    # the published counts: Pythia-12B 11.85B, Pythia-70M 70.4M, Qwen1.5-72B 72.3B, 0.5B 0.46B
    for model, count in (
        ("EleutherAI/pythia-12b", 11.85e9),
        ("EleutherAI/pythia-70m", 70.4e6),
        ("Qwen/Qwen1.5-72B", 72.3e9),
        ("Qwen/Qwen1.5-0.5B-Chat", 0.464e9),
    ):
        assert abs(model_shape(model).params / count - 1) < 0.01, model


def test_unit_memory_counts_weights_kv_cache_and_logits():
    shape = model_shape("EleutherAI/pythia-12b")
    memory = unit_memory([shape], method="alone", batch=64, prompt=1490, new=0, per_param=2)
    # the figure: ~70 GB of KV cache for pythia-12b at batch 64 x 1,490 tokens
    assert 69e9 < memory["kv"] < 72e9
    assert memory["weights"] == shape.params * 2
    oracle = unit_memory([shape, shape], method="oracle", batch=2, prompt=10, new=99, per_param=2)
    assert oracle["logits"] == 2 * 100 * shape.vocab * (2 + 4 + 4 + 16)  # every scored position
    assert (
        oracle["kv"]
        == 2 * unit_memory([shape], method="alone", batch=2, prompt=10, new=99, per_param=2)["kv"]
    )


def test_hub_profiles_batch_sizes_fit_the_gpus_they_name():
    settings = {"n_prompts": 64, "max_new_tokens": 160, "methods": ["all"]}
    for name, gpus in (("pythia", 1), ("qwen1.5", 8)):
        profile = load_profile(name)
        out = estimate_profile(profile, batch_size=profile.batch_size, **settings)
        assert out["H100 80GB needed"] <= gpus and out["token logging (GPU-hours)"] > 0
        assert out["peak unit"].startswith("oracle")  # the unit holding every rung
        assert fitting_batch(profile, gpus=gpus, **settings) == profile.batch_size


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


def test_the_ladder_section_shows_the_loss_law_stage_00_wrote(tmp_path):
    (tmp_path / "results/train_ladder").mkdir(parents=True)
    (tmp_path / "metrics").mkdir()
    table = pd.DataFrame(
        {
            "model": [f"m{i}" for i in range(4)],
            "variant": ["base"] * 4,
            "params": [10, 20, 40, 80],
            "heldout_loss": [0.9, 0.8, 0.7, 0.65],
            "fitted_loss": [0.9, 0.8, 0.7, 0.6],
            "loss_residual": [0.0, 0.0, 0.0, 0.0833],
        }
    )
    table.to_csv(tmp_path / "results/train_ladder/ladder.csv", index=False)
    law = {"loss_law.E": 0.111, "loss_law.A": 0.222, "loss_law.a": 0.333, "loss_law.n_min": 10.0}
    (tmp_path / "metrics/train_ladder.json").write_text(json.dumps(law))
    section = ladder_section(tmp_path)  # the written fit, not a refit of these four points
    assert "E = 0.111, A = 0.222, a = 0.333, N_0 = 10" in section and "+8.3%" in section


def test_the_real_models_snapshot_joins_the_findings_table(tmp_path):
    """`snapshot` keeps the workspace profile's outputs; the findings table then carries the
    real model's figure and verdict beside the embedded ladder's, claim by claim."""
    root = tmp_path / "repo"
    for name in SNAPSHOT_FILES:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = resolve(name)
        target.write_bytes(source.read_bytes() if source.exists() else b"x\n")
    (root / "params.yaml").write_text("profile: smollm2\n")
    real = pd.read_csv(resolve("results/findings/findings.csv"))
    real["verdict"] = "inconclusive"
    real.to_csv(root / "results/findings/findings.csv", index=False)
    folder = snapshot_profile(root)
    assert folder == root / "results/profiles/smollm2"
    assert all((folder / name).is_file() for name in SNAPSHOT_FILES)
    (root / "results/findings/findings.csv").write_bytes(
        resolve("results/findings/findings.csv").read_bytes()
    )
    text = findings_table(root)
    header = text.splitlines()[0]
    assert "smollm2 [95%]" in header and "smollm2 verdict" in header
    assert header.index("verdict") < header.index("smollm2 verdict") < header.index("rule")
    assert text.count("| inconclusive |") >= len(real) - 1


def test_the_head_to_head_section_marks_the_front(tmp_path):
    from fsgen.analysis.accelerations import head_to_head  # noqa: PLC0415
    from tests.analysis.test_accelerations import QUALITY, TIMING  # noqa: PLC0415

    (tmp_path / "results/accelerations").mkdir(parents=True)
    table = head_to_head(QUALITY, TIMING)
    table.to_csv(tmp_path / "results/accelerations/head_to_head.csv", index=False)
    block = render_results(tmp_path, "docs")
    assert "### Three accelerations, head to head (stage 09)" in block
    row = "| speculative | m | – | 0.600 [0.500, 0.700] | 2.500 | 0.88x | 0.700 (front) | 1.14x |"
    assert row in block
    assert "](../results/accelerations/accuracy_vs_time.png)" in block
    (tmp_path / "results/accelerations/head_to_head.csv").write_text("not_run\n")
    assert "Three accelerations" not in render_results(tmp_path, "docs")  # a skipped stage
