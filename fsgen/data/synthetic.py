"""Seeded GSM8K-style arithmetic word problems with step-by-step worked solutions.

Every problem is a short story about one person and one kind of object. Each step changes the
count (buys, gives away, fills boxes, ...) and the worked solution carries out the same steps,
one equation each, ending in "The answer is N."; the problem's `expression` is the arithmetic the
story states, as one formula ("(7 + 3) * 2 - 4"). Difficulty levels set the number of steps and
the operations; every operand is one digit, so the arithmetic is within reach of the embedded
ladder's small rungs and accuracy can grow with size (docs/embedded_ladder.md):

| level | steps | operands         | operations            |
|-------|-------|------------------|-----------------------|
| 1     | 1     | 1..9             | +, -                  |
| 2     | 2     | 1..9             | +, -                  |
| 3     | 3     | 1..9, x by 2..3  | +, -, x               |
| 4     | 4     | 1..9, x by 2..3  | +, -, x               |

Splits are decided by a hash of the question text, so the held-out test split can never share a
question with the training split, whatever the seeds and sizes that drew them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

LEVELS = (1, 2, 3, 4)
SPLITS = ("train", "test")
TEST_PERCENT = 10  # share of the question space that belongs to the test split

NAMES = (
    "Tom",
    "Ann",
    "Sam",
    "Lily",
    "Max",
    "Emma",
    "Ben",
    "Zoe",
    "Leo",
    "Mia",
    "Jack",
    "Nora",
    "Omar",
    "Ruth",
    "Ivan",
    "Lucy",
    "Paul",
    "Rosa",
    "Eli",
    "Ada",
)
OBJECTS = (
    "apples",
    "books",
    "stamps",
    "marbles",
    "pencils",
    "cookies",
    "shells",
    "coins",
    "cards",
    "eggs",
    "flowers",
    "stickers",
    "candies",
    "toys",
    "beads",
    "rocks",
)
_OPERAND_RANGE = {1: (1, 9), 2: (1, 9), 3: (1, 9), 4: (1, 9)}
_FACTOR_RANGE = {3: (2, 3), 4: (2, 3)}
_STEPS = {1: 1, 2: 2, 3: 3, 4: 4}


@contextmanager
def number_ranges(
    operands: dict[int, tuple[int, int]] | None = None,
    factors: dict[int, tuple[int, int]] | None = None,
) -> Iterator[None]:
    """Draw problems with other number ranges inside the block (a variant of the task, for
    benchmarks/ladder_variants.py): `operands` maps a level to its (low, high) operands,
    `factors` a level of 3 or 4 to its multipliers; the table above is restored on exit."""
    for name, ranges, allowed in (
        ("operands", operands or {}, set(LEVELS)),
        ("factors", factors or {}, set(_FACTOR_RANGE)),
    ):
        for level, (low, high) in ranges.items():
            if level not in allowed or not 1 <= low <= high:
                raise ValueError(
                    f"{name} maps a level in {sorted(allowed)} to (low, high) with "
                    f"1 <= low <= high, got {level!r}: {(low, high)!r}"
                )
    saved = dict(_OPERAND_RANGE), dict(_FACTOR_RANGE)
    _OPERAND_RANGE.update(operands or {})
    _FACTOR_RANGE.update(factors or {})
    try:
        yield
    finally:
        for table, before in zip((_OPERAND_RANGE, _FACTOR_RANGE), saved, strict=True):
            table.clear()
            table.update(before)


@dataclass(frozen=True)
class Problem:
    """One word problem: the question, its worked solution, the integer answer, its level and
    the formula the question states (`expression`, evaluated left to right as written)."""

    question: str
    solution: str
    answer: int
    level: int
    expression: str

    def to_dict(self) -> dict:
        return asdict(self)


def split_of(question: str) -> str:
    """The split a question belongs to, fixed by a hash of its text."""
    bucket = int.from_bytes(hashlib.sha1(question.encode()).digest()[:4], "big") % 100
    return "test" if bucket < TEST_PERCENT else "train"


def _step(
    rng: random.Random, level: int, count: int, name: str, obj: str
) -> tuple[str, str, int, str, int]:
    """One story step: (sentence for the question, sentence for the solution, new count, the
    operator and its operand)."""
    low, high = _OPERAND_RANGE[level]
    ops = ["add", "sub"] + (["mul"] if level >= 3 else [])
    op = rng.choice(ops)
    if op == "sub" and count <= low:
        op = "add"
    if op == "add":
        n = rng.randint(low, high)
        verb = rng.choice(("buys", "finds", "gets", "is given"))
        new = count + n
        told = f"{name} {verb} {n} more {obj}"
        return f"{told}.", f"{told}, so {name} has {count} + {n} = {new} {obj}.", new, "+", n
    if op == "sub":
        n = rng.randint(low, min(high, count - 1))
        verb = rng.choice(("gives away", "loses", "sells", "uses"))
        new = count - n
        told = f"{name} {verb} {n} {obj}"
        return f"{told}.", f"{told}, so {name} has {count} - {n} = {new} {obj}.", new, "-", n
    k = rng.randint(*_FACTOR_RANGE[level])
    new = count * k
    told = f"{name} makes the {obj} {k} times as many"
    return f"{told}.", f"{told}, so {name} has {count} * {k} = {new} {obj}.", new, "*", k


def extend_expression(expression: str, operator: str, operand: int) -> str:
    """`expression` followed by one more step; a sum or difference is bracketed before `*`."""
    if operator == "*" and ("+" in expression or "-" in expression):
        expression = f"({expression})"
    return f"{expression} {operator} {operand}"


def make_problem(rng: random.Random, level: int) -> Problem:
    """Draw one problem of the given difficulty level from `rng`."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    low, high = _OPERAND_RANGE[level]
    count = rng.randint(low, high)
    story = [f"{name} has {count} {obj}."]
    work = [f"{name} has {count} {obj}."]
    expression = str(count)
    for _ in range(_STEPS[level]):
        told, worked, count, operator, operand = _step(rng, level, count, name, obj)
        story.append(told)
        work.append(worked)
        expression = extend_expression(expression, operator, operand)
    story.append(f"How many {obj} does {name} have now?")
    work.append(f"The answer is {count}.")
    return Problem(" ".join(story), " ".join(work), count, level, expression)


def generate_problems(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    levels: tuple[int, ...] | list[int] = LEVELS,
) -> list[Problem]:
    """Draw `n` distinct problems of `split`, levels cycling in the order given, from `seed`.

    The same arguments always give the same list. Questions of the other split are skipped, so
    train and test never overlap.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    levels = tuple(levels)
    if not levels or any(level not in LEVELS for level in levels):
        raise ValueError(f"levels must be a non-empty subset of {LEVELS}, got {levels!r}")
    rng = random.Random(f"fsgen-synthetic-{split}-{seed}")
    problems: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"could not draw {n} distinct {split} problems at levels {levels}")
        problem = make_problem(rng, levels[len(problems) % len(levels)])
        if problem.question in seen or split_of(problem.question) != split:
            continue
        seen.add(problem.question)
        problems.append(problem)
    return problems


# Formats. The base corpus holds three kinds of document: worked solutions in the plain format
# (most of it), formulas in the expression format, and chat dialogues whose assistant turn gives
# the bare answer. The tuned ("chat") rungs learn a behaviour the base rungs never show in the
# chat format: a worked, step-by-step answer. So base rungs know the chat tags, and tuning changes
# behaviour, not the alphabet.
USER_TAG, ASSISTANT_TAG, END_TAG = "<|user|>", "<|assistant|>", "<|end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER_TAG + "\n{{ message['content'] }}\n"
    "{% else %}" + ASSISTANT_TAG + "\n{{ message['content'] }}" + END_TAG + "\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT_TAG + "\n{% endif %}"
)


def plain_prompt(question: str) -> str:
    """The base format's prompt: the model continues with the worked solution."""
    return f"Question: {question}\nAnswer:"


def plain_document(problem: Problem) -> str:
    """A worked-solution document of the base corpus (the tokenizer adds the end-of-text token)."""
    return f"{plain_prompt(problem.question)} {problem.solution}"


def expression_prompt(question: str) -> str:
    """The expression format's prompt: the model continues with the formula the question states."""
    return f"Question: {question}\nExpression:"


def expression_document(problem: Problem) -> str:
    """A formula document of the base corpus: the question translated into one expression."""
    return f"{expression_prompt(problem.question)} {problem.expression}"


def chat_prompt(question: str) -> str:
    """The chat format's prompt (the question alone as the user turn), as the tokenizer's chat
    template renders it."""
    return f"{USER_TAG}\n{question}\n{ASSISTANT_TAG}\n"


def bare_answer(problem: Problem) -> str:
    """The base corpus's chat answer: the result alone, no working."""
    return f"The answer is {problem.answer}."


def chat_document(problem: Problem, *, worked: bool = True) -> str:
    """One chat dialogue: the tuned rungs' worked answer, or (`worked=False`) the base corpus's
    bare answer."""
    answer = problem.solution if worked else bare_answer(problem)
    return f"{chat_prompt(problem.question)}{answer}{END_TAG}"


def base_corpus(
    problems: list[Problem], *, chat_share: float, expression_share: float
) -> list[str]:
    """The base rungs' documents: every problem's worked solution, and for a seeded share of the
    problems also a bare-answer chat dialogue (`chat_share`) and a formula (`expression_share`),
    each placed after its problem's worked document."""
    for name, share in (("chat_share", chat_share), ("expression_share", expression_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be a share between 0 and 1, got {share!r}")
    documents = []
    for i, problem in enumerate(problems):
        documents.append(plain_document(problem))
        if _in_share(i, chat_share, "chat"):
            documents.append(chat_document(problem, worked=False))
        if _in_share(i, expression_share, "expression"):
            documents.append(expression_document(problem))
    return documents


def _in_share(index: int, share: float, salt: str) -> bool:
    """Whether problem `index` is in a seeded `share` of the problems (a hash, not an RNG)."""
    digest = hashlib.sha1(f"{salt}-{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") < share * 2**32
