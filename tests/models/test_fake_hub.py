"""The hub profiles rehearsed on the fake offline hub (tests/fake_hub.py): real architectures,
vocabularies, tokenizers and chat templates at CPU sizes."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from fsgen.analysis import frequency
from fsgen.analysis.estimates import LONGEST_PROMPT
from fsgen.engine.collaborate import collaborate
from fsgen.models import llm_to_slm
from fsgen.models.llm_to_slm_training import TrainConfig
from fsgen.models.profiles import ModelUnavailableError, load_config, load_profile
from fsgen.stages import llm_to_slm as llm_to_slm_stage
from fsgen.stages.quickstart import quickstart_models, quickstart_prompts
from fsgen.stages.token_logging import log_tokens, write_logging_outputs
from fsgen.stages.train_ladder import build_ladder
from tests.conftest import REPO

DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data")


def test_qwen_resolves_offline_at_its_real_vocabulary_and_chat_format(fake_hub):
    tokenizer = AutoTokenizer.from_pretrained("Qwen/Qwen1.5-0.5B", revision="main")
    config = AutoConfig.from_pretrained("Qwen/Qwen1.5-0.5B", revision="main")
    assert (len(tokenizer), config.vocab_size) == (151646, 151936)  # padded model vocabulary
    assert config.architectures == ["Qwen2ForCausalLM"] and config.tie_word_embeddings
    ids = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert ids == [151643, 151644, 151645]
    chat = AutoTokenizer.from_pretrained("Qwen/Qwen1.5-0.5B-Chat", revision="main")
    assert chat.eos_token == "<|im_end|>" and tokenizer.eos_token == "<|endoftext|>"
    text = chat.apply_chat_template(
        [{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen1.5-0.5B-Chat", revision="main")
    assert model.generation_config.eos_token_id == [151645, 151643]


def test_pythia_and_t5_keep_their_shipped_tokenizers(fake_hub):
    tokenizer = AutoTokenizer.from_pretrained("EleutherAI/pythia-70m", revision="main")
    config = AutoConfig.from_pretrained("EleutherAI/pythia-70m", revision="main")
    rotary = config.rope_parameters["partial_rotary_factor"]
    assert (len(tokenizer), config.vocab_size, rotary) == (50277, 50304, 0.25)
    assert tokenizer.padding_side == "right" and tokenizer.eos_token_id == 0
    assert config.max_position_embeddings == 2048
    t5 = AutoTokenizer.from_pretrained("google/flan-t5-large", revision="main")
    assert len(t5) == 32100 and t5("a question")["input_ids"][-1] == t5.eos_token_id == 1
    assert llm_to_slm.large_prompts(t5, ["Q: 1+1?"]) == ["Q: 1+1?</s>"]
    assert llm_to_slm.large_prompts(tokenizer, ["Q: 1+1?"]) == ["Q: 1+1?"]  # no end appended


def test_a_model_not_cached_names_itself_and_the_embedded_profile(fake_hub):
    with pytest.raises(ModelUnavailableError, match=r"'Qwen/Qwen1\.5-4B'.*embedded"):
        load_config("Qwen/Qwen1.5-4B")


def _two_rung_params(tmp_path, profile: str) -> str:
    """params.yaml with `profile` cut to its two smallest rungs and 8 new tokens per task."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    spec = params["profiles"][profile]
    spec["rungs"] = spec["rungs"][:2]
    spec["max_new_tokens"] = 8
    spec["device"], spec["dtype"] = "cpu", "float32"
    params["profile"] = profile
    path = tmp_path / f"{profile}.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


@needs_data
@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["pythia", "qwen1.5"])
def test_hub_profile_rehearsal_runs_stages_00_to_02(fake_hub, tmp_path, monkeypatch, name):
    """The smallest rehearsal: two tiny rungs of a hub family through the stages' own code
    (describe the ladder, log every method on the profile's tasks, the frequency table)."""
    monkeypatch.setenv("FSGEN_ROOT", str(tmp_path))
    torch.set_num_threads(1)
    profile = load_profile(None, _two_rung_params(tmp_path, name))
    ladder, _ = build_ladder(profile, None, progress=False)  # a hub ladder: described
    assert ladder["params"].gt(0).all() and len(ladder) == (4 if name == "qwen1.5" else 2)
    tasks = list(profile.tasks)  # Pythia's 2,048 context leaves MMLU-STEM and MBPP out
    assert len(tasks) == (4 if name == "qwen1.5" else 2)
    counts = log_tokens(
        profile,
        tmp_path / "logs",
        tasks=tasks,
        n_prompts=2,
        data_dir=DATA,
        max_new_tokens=512,  # the profile's own 8 win
        batch_size=2,
        progress=False,
    )
    assert counts["run"] == counts["units"] > 0
    summary = write_logging_outputs(tmp_path / "logs", tmp_path / "m.json", tmp_path, bootstrap=20)
    assert set(summary["task"]) == set(tasks)
    methods = set(summary["method"])
    assert ("proxy" in methods) == (name == "qwen1.5")  # only Qwen1.5 has -Chat variants
    generations = pd.read_parquet(tmp_path / "logs" / "generations")
    assert generations["tokens"].max() <= 8
    sizes = frequency.ladder_sizes(profile, "params")
    table = frequency.frequency_table(summary, sizes)
    assert set(table["task"]) == set(tasks) and table["collaboration_frequency"].notna().all()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_t5_pairing_has_a_large_baseline_that_generates(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("FSGEN_ROOT", str(tmp_path))
    profile = load_profile(None, _two_rung_params(tmp_path, "pythia"))
    pair = llm_to_slm_stage.stage_pair(
        profile, "google/flan-t5-large", "pythia-70m", baseline="EleutherAI/pythia-160m"
    )
    assert pair["small_source"] == "EleutherAI/pythia-70m" and pair["large_revision"] == "main"
    systems = llm_to_slm_stage.train_systems(
        profile,
        pair,
        out_dir=tmp_path / "out",
        train_pairs=8,
        config=TrainConfig(steps=2, batch_size=4, warmup_steps=1),
        progress=False,
    )
    assert systems.llm_to_slm.encoder_decoder and systems.large is not None
    quality = llm_to_slm_stage.evaluate_systems(
        systems, n_prompts=2, max_new_tokens=4, batch_size=2
    )
    assert list(quality["system"]) == list(llm_to_slm_stage.SYSTEMS)  # the large row is there


def test_quickstart_hub_choice_runs_on_the_fake_hub(fake_hub):
    small, large, tokenizer, description = quickstart_models("hub")
    assert "EleutherAI/pythia-70m" in description
    out = collaborate(small, large, tokenizer, quickstart_prompts(), max_new_tokens=4)
    assert len(out.texts) == 3 and out.summary["tokens"] > 0


@pytest.mark.parametrize(
    "name, model", [("pythia", "EleutherAI/pythia-70m"), ("qwen1.5", "Qwen/Qwen1.5-0.5B")]
)
def test_each_hub_task_fits_the_profiles_context(fake_hub, name, model):
    """The longest prompt of each task (in tokens of a tokenizer of the real size) plus the
    profile's generation length fits the model's context; Pythia leaves out what cannot."""
    profile = load_profile(name)
    context = AutoConfig.from_pretrained(model, revision="main").max_position_embeddings
    for task in profile.tasks:
        assert LONGEST_PROMPT[task] + profile.generation_length(task, 0) <= context, task
    left_out = [t for t in LONGEST_PROMPT if t not in profile.tasks]
    assert all(LONGEST_PROMPT[t] + 512 > context for t in left_out)
