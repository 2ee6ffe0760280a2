"""Answer extraction and scoring, per task: numbers as people write them, the chosen letter, the
code block, the formula; a task's scorer compares what it extracts with the gold answer (MBPP's
runs the asserts in the sandbox); and accuracy with its Wilson interval over scores."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fsgen.core.stats import wilson_interval
from fsgen.data.sandbox import run_many

if TYPE_CHECKING:  # a type only
    from fsgen.data.sources import Example

# where each task's answer ends (its stop strings: the engine stops there, the scorer cuts there)
GSM8K_STOP = ("\nQuestion:",)
MMLU_STOP = ("\nQ:",)
MBPP_STOP = ("\nid:", "\nQuestion:", "\nCodes:")
SYNTHETIC_STOP = ("\nQuestion:", "<|end|>")
EXPRESSION_STOP = ("\n", "<|end|>")
_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?")


def cut(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first stop string in it."""
    cuts = [text.index(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


def parse_number(text: str) -> int | float | None:
    """`text` as a number, tolerant of "1,000", "$18", "18.0" and a trailing full stop."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value


def last_number(text: str) -> int | float | None:
    """The last number written in `text`, or None when there is none."""
    matches = _NUMBER.findall(text)
    return parse_number(matches[-1]) if matches else None


MBPP_TIMEOUT = 10.0  # seconds one MBPP program may run
MBPP_MEMORY_MB = 1024
_ANSWER_IS = re.compile(r"answer is\s*:?\s*(?:\(([A-Da-d])\)|([A-D])(?![A-Za-z]))", re.IGNORECASE)
_PARENS = re.compile(r"\(([A-D])\)")


def extract_choice(text: str) -> str | None:
    """The letter a multiple-choice answer picks, or None.

    The first "answer is (B)" / "answer is B" / "answer is: (b)" wins; failing that, the last
    "(B)" in the text. A bare lowercase letter only counts in parentheses, so "the answer is a
    guess" picks nothing.
    """
    for match in _ANSWER_IS.finditer(text):
        if match.group(1):
            return match.group(1).upper()
        if match.group(2) and match.group(2).isupper():  # IGNORECASE also matched lowercase
            return match.group(2)
    found = _PARENS.findall(text)
    return found[-1] if found else None


_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The program in an MBPP prediction: the first ``` fenced block if there is one, else the
    text up to the next few-shot item ("id:", "Question:")."""
    text = cut(text, MBPP_STOP)
    fenced = _FENCE.search(text)
    return (fenced.group(1) if fenced else text).strip("\n")


def gsm8k_answer(solution: str) -> int | float:
    """The gold number of a GSM8K worked solution: what follows "####", commas removed."""
    if "####" not in solution:
        raise ValueError(f"a GSM8K solution must end in '#### N', got {solution[-60:]!r}")
    value = parse_number(solution.rsplit("####", 1)[1].strip())
    if value is None:
        raise ValueError(f"no number after '####' in {solution[-60:]!r}")
    return value


def normalize_expression(text: str) -> str:
    """The first line of `text` with every space removed: how formulas are compared."""
    lines = text.strip().splitlines()
    return "".join(lines[0].split()) if lines else ""


def same_text(prediction: object, gold: object) -> bool:
    return prediction == normalize_expression(str(gold))


def synthetic_extract(text: str) -> int | float | None:
    return last_number(cut(text, SYNTHETIC_STOP))


def gsm8k_extract(text: str) -> int | float | None:
    return last_number(cut(text, GSM8K_STOP))


def mmlu_extract(text: str) -> str | None:
    return extract_choice(cut(text, MMLU_STOP))


def score_with(extract: Callable[[str], object], same: Callable[[object, object], bool]):
    """A scorer that compares each extracted answer with its example's gold answer."""

    def score(predictions, examples, workers):
        return [same(extract(p), e.gold) for p, e in zip(predictions, examples, strict=True)]

    return score


def same_number(prediction: object, gold: object) -> bool:
    return prediction is not None and abs(float(prediction) - float(gold)) < 1e-6


def same_letter(prediction: object, gold: object) -> bool:
    return prediction == gold


def mbpp_program(code: str, example: Example) -> str:
    """The program that tests `code` on an MBPP task: the code, its setup code, its asserts."""
    setup = example.record.get("test_setup_code") or ""
    return "\n".join([code, setup, *example.gold, ""])


def score_mbpp(predictions, examples, workers):
    programs = [
        mbpp_program(extract_code(p), e) for p, e in zip(predictions, examples, strict=True)
    ]
    results = run_many(programs, workers=workers, timeout=MBPP_TIMEOUT, memory_mb=MBPP_MEMORY_MB)
    return [result.passed for result in results]


def unscored(predictions, examples, workers):
    return [None] * len(examples)


def accuracy(scores: Sequence[bool | float | None]) -> float | None:
    """The mean of the scored entries (None entries skipped); None when nothing was scored. A
    NaN or infinite score is a ValueError naming its index (a score is in [0, 1])."""
    scored = _scored(scores)
    return sum(scored) / len(scored) if scored else None


def _scored(scores: Sequence[bool | float | None]) -> list[float]:
    """The scored entries as floats; a score that is not a finite number is an error."""
    scored = []
    for i, s in enumerate(scores):
        if s is None:
            continue
        value = float(s)
        if not math.isfinite(value):
            raise ValueError(f"score {i} is {s!r}: a score is a finite number in [0, 1]")
        scored.append(value)
    return scored


def accuracy_interval(scores: Sequence[bool | float | None]) -> tuple[float, float]:
    """The Wilson 95% interval of `accuracy(scores)` when every scored entry is right or wrong
    (0 or 1); NaNs for graded scores or when nothing was scored."""
    scored = _scored(scores)
    if not scored or any(s not in (0.0, 1.0) for s in scored):
        return float("nan"), float("nan")
    return wilson_interval(int(sum(scored)), len(scored))
