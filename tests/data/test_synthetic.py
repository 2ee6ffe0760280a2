import random

import pytest

from fsgen.data.scoring import last_number
from fsgen.data.synthetic import (
    END_TAG,
    LEVELS,
    base_corpus,
    chat_document,
    chat_prompt,
    expression_document,
    expression_prompt,
    generate_problems,
    make_problem,
    number_ranges,
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
    assert chat_prompt(problem.question) == f"<|user|>\n{problem.question}\n<|assistant|>\n"
    worked, bare = chat_document(problem), chat_document(problem, worked=False)
    assert worked.endswith(f"{problem.solution}{END_TAG}")  # the tuned rungs' behaviour
    assert bare.endswith(f"The answer is {problem.answer}.{END_TAG}")  # the base corpus's
    assert expression_document(problem) == (
        f"{expression_prompt(problem.question)} {problem.expression}"
    )


@pytest.mark.parametrize("level", LEVELS)
def test_expression_states_the_question_and_evaluates_to_the_answer(level):
    for problem in generate_problems(200, levels=[level], seed=level):
        assert eval(problem.expression) == problem.answer  # noqa: S307 - generated arithmetic only
        numbers = [
            int(t)
            for t in problem.expression.replace("(", " ").replace(")", " ").split()
            if t.isdigit()
        ]
        assert len(numbers) == level + 1  # the start and one operand per step
        for n in numbers:
            assert str(n) in problem.question


def test_base_corpus_tells_shares_of_the_problems_in_the_other_formats():
    problems = generate_problems(400, seed=1)
    docs = base_corpus(problems, chat_share=0.25, expression_share=0.5)
    plain = [d for d in docs if d.startswith("Question:") and "\nAnswer:" in d]
    chats = [d for d in docs if d.startswith("<|user|>")]
    formulas = [d for d in docs if "\nExpression:" in d]
    assert len(plain) == 400 and len(plain) + len(chats) + len(formulas) == len(docs)
    assert 0.17 < len(chats) / 400 < 0.33 and 0.42 < len(formulas) / 400 < 0.58
    assert all(
        d == chat_document(p, worked=False)
        for d, p in zip(chats, _told(problems, chats), strict=True)
    )
    assert base_corpus(problems, chat_share=0.25, expression_share=0.5) == docs  # seeded
    assert base_corpus(problems, chat_share=0.0, expression_share=0.0) == list(
        map(plain_document, problems)
    )
    with pytest.raises(ValueError, match="chat_share must be a share between 0 and 1, got 1.5"):
        base_corpus(problems, chat_share=1.5, expression_share=0.0)


def _told(problems, chats):
    by_question = {chat_prompt(p.question): p for p in problems}
    return [by_question[d.split("<|assistant|>")[0] + "<|assistant|>\n"] for d in chats]


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


def test_number_ranges_draw_other_numbers_and_restore_the_task():
    before = generate_problems(20, levels=[1], seed=3)
    with number_ranges({1: (20, 30)}):
        wide = generate_problems(20, levels=[1], seed=3)
    assert all(20 <= int(p.question.split()[2]) <= 30 for p in wide)  # "<name> has <n> <obj>."
    assert generate_problems(20, levels=[1], seed=3) == before


@pytest.mark.parametrize(
    ("operands", "factors"), [({5: (1, 9)}, None), ({1: (9, 1)}, None), (None, {1: (2, 3)})]
)
def test_number_ranges_refuse_an_unknown_level_or_an_empty_range(operands, factors):
    with pytest.raises(ValueError, match="maps a level in"):
        with number_ranges(operands, factors):
            pass
