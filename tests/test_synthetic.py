import random

import pytest

from fsgen.data.scoring import last_number
from fsgen.data.synthetic import (
    LEVELS,
    chat_document,
    chat_prompt,
    generate_problems,
    make_problem,
    plain_document,
    plain_prompt,
    split_of,
)


def test_same_seed_same_problems_and_different_seed_differs():
    assert generate_problems(50, seed=3) == generate_problems(50, seed=3)
    assert generate_problems(50, seed=3) != generate_problems(50, seed=4)


def test_splits_are_disjoint_and_labelled_by_hash():
    train = generate_problems(3000, split="train", seed=0)
    test = generate_problems(300, split="test", seed=0)
    train_questions = {p.question for p in train}
    assert not train_questions & {p.question for p in test}
    assert all(split_of(p.question) == "train" for p in train)
    assert all(split_of(p.question) == "test" for p in test)
    # a different seed for either split still never overlaps
    assert not train_questions & {p.question for p in generate_problems(300, split="test", seed=9)}


@pytest.mark.parametrize("level", LEVELS)
def test_worked_solution_is_correct_arithmetic(level):
    for problem in generate_problems(100, levels=[level], seed=level):
        assert problem.level == level
        assert problem.solution.endswith(f"The answer is {problem.answer}.")
        assert last_number(problem.solution) == problem.answer
        assert problem.answer >= 0
        steps = [s for s in problem.solution.split(", so ")[1:]]
        assert len(steps) == level  # one equation per step
        for step in steps:
            equation = step.split(" has ", 1)[1].split(" = ")
            left, right = equation[0], int(equation[1].split()[0])
            assert eval(left) == right  # noqa: S307 - generated arithmetic only


def test_difficulty_grows_with_level():
    mean_len = {
        lvl: sum(len(p.solution) for p in generate_problems(100, levels=[lvl])) / 100
        for lvl in LEVELS
    }
    assert mean_len[1] < mean_len[2] < mean_len[3] < mean_len[4]


def test_formats():
    problem = generate_problems(1)[0]
    assert plain_document(problem).startswith(plain_prompt(problem.question))
    assert chat_document(problem).startswith(chat_prompt(problem.question))
    assert "<|user|>" not in plain_document(problem)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 3, "split": "dev"}, "split must be one of"),
        ({"n": -1}, "n must be >= 0"),
        ({"n": 3, "levels": [7]}, "levels must be a non-empty subset"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_problems(**kwargs)


def test_make_problem_rejects_unknown_level():
    with pytest.raises(ValueError, match="level must be one of .* got 0"):
        make_problem(random.Random(0), 0)
