"""Small writers shared by every stage: atomic files and flat JSON metrics."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import yaml

from fsgen.core.paths import resolve

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    with _UMASK_LOCK:  # reading the umask means setting it; no other thread may see the 0
        umask = os.umask(0)
        os.umask(umask)
    return umask


def file_mode() -> int:
    """The mode a plain `open(path, "w")` would give a new file: 0o666 less the umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode `mkdir` would give a new folder: 0o777 less the umask."""
    return 0o777 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename, so a crash never leaves a
    half-written file behind. The file gets the umask's mode, as `open` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write_bytes` of `text` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to `path` only when the block ends
    without an error, so `path` is either absent, its previous complete version, or the new
    complete one (a model saved with `save_pretrained(tmp)`, say). A folder already at `path` is
    replaced; on an error the temporary folder is removed and `path` is left as it was.

        with atomic_directory(models_dir / "e0") as tmp:
            model.save_pretrained(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, dir_mode())  # mkdtemp makes 0700
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, object]) -> Path:
    """Write `metrics` as flat JSON with sorted keys (scalars only; NaN becomes null)."""
    flat: dict[str, object] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping | list | tuple):
            raise ValueError(f"metrics must be flat, but {key!r} holds {type(value).__name__}")
        if hasattr(value, "item"):  # numpy and torch scalars
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        flat[str(key)] = value
    text = json.dumps(flat, indent=2, sort_keys=True) + "\n"
    return atomic_write_bytes(path, text.encode())


def read_metrics(path: str | os.PathLike) -> dict[str, object]:
    """Read a metrics file written by `write_metrics`."""
    return json.loads(Path(path).read_text())


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, with a key written twice in one mapping an error (plain YAML keeps
    the last value, so an edit that adds a key already set further down would do nothing)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is written twice in one mapping (first at line "
                    f"{seen[key].start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from `path` (resolved from the repository root); errors name the file, and
    a key written twice in one mapping is one."""
    path = resolve(path)
    if not path.is_file():
        raise FileNotFoundError(f"no params file at {path}")
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded
