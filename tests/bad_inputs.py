"""A battery of bad inputs and faults, tried as a new user would, on tiny models and files.

Each case is classed as
- handled well: a ValueError/FileNotFoundError (or a warning, where a warning is the answer)
  whose message names the bad value or the file; or, where fsgen wraps a value (a string for a
  list of names), the right result;
- silent wrong: no error and no warning, or a wrapped value that came out wrong;
- data loss: a file that fsgen did not write was deleted or changed;
- unnamed: an error whose message names neither the value nor the file.

Run: python -m tests.bad_inputs  (about a minute on one core; prints the counts and every
case that was not handled well)
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fsgen.analysis.routing import calibrate_router  # noqa: E402
from fsgen.analysis.scaling import fit_scaling_law  # noqa: E402
from fsgen.core.executor import as_executor  # noqa: E402
from fsgen.core.io import read_yaml, write_metrics  # noqa: E402
from fsgen.core.owned import prepare_owned_dir, remove_owned  # noqa: E402
from fsgen.core.shards import ShardStore, merge_logs, write_plan  # noqa: E402
from fsgen.data.sandbox import run_python  # noqa: E402
from fsgen.data.scoring import accuracy  # noqa: E402
from fsgen.data.sources import read_jsonl  # noqa: E402
from fsgen.data.synthetic import generate_problems, plain_document, plain_prompt  # noqa: E402
from fsgen.data.tasks import build_prompts, get_task, load_examples, score  # noqa: E402
from fsgen.data.tokenizer import train_tokenizer  # noqa: E402
from fsgen.engine.collaborate import collaborate, generate  # noqa: E402
from fsgen.engine.methods import logging_methods  # noqa: E402
from fsgen.engine.trace import read_trace  # noqa: E402
from fsgen.models.ladder import remove_stale_models  # noqa: E402
from fsgen.models.profiles import load_profile  # noqa: E402
from fsgen.stages.config import stage_config  # noqa: E402
from fsgen.stages.token_logging import log_tokens  # noqa: E402


@dataclass
class Case:
    name: str
    run: Callable[[], object]
    needle: str | None = None  # what the message must name (default: the repr of the value)
    expect: str = "error"  # error | warn | ok (run returns True when the result is right)
    guard: Path | None = None  # a folder whose files must survive


def classify(case: Case) -> tuple[str, str]:
    before = _files(case.guard) if case.guard else None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = case.run()
        error = None
    except Exception as err:  # noqa: BLE001 (the battery classes every failure)
        error, result, caught = err, None, []
    if case.guard and _files(case.guard) != before:
        return "data loss", "files changed or deleted"
    if case.expect == "ok":
        if error is not None:
            return "unnamed", f"{type(error).__name__}: {error}"
        return ("handled well", "") if result is True else ("silent wrong", repr(result)[:80])
    if case.expect == "warn" and error is None:
        text = " ".join(str(w.message) for w in caught)
        if caught and (case.needle is None or case.needle in text):
            return "handled well", ""
        return "silent wrong", "no warning"
    if error is None:
        return "silent wrong", f"returned {repr(result)[:80]}"
    message = str(error)
    if isinstance(error, ValueError | FileNotFoundError) and case.needle in message:
        return "handled well", ""
    return "unnamed", f"{type(error).__name__}: {message[:160]}"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- fixtures


def tiny_models():
    problems = generate_problems(200, seed=7)
    tokenizer = train_tokenizer([plain_document(p) for p in problems], 300)

    def model(hidden: int, layers: int, seed: int):
        torch.manual_seed(seed)
        config = GPTNeoXConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
            max_position_embeddings=128,
            eos_token_id=tokenizer.eos_token_id,
        )
        return GPTNeoXForCausalLM(config).eval()

    prompts = [plain_prompt(p.question) for p in problems[:2]]
    return model(16, 1, 0), model(32, 2, 1), tokenizer, prompts


def data_dir(root: Path, files: dict[str, bytes]) -> Path:
    """A data directory like ../shared/data holding `files` (path -> bytes)."""
    folder = Path(tempfile.mkdtemp(dir=root))
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def params_file(root: Path, text: str) -> Path:
    path = Path(tempfile.mkstemp(dir=root, suffix=".yaml")[1])
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- the cases


def engine_cases(small, large, tokenizer, prompts) -> list[Case]:
    def run(**kwargs):
        args = {"max_new_tokens": 4, "batch_size": 2} | kwargs
        return lambda: collaborate(small, large, tokenizer, args.pop("prompts", prompts), **args)

    cases = [
        Case("prompts as one string", run(prompts="Question: 1+1?"), "'Question: 1+1?'"),
        Case("stop as one string", run(stop="ab"), "'ab'"),
        Case("stop holding ''", run(stop=["", "x"]), "''"),
        Case("stop holding a number", run(stop=[3]), "3"),
    ]
    for bad in (float("nan"), -0.1, 1.5, "0.5", True, float("inf")):
        for router in ("threshold", "margin"):
            cases.append(Case(f"{router} {bad!r}", run(router=router, threshold=bad), repr(bad)))
    for bad in (float("nan"), -1.0, float("inf")):
        cases.append(Case(f"entropy {bad!r}", run(router="entropy", threshold=bad), repr(bad)))
    cases.append(Case("router needs threshold", run(router="threshold"), "None"))
    cases.append(Case("unknown router", run(router="sometimes"), "'sometimes'"))
    for method in ("contrastive", "contrastive_obrien"):
        for bad in (float("nan"), 0.0, -0.5, 1.5, float("inf")):
            cases.append(Case(f"{method} alpha {bad!r}", run(method=method, alpha=bad), repr(bad)))
        cases.append(Case(f"{method} beta nan", run(method=method, beta=math.nan), "nan"))
        cases.append(Case(f"{method} beta '1'", run(method=method, beta="1"), "'1'"))
    for bad in (float("nan"), float("inf"), -1.0, 0.0, "1"):
        cases.append(Case(f"sampling temperature {bad!r}", run(do_sample=True, temperature=bad)))
        cases[-1].needle = repr(bad)
    cases.append(Case("greedy temperature nan", run(temperature=math.nan), "nan"))
    for name in ("max_new_tokens", "batch_size", "trace_top_k"):
        for bad in (2.5, 0, -1, "8", True):
            cases.append(Case(f"{name}={bad!r}", run(**{name: bad}), repr(bad)))
    for bad in (0, 2.5, 500):
        cases.append(Case(f"num_draft={bad!r}", run(method="speculative", num_draft=bad), f"{bad}"))
    cases.append(Case("unknown method", run(method="beam"), "'beam'"))
    cases.append(Case("forward='fast'", run(forward="fast"), "'fast'"))
    cases.append(Case("proxy without tuned", run(method="proxy"), "small_tuned"))
    cases.append(Case("max_new_tokens past context", run(max_new_tokens=1000), "1000"))

    def router_ints(probs):
        return torch.ones(probs.shape[0], dtype=torch.int64)

    def router_shape(probs):
        return torch.ones(probs.shape[0] + 1, dtype=torch.bool)

    def router_list(probs):
        return [True] * probs.shape[0]

    cases += [
        Case("router returns ints", run(router=router_ints), "int64"),
        Case("router returns wrong shape", run(router=router_shape), "(3,)"),
        Case("router returns a list", run(router=router_list), "list"),
    ]
    swapped = lambda: collaborate(large, small, tokenizer, prompts, max_new_tokens=2)  # noqa: E731
    cases.append(Case("large smaller than small", swapped, "fewer parameters", expect="warn"))

    def train_mode_is_evaluated():
        small.train(), large.train()
        collaborate(small, large, tokenizer, prompts, max_new_tokens=2)
        return not small.training and not large.training

    cases.append(Case("models in train mode decode in eval", train_mode_is_evaluated, expect="ok"))
    cases.append(
        Case("generate prompts as string", lambda: generate(small, tokenizer, "abc"), "'abc'")
    )
    return cases


def scaling_cases() -> list[Case]:
    r = [2.0, 4.0, 8.0, 16.0]
    return [
        Case("frequencies in percent", lambda: fit_scaling_law(r, [30, 25, 20, 18]), "30"),
        Case("frequency nan", lambda: fit_scaling_law(r, [0.3, math.nan, 0.2, 0.1]), "nan"),
        Case("negative frequency", lambda: fit_scaling_law(r, [0.3, -0.1, 0.2, 0.1]), "-0.1"),
        Case("ratio zero", lambda: fit_scaling_law([0.0, 4, 8, 16], [0.3, 0.2, 0.2, 0.1]), "0.0"),
        Case("unequal lengths", lambda: fit_scaling_law(r, [0.3, 0.2]), "(2,)"),
        Case("two ratios only", lambda: fit_scaling_law([2, 2, 4], [0.3, 0.3, 0.2]), "2"),
    ]


def task_cases(root: Path) -> list[Case]:
    examples = load_examples("synthetic", n_prompts=3)
    gsm = "gsm8k/test.jsonl"
    good_gsm = b'{"question": "q", "answer": "x #### 3"}\n'
    mmlu = "mmlu_stem/test.jsonl"
    row = '{"question": "q", "subject": "s", "choices": ["a","b","c","d"], "answer": %s}\n'
    mbpp = "mbpp/mbpp.jsonl"
    mbpp_row = '{"task_id": 11, "text": "t", "code": "c", "test_list": %s}\n'

    def loads(task: str, files: dict[str, bytes]):
        folder = data_dir(root, files)
        return lambda: load_examples(task, data_dir=folder)

    cases = [
        Case("score predictions as one string", lambda: score("synthetic", "123", examples[:3])),
        Case("score with unequal lengths", lambda: score("synthetic", ["1"], examples), "1 pred"),
        Case("unknown task", lambda: get_task("gsm9k"), "'gsm9k'"),
        Case("unknown split", lambda: load_examples("gsm8k", split="dev"), "'dev'"),
        Case("n_prompts too large", lambda: load_examples("synthetic", n_prompts=10**6), "1000000"),
        Case("n_prompts negative", lambda: load_examples("synthetic", n_prompts=-1), "-1"),
        Case("data_dir ''", lambda: load_examples("gsm8k", data_dir=""), "''"),
        Case("data_dir missing", lambda: load_examples("gsm8k", data_dir=root / "nope"), "nope"),
        Case("malformed JSONL line", loads("gsm8k", {gsm: good_gsm + b"{oops\n"}), "line 2"),
        Case("non-UTF-8 file", loads("gsm8k", {gsm: good_gsm + b'{"q": "\xff"}\n'}), "line 2"),
        Case("JSONL line not an object", loads("gsm8k", {gsm: b"[1, 2]\n"}), "line 1"),
        Case("GSM8K row lacks answer", loads("gsm8k", {gsm: b'{"question": "q"}\n'}), "answer"),
        Case("GSM8K answer lacks ####", loads("gsm8k", {gsm: b'{"question":"q","answer":"3"}\n'})),
        Case("MMLU answer -1", loads("mmlu_stem", {mmlu: (row % "-1").encode()}), "-1"),
        Case("MMLU answer 4", loads("mmlu_stem", {mmlu: (row % "4").encode()}), "4"),
        Case("MMLU answer 'B'", loads("mmlu_stem", {mmlu: (row % '"B"').encode()}), "'B'"),
        Case(
            "MMLU 3 choices",
            loads("mmlu_stem", {mmlu: (row.replace(',"d"', "") % 1).encode()}),
            "'c'",
        ),
        Case("MMLU lacks choices", loads("mmlu_stem", {mmlu: b'{"question":"q","answer":1}\n'})),
        Case(
            "MBPP test_list a string", loads("mbpp", {mbpp: (mbpp_row % '"assert f()"').encode()})
        ),
        Case("MBPP lacks test_list", loads("mbpp", {mbpp: b'{"task_id": 11, "text": "t"}\n'})),
        Case(
            "MT-bench lacks turns",
            loads("mt_bench", {"mt_bench/question.jsonl": b'{"question_id": 1}\n'}),
        ),
        Case(
            "few-shot file missing",
            lambda: build_prompts("gsm8k", [], few_shot_file=root / "x.txt"),
        ),
        Case("read_jsonl missing", lambda: read_jsonl(root / "absent.jsonl"), "absent.jsonl"),
    ]
    for case in cases:
        if case.needle is None:
            case.needle = "test.jsonl" if "GSM8K" in case.name or "MMLU" in case.name else None
    for case in cases:  # where the value is a row, the message must name the file
        if case.needle is None:
            case.needle = {
                "score predictions as one string": "'123'",
                "MBPP test_list a string": "mbpp.jsonl",
                "MBPP lacks test_list": "test_list",
                "MT-bench lacks turns": "turns",
                "few-shot file missing": "x.txt",
            }[case.name]
    return cases


def file_cases(root: Path) -> list[Case]:
    parquet = root / "not_a_trace.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(parquet)
    text = root / "text.parquet"
    text.write_text("hello")
    cases = [
        Case("read_trace without trace columns", lambda: read_trace(parquet), "not_a_trace"),
        Case("read_trace of a text file", lambda: read_trace(text), "text.parquet"),
        Case("read_trace missing", lambda: read_trace(root / "gone.parquet"), "gone.parquet"),
        Case("nested metrics", lambda: write_metrics(root / "m.json", {"a": {"b": 1}}), "'a'"),
        Case("shard key with slash", lambda: ShardStore(root).path("../x"), "'../x'"),
        Case("executor kind slurm", lambda: as_executor("slurm"), "'slurm'"),
        Case("logging methods unknown", lambda: logging_methods("alone,beam"), "'beam'"),
        Case("logging methods empty", lambda: logging_methods(""), "[]"),
        Case("sandbox timeout 0", lambda: run_python("pass", timeout=0), "0"),
        Case("sandbox memory 1 MB", lambda: run_python("pass", memory_mb=1), "1"),
        Case("sandbox code not a string", lambda: run_python(b"pass"), "bytes"),
        Case(
            "sandbox os._exit before asserts",
            lambda: run_python("import os\nos._exit(0)\nassert 0").status == "failed",
            expect="ok",
        ),
        Case(
            "sandbox sys.exit(0) before asserts",
            lambda: run_python("import sys\nsys.exit(0)\nassert 0").status == "failed",
            expect="ok",
        ),
    ]
    return cases


def config_cases(root: Path) -> list[Case]:
    base = (REPO / "params.yaml").read_text()

    def section(text: str, name: str):
        path = params_file(root, text)
        return lambda: stage_config(name, path, {})

    def profile(text: str, name: str = "embedded"):
        path = params_file(root, text)
        return lambda: load_profile(name, path)

    def swap(old: str, new: str) -> str:
        assert old in base, old
        return base.replace(old, new, 1)

    token = "token_logging:\n"
    embedded = "  embedded:\n    kind: embedded\n"
    e0 = re.search(r"\{name: e0, [^}]*\}", base).group(0)  # the first rung as params.yaml has it
    e0_lr = re.search(r"lr: ([0-9.]+)", e0).group(1)
    cases = [
        Case("YAML error", section(base + "\n  bad: [unclosed\n", "token_logging"), ".yaml"),
        Case("params file missing", lambda: read_yaml(root / "none.yaml"), "none.yaml"),
        Case("params not a mapping", section("- 1\n- 2\n", "token_logging"), ".yaml"),
        Case(
            "misspelt stage key",
            section(swap(token, token + "  n_promts: 3\n"), "token_logging"),
            "n_promts",
        ),
        Case(
            "unknown stage section",
            lambda: stage_config("tokenlogging", "params.yaml", {}),
            "'tokenlogging'",
        ),
        Case("unknown profile", profile(base, "embeded"), "'embeded'"),
        Case(
            "misspelt profile key dtyp",
            profile(swap(embedded, embedded + "    dtyp: bfloat16\n")),
            "dtyp",
        ),
        Case("profile dtype float", profile(swap("dtype: float32", "dtype: float")), "'float'"),
        Case(
            "profile tasks as a string",
            lambda: (
                profile(swap("tasks: [synthetic]", "tasks: synthetic"))().tasks == ("synthetic",)
            ),
            expect="ok",
        ),
        Case(
            "profile unknown task, logged",
            lambda: log_tokens(
                profile(swap("tasks: [synthetic]", "tasks: [gsm9k]"))(),
                root / "unknown-task",
                tasks=profile(swap("tasks: [synthetic]", "tasks: [gsm9k]"))().tasks,
                progress=False,
            ),
            "'gsm9k'",
        ),
        Case(
            "rung lr 3e-3 (a YAML string)",
            lambda: profile(swap(e0, e0.replace(e0_lr, "3e-3")))().rungs[0].arch["lr"] == 0.003,
            expect="ok",
        ),
        Case("rung lr a word", profile(swap(e0, e0.replace(e0_lr, "fast"))), "'fast'"),
        Case("rung hidden_size 24.5", profile(swap(e0, e0.replace("24", "24.5"))), "24.5"),
        Case(
            "rung misspelt num_layer",
            profile(swap(e0, e0.replace("num_layers", "num_layer"))),
            "num_layer",
        ),
    ]
    for key, bad in (
        ("n_prompts", "many"),
        ("seed", "1.5"),
        ("batch_size", "[8]"),
        ("max_new_tokens", "big"),
    ):
        lines = base.split(token, 1)
        head, rest = lines[0] + token, lines[1]
        rest = re.sub(rf"^  {key}: .*$", f"  {key}: {bad}", rest, count=1, flags=re.M)
        cases.append(
            Case(f"token_logging {key}: {bad}", section(head + rest, "token_logging"), bad)
        )
    return cases


def data_loss_cases(root: Path) -> list[Case]:
    data = root / "data"
    for name in ("models/e0/model.safetensors", "logs/x.parquet", "paper/fig.png"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(name.encode())
    profile = load_profile("tiny")
    owned = prepare_owned_dir(root / "owned", owner="x", patterns=["*.bin"])
    (owned / "mine.bin").write_bytes(b"1")
    (owned / "theirs.txt").write_text("keep me")

    def remove_keeps_theirs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            remove_owned(owned)
        return (owned / "theirs.txt").read_text() == "keep me" and not (owned / "mine.bin").exists()

    return [
        Case(
            "log_tokens into data/",
            lambda: log_tokens(profile, data, progress=False),
            str(data),
            guard=data,
        ),
        Case(
            "log_tokens into data/models",
            lambda: log_tokens(profile, data / "models", progress=False),
            "models",
            guard=data,
        ),
        Case(
            "prepare_owned_dir on data/",
            lambda: prepare_owned_dir(data, owner="train_ladder"),
            str(data),
            guard=data,
        ),
        Case("remove_owned on data/", lambda: remove_owned(data), str(data), guard=data),
        Case("owner mismatch", lambda: prepare_owned_dir(owned, owner="y"), "'x'"),
        Case("remove_owned keeps foreign files", remove_keeps_theirs, expect="ok"),
        Case(
            "log_tokens tasks as one string",
            lambda: log_tokens(profile, root / "l", tasks="gsm9k", progress=False),
            "gsm9k",
        ),
        Case(
            "log_tokens chunk_size 0",
            lambda: log_tokens(profile, root / "l", chunk_size=0, progress=False),
            "0",
        ),
        Case(
            "log_tokens max_new_tokens 2.5",
            lambda: log_tokens(profile, root / "l", max_new_tokens=2.5, progress=False),
            "2.5",
        ),
    ]


def root_cases(root: Path, small, large, tokenizer, prompts) -> list[Case]:
    """The classes the unseen battery of issue 28 found, each fixed at its root: models of
    another profile, rung names, shards and unfinished runs, schema values, NaN, meaningless
    numbers, empty and non-string prompts, texts that are not strings."""
    base = (REPO / "params.yaml").read_text()

    def swap(old: str, new: str) -> str:
        assert old in base, old
        return base.replace(old, new, 1)

    def stage(text: str, name: str):
        path = params_file(root, text)
        return lambda: stage_config(name, path, {})

    def ladder(*rungs: tuple[str, int]):
        """A profile "odd" of the given (name, hidden size) rungs."""
        entries = "".join(
            f"      - {{name: {name!r}, hidden_size: {hidden}, num_layers: 1, num_heads: 2, "
            f"lr: 0.003}}\n"
            for name, hidden in rungs
        )
        path = params_file(
            root,
            swap("profiles:\n", f"profiles:\n  odd:\n    kind: embedded\n    rungs:\n{entries}"),
        )
        return lambda: load_profile("odd", path)

    # another profile's trained model in this profile's models folder
    models = root / "shared-models"
    (models / "e3").mkdir(parents=True)
    (models / "e3" / "fsgen_rung.json").write_text('{"profile": "embedded"}')

    def keeps_other_profiles_models():
        removed = remove_stale_models(models, keep={"t0", "t1"}, profile="tiny")
        return removed == [] and (models / "e3").is_dir()

    # shards: a truncated one, one of another run, and a run whose plan is not finished
    store = ShardStore(root / "store")
    frame = pd.DataFrame({"x": [1, 2, 3]})
    store.write("whole", frame, "run-a")
    store.path("cut").write_bytes(store.path("whole").read_bytes()[:-9])
    copied = ShardStore(root / "copied")
    copied.write("whole", frame, "run-a")
    copied.write("other", frame, "run-b")  # copied in from another run
    unfinished = root / "unfinished"
    for folder in ("traces", "generations"):
        ShardStore(unfinished / folder).write("u1", frame)
    write_plan(unfinished, ["u1", "u2"])
    nan_trace = pd.DataFrame(
        {
            "prompt_id": [0, 0],
            "mismatch": [False, True],
            "small_top1_prob": [0.9, float("nan")],
            "small_margin": [0.5, 0.1],
            "small_entropy": [0.2, 1.0],
        }
    )
    negative = re.sub(
        r"^  n_prompts: \d+",
        "  n_prompts: -5",
        base.split("token_logging:\n")[1],
        count=1,
        flags=re.M,
    )

    def run(**kw):
        return lambda: collaborate(small, large, tokenizer, max_new_tokens=2, **kw)

    one = load_examples("synthetic", n_prompts=1)
    return [
        Case(
            "another profile's model kept", keeps_other_profiles_models, expect="ok", guard=models
        ),
        Case("rung name a path", ladder(("../../somewhere", 16), ("t1", 32)), "'../../somewhere'"),
        Case("rung names repeated", ladder(("t0", 16), ("t0", 32)), "['t0']"),
        Case("rungs out of size order", ladder(("big", 32), ("small", 16)), "'small'"),
        Case("truncated shard not done", lambda: not store.done("cut"), expect="ok"),
        Case(
            "another run's shard not done", lambda: not copied.done("other", "run-a"), expect="ok"
        ),
        Case("another run's shard refused", lambda: copied.merge(run="run-a"), "other.parquet"),
        Case("an unfinished run refused", lambda: merge_logs(unfinished), "1 of 2 units"),
        Case(
            "token_logging n_prompts -5",
            stage(
                base.split("token_logging:\n")[0] + "token_logging:\n" + negative, "token_logging"
            ),
            "-5",
        ),
        Case(
            "a YAML key written twice",
            stage(swap("token_logging:\n", "token_logging:\n  seed: 1\n"), "token_logging"),
            "'seed'",
        ),
        Case(
            "routers fit_fraction 1.5",
            stage(swap("fit_fraction: 0.5", "fit_fraction: 1.5"), "routers"),
            "1.5",
        ),
        Case(
            "a target call rate of 2",
            stage(
                swap("target_call_rates: [0.05, 0.1, 0.2]", "target_call_rates: [0.05, 2]"),
                "routers",
            ),
            "2",
        ),
        Case("tune_lr .nan", stage(swap("tune_lr: 0.001", "tune_lr: .nan"), "train_ladder"), "nan"),
        Case(
            "chat_share 1.2",
            stage(swap("chat_share: 0.25", "chat_share: 1.2"), "train_ladder"),
            "1.2",
        ),
        Case("steps: true", stage(swap("steps: 2000", "steps: true"), "train_ladder"), "True"),
        Case(
            "executor kind slurm",
            stage(swap("  kind: local\n", "  kind: slurm\n"), "token_logging"),
            "'slurm'",
        ),
        Case("accuracy of a NaN score", lambda: accuracy([1.0, float("nan")]), "score 1"),
        Case(
            "a router on NaN statistics",
            lambda: calibrate_router(nan_trace, "threshold", 0.5),
            "row 1",
        ),
        Case("scaling ratios <= 1", lambda: fit_scaling_law([0.5, 2, 4], [0.1, 0.2, 0.3]), "0.5"),
        Case(
            "scaling bootstrap -3",
            lambda: fit_scaling_law([2, 4, 8], [0.1, 0.2, 0.3], bootstrap=-3),
            "-3",
        ),
        Case("contrastive beta -1", run(prompts=prompts, method="contrastive", beta=-1.0), "-1.0"),
        Case("an empty prompt", run(prompts=["", *prompts]), "prompt 0"),
        Case("a prompt that is not a string", run(prompts=[*prompts, 7]), "prompt 2"),
        Case(
            "trace_top_k above the vocabulary",
            run(prompts=prompts, trace_top_k=10**9),
            "1000000000",
        ),
        Case("a seed of 2**70", run(prompts=prompts, do_sample=True, seed=2**70), str(2**70)),
        Case("scoring a None text", lambda: score("synthetic", [None], one), "prediction 0"),
    ]


def run_battery() -> tuple[Counter, list[tuple[str, str, str]]]:
    """Every case classed: the counts per verdict, and (verdict, case, detail) of each case that
    was not handled well."""
    root = Path(tempfile.mkdtemp(prefix="fsgen-bad-inputs-"))
    try:
        small, large, tokenizer, prompts = tiny_models()
        cases = engine_cases(small, large, tokenizer, prompts) + scaling_cases()
        cases += task_cases(root) + file_cases(root) + config_cases(root) + data_loss_cases(root)
        cases += root_cases(root, small, large, tokenizer, prompts)
        counts: Counter[str] = Counter()
        failures = []
        for case in cases:
            verdict, detail = classify(case)
            counts[verdict] += 1
            if verdict != "handled well":
                failures.append((verdict, case.name, detail))
        return counts, failures
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    counts, failures = run_battery()
    for verdict, name, detail in failures:
        print(f"{verdict:13} {name}: {detail}")
    print(f"\n{sum(counts.values())} bad inputs and faults:")
    for verdict in ("handled well", "silent wrong", "data loss", "unnamed"):
        print(f"  {verdict:13} {counts[verdict]}")


if __name__ == "__main__":
    main()
