import json
from pathlib import Path

import pytest

from fsgen.data import scoring, sources
from fsgen.data.scoring import accuracy, extract_choice, extract_code
from fsgen.data.sources import DataUnavailableError
from fsgen.data.synthetic import chat_prompt, plain_prompt
from fsgen.data.tasks import TASKS, build_prompts, get_task, load_examples, load_few_shot, score
from tests.conftest import REPO

# In CI the repository is cloned with `shared/` beside it.
DATA = REPO.parent / "shared" / "data"
SIZES = {"gsm8k": 1319, "mmlu_stem": 3134, "mbpp": 500, "mt_bench": 80}


@pytest.fixture
def data_dir(monkeypatch) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"no local benchmark data at {DATA} (../shared/data from the repository root)")
    monkeypatch.delenv(sources.DATA_ENV, raising=False)
    return DATA


# ----------------------------------------------------------------------------- registry


def test_registry_and_unknown_task():
    assert set(TASKS) == {"synthetic", "expression", "gsm8k", "mmlu_stem", "mbpp", "mt_bench"}
    assert get_task("gsm8k") is TASKS["gsm8k"]
    assert get_task(TASKS["mbpp"]) is TASKS["mbpp"]
    with pytest.raises(ValueError, match=r"unknown task 'gsm9k'.*'mmlu_stem'"):
        get_task("gsm9k")
    with pytest.raises(ValueError, match="splits"):
        load_examples("mmlu_stem", split="train", data_dir=DATA)


def test_expression_task_scores_the_formula_exactly_spaces_aside():
    examples = load_examples("expression", n_prompts=20, seed=3)
    problems = load_examples("synthetic", n_prompts=20, seed=3)
    assert [e.question for e in examples] == [p.question for p in problems]  # the same problems
    prompts = build_prompts("expression", examples)
    assert all(p.endswith("\nExpression:") for p in prompts)
    gold = [f" {e.gold}\nQuestion: next" for e in examples]  # as a model continues the prompt
    assert score("expression", gold, examples) == [True] * 20
    squeezed = [e.gold.replace(" ", "") for e in examples]
    assert score("expression", squeezed, examples) == [True] * 20
    wrong = [e.gold + " + 1" for e in examples]
    assert score("expression", wrong, examples) == [False] * 20
    evaluated = [str(e.record["answer"]) for e in examples]  # the value is not the formula
    assert not any(score("expression", evaluated, examples))
    assert get_task("expression").stop[0] == "\n"


# ----------------------------------------------------------------------------- extractors


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("The answer is 18.", 18),
        ("She makes 9 * 2 = $18 every day.\nThe answer is $18", 18),
        ("So 1,000 apples in all.\nThe answer is 1,000", 1000),
        ("The answer is 18.0", 18),
        ("The answer is 2.5", 2.5),
        ("The temperature drops to -10", -10),
        ("3 + 4 = 7\nThe answer is 7\nQuestion: Tom has 3 apples", 7),  # cut at the next item
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_number_extraction(prediction, expected):
    for name in ("gsm8k", "synthetic"):
        assert get_task(name).extract(prediction) == expected


def test_number_scoring_is_tolerant_of_formats():
    examples = [sources.Example("gsm8k", 0, "q", 1000, None, {})] * 4
    predictions = ["The answer is 1,000", "The answer is $1000.", "1000.0", "The answer is 100"]
    assert score("gsm8k", predictions, examples) == [True, True, True, False]
    assert score("gsm8k", ["no idea"], examples[:1]) == [False]


@pytest.mark.parametrize(
    "prediction, letter",
    [
        ("Let's think step by step. Choice B is right. The answer is (B).", "B"),
        ("The answer is B.", "B"),
        ("The answer is: C", "C"),
        ("So the correct choice is (D)", "D"),
        ("the answer is (c).", "C"),
        ("THE ANSWER IS (A)", "A"),
        ("The answer is (A). Or maybe (C).", "A"),  # the first stated answer wins
        ("Between (A) and (B), I pick (B)", "B"),  # no "answer is": the last (X)
        ("the answer is a guess", None),  # a bare lowercase letter is a word, not a choice
        ("I do not know.", None),
        ("The answer is (E).", None),
    ],
)
def test_choice_extraction(prediction, letter):
    assert extract_choice(prediction) == letter


def test_mmlu_extract_stops_at_the_next_question():
    text = "Choice A fits. The answer is (A).\n\nQ: Another question\nA: The answer is (C)."
    assert get_task("mmlu_stem").extract(text) == "A"
    assert get_task("mmlu_stem").extract("Q is nothing") is None


def test_code_extraction():
    code = "def f(x):\n    return x + 1"
    assert extract_code(code + "\n\n\nid: 12\nQuestion:\nWrite a function") == code
    assert extract_code(f"Here it is:\n```python\n{code}\n```\nDone.") == code
    assert extract_code(f"```\n{code}\n```") == code
    assert extract_code(f"```python\n{code}") == code  # unterminated fence
    assert extract_code(code + "\nQuestion:\nmore") == code


# ----------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("name", sorted(SIZES))
def test_loaders_read_the_shared_data(data_dir, name):
    examples = load_examples(name, data_dir=data_dir)
    assert len(examples) == SIZES[name]
    assert len({e.id for e in examples}) == len(examples)
    assert all(e.task == name and e.question for e in examples)


def test_loaded_fields(data_dir):
    gsm8k = load_examples("gsm8k", data_dir=data_dir)[0]
    assert gsm8k.gold == 18 and gsm8k.solution.endswith("#### 18")
    assert len(load_examples("gsm8k", data_dir=data_dir, split="train")) == 7473
    mmlu = load_examples("mmlu_stem", data_dir=data_dir)[0]
    assert mmlu.gold == "C" and mmlu.record["subject"] == "high_school_computer_science"
    mbpp = load_examples("mbpp", data_dir=data_dir)
    assert [e.id for e in mbpp] == list(range(11, 511))
    assert all(len(e.gold) == 3 and e.gold[0].startswith("assert") for e in mbpp)
    mt_bench = load_examples("mt_bench", data_dir=data_dir)
    assert mt_bench[0].id == 81 and mt_bench[0].gold is None
    assert mt_bench[0].question == mt_bench[0].record["turns"][0]


def test_data_dir_from_the_environment_and_relative_to_the_repo(data_dir, monkeypatch, repo):
    monkeypatch.setenv(sources.DATA_ENV, str(data_dir))
    assert len(load_examples("mt_bench")) == 80
    monkeypatch.setenv("FSGEN_ROOT", str(repo))
    relative = "../shared/data"
    if (repo / relative).resolve() == data_dir.resolve():
        assert len(load_examples("mt_bench", data_dir=relative)) == 80
    with pytest.raises(FileNotFoundError, match="mt_bench"):
        load_examples("mt_bench", data_dir=repo / "no-such-data")


def test_offline_without_data_dir_names_both_options(monkeypatch):
    monkeypatch.delenv(sources.DATA_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataUnavailableError) as error:
        load_examples("gsm8k")
    assert "data_dir=" in str(error.value) and sources.DATA_ENV in str(error.value)
    examples = load_examples("synthetic", n_prompts=2)  # generated: needs no data
    with pytest.raises(DataUnavailableError, match="few_shot_file="):
        build_prompts("gsm8k", examples)


def test_selection_is_seeded(data_dir):
    first = load_examples("gsm8k", data_dir=data_dir, n_prompts=20, seed=1)
    again = load_examples("gsm8k", data_dir=data_dir, n_prompts=20, seed=1)
    other = load_examples("gsm8k", data_dir=data_dir, n_prompts=20, seed=2)
    assert [e.id for e in first] == [e.id for e in again] != [e.id for e in other]
    smaller = load_examples("gsm8k", data_dir=data_dir, n_prompts=5, seed=1)
    assert [e.id for e in smaller] == [e.id for e in first[:5]]  # a larger n extends a smaller
    assert load_examples("mt_bench", data_dir=data_dir, n_prompts=0) == []
    for bad in (-1, 81):
        with pytest.raises(ValueError, match="n_prompts must be between 0 and 80"):
            load_examples("mt_bench", data_dir=data_dir, n_prompts=bad)
    synthetic = load_examples("synthetic", n_prompts=10, seed=3)
    assert synthetic == load_examples("synthetic", n_prompts=10, seed=3)


# ----------------------------------------------------------------------------- prompts


def test_prompts_follow_fs_gen(data_dir):
    gsm8k = load_examples("gsm8k", data_dir=data_dir, n_prompts=2)
    prompts = build_prompts("gsm8k", gsm8k, data_dir=data_dir)
    shots = (data_dir / "prompts" / "gsm8k_8shot.txt").read_text().strip("\n")
    assert prompts[0] == f"{shots}\n\nQuestion: {gsm8k[0].question}\nLet's think step by step\n"

    mmlu = load_examples("mmlu_stem", data_dir=data_dir)[:1]
    prompt = build_prompts("mmlu_stem", mmlu, data_dir=data_dir)[0]
    assert prompt.startswith("The following are multiple choice questions (with answers)")
    assert prompt.endswith(
        "\n\nQ: Let p = (1, 2, 5, 4)(2, 3) in S_5 . Find the index of <p> in S_5.\n"
        "(A) 8 (B) 2 (C) 24 (D) 120\nA: Let's think step by step."
    )

    mbpp = load_examples("mbpp", data_dir=data_dir)[:1]
    prompt = build_prompts("mbpp", mbpp, data_dir=data_dir)[0]
    assert prompt.startswith("id: 1\nQuestion:\n") and prompt.count("Codes:\n") == 11
    assert prompt.endswith(
        "\n\n\nid: 11\nQuestion:\n"
        + mbpp[0].question
        + "\n\n"
        + "\n".join(mbpp[0].gold)
        + "\n\nCodes:\n"
    )

    mt_bench = load_examples("mt_bench", data_dir=data_dir)[:1]
    assert build_prompts("mt_bench", mt_bench) == [mt_bench[0].question]

    synthetic = load_examples("synthetic", n_prompts=3)
    assert build_prompts("synthetic", synthetic) == [plain_prompt(e.question) for e in synthetic]
    assert build_prompts("synthetic", synthetic, chat=True) == [
        chat_prompt(e.question) for e in synthetic
    ]


def test_custom_few_shot_files(data_dir, tmp_path):
    examples = load_examples("gsm8k", data_dir=data_dir)[:1]
    shots = tmp_path / "two_shot.txt"
    shots.write_text("Question: 1 + 1?\nLet's think step by step\nThe answer is 2\n")
    prompt = build_prompts("gsm8k", examples, few_shot_file=shots)[0]  # no data dir needed
    assert prompt.startswith("Question: 1 + 1?\nLet's think step by step\nThe answer is 2\n\n")
    assert prompt.count("Question:") == 2

    mmlu = load_examples("mmlu_stem", data_dir=data_dir)[:1]
    by_subject = tmp_path / "shots.json"
    by_subject.write_text(json.dumps({"high_school_computer_science": "Q: x?\nA: (A)"}))
    assert build_prompts("mmlu_stem", mmlu, few_shot_file=by_subject)[0].startswith(
        "Q: x?\nA: (A)\n\nQ:"
    )
    by_subject.write_text(json.dumps({"anatomy": "Q: x?"}))
    with pytest.raises(ValueError, match="no text for subject 'high_school_computer_science'"):
        build_prompts("mmlu_stem", mmlu, few_shot_file=by_subject)
    assert isinstance(load_few_shot("mmlu_stem", data_dir=data_dir), dict)
    with pytest.raises(FileNotFoundError, match="few-shot"):
        build_prompts("gsm8k", examples, few_shot_file=tmp_path / "missing.txt")


def test_chat_template_wrapping(data_dir, tiny_tokenizer):
    synthetic = load_examples("synthetic", n_prompts=3)
    wrapped = build_prompts("synthetic", synthetic, tokenizer=tiny_tokenizer, chat=True)
    assert wrapped == [chat_prompt(e.question) for e in synthetic]  # the ladder's tuned format

    gsm8k = load_examples("gsm8k", data_dir=data_dir, n_prompts=1)
    plain = build_prompts("gsm8k", gsm8k, data_dir=data_dir)[0]
    chat = build_prompts("gsm8k", gsm8k, data_dir=data_dir, tokenizer=tiny_tokenizer, chat=True)
    assert chat == [f"<|user|>\n{plain}\n<|assistant|>\n"]

    class NoTemplate:
        chat_template = None

    with pytest.warns(UserWarning, match="no chat template"):
        assert build_prompts("mt_bench", [], tokenizer=NoTemplate(), chat=True) == []
    with pytest.raises(ValueError, match="chat=True needs a tokenizer"):
        build_prompts("gsm8k", gsm8k, data_dir=data_dir, chat=True)


# ----------------------------------------------------------------------------- scoring gold answers


def test_gold_solutions_score_full_marks(data_dir):
    for name, split in (("gsm8k", "test"), ("gsm8k", "train"), ("synthetic", "test")):
        examples = load_examples(name, data_dir=data_dir, split=split)
        assert accuracy(score(name, [e.solution for e in examples], examples)) == 1.0, name
    mmlu = load_examples("mmlu_stem", data_dir=data_dir)
    assert accuracy(score("mmlu_stem", [e.solution for e in mmlu], mmlu)) == 1.0
    wrong = [f"The answer is ({'B' if e.gold == 'A' else 'A'})." for e in mmlu]
    assert accuracy(score("mmlu_stem", wrong, mmlu)) == 0.0


def test_mbpp_reference_code_passes_its_own_asserts(data_dir):
    examples = load_examples("mbpp", data_dir=data_dir)
    results = score("mbpp", [e.solution for e in examples], examples, workers=2)
    failures = [e.id for e, ok in zip(examples, results, strict=True) if not ok]
    print(f"MBPP reference solutions passing their asserts: {sum(results)}/{len(examples)}")
    assert failures == []


def test_mbpp_scores_hand_written_predictions(data_dir, monkeypatch):
    monkeypatch.setattr(scoring, "MBPP_TIMEOUT", 1.0)
    task_11 = load_examples("mbpp", data_dir=data_dir)[:1] * 4
    right = (
        "def remove_Occ(s, ch):\n"
        "    first, last = s.find(ch), s.rfind(ch)\n"
        "    return s[:first] + s[first + 1 : last] + s[last + 1 :]\n"
    )
    predictions = [
        f"```python\n{right}```\n",
        right + "\n\n\nid: 12\nQuestion:\nWrite a function that loops forever",
        "def remove_Occ(s, ch):\n    return s[1:]\n",  # drops the first character only
        "def remove_Occ(s, ch):\n    while True:\n        pass\n",
    ]
    assert score("mbpp", predictions, task_11) == [True, True, False, False]


def test_mt_bench_is_generation_only_unless_judged(data_dir):
    examples = load_examples("mt_bench", data_dir=data_dir, n_prompts=3)
    answers = ["Sure.", "Aloha!", ""]
    assert score("mt_bench", answers, examples) == [None, None, None]
    assert accuracy(score("mt_bench", answers, examples)) is None
    judged = score("mt_bench", answers, examples, judge=lambda example, answer: len(answer) > 3)
    assert judged == [True, True, False]
    with pytest.raises(ValueError, match="one prediction per example"):
        score("mt_bench", answers[:2], examples)


def test_accuracy():
    assert accuracy([True, False, None, True]) == pytest.approx(2 / 3)
    assert accuracy([]) is None
