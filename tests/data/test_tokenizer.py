import pytest
from transformers import AutoTokenizer

from fsgen.data.synthetic import chat_prompt, generate_problems, plain_document
from fsgen.data.tokenizer import train_tokenizer


def test_round_trip_is_lossless(tiny_tokenizer):
    for problem in generate_problems(20, split="test", seed=1):
        text = plain_document(problem)
        ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tiny_tokenizer.decode(ids) == text


def test_digits_are_single_tokens(tiny_tokenizer):
    tokens = tiny_tokenizer.tokenize("so Ann has 1234 + 56 = 1290 coins")
    digit_tokens = [t for t in tokens if any(c.isdigit() for c in t)]
    assert all(len(t) == 1 for t in digit_tokens)


def test_special_tokens_and_chat_template(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.eos_token == "<|endoftext|>" and loaded.pad_token == "<|pad|>"
    assert loaded.padding_side == "left"
    question = "Ann has 3 coins. How many coins does Ann have now?"
    rendered = loaded.apply_chat_template(
        [{"role": "user", "content": question}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert rendered == chat_prompt(question)
    assert len(loaded.tokenize("<|user|>")) == 1


def test_vocab_size_too_small_is_rejected():
    with pytest.raises(ValueError, match="vocab_size must be at least .* got 100"):
        train_tokenizer(["a b c"], vocab_size=100)
