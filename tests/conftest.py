"""Shared fixtures: offline hub, a headless plotting backend, and tiny models built from configs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from fsgen.data.synthetic import chat_document, generate_problems, plain_document
from fsgen.data.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]


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
