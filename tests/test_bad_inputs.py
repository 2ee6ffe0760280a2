"""Bad input, one test per class of issue 16: each is an error of the right type whose message
names the bad value (or file), a warning, or a value fsgen wraps correctly.
(tests/bad_inputs.py holds a larger battery of the same classes.)"""

import math
import re

import pandas as pd
import pytest
import torch

from fsgen.analysis.scaling import fit_scaling_law
from fsgen.data.tasks import load_examples, score
from fsgen.engine.collaborate import collaborate
from fsgen.engine.trace import read_trace
from fsgen.models.profiles import load_profile
from fsgen.stages.config import stage_config
from tests.bad_inputs import run_battery, tiny_models
from tests.conftest import REPO


@pytest.fixture(scope="module")
def pair():
    small, large, tokenizer, _ = tiny_models()
    return small, large, tokenizer


def _raises(call, value: str, error=ValueError):
    with pytest.raises(error, match=re.escape(value)):
        call()


def test_a_string_where_a_list_is_meant(pair, tmp_path):
    small, large, tokenizer = pair
    run = lambda **kw: collaborate(small, large, tokenizer, max_new_tokens=2, **kw)  # noqa: E731
    _raises(lambda: run(prompts="Question: 2+2?"), "'Question: 2+2?'")
    _raises(lambda: run(prompts=["Question:"], stop="ab"), "'ab'")
    _raises(lambda: score("synthetic", "123", load_examples("synthetic", n_prompts=3)), "'123'")
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text().replace("[synthetic]", "synthetic", 1))
    assert load_profile("embedded", params).tasks == ("synthetic",)  # wrapped, not s, y, n, ...
    mbpp = tmp_path / "mbpp" / "mbpp.jsonl"
    mbpp.parent.mkdir()
    mbpp.write_text('{"task_id": 11, "text": "t", "code": "c", "test_list": "assert f()"}\n')
    _raises(lambda: load_examples("mbpp", data_dir=tmp_path), "'assert f()'")


@pytest.mark.parametrize(
    ("kwargs", "value"),
    [
        ({"router": "threshold", "threshold": math.nan}, "nan"),
        ({"router": "threshold", "threshold": -0.1}, "-0.1"),
        ({"router": "threshold", "threshold": 1.5}, "1.5"),
        ({"router": "entropy", "threshold": -1.0}, "-1.0"),
        ({"method": "contrastive", "alpha": math.nan}, "nan"),
        ({"method": "contrastive", "alpha": 0.0}, "0.0"),
        ({"method": "contrastive", "beta": math.nan}, "nan"),
        ({"do_sample": True, "temperature": math.nan}, "nan"),
        ({"do_sample": True, "temperature": math.inf}, "inf"),
        ({"method": "speculative", "num_draft": 200}, "num_draft=200"),
        ({"router": lambda probs: torch.ones(probs.shape[0], dtype=torch.int64)}, "torch.int64"),
        ({"router": lambda probs: torch.ones(3, dtype=torch.bool)}, "(3,)"),
        ({"max_new_tokens": 2.5}, "2.5"),
    ],
    ids=lambda x: str(x)[:30],
)
def test_numbers_outside_their_meaning(pair, kwargs, value):
    small, large, tokenizer = pair
    call = lambda: collaborate(  # noqa: E731
        small, large, tokenizer, ["Question: 1"], **({"max_new_tokens": 2} | kwargs)
    )
    _raises(call, value)


def test_frequencies_in_percent_are_refused():
    _raises(lambda: fit_scaling_law([2, 4, 8, 16], [30.0, 25.0, 20.0, 18.0]), "30.0")


def test_models_swapped_or_in_train_mode(pair):
    small, large, tokenizer = pair
    with pytest.warns(UserWarning, match=r"large model has fewer parameters \([\d,]+\)"):
        collaborate(large, small, tokenizer, ["Question: 1"], max_new_tokens=2)
    small.train()
    collaborate(small, large, tokenizer, ["Question: 1"], max_new_tokens=2)
    assert not small.training  # decoding never runs dropout


def test_configuration_names_file_key_and_value(tmp_path):
    base = (REPO / "params.yaml").read_text()
    params = tmp_path / "params.yaml"
    params.write_text(base.replace("    kind: embedded\n", "    kind: embedded\n    dtyp: x\n", 1))
    _raises(lambda: load_profile("embedded", params), "unknown keys ['dtyp']")
    params.write_text(base.replace("lr: 0.0096", "lr: 3e-3", 1))  # YAML reads 3e-3 as a string
    assert load_profile("embedded", params).rungs[0].arch["lr"] == 0.003
    params.write_text(base.replace("lr: 0.0096", "lr: fast", 1))
    _raises(lambda: load_profile("embedded", params), "'fast'")
    params.write_text(base + "\n  broken: [unclosed\n")
    _raises(lambda: stage_config("token_logging", params, {}), str(params))
    params.write_text(base.replace("token_logging:\n", "token_logging:\n  n_promts: 3\n", 1))
    _raises(lambda: stage_config("token_logging", params, {}), "n_promts")


def test_loaders_name_the_file_and_line(tmp_path):
    gsm = tmp_path / "gsm8k" / "test.jsonl"
    gsm.parent.mkdir()
    gsm.write_bytes(b'{"question": "q", "answer": "x #### 3"}\n{oops\n')
    _raises(lambda: load_examples("gsm8k", data_dir=tmp_path), f"{gsm} line 2")
    gsm.write_bytes(b'{"question": "q", "answer": "\xff"}\n')
    _raises(lambda: load_examples("gsm8k", data_dir=tmp_path), f"{gsm} line 1")
    gsm.write_bytes(b'{"question": "q"}\n')
    _raises(lambda: load_examples("gsm8k", data_dir=tmp_path), f"{gsm} row 0 lacks the fields")
    _raises(lambda: load_examples("gsm8k", data_dir=""), "''")
    mmlu = tmp_path / "mmlu_stem" / "test.jsonl"
    mmlu.parent.mkdir()
    mmlu.write_text('{"question": "q", "choices": ["a", "b", "c", "d"], "answer": -1}\n')
    _raises(lambda: load_examples("mmlu_stem", data_dir=tmp_path), "got -1")
    not_a_trace = tmp_path / "t.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(not_a_trace)
    _raises(lambda: read_trace(not_a_trace), f"{not_a_trace} is not a token trace")


def test_the_battery_of_bad_inputs_is_handled_well(monkeypatch, tmp_path):
    """tests/bad_inputs.py: every case an error naming its value, a warning, or the right
    wrapped value; none silently wrong, none losing data."""
    monkeypatch.setenv("FSGEN_ROOT", str(REPO))
    counts, failures = run_battery()
    assert sum(counts.values()) >= 100
    assert not failures, failures
