"""fsgen: a reproducible, fast companion to FS-GEN and LLM-to-SLM.

What a notebook user calls, by layer; everything else lives in its subpackage
(`fsgen.core`, `fsgen.data`, `fsgen.engine`, `fsgen.models`, `fsgen.analysis`, `fsgen.stages`).
"""

import fsgen.core.threads  # noqa: F401 (first: OpenMP's wait policy, before torch loads)
from fsgen.analysis.routing import calibrate_router, plot_router_sweep, sweep_routers
from fsgen.analysis.scaling import fit_scaling_law
from fsgen.analysis.speedup import plot_speedups, speedup_study
from fsgen.core.determinism import compute_threads, use_deterministic_algorithms
from fsgen.core.io import read_metrics
from fsgen.core.paths import repo_root, resolve
from fsgen.core.plots import plot_ladder, plot_training_curves
from fsgen.core.shards import merge_logs
from fsgen.data.sandbox import run_python
from fsgen.data.tasks import (
    TASKS,
    DataUnavailableError,
    accuracy,
    build_prompts,
    get_task,
    load_examples,
    score,
)
from fsgen.engine.collaborate import (
    Collaboration,
    Engine,
    collaborate,
    collaborate_ladder,
    generate,
)
from fsgen.engine.methods import METHODS, get_method
from fsgen.engine.routers import ROUTERS, make_router
from fsgen.engine.trace import read_trace, write_trace
from fsgen.models.llm_to_slm import LLMToSLM
from fsgen.models.profiles import (
    ModelUnavailableError,
    count_parameters,
    load_model,
    load_profile,
    load_rung,
)
from fsgen.models.train import LadderConfig, build_ladder, write_ladder_outputs
from fsgen.stages.config import stage_config
from fsgen.stages.routers import router_data_dir, write_router_outputs
from fsgen.stages.token_logging import (
    default_tasks,
    log_tokens,
    logging_methods,
    write_logging_outputs,
)

__all__ = [
    # core: paths from the repository root, metrics, token logs, figures
    "merge_logs",
    "plot_ladder",
    "plot_training_curves",
    "read_metrics",
    "repo_root",
    "resolve",
    "compute_threads",
    "use_deterministic_algorithms",
    # data: benchmark tasks, prompts, scoring, the sandbox for generated code
    "DataUnavailableError",
    "TASKS",
    "accuracy",
    "build_prompts",
    "get_task",
    "load_examples",
    "run_python",
    "score",
    # engine: the one decoding loop, its methods and routers, token traces
    "Collaboration",
    "Engine",
    "METHODS",
    "ROUTERS",
    "collaborate",
    "collaborate_ladder",
    "generate",
    "get_method",
    "make_router",
    "read_trace",
    "write_trace",
    # models: ladders and loading, the embedded ladder's training, LLM-to-SLM
    "LLMToSLM",
    "LadderConfig",
    "ModelUnavailableError",
    "build_ladder",
    "count_parameters",
    "load_model",
    "load_profile",
    "load_rung",
    "write_ladder_outputs",
    # analysis: scaling laws, routers, speculative speed-ups
    "calibrate_router",
    "fit_scaling_law",
    "plot_router_sweep",
    "plot_speedups",
    "speedup_study",
    "sweep_routers",
    # stages: each stage's values, token logging, the router stage's outputs
    "default_tasks",
    "log_tokens",
    "logging_methods",
    "stage_config",
    "write_logging_outputs",
    "router_data_dir",
    "write_router_outputs",
]
__version__ = "0.1.0"
