"""Which fsgen modules a piece of code runs: for resume fingerprints and for DVC deps.

A long stage resumes only work done by the same code, and DVC reruns a stage when code it runs
changes; both need the same answer to "what code does this run", read from the imports. Modules
are named by their dotted path inside the package (`engine.collaborate`, `core.io`); a
subpackage's `__init__` counts as the module `<subpackage>` itself.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def module_path(module: str) -> Path:
    """The file of fsgen module `module` (dotted, relative to the package)."""
    parts = module.split(".")
    folder = PACKAGE.joinpath(*parts)
    if folder.is_dir():
        return folder / "__init__.py"
    return PACKAGE.joinpath(*parts[:-1], f"{parts[-1]}.py")


def _is_module(module: str) -> bool:
    return bool(module) and module_path(module).is_file()


def _defining_module(owner: str, name: str) -> str | None:
    """The fsgen module that defines attribute `name` of module `owner` ('' for the package):
    a submodule of that name, else the module the object was defined in."""
    if _is_module(f"{owner}.{name}".strip(".")):
        return f"{owner}.{name}".strip(".")
    package = importlib.import_module(f"fsgen.{owner}".rstrip("."))
    defined = getattr(getattr(package, name, None), "__module__", None) or ""
    return defined.removeprefix("fsgen.") if defined.startswith("fsgen.") else None


def fsgen_imports(source: str) -> set[str]:
    """The fsgen modules (dotted names) that Python `source` imports, or uses as
    `fsgen.<name>` (the module that defines `name`); a package `__init__` that only re-exports
    names counts as the modules that define them."""
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fsgen"):
            owner = node.module.removeprefix("fsgen").lstrip(".")
            if owner and not module_path(owner).name == "__init__.py":
                found.add(owner)
            else:
                found |= {_defining_module(owner, alias.name) for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fsgen."):
                    found.add(alias.name.removeprefix("fsgen."))
        elif isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "fsgen":
            found.add(_defining_module("", node.attr))
    return {m for m in found if m is not None and not module_path(m).name == "__init__.py"}


def module_closure(modules: Iterable[str]) -> set[str]:
    """`modules` and every fsgen module they import, directly or not (dotted names)."""
    needed, todo = set(), set(modules)
    while todo:
        module = todo.pop()
        if not _is_module(module):
            raise ValueError(f"no fsgen module {module!r} (expected {module_path(module)})")
        needed.add(module)
        todo |= fsgen_imports(module_path(module).read_text()) - needed
    return needed


def module_files(modules: Iterable[str]) -> list[str]:
    """Repository-relative paths of the files of `modules` and their closure, sorted."""
    root = PACKAGE.parent
    return sorted(str(module_path(m).relative_to(root)) for m in module_closure(modules))


def code_fingerprint(modules: Iterable[str]) -> str:
    """A hash of the source of `modules` and of everything they import from fsgen."""
    digest = hashlib.sha256()
    for module in sorted(module_closure(modules)):
        digest.update(module.encode() + module_path(module).read_bytes())
    return digest.hexdigest()[:16]


def notebook_files(notebook: str | Path) -> list[str]:
    """Repository-relative paths of the fsgen modules a notebook's code cells run."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    code = "\n".join(
        re.sub(r"^(\s*)[%!].*", r"\1pass", line)  # IPython magics and shell lines
        for cell in cells
        if cell["cell_type"] == "code"
        for line in "".join(cell["source"]).splitlines()
    )
    return module_files(fsgen_imports(code))


def sync_dvc_deps(dvc_file: str | Path) -> bool:
    """Rewrite the fsgen module deps of every stage in `dvc_file` (its other lines, comments
    included, as they are) to the modules its notebook runs; True if the file changed."""
    path = Path(dvc_file)
    original = path.read_text()
    lines, out, notebook = original.splitlines(keepends=True), [], None
    for line in lines:
        found = re.match(r"\s+- (notebooks/\S+\.ipynb)$", line)
        if found and notebook is None:
            notebook = found.group(1)
            out.append(line)
            indent = line[: line.index("-")]
            out += [f"{indent}- {f}\n" for f in notebook_files(path.parent / notebook)]
            continue
        if re.match(r"\s+- fsgen/\S+\.py$", line):
            continue
        if re.match(r"  \S", line):  # the next stage
            notebook = None
        out.append(line)
    text = "".join(out)
    if text == original:
        return False
    path.write_text(text)
    return True


if __name__ == "__main__":  # python -m fsgen.core.source dvc.yaml: the deps follow the imports
    print("deps updated" if sync_dvc_deps(sys.argv[1]) else "deps already up to date")
