"""The evaluation tasks: where data comes from, how prompts are built, where generation stops, and
how answers are scored.

| task        | data                                   | prompt                                  | score |
|-------------|----------------------------------------|-----------------------------------------|-------|
| `synthetic` | `fsgen.data.synthetic` (generated from seed) | zero-shot "Question: ...\\nAnswer:"      | last number == answer |
| `expression`| the same synthetic problems            | zero-shot "Question: ...\\nExpression:"  | the formula == the question's, spaces aside |
| `gsm8k`     | `openai/gsm8k` main, test              | 8-shot chain of thought                 | last number == "#### N" |
| `mmlu_stem` | `TIGER-Lab/MMLU-STEM`, test            | 5-shot chain of thought, "(A) ... (D)"  | chosen letter == gold |
| `mbpp`      | MBPP test tasks 11-510                 | 10-shot, the task's asserts shown       | the asserts pass in `fsgen.data.sandbox` |
| `mt_bench`  | `lighteval/mt-bench` (80), first turn  | the question alone                      | None, unless a judge is given |

Data come from a local directory laid out like `../shared/data` (JSONL files, the few-shot texts
under `prompts/`), chosen by `data_dir=` or the `FSGEN_DATA_DIR` variable, else from the model hub
through `datasets`. Few-shot texts are the FS-GEN authors' (`prompts/` of the data directory), or
any file passed as `few_shot_file=`.

Typical use::

    examples = load_examples("gsm8k", data_dir="../shared/data", n_prompts=100, seed=0)
    prompts = build_prompts("gsm8k", examples, data_dir="../shared/data")
    result = collaborate(..., prompts, stop=get_task("gsm8k").stop)
    correct = score("gsm8k", result.texts, examples)
    accuracy(correct)
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fsgen.core.paths import resolve
from fsgen.core.stats import wilson_interval
from fsgen.data.sandbox import run_many
from fsgen.data.scoring import last_number, parse_number
from fsgen.data.synthetic import (
    Problem,
    chat_prompt,
    expression_prompt,
    generate_problems,
    plain_prompt,
)

DATA_ENV = "FSGEN_DATA_DIR"
SYNTHETIC_SIZE = 1000  # synthetic examples drawn when n_prompts is not given
MBPP_TIMEOUT = 10.0  # seconds one MBPP program may run
MBPP_MEMORY_MB = 1024
LETTERS = "ABCD"

FewShot = str | dict[str, str]  # one text, or one text per subject (MMLU)


class DataUnavailableError(OSError):
    """A task's data is not in a local data directory and the hub cannot be reached."""


@dataclass(frozen=True)
class Example:
    """One evaluation item: its id, question, gold answer and reference solution.

    `gold` is what a prediction is scored against (a number, a letter, the MBPP asserts, or None
    for MT-bench); `solution` is a reference answer written out (the worked solution, the
    reference code, "The answer is (B).") that scores as correct; `record` is the raw row.
    """

    task: str
    id: int
    question: str
    gold: object
    solution: str | None
    record: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class Task:
    """A task: how to load its rows, build a prompt, stop generating, extract and score answers.

    `load(data_dir, split)` reads a local data directory, or the hub when `data_dir` is None;
    `prompt(example, few_shot)` builds the plain prompt; `chat_message(example, few_shot)` the
    user message that a chat template wraps; `extract(prediction)` pulls out the answer;
    `score(predictions, examples, workers)` says which predictions are right (None: unscored);
    `few_shot` names the default few-shot file under `<data_dir>/prompts`.
    """

    name: str
    splits: tuple[str, ...]
    load: Callable[[Path | None, str], list[Example]]
    prompt: Callable[[Example, FewShot], str]
    stop: tuple[str, ...]
    extract: Callable[[str], object]
    score: Callable[[Sequence[str], Sequence[Example], int], list[bool | None]]
    few_shot: str | None = None
    chat_message: Callable[[Example, FewShot], str] | None = None


# ----------------------------------------------------------------------------- data sources


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data directory: `data_dir`, else `$FSGEN_DATA_DIR`, else None (the hub).

    Relative paths resolve from the repository root (`fsgen.core.paths.resolve`).
    """
    if data_dir is not None and not str(data_dir).strip():
        raise ValueError(
            f"data_dir must name a data directory, got {data_dir!r} (None: ${DATA_ENV} or the hub)"
        )
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    return None if chosen is None else resolve(chosen)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file (blank lines skipped); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a JSONL data file at {path}, but there is none")
    rows = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    rows.append(json.loads(line))
            except (UnicodeDecodeError, ValueError) as error:
                raise ValueError(
                    f"{path} line {number}: not a UTF-8 JSON line ({error})"
                ) from error
            if line.strip() and not isinstance(rows[-1], dict):
                raise ValueError(f"{path} line {number}: expected a JSON object, got {line[:60]!r}")
    return rows


def _rows(rows: list[dict], source: str, fields: Sequence[str]):
    """`(i, row)` over rows that all hold `fields`; a missing one names the source and row."""
    for i, row in enumerate(rows):
        missing = [name for name in fields if name not in row]
        if missing:
            raise ValueError(f"{source} row {i} lacks the fields {missing}; it has {sorted(row)}")
        yield i, row


def _hub(path: str, *args: str, split: str) -> list[dict]:
    """Rows of a hub dataset through `datasets`; a clear error when it cannot be had."""
    try:
        from datasets import load_dataset  # noqa: PLC0415 (slow to import; only the hub path needs it)

        return [dict(row) for row in load_dataset(path, *args, split=split)]
    except Exception as err:  # offline, not cached, renamed upstream, ...
        raise DataUnavailableError(
            f"could not load {path!r} ({split}) from the hub: {err}. Offline, point fsgen at a "
            f"local data directory laid out like ../shared/data, either with data_dir= or with "
            f"the {DATA_ENV} environment variable."
        ) from err


def _check_split(task: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise ValueError(f"task {task!r} has splits {tuple(splits)}, got split={split!r}")


# ----------------------------------------------------------------------------- few-shot texts


def load_few_shot(
    task: str | Task,
    *,
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> FewShot:
    """A task's few-shot text: from `path` if given, else `<data_dir>/prompts/<task file>`.

    A `.json` file holds one text per subject (as `mmlu_cot_5shot.json`); any other file is one
    text. A task without a default file (synthetic, MT-bench) gets "" unless `path` is given.
    """
    task = get_task(task)
    if path is None:
        if task.few_shot is None:
            return ""
        root = resolve_data_dir(data_dir)
        if root is None:
            raise DataUnavailableError(
                f"task {task.name!r} needs its few-shot file {task.few_shot!r}: pass "
                f"few_shot_file=, or a data directory holding prompts/{task.few_shot} with "
                f"data_dir= or the {DATA_ENV} environment variable"
            )
        path = root / "prompts" / task.few_shot
    path = resolve(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a few-shot file at {path}, but there is none")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        texts = json.loads(text)
        if not isinstance(texts, dict):
            raise ValueError(f"{path} must hold a JSON object subject -> text, got {type(texts)}")
        return texts
    return text


def _shots(few_shot: FewShot, subject: str | None = None) -> str:
    """The few-shot text for `subject`, ending in a blank line (or "" for none)."""
    if isinstance(few_shot, dict):
        if subject not in few_shot:
            raise ValueError(
                f"the few-shot file has no text for subject {subject!r}; it has {sorted(few_shot)}"
            )
        few_shot = few_shot[subject]
    text = few_shot.strip("\n")
    return f"{text}\n\n" if text else ""


# ----------------------------------------------------------------------------- extractors


def _cut(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first stop string in it."""
    cuts = [text.index(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


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
    text = _cut(text, _MBPP_STOP)
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


# ----------------------------------------------------------------------------- scorers


def normalize_expression(text: str) -> str:
    """The first line of `text` with every space removed: how formulas are compared."""
    lines = text.strip().splitlines()
    return "".join(lines[0].split()) if lines else ""


def _same_text(prediction: object, gold: object) -> bool:
    return prediction == normalize_expression(str(gold))


def _synthetic_extract(text: str) -> int | float | None:
    return last_number(_cut(text, _SYNTHETIC_STOP))


def _gsm8k_extract(text: str) -> int | float | None:
    return last_number(_cut(text, _GSM8K_STOP))


def _mmlu_extract(text: str) -> str | None:
    return extract_choice(_cut(text, _MMLU_STOP))


def _score_with(extract: Callable[[str], object], same: Callable[[object, object], bool]):
    """A scorer that compares each extracted answer with its example's gold answer."""

    def score(predictions, examples, workers):
        return [same(extract(p), e.gold) for p, e in zip(predictions, examples, strict=True)]

    return score


def _same_number(prediction: object, gold: object) -> bool:
    return prediction is not None and abs(float(prediction) - float(gold)) < 1e-6


def _same_letter(prediction: object, gold: object) -> bool:
    return prediction == gold


def mbpp_program(code: str, example: Example) -> str:
    """The program that tests `code` on an MBPP task: the code, its setup code, its asserts."""
    setup = example.record.get("test_setup_code") or ""
    return "\n".join([code, setup, *example.gold, ""])


def _score_mbpp(predictions, examples, workers):
    programs = [
        mbpp_program(extract_code(p), e) for p, e in zip(predictions, examples, strict=True)
    ]
    results = run_many(programs, workers=workers, timeout=MBPP_TIMEOUT, memory_mb=MBPP_MEMORY_MB)
    return [result.passed for result in results]


def _unscored(predictions, examples, workers):
    return [None] * len(examples)


# ----------------------------------------------------------------------------- loaders and prompts


def expression_example(i: int, problem: Problem) -> Example:
    """A synthetic problem as an expression `Example`: the gold is the formula it states."""
    return Example(
        "expression",
        i,
        problem.question,
        problem.expression,
        problem.expression,
        problem.to_dict(),
    )


def synthetic_example(i: int, problem: Problem) -> Example:
    """A synthetic problem as an `Example` with id `i`."""
    return Example(
        "synthetic", i, problem.question, problem.answer, problem.solution, problem.to_dict()
    )


GENERATED = {"synthetic": synthetic_example, "expression": expression_example}


def generated_examples(task: str, n: int, *, split: str = "train", seed: int = 0) -> list[Example]:
    """`n` examples of a task made from `fsgen.data.synthetic` problems (`GENERATED`), drawn
    afresh from `seed` rather than from the fixed set `load_examples` selects from."""
    if task not in GENERATED:
        raise ValueError(f"task {task!r} is not generated; generated tasks: {sorted(GENERATED)}")
    problems = generate_problems(n, split=split, seed=seed)
    return [GENERATED[task](i, p) for i, p in enumerate(problems)]


def _load_synthetic(data_dir: Path | None, split: str) -> list[Example]:
    return generated_examples("synthetic", SYNTHETIC_SIZE, split=split, seed=0)


def _load_expression(data_dir: Path | None, split: str) -> list[Example]:
    return generated_examples("expression", SYNTHETIC_SIZE, split=split, seed=0)


def _load_gsm8k(data_dir: Path | None, split: str) -> list[Example]:
    source = "openai/gsm8k" if data_dir is None else data_dir / "gsm8k" / f"{split}.jsonl"
    rows = _hub(source, "main", split=split) if data_dir is None else read_jsonl(source)
    examples = []
    for i, row in _rows(rows, str(source), ("question", "answer")):
        try:
            gold = gsm8k_answer(str(row["answer"]))
        except ValueError as error:
            raise ValueError(f"{source} row {i}: {error}") from error
        examples.append(Example("gsm8k", i, row["question"], gold, row["answer"], row))
    return examples


def _load_mmlu(data_dir: Path | None, split: str) -> list[Example]:
    source = (
        "TIGER-Lab/MMLU-STEM" if data_dir is None else data_dir / "mmlu_stem" / f"{split}.jsonl"
    )
    rows = _hub(source, split=split) if data_dir is None else read_jsonl(source)
    examples = []
    for i, row in _rows(rows, str(source), ("question", "choices", "answer")):
        if not isinstance(row["choices"], list) or len(row["choices"]) != len(LETTERS):
            raise ValueError(
                f"{source} row {i} must have a list of 4 choices, got {row['choices']!r}"
            )
        answer = row["answer"]
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
            raise ValueError(f"{source} row {i}: answer must be an index 0-3, got {answer!r}")
        letter = LETTERS[answer]
        examples.append(
            Example("mmlu_stem", i, row["question"], letter, f"The answer is ({letter}).", row)
        )
    return examples


_MBPP_SPLITS = {"test": (11, 510), "train": (601, 974), "validation": (511, 600), "prompt": (1, 10)}


def _load_mbpp(data_dir: Path | None, split: str) -> list[Example]:
    source = "google-research-datasets/mbpp" if data_dir is None else data_dir / "mbpp/mbpp.jsonl"
    rows = _hub(source, "full", split=split) if data_dir is None else read_jsonl(source)
    fields = ("task_id", "text", "test_list", "code")
    for i, row in _rows(rows, str(source), fields):
        tests = row["test_list"]
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise ValueError(
                f"{source} row {i}: test_list must be a list of asserts, got {tests!r:.80}"
            )
    if data_dir is not None:
        first, last = _MBPP_SPLITS[split]
        rows = [row for row in rows if first <= int(row["task_id"]) <= last]
    rows = sorted(rows, key=lambda row: int(row["task_id"]))
    return [
        Example("mbpp", int(row["task_id"]), row["text"], list(row["test_list"]), row["code"], row)
        for row in rows
    ]


def _load_mt_bench(data_dir: Path | None, split: str) -> list[Example]:
    source = "lighteval/mt-bench" if data_dir is None else data_dir / "mt_bench/question.jsonl"
    # from the hub: the 80 questions with their original ids, columns and references
    rows = _hub(source, split="train") if data_dir is None else read_jsonl(source)
    examples = []
    for _, row in _rows(rows, str(source), ("question_id", "turns")):
        reference = row.get("reference") or None
        solution = reference[0] if reference else None
        examples.append(
            Example("mt_bench", int(row["question_id"]), row["turns"][0], None, solution, row)
        )
    return examples


def _synthetic_prompt(example: Example, few_shot: FewShot) -> str:
    return _shots(few_shot) + plain_prompt(example.question)


def _synthetic_chat(example: Example, few_shot: FewShot) -> str:
    """The user message of `fsgen.data.synthetic.chat_prompt` (what the tuned rungs were taught)."""
    return _shots(few_shot) + example.question


def _expression_prompt(example: Example, few_shot: FewShot) -> str:
    return _shots(few_shot) + expression_prompt(example.question)


def _gsm8k_prompt(example: Example, few_shot: FewShot) -> str:
    return f"{_shots(few_shot)}Question: {example.question}\nLet's think step by step\n"


def _mmlu_prompt(example: Example, few_shot: FewShot) -> str:
    choices = " ".join(
        f"({x}) {c}" for x, c in zip(LETTERS, example.record["choices"], strict=True)
    )
    shots = _shots(few_shot, example.record.get("subject"))
    return f"{shots}Q: {example.question}\n{choices}\nA: Let's think step by step."


def _mbpp_prompt(example: Example, few_shot: FewShot) -> str:
    shots = _shots(few_shot)
    shots = shots + "\n" if shots else ""  # the few-shot file separates items by two blank lines
    asserts = "\n".join(example.gold)
    return f"{shots}id: {example.id}\nQuestion:\n{example.question}\n\n{asserts}\n\nCodes:\n"


def _mt_bench_prompt(example: Example, few_shot: FewShot) -> str:
    return _shots(few_shot) + example.question


_GSM8K_STOP = ("\nQuestion:",)
_MMLU_STOP = ("\nQ:",)
_MBPP_STOP = ("\nid:", "\nQuestion:", "\nCodes:")
_SYNTHETIC_STOP = ("\nQuestion:", "<|end|>")
_EXPRESSION_STOP = ("\n", "<|end|>")

TASKS: dict[str, Task] = {
    "synthetic": Task(
        name="synthetic",
        splits=("test", "train"),
        load=_load_synthetic,
        prompt=_synthetic_prompt,
        chat_message=_synthetic_chat,
        stop=_SYNTHETIC_STOP,
        extract=_synthetic_extract,
        score=_score_with(_synthetic_extract, _same_number),
    ),
    "expression": Task(
        name="expression",
        splits=("test", "train"),
        load=_load_expression,
        prompt=_expression_prompt,
        stop=_EXPRESSION_STOP,
        extract=normalize_expression,
        score=_score_with(normalize_expression, _same_text),
    ),
    "gsm8k": Task(
        name="gsm8k",
        splits=("test", "train"),
        load=_load_gsm8k,
        prompt=_gsm8k_prompt,
        stop=_GSM8K_STOP,
        extract=_gsm8k_extract,
        score=_score_with(_gsm8k_extract, _same_number),
        few_shot="gsm8k_8shot.txt",
    ),
    "mmlu_stem": Task(
        name="mmlu_stem",
        splits=("test",),
        load=_load_mmlu,
        prompt=_mmlu_prompt,
        stop=_MMLU_STOP,
        extract=_mmlu_extract,
        score=_score_with(_mmlu_extract, _same_letter),
        few_shot="mmlu_cot_5shot.json",
    ),
    "mbpp": Task(
        name="mbpp",
        splits=tuple(_MBPP_SPLITS),
        load=_load_mbpp,
        prompt=_mbpp_prompt,
        stop=_MBPP_STOP,
        extract=extract_code,
        score=_score_mbpp,
        few_shot="mbpp_10shot.txt",
    ),
    "mt_bench": Task(
        name="mt_bench",
        splits=("test",),
        load=_load_mt_bench,
        prompt=_mt_bench_prompt,
        stop=(),
        extract=str.strip,
        score=_unscored,
    ),
}


def get_task(name: str | Task) -> Task:
    """The registered task called `name` (a `Task` is returned as it is)."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]


# ----------------------------------------------------------------------------- public workflow


def load_examples(
    task: str | Task,
    *,
    data_dir: str | os.PathLike | None = None,
    n_prompts: int | None = None,
    seed: int = 0,
    split: str = "test",
) -> list[Example]:
    """The examples of `task`'s `split`, from a local data directory or the hub.

    Data: `data_dir`, else `$FSGEN_DATA_DIR`, else the hub through `datasets` (a
    `DataUnavailableError` naming both options when that fails). Synthetic examples are generated
    (`SYNTHETIC_SIZE` of them, seed 0) and need no data.

    Selection: with `n_prompts=None`, every example in dataset order. Otherwise the examples are
    shuffled by `random.Random(seed)` (over dataset order, which is sorted by task id for MBPP)
    and the first `n_prompts` are kept, in shuffled order. The same seed always gives the same
    prompts, and a larger `n_prompts` with the same seed extends a smaller one.
    """
    task = get_task(task)
    _check_split(task.name, split, task.splits)
    examples = task.load(resolve_data_dir(data_dir), split)
    if n_prompts is None:
        return examples
    if not 0 <= n_prompts <= len(examples):
        raise ValueError(
            f"n_prompts must be between 0 and {len(examples)} (the size of {task.name} "
            f"{split}), got {n_prompts!r}"
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [examples[i] for i in order[:n_prompts]]


def build_prompts(
    task: str | Task,
    examples: Sequence[Example],
    *,
    tokenizer=None,
    chat: bool = False,
    few_shot_file: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> list[str]:
    """The prompts of `examples`, as the FS-GEN authors built them.

    The few-shot text comes from `few_shot_file`, else from `<data_dir>/prompts` (see
    `load_few_shot`). With `chat=True` each prompt becomes one user message wrapped in the
    tokenizer's chat template (with the generation prompt); a tokenizer without a template leaves
    the prompts plain, with a warning. Synthetic prompts need no tokenizer for `chat=True`: they
    use `fsgen.data.synthetic.chat_prompt`, which the embedded ladder's template renders the same way.
    """
    task = get_task(task)
    few_shot = load_few_shot(task, path=few_shot_file, data_dir=data_dir)
    if not chat:
        return [task.prompt(example, few_shot) for example in examples]
    message = task.chat_message or task.prompt
    if tokenizer is None:
        if task.name == "synthetic" and not few_shot:
            return [chat_prompt(example.question) for example in examples]
        raise ValueError(f"chat=True needs a tokenizer with a chat template for {task.name!r}")
    if not getattr(tokenizer, "chat_template", None):
        warnings.warn("the tokenizer has no chat template; prompts stay plain", stacklevel=2)
        return [task.prompt(example, few_shot) for example in examples]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": message(example, few_shot)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for example in examples
    ]


def score(
    task: str | Task,
    predictions: Sequence[str],
    examples: Sequence[Example],
    *,
    judge: Callable[[Example, str], bool | float | None] | None = None,
    workers: int = 2,
) -> list[bool | float | None]:
    """Score each prediction against its example: True/False, or None where unscored.

    `judge(example, prediction)`, when given, replaces the task's own scorer (MT-bench is
    generation only without one). MBPP runs programs in `fsgen.data.sandbox`, `workers` at a time.
    """
    task = get_task(task)
    if isinstance(predictions, str):
        raise ValueError(
            f"predictions must be a list of texts, got one string {predictions[:40]!r}; "
            f"use [{predictions[:40]!r}]"
        )
    if len(predictions) != len(examples):
        raise ValueError(
            f"need one prediction per example, got {len(predictions)} predictions for "
            f"{len(examples)} examples"
        )
    for i, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise ValueError(
                f"prediction {i} must be a generated text (a string), got "
                f"{type(prediction).__name__} {prediction!r:.60}"
            )
    if judge is not None:
        return [
            judge(example, prediction)
            for prediction, example in zip(predictions, examples, strict=True)
        ]
    return task.score(predictions, examples, workers)


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
