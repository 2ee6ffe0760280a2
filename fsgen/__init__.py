"""fsgen: a reproducible, fast companion to FS-GEN and LLM-to-SLM.

What a notebook user calls, by layer; everything else lives in its subpackage
(`fsgen.core`, `fsgen.data`, `fsgen.engine`, `fsgen.models`, `fsgen.analysis`, `fsgen.stages`).
Each name is imported when first used (`__getattr__`), so `import fsgen` is quick and an analysis
notebook never loads torch or transformers it does not need.
"""

import importlib

import fsgen.core.threads  # noqa: F401 (first: OpenMP's wait policy, before torch loads)

_HOMES = {  # each public name, by layer, and the module it lives in (imported on first use)
    # core: paths from the repository root, metrics, token logs, figures
    "merge_logs": "fsgen.core.shards",
    "plot_ladder": "fsgen.core.plots",
    "plot_training_curves": "fsgen.core.plots",
    "read_metrics": "fsgen.core.io",
    "repo_root": "fsgen.core.paths",
    "resolve": "fsgen.core.paths",
    "compute_threads": "fsgen.core.determinism",
    "use_deterministic_algorithms": "fsgen.core.determinism",
    # data: benchmark tasks, prompts, scoring, the sandbox for generated code
    "DataUnavailableError": "fsgen.data.sources",
    "TASKS": "fsgen.data.tasks",
    "accuracy": "fsgen.data.scoring",
    "build_prompts": "fsgen.data.tasks",
    "get_task": "fsgen.data.tasks",
    "load_examples": "fsgen.data.tasks",
    "run_python": "fsgen.data.sandbox",
    "score": "fsgen.data.tasks",
    # engine: the one decoding loop, its methods and routers, token traces
    "Collaboration": "fsgen.engine.collaborate",
    "Engine": "fsgen.engine.collaborate",
    "METHODS": "fsgen.engine.methods",
    "ROUTERS": "fsgen.engine.routers",
    "collaborate": "fsgen.engine.collaborate",
    "collaborate_ladder": "fsgen.engine.collaborate",
    "generate": "fsgen.engine.collaborate",
    "get_method": "fsgen.engine.methods",
    "make_router": "fsgen.engine.routers",
    "read_trace": "fsgen.engine.trace",
    "write_trace": "fsgen.engine.trace",
    # models: ladders and loading, the embedded ladder's training, LLM-to-SLM
    "LLMToSLM": "fsgen.models.llm_to_slm",
    "LadderConfig": "fsgen.models.ladder",
    "ModelUnavailableError": "fsgen.models.profiles",
    "build_ladder": "fsgen.stages.train_ladder",
    "count_parameters": "fsgen.models.profiles",
    "load_model": "fsgen.models.profiles",
    "load_profile": "fsgen.models.profiles",
    "load_rung": "fsgen.models.profiles",
    # analysis: scaling laws, routers, speculative speed-ups
    "calibrate_router": "fsgen.analysis.routing",
    "fit_scaling_law": "fsgen.analysis.scaling",
    "plot_router_sweep": "fsgen.analysis.routing",
    "plot_speedups": "fsgen.analysis.speedup",
    "speedup_study": "fsgen.analysis.speedup",
    # stages: each stage's values, token logging, the router stage's outputs
    "default_tasks": "fsgen.stages.token_logging",
    "log_tokens": "fsgen.stages.token_logging",
    "logging_methods": "fsgen.engine.methods",
    "stage_config": "fsgen.stages.config",
    "write_logging_outputs": "fsgen.stages.token_logging",
    "router_data_dir": "fsgen.stages.routers",
    "sweep_routers": "fsgen.stages.routers",
}

__all__ = list(_HOMES)
__version__ = "0.1.0"


_SUBPACKAGES = ("core", "data", "engine", "models", "analysis", "stages")


def __getattr__(name: str):
    """Import a public name (or a subpackage) on first use; later uses find it in the module."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"fsgen.{name}")
    if name not in _HOMES:
        raise AttributeError(f"module 'fsgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBPACKAGES))
