"""The package's architecture, enforced: subpackages import one way (core -> data -> engine ->
models -> analysis -> stages), no module imports itself back through others, and no module
imports another's private names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fsgen

PACKAGE = Path(__file__).resolve().parents[1] / "fsgen"
LAYERS = ("core", "data", "engine", "models", "analysis", "stages")


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.parent != PACKAGE  # the package's own __init__ re-exports the public API
    }


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported fsgen module, names taken from it) for every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fsgen."):
            found.append((node.module.removeprefix("fsgen."), [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.module == "fsgen":
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [
                (a.name.removeprefix("fsgen."), [])
                for a in node.names
                if a.name.startswith("fsgen.")
            ]
    return found


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_every_module_sits_in_a_layer():
    assert {m.split(".")[0] for m in _modules()} <= set(LAYERS)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_flow_one_way(module):
    path = _modules()[module]
    for imported, _ in _imports(path):
        assert imported.split(".")[0] in LAYERS, f"{module} imports fsgen.{imported}"
        assert _layer(imported) <= _layer(module), (
            f"{module} ({LAYERS[_layer(module)]}) imports fsgen.{imported} "
            f"({LAYERS[_layer(imported)]}), a later layer"
        )


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_private_names_cross_modules(module):
    for imported, names in _imports(_modules()[module]):
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{module} imports private {private} from fsgen.{imported}"


def test_no_import_cycles():
    modules = _modules()
    graph = {
        m: {i for i, _ in _imports(p) if i in modules or i.split(".")[0] in LAYERS}
        for m, p in modules.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt in graph and not state.get(nxt):
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])


def test_the_public_api_imports_on_first_use():
    """`import fsgen` loads no model code (an analysis notebook never pays for torch); each
    public name then comes from the module that defines it."""
    code = (
        "import sys, fsgen\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
        "from fsgen.analysis import uncertainty\n"
        "print('torch' in sys.modules)\n"
        "print(all(getattr(fsgen, n) is not None for n in fsgen.__all__))\n"
        "print('torch' in sys.modules, len(fsgen.__all__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:4] == [
        "False False",
        "False",
        "True",
        f"True {len(fsgen.__all__)}",
    ]


def test_an_unknown_public_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'fsgen' has no attribute 'nothing'"):
        fsgen.nothing  # noqa: B018


WRITES = {"to_csv", "to_parquet", "write_metrics", "save_figure", "savefig", "mkdir", "write_text"}
WRITES |= {"write_bytes", "atomic_write_text", "atomic_write_bytes", "save_pretrained"}


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m.startswith("analysis.")))
def test_the_analysis_layer_writes_nothing(module):
    """Library layers compute and return values; only a stage writes its outputs."""
    calls = {  # every function called, by name (open(...) among them)
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(ast.parse(_modules()[module].read_text()))
        if isinstance(node, ast.Call)
    }
    assert not calls & (WRITES | {"open"}), f"{module} writes: {sorted(calls & WRITES)}"


def test_each_dvc_stage_has_its_module_and_its_notebook_calls_it():
    import yaml  # noqa: PLC0415

    stages = yaml.safe_load((PACKAGE.parent / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        module = PACKAGE / "stages" / f"{name}.py"
        assert module.is_file(), f"stage {name} has no module fsgen/stages/{name}.py"
        tree = ast.parse(module.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body), name
        notebook = next(w for w in stage["cmd"].split() if w.endswith(".ipynb"))
        assert f"{name}.run(" in (PACKAGE.parent / notebook).read_text(), notebook


def test_no_module_is_over_500_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
