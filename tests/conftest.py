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

import papermill as pm  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

from fsgen.data.synthetic import chat_document, generate_problems, plain_document  # noqa: E402
from fsgen.data.tokenizer import train_tokenizer  # noqa: E402
from fsgen.engine.collaborate import collaborate, generate  # noqa: E402
from fsgen.models.ladder import LadderConfig  # noqa: E402
from fsgen.models.profiles import load_profile  # noqa: E402
from fsgen.stages.train_ladder import build_ladder  # noqa: E402
from tests.reference import naive_collaborate  # noqa: E402

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


# ----------------------------------------------------------------------------- shared helpers

PROMPTS = [
    "Question: Ann has 3 coins.",
    "Question:",
    "Ben",
    "Question: Tom has 12 apples. Tom buys 5 more apples. How many apples does Tom have now?",
    "The answer is",
]


def tiny_neox(tokenizer, hidden, layers, seed, extra_vocab=0):
    """A random GPT-NeoX of `hidden` x `layers` on `tokenizer` (float64, eval), seeded."""
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer) + extra_vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=256,
        initializer_range=0.5,
        rotary_pct=1.0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config).double().eval()


def perturbed(model, scale, seed):
    """A copy of `model` with Gaussian noise on every weight: a correlated, weaker System 1."""
    copy = GPTNeoXForCausalLM(model.config).double().eval()
    copy.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in copy.parameters():
            p.add_(
                torch.randn(p.shape, generator=generator, dtype=p.dtype)
                * scale
                * p.std().clamp_min(1e-3)
            )
    return copy


def check_against_reference(models, tokenizer, method, router, threshold, **kwargs):
    small, large, tuned = models
    fast = collaborate(
        small,
        large,
        tokenizer,
        PROMPTS,
        method=method,
        router=router,
        threshold=threshold,
        small_tuned=tuned,
        batch_size=2,
        **kwargs,
    )
    mismatches = calls = 0
    for i, prompt in enumerate(PROMPTS):
        ref = naive_collaborate(
            small,
            large,
            tokenizer,
            prompt,
            prompt_id=i,
            method=method,
            router=router,
            threshold=threshold,
            small_tuned=tuned,
            **kwargs,
        )
        assert fast.tokens[i] == ref["tokens"], f"prompt {i}"
        rows = fast.trace[fast.trace.prompt_id == i]
        assert rows["source"].tolist() == ref["sources"], f"prompt {i}"
        assert int(rows["mismatch"].sum()) == ref["mismatches"], f"prompt {i}"
        if method == "proxy":
            assert int(rows["mismatch_vs_base"].sum()) == ref["vs_base"]
        mismatches += ref["mismatches"]
        calls += ref["calls"]
    assert fast.summary["mismatches"] == mismatches
    assert fast.summary["large_calls"] == calls
    assert fast.summary["tokens"] == sum(len(t) for t in fast.tokens) == len(fast.trace)
    return fast


LLM_PROMPTS = [
    "Question: Ann has 3 coins. How many coins does Ann have now?\nAnswer:",
    "Question:",
    "Question: Tom has 12 apples. Tom buys 5 more apples. How many apples does Tom have now?",
    "Ben",
    "The answer is",
]


def decode_llm_to_slm(model, prompts, *, forward: str = "auto", **run):
    """LLM-to-SLM through the engine's `generate`, as the stage runs it (the large model's
    encoding seconds added to the summary)."""
    small, inputs = model.decoder(prompts, forward=forward)
    result = generate(small, **inputs, **run)
    result.summary["encode_seconds"] = small.encode_seconds
    return result


def randomize_projector(model, seed: int = 5):
    """The projector's last layer starts at zero; give it weights so conditioning shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.projector.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.5)
    return model


def run_notebook(name: str, root: Path, **parameters) -> Path:
    out = root / "executed" / name
    out.parent.mkdir(exist_ok=True)
    pm.execute_notebook(
        str(REPO / "notebooks" / name),
        str(out),
        parameters=parameters,
        kernel_name="python3",
        execution_timeout=600,
        progress_bar=False,
        cwd=str(REPO / "notebooks"),
    )
    return out
