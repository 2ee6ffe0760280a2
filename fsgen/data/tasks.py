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
import os
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fsgen.core.paths import resolve
from fsgen.data.scoring import (
    EXPRESSION_STOP,
    GSM8K_STOP,
    MBPP_STOP,
    MMLU_STOP,
    SYNTHETIC_STOP,
    extract_code,
    gsm8k_answer,
    gsm8k_extract,
    mmlu_extract,
    normalize_expression,
    same_letter,
    same_number,
    same_text,
    score_mbpp,
    score_with,
    synthetic_extract,
    unscored,
)
from fsgen.data.sources import (
    DATA_ENV,
    DataUnavailableError,
    Example,
    check_split,
    hub_rows,
    read_jsonl,
    resolve_data_dir,
    rows_with,
)
from fsgen.data.synthetic import (
    Problem,
    chat_prompt,
    expression_prompt,
    generate_problems,
    plain_prompt,
)

SYNTHETIC_SIZE = 1000  # synthetic examples drawn when n_prompts is not given
LETTERS = "ABCD"

FewShot = str | dict[str, str]  # one text, or one text per subject (MMLU)


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
    rows = hub_rows(source, "main", split=split) if data_dir is None else read_jsonl(source)
    examples = []
    for i, row in rows_with(rows, str(source), ("question", "answer")):
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
    rows = hub_rows(source, split=split) if data_dir is None else read_jsonl(source)
    examples = []
    for i, row in rows_with(rows, str(source), ("question", "choices", "answer")):
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
    rows = hub_rows(source, "full", split=split) if data_dir is None else read_jsonl(source)
    fields = ("task_id", "text", "test_list", "code")
    for i, row in rows_with(rows, str(source), fields):
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
    rows = hub_rows(source, split="train") if data_dir is None else read_jsonl(source)
    examples = []
    for _, row in rows_with(rows, str(source), ("question_id", "turns")):
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


TASKS: dict[str, Task] = {
    "synthetic": Task(
        name="synthetic",
        splits=("test", "train"),
        load=_load_synthetic,
        prompt=_synthetic_prompt,
        chat_message=_synthetic_chat,
        stop=SYNTHETIC_STOP,
        extract=synthetic_extract,
        score=score_with(synthetic_extract, same_number),
    ),
    "expression": Task(
        name="expression",
        splits=("test", "train"),
        load=_load_expression,
        prompt=_expression_prompt,
        stop=EXPRESSION_STOP,
        extract=normalize_expression,
        score=score_with(normalize_expression, same_text),
    ),
    "gsm8k": Task(
        name="gsm8k",
        splits=("test", "train"),
        load=_load_gsm8k,
        prompt=_gsm8k_prompt,
        stop=GSM8K_STOP,
        extract=gsm8k_extract,
        score=score_with(gsm8k_extract, same_number),
        few_shot="gsm8k_8shot.txt",
    ),
    "mmlu_stem": Task(
        name="mmlu_stem",
        splits=("test",),
        load=_load_mmlu,
        prompt=_mmlu_prompt,
        stop=MMLU_STOP,
        extract=mmlu_extract,
        score=score_with(mmlu_extract, same_letter),
        few_shot="mmlu_cot_5shot.json",
    ),
    "mbpp": Task(
        name="mbpp",
        splits=tuple(_MBPP_SPLITS),
        load=_load_mbpp,
        prompt=_mbpp_prompt,
        stop=MBPP_STOP,
        extract=extract_code,
        score=score_mbpp,
        few_shot="mbpp_10shot.txt",
    ),
    "mt_bench": Task(
        name="mt_bench",
        splits=("test",),
        load=_load_mt_bench,
        prompt=_mt_bench_prompt,
        stop=(),
        extract=str.strip,
        score=unscored,
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
    check_split(task.name, split, task.splits)
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
    zero_shot: bool = False,
) -> list[str]:
    """The prompts of `examples`, as the FS-GEN authors built them (`zero_shot`: without the
    few-shot text, as an instruction-tuned model is asked in its chat format).

    The few-shot text comes from `few_shot_file`, else from `<data_dir>/prompts` (see
    `load_few_shot`). With `chat=True` each prompt becomes one user message wrapped in the
    tokenizer's chat template (with the generation prompt); a tokenizer without a template leaves
    the prompts plain, with a warning. Synthetic prompts need no tokenizer for `chat=True`: they
    use `fsgen.data.synthetic.chat_prompt`, which the embedded ladder's template renders the same way.
    """
    task = get_task(task)
    few_shot = "" if zero_shot else load_few_shot(task, path=few_shot_file, data_dir=data_dir)
    if not chat:
        return [task.prompt(example, few_shot) for example in examples]
    if tokenizer is None:
        if task.name == "synthetic" and not few_shot:
            return [chat_prompt(example.question) for example in examples]
        raise ValueError(f"chat=True needs a tokenizer with a chat template for {task.name!r}")
    if not getattr(tokenizer, "chat_template", None):
        warnings.warn("the tokenizer has no chat template; prompts stay plain", stacklevel=2)
        return [task.prompt(example, few_shot) for example in examples]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message(task, example, few_shot)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for example in examples
    ]


def user_message(task: str | Task, example: Example, few_shot: FewShot = "") -> str:
    """The user's turn that asks `example` in a chat: the task's chat message, else its prompt."""
    task = get_task(task)
    return (task.chat_message or task.prompt)(example, few_shot)


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
