"""Seeded GSM8K-style arithmetic word problems with step-by-step worked solutions.

Every problem is a short story about one person and one kind of object. Each step changes the
count (buys, gives away, fills boxes, ...) and the worked solution carries out the same steps,
one equation each, ending in "The answer is N." Difficulty levels set the number of steps and the
size of the operands:

| level | steps | operands          | operations            |
|-------|-------|-------------------|-----------------------|
| 1     | 1     | 1..9              | +, -                  |
| 2     | 2     | 1..20             | +, -                  |
| 3     | 3     | 2..50, x by 2..5  | +, -, x               |
| 4     | 4     | 2..99, x by 2..9  | +, -, x               |

Splits are decided by a hash of the question text, so the held-out test split can never share a
question with the training split, whatever the seeds and sizes that drew them.
"""

from __future__ import annotations

import hashlib
import random
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
_OPERAND_RANGE = {1: (1, 9), 2: (1, 20), 3: (2, 50), 4: (2, 99)}
_FACTOR_RANGE = {3: (2, 5), 4: (2, 9)}
_STEPS = {1: 1, 2: 2, 3: 3, 4: 4}


@dataclass(frozen=True)
class Problem:
    """One word problem: the question, its worked solution, the integer answer and its level."""

    question: str
    solution: str
    answer: int
    level: int

    def to_dict(self) -> dict:
        return asdict(self)


def split_of(question: str) -> str:
    """The split a question belongs to, fixed by a hash of its text."""
    bucket = int.from_bytes(hashlib.sha1(question.encode()).digest()[:4], "big") % 100
    return "test" if bucket < TEST_PERCENT else "train"


def _step(rng: random.Random, level: int, count: int, name: str, obj: str) -> tuple[str, str, int]:
    """One story step: (sentence for the question, sentence for the solution, new count)."""
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
        return f"{told}.", f"{told}, so {name} has {count} + {n} = {new} {obj}.", new
    if op == "sub":
        n = rng.randint(low, min(high, count - 1))
        verb = rng.choice(("gives away", "loses", "sells", "uses"))
        new = count - n
        told = f"{name} {verb} {n} {obj}"
        return f"{told}.", f"{told}, so {name} has {count} - {n} = {new} {obj}.", new
    k = rng.randint(*_FACTOR_RANGE[level])
    new = count * k
    told = f"{name} makes the {obj} {k} times as many"
    return f"{told}.", f"{told}, so {name} has {count} * {k} = {new} {obj}.", new


def make_problem(rng: random.Random, level: int) -> Problem:
    """Draw one problem of the given difficulty level from `rng`."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    low, high = _OPERAND_RANGE[level]
    count = rng.randint(low, high)
    story = [f"{name} has {count} {obj}."]
    work = [f"{name} has {count} {obj}."]
    for _ in range(_STEPS[level]):
        told, worked, count = _step(rng, level, count, name, obj)
        story.append(told)
        work.append(worked)
    story.append(f"How many {obj} does {name} have now?")
    work.append(f"The answer is {count}.")
    return Problem(" ".join(story), " ".join(work), count, level)


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


# Formats. The base corpus uses only the plain format; the chat format is seen only by the
# tuned ("chat") rungs, so tuning visibly changes behaviour on chat-formatted prompts.
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
    """One training document of the base corpus (the tokenizer adds the end-of-text token)."""
    return f"{plain_prompt(problem.question)} {problem.solution}"


def chat_prompt(question: str) -> str:
    """The instruction format's prompt, as the tokenizer's chat template renders it."""
    return f"{USER_TAG}\nSolve this problem step by step.\n{question}\n{ASSISTANT_TAG}\n"


def chat_document(problem: Problem) -> str:
    """One fine-tuning document of the instruction format."""
    return f"{chat_prompt(problem.question)}Let's work it out. {problem.solution}{END_TAG}"
