"""Folders fsgen owns: it deletes only what it wrote there.

A stage that writes a folder of its own (token logs, trained models) first calls
`prepare_owned_dir(path, owner=...)`. That creates the folder with a marker file naming the owner
and the patterns of what the owner writes there, or accepts a folder it made before (resume), or
an empty one. A folder that holds anything else, or that another owner made, is refused with a
`ValueError` naming it, and left untouched. `remove_owned(path)` deletes only the entries that
match the owner's patterns (then the marker and the folders left empty), so a file a person put
there survives:

    folder = prepare_owned_dir("data/logs", owner="token_logging",
                               patterns=("settings.json", "traces/*.parquet"))
    ...
    remove_owned(folder, owner="token_logging")
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from fsgen.core.io import atomic_write_text, dir_mode

MARKER = ".fsgen-owner.json"
EVERYTHING = ("**/*",)  # the default patterns: the owner made every entry of the folder


def _marker(path: Path) -> dict | None:
    """The marker of `path`, or None when it has none (an unreadable marker is refused)."""
    marker = path / MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        if not isinstance(data.get("owner"), str) or not isinstance(data.get("patterns"), list):
            raise ValueError("not an fsgen owner marker")
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{marker} is not a valid fsgen owner marker ({error})") from error
    return data


def owner_of(path: str | os.PathLike) -> str | None:
    """The owner named in the marker of folder `path`, or None (no folder, or no marker)."""
    path = Path(path)
    return _marker(path)["owner"] if path.is_dir() and _marker(path) else None


def _matches(path: Path, patterns: Sequence[str]) -> set[Path]:
    return {p for pattern in patterns for p in path.glob(pattern) if p.is_file()}


def prepare_owned_dir(
    path: str | os.PathLike,
    *,
    owner: str,
    patterns: Sequence[str] = EVERYTHING,
    adopt: Callable[[Path], bool] | None = None,
) -> Path:
    """Make `path` a folder `owner` writes to, and return it.

    Creates it (with parents) when absent; accepts it when `owner` made it before or when it is
    empty; otherwise raises a `ValueError` naming the folder and leaves it untouched. `patterns`
    (globs relative to the folder, `**` allowed) say what the owner writes there: `remove_owned`
    deletes those and nothing else. `adopt(path)`, when given, recognises the owner's output of
    before fsgen kept markers: a folder without a marker is taken as the owner's when every
    file in it matches `patterns` (narrower than everything) and `adopt(path)` is true.
    """
    if not owner or not isinstance(owner, str):
        raise ValueError(f"owner must be a non-empty string, got {owner!r}")
    if isinstance(patterns, str):
        raise ValueError(f"patterns must be a list of globs, got the string {patterns!r}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder: fsgen will not write over it")
    if path.is_dir():
        marker = _marker(path)
        if marker is not None:
            if marker["owner"] != owner:
                raise ValueError(
                    f"{path} belongs to fsgen's {marker['owner']!r}, not to {owner!r}: "
                    "choose another folder"
                )
            if marker["patterns"] == list(patterns):
                return path
        elif any(path.iterdir()) and not _adoptable(path, patterns, adopt):
            entries = sorted(p.name for p in path.iterdir())
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ValueError(
                f"{path} is not empty and fsgen did not make it (it holds {len(entries)} "
                f"entries: {shown}); fsgen writes only to a new or empty folder, or to one it "
                "made. Choose another folder, or empty this one yourself"
            )
    else:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, dir_mode())
    text = json.dumps({"owner": owner, "patterns": list(patterns)}, indent=2) + "\n"
    atomic_write_text(path / MARKER, text)
    return path


def _adoptable(path: Path, patterns: Sequence[str], adopt) -> bool:
    if adopt is None or tuple(patterns) == EVERYTHING:
        return False
    files = {p for p in path.rglob("*") if not p.is_dir()}
    return files <= _matches(path, patterns) and bool(adopt(path))


def owned_files(path: str | os.PathLike) -> list[Path]:
    """The files of owned folder `path` that its owner's patterns cover (marker excluded)."""
    path = Path(path)
    marker = _marker(path) if path.is_dir() else None
    if marker is None:
        raise ValueError(f"{path} is not a folder fsgen made (it has no {MARKER})")
    return sorted(p for p in _matches(path, marker["patterns"]) if p.name != MARKER)


def remove_owned(path: str | os.PathLike, *, owner: str | None = None) -> list[Path]:
    """Delete what fsgen wrote in folder `path`: the files its owner's patterns cover, then the
    folders left empty, the marker, and `path` itself when nothing else is left. Anything else
    stays (with a warning). An absent folder is nothing to do; a folder without a marker, or with
    another owner than `owner` (when given), raises a `ValueError` naming it. Returns the files
    deleted."""
    path = Path(path)
    if not path.exists():
        return []
    files = owned_files(path)
    found = owner_of(path)
    if owner is not None and found != owner:
        raise ValueError(f"{path} belongs to fsgen's {found!r}, not to {owner!r}: not removed")
    for file in files:
        file.unlink()
    for folder in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    left = [p for p in path.iterdir() if p.name != MARKER]
    if left:
        warnings.warn(
            f"kept {len(left)} entries in {path} that fsgen did not write: "
            + ", ".join(sorted(p.name for p in left)[:5]),
            stacklevel=2,
        )
    else:
        shutil.rmtree(path)
    return files
