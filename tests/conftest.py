"""Shared fixtures: offline hub, a headless plotting backend, and tiny models built from configs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# The tests' own Hugging Face cache, set before the hub library reads it: never the user's real
# cache (the fake hub writes here), removed when the session ends.
_HUB = tempfile.mkdtemp(prefix="fsgen-test-hub-")
atexit.register(shutil.rmtree, _HUB, ignore_errors=True)
os.environ["HF_HOME"] = _HUB
os.environ["HF_HUB_CACHE"] = os.path.join(_HUB, "hub")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from fsgen.data.synthetic import chat_document, generate_problems, plain_document  # noqa: E402
from fsgen.data.tokenizer import train_tokenizer  # noqa: E402
from fsgen.models.ladder import LadderConfig  # noqa: E402
from fsgen.models.profiles import load_profile  # noqa: E402
from fsgen.stages.train_ladder import build_ladder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# A ladder of seconds (the tiny profile's rungs) and a token-logging run of seconds on it
TINY = LadderConfig(
    vocab_size=300,
    train_problems=200,
    test_problems=4,
    block_size=64,
    batch_size=4,
    steps=3,
    warmup_steps=1,
    tune_problems=20,
    tune_steps=2,
    max_new_tokens=8,
)
RUN = {
    "tasks": ["synthetic"],
    "n_prompts": 5,
    "chunk_size": 3,
    "max_new_tokens": 6,
    "batch_size": 4,
    "progress": False,
}


@pytest.fixture(scope="module")
def tiny_ladder(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FSGEN_ROOT", str(root))
        profile = load_profile("tiny")
        build_ladder(profile, TINY, progress=False)
        yield profile, root


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE trained on a few hundred synthetic problems."""

    problems = generate_problems(300, seed=7)
    return train_tokenizer(
        [plain_document(p) for p in problems] + [chat_document(problems[0])], 300
    )


# Two tiny rungs of each hub family (and each -Chat variant), plus LLM-to-SLM's T5 encoder.
FAKE_HUB_MODELS = (
    "EleutherAI/pythia-70m",
    "EleutherAI/pythia-160m",
    "Qwen/Qwen1.5-0.5B",
    "Qwen/Qwen1.5-0.5B-Chat",
    "Qwen/Qwen1.5-1.8B",
    "Qwen/Qwen1.5-1.8B-Chat",
    "google/flan-t5-large",
)


@pytest.fixture(scope="session")
def fake_hub() -> dict:
    """The fake offline hub (tests/fake_hub.py) in the session's HF_HUB_CACHE: each id of
    FAKE_HUB_MODELS resolves through `from_pretrained(id, revision="main")` with the hub offline."""
    from tests.fake_hub import build_fake_hub, corpus  # noqa: PLC0415 (only its tests pay for it)

    return build_fake_hub(os.environ["HF_HUB_CACHE"], FAKE_HUB_MODELS, texts=corpus(300_000))


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray cluster for the session: three nodes on this machine, one CPU each, their object
    stores capped; a lost node is noticed within seconds. Skipped where Ray is not installed."""
    pytest.importorskip("ray", reason='executor "ray" needs the extra: pip install "fsgen[ray]"')
    import ray  # noqa: PLC0415 (only the Ray tests load it)
    from ray.cluster_utils import Cluster  # noqa: PLC0415

    store = 80 * 2**20
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": store,
            "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4},
        },
    )
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=store)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
