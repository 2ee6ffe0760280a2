"""fsgen: a reproducible, fast companion to FS-GEN and LLM-to-SLM.

The public functions that notebooks call are re-exported here.
"""

from fsgen.decoding import Collaboration, collaborate, collaborate_ladder
from fsgen.io import atomic_write_bytes, read_metrics, write_metrics
from fsgen.ladder import (
    ModelUnavailableError,
    Profile,
    Rung,
    count_parameters,
    load_model,
    load_profile,
    load_rung,
    read_params,
)
from fsgen.llm_to_slm import (
    ConditionedSmall,
    LLMToSLM,
    fine_tune_small,
    load_large,
    train_llm_to_slm,
    training_pairs,
)
from fsgen.llm_to_slm import generate as generate_llm_to_slm
from fsgen.methods import METHODS, Method, get_method
from fsgen.paths import repo_root, resolve
from fsgen.plots import plot_ladder, plot_training_curves, save_figure
from fsgen.routers import ROUTERS, make_router
from fsgen.sandbox import SandboxResult, run_many, run_python
from fsgen.scaling import fit_scaling_law, paper_frequencies, parse_size, scaling_law
from fsgen.scoring import last_number, parse_number
from fsgen.shards import ShardStore, select_shard
from fsgen.synthetic import Problem, generate_problems
from fsgen.tasks import (
    TASKS,
    DataUnavailableError,
    Example,
    Task,
    accuracy,
    build_prompts,
    extract_choice,
    extract_code,
    get_task,
    load_examples,
    load_few_shot,
    resolve_data_dir,
    score,
)
from fsgen.token_logging import (
    default_tasks,
    log_tokens,
    merge_logs,
    plan_units,
    summarize_logs,
    write_logging_outputs,
)
from fsgen.tokenizer import train_tokenizer
from fsgen.trace import read_trace, write_trace
from fsgen.train import (
    LadderConfig,
    build_ladder,
    describe_hub_ladder,
    ladder_metrics,
    train_ladder,
    write_ladder_outputs,
)

__all__ = [
    "ConditionedSmall",
    "LLMToSLM",
    "fine_tune_small",
    "generate_llm_to_slm",
    "load_large",
    "train_llm_to_slm",
    "training_pairs",
    "write_logging_outputs",
    "default_tasks",
    "summarize_logs",
    "log_tokens",
    "merge_logs",
    "plan_units",
    "ShardStore",
    "select_shard",
    "fit_scaling_law",
    "paper_frequencies",
    "parse_size",
    "scaling_law",
    "Collaboration",
    "METHODS",
    "Method",
    "ROUTERS",
    "collaborate",
    "collaborate_ladder",
    "get_method",
    "make_router",
    "read_trace",
    "write_trace",
    "LadderConfig",
    "ModelUnavailableError",
    "Problem",
    "Profile",
    "Rung",
    "atomic_write_bytes",
    "build_ladder",
    "count_parameters",
    "describe_hub_ladder",
    "generate_problems",
    "ladder_metrics",
    "last_number",
    "load_model",
    "load_profile",
    "load_rung",
    "parse_number",
    "plot_ladder",
    "plot_training_curves",
    "read_metrics",
    "read_params",
    "repo_root",
    "resolve",
    "save_figure",
    "train_ladder",
    "train_tokenizer",
    "write_ladder_outputs",
    "write_metrics",
    "DataUnavailableError",
    "Example",
    "SandboxResult",
    "TASKS",
    "Task",
    "accuracy",
    "build_prompts",
    "extract_choice",
    "extract_code",
    "get_task",
    "load_examples",
    "load_few_shot",
    "resolve_data_dir",
    "run_many",
    "run_python",
    "score",
]
__version__ = "0.1.0"
