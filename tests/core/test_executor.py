"""The `ray` executor on a simulated three-node cluster: the local executor's bytes, a lost node's
units resubmitted, a unit no node can hold refused before any unit runs; and what units ask for."""

import threading
import time
from pathlib import Path

import pytest

from fsgen.analysis.estimates import estimate_profile
from fsgen.analysis.units import Unit, model_set
from fsgen.core.executor import Executor, Resources, as_executor, import_ray
from fsgen.core.parallel import run_jobs
from fsgen.models.profiles import load_profile
from fsgen.stages.token_logging import log_tokens, unit_resources
from tests.conftest import RUN

pytestmark = pytest.mark.xdist_group("ray")  # one worker holds the session's cluster


def _same_shards(one: Path, two: Path) -> None:
    for folder in ("traces", "generations"):
        names = sorted(p.name for p in (one / folder).iterdir())
        assert names == sorted(p.name for p in (two / folder).iterdir()) and names
        for name in names:
            assert (one / folder / name).read_bytes() == (two / folder / name).read_bytes(), name


def square(n: int) -> int:
    if n < 0:
        raise ValueError(f"negative job {n}")
    return n * n


def test_ray_jobs_come_back_in_order_and_a_failing_job_raises_its_error(ray_cluster):
    assert run_jobs(square, [3, 1, 2], executor="ray", progress=False) == [9, 1, 4]
    with pytest.raises(ValueError, match="negative job -2"):
        run_jobs(square, [1, -2, 3], executor="ray", progress=False)


def test_a_unit_no_node_can_hold_is_refused_before_any_unit_runs(
    ray_cluster, tiny_ladder, tmp_path, monkeypatch
):
    profile, root = tiny_ladder
    monkeypatch.setenv("FSGEN_ROOT", str(root))
    with pytest.raises(ValueError, match=r"unit .* needs 2 CPU, but no node of the Ray cluster"):
        log_tokens(profile, tmp_path / "logs", executor="ray", threads=2, **RUN)
    assert not list((tmp_path / "logs").rglob("*.parquet"))


def test_ray_matches_local_bytes_when_a_node_is_lost(
    ray_cluster, tiny_ladder, tmp_path, monkeypatch
):
    import ray  # noqa: PLC0415

    profile, root = tiny_ladder
    monkeypatch.setenv("FSGEN_ROOT", str(root))
    run = RUN | {"threads": 1, "n_prompts": 12, "max_new_tokens": 48}  # units of ~1 s
    local = log_tokens(profile, tmp_path / "local", **run)
    outcome = {}

    def on_ray():
        try:
            outcome["counts"] = log_tokens(profile, tmp_path / "ray", executor="ray", **run)
        except BaseException as error:  # noqa: BLE001 (re-raised below, in the test's thread)
            outcome["error"] = error

    runner = threading.Thread(target=on_ray)
    runner.start()
    deadline = time.monotonic() + 120
    done = tmp_path / "ray" / "generations"
    while time.monotonic() < deadline and not (done.is_dir() and any(done.iterdir())):
        time.sleep(0.02)  # until units finish: the workers have started and are decoding
    while ray.available_resources().get("CPU", 0) > 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # until all three nodes run a unit group
    assert runner.is_alive(), "the run ended before all nodes were busy"
    worker = next(node for node in ray_cluster.worker_nodes)
    ray_cluster.remove_node(worker, allow_graceful=False)
    runner.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    counts = outcome["counts"]
    assert counts["resubmitted"] >= 1  # the lost node's group ran again elsewhere
    assert {k: counts[k] for k in ("units", "run")} == {k: local[k] for k in ("units", "run")}
    assert counts["model_loads"] <= local["model_loads"] + 3 * counts["resubmitted"]
    _same_shards(tmp_path / "local", tmp_path / "ray")


def test_gpu_units_ask_for_the_gpus_their_memory_estimate_needs():
    qwen = load_profile("qwen1.5")
    new = qwen.generation_length("mbpp", 160)
    oracle = Unit("mbpp", "oracle", "qwen1.5-72b", "", 0, prompts=8, max_new_tokens=new)
    alone = Unit("mbpp", "alone", "qwen1.5-0.5b", "", 0, prompts=8, max_new_tokens=new)
    big = unit_resources(oracle, qwen, 1, Executor(kind="ray"))
    small = unit_resources(alone, qwen, 1, Executor(kind="ray"))
    # the profile's largest unit, as the memory estimates count it (docs/results.md: 7 H100s)
    estimate = estimate_profile(
        qwen, n_prompts=8, max_new_tokens=160, batch_size=8, methods=["all"]
    )
    assert estimate["peak unit"] == "oracle qwen1.5-72b"
    assert big.gpus == estimate["H100 80GB needed"] == 7
    assert small == Resources(cpus=1, gpus=1, memory_gb=small.memory_gb)
    assert unit_resources(oracle, qwen, 1, Executor(kind="ray", gpu_memory_gb=141)).gpus == 4
    assert len(model_set(oracle, qwen)) == 7 and model_set(alone, qwen) == (
        ("qwen1.5-0.5b", False),
    )


def test_executor_settings_are_checked():
    assert as_executor("ray") == Executor(kind="ray")
    assert as_executor({"kind": "local", "max_retries": 0}).max_retries == 0
    for bad, match in (
        ("slurm", "executor kind must be one of"),
        ({"kind": "ray", "retries": 1}, "unknown executor settings"),
        ({"kind": "ray", "gpu_memory_gb": -1}, "gpu_memory_gb must be"),
        ({"kind": "ray", "object_store_mb": float("nan")}, "object_store_mb must be"),
    ):
        with pytest.raises(ValueError, match=match):
            as_executor(bad)


def test_ray_missing_names_the_extra(monkeypatch):
    import builtins  # noqa: PLC0415

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    monkeypatch.delitem(__import__("sys").modules, "ray", raising=False)
    with pytest.raises(ImportError, match=r'pip install "fsgen\[ray\]"'):
        import_ray()
