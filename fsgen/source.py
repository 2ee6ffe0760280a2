"""Which fsgen modules a piece of code runs: for resume fingerprints and for DVC deps.

A long stage resumes only work done by the same code, and DVC reruns a stage when code it runs
changes; both need the same answer to "what code does this run", read from the imports.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def fsgen_imports(source: str) -> set[str]:
    """The fsgen modules (file stems) that Python `source` imports, or uses as `fsgen.<name>`
    (the module that defines `name`); the package's `__init__` only re-exports, so never."""
    import fsgen

    def module_of(name: str) -> str | None:
        if (PACKAGE / f"{name}.py").is_file():
            return name
        module = getattr(getattr(fsgen, name, None), "__module__", None) or ""
        return module.removeprefix("fsgen.") if module.startswith("fsgen.") else None

    found: set[str | None] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fsgen"):
            if node.module == "fsgen":
                found |= {module_of(alias.name) for alias in node.names}
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("fsgen.")}
        elif isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "fsgen":
            found.add(module_of(node.attr))
    return {m for m in found if m is not None}


def module_closure(modules: Iterable[str]) -> set[str]:
    """`modules` and every fsgen module they import, directly or not (file stems)."""
    needed, todo = set(), set(modules)
    while todo:
        module = todo.pop()
        path = PACKAGE / f"{module}.py"
        if not path.is_file():
            raise ValueError(f"no fsgen module {module!r} (expected {path})")
        needed.add(module)
        todo |= fsgen_imports(path.read_text()) - needed
    return needed


def code_fingerprint(modules: Iterable[str]) -> str:
    """A hash of the source of `modules` and of everything they import from fsgen."""
    digest = hashlib.sha256()
    for module in sorted(module_closure(modules)):
        digest.update(module.encode() + (PACKAGE / f"{module}.py").read_bytes())
    return digest.hexdigest()[:16]
