"""Build notebooks/05_llm_to_slm.ipynb (run from the repository root): nbformat v4, no outputs."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

TITLE = """# 05 · LLM-to-SLM

Bergner et al. (2024), *Think Big, Generate Quick*: a frozen large model encodes the prompt once,
in parallel; a projector (Linear, ReLU, Linear) maps its states into the small model's embedding
space, where they are added to the small model's prompt embeddings; the fine-tuned small model
then writes the whole response. We train it and, on the same budget, the small model fine-tuned
alone, then compare accuracy and wall time with the large and small models alone."""

PARAMETERS = """profile = "tiny"  # a profile of params.yaml
params_file = "params.yaml"
large = ""  # empty: the profile's pair in params.yaml (llm_to_slm.pairs)
small = ""
out_dir = "scratch/llm_to_slm"  # checkpoints
metrics_file = "scratch/metrics/llm_to_slm.json"
timing_file = "scratch/metrics/llm_to_slm_timing.json"
results_dir = "scratch/results/llm_to_slm"
task = "synthetic"
layer = -1  # hidden layer of a decoder-only large model (-1: the last)
fusion = "add"  # or "replace"
projector_hidden = 0  # 0: the wider of the two models
train_pairs = 200
steps = 6
batch_size = 8
lr = 0.003
warmup_steps = 2
n_prompts = 8
eval_batch_size = 8
timing_prompts = 2
batch_sizes = "1,8"  # comma-separated
repeats = 1
max_new_tokens = 16
seed = 0
threads = 2"""

SETUP = """import torch

import fsgen
from fsgen import llm_to_slm

torch.set_num_threads(threads)
torch.use_deterministic_algorithms(True)
ladder_profile = fsgen.load_profile(profile, params_file)
pair = llm_to_slm.stage_pair(ladder_profile, params_file, large=large, small=small)
pair"""

TRAIN = """budget = llm_to_slm.TrainConfig(
    steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, seed=seed
)
systems = llm_to_slm.train_systems(
    ladder_profile,
    pair,
    out_dir=fsgen.resolve(out_dir),
    task=task,
    train_pairs=train_pairs,
    config=budget,
    layer=layer,
    fusion=fusion,
    projector_hidden=projector_hidden or None,
)
fsgen.plot_training_curves(systems.curves, fsgen.resolve(results_dir) / "loss_curves");"""

QUALITY = """quality = llm_to_slm.evaluate_systems(
    systems,
    task=task,
    n_prompts=n_prompts,
    seed=seed,
    max_new_tokens=max_new_tokens,
    batch_size=eval_batch_size,
)
quality"""

TIMING = """timing = llm_to_slm.time_systems(
    systems,
    task=task,
    n_prompts=timing_prompts,
    seed=seed,
    max_new_tokens=max_new_tokens,
    batch_sizes=[int(b) for b in batch_sizes.split(",")],
    repeats=repeats,
)
llm_to_slm.summarize_timing(timing)"""

WRITE = """table = llm_to_slm.write_llm_to_slm_outputs(
    quality,
    timing,
    systems,
    fsgen.resolve(metrics_file),
    fsgen.resolve(timing_file),
    fsgen.resolve(results_dir),
)
table"""

PLOT = """llm_to_slm.plot_llm_to_slm(table, fsgen.resolve(results_dir) / "accuracy_vs_time");"""


def build() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell(TITLE),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP),
        new_markdown_cell(
            "## Train\n\nLLM-to-SLM (projector and small model; the large model frozen) and the "
            "small model fine-tuned alone, on the same pairs, steps and learning rate. The loss "
            "covers response tokens only."
        ),
        new_code_cell(TRAIN),
        new_markdown_cell(
            "## Quality\n\nGreedy accuracy on the test split. Beyond the paper: the collaboration "
            "frequency of each small system, in oracle decoding against the large model (the "
            "share of the large model's tokens that the small system would not have chosen)."
        ),
        new_code_cell(QUALITY),
        new_markdown_cell(
            "## Speed\n\nWall time on the same test prompts, every system through the same "
            "decoding loop, repeated; LLM-to-SLM's time includes the large model's encoding. "
            "Medians, and the speed-up over the large model alone."
        ),
        new_code_cell(TIMING),
        new_markdown_cell(
            "## Results\n\nDeterministic metrics (accuracies, collaboration frequencies) and "
            "timings go to separate files."
        ),
        new_code_cell(WRITE),
        new_code_cell(PLOT),
    ]
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"
    nb = new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    return nb


if __name__ == "__main__":
    path = Path("notebooks/05_llm_to_slm.ipynb")
    nbformat.write(build(), path)
    print(f"wrote {path}")
