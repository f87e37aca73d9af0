"""daemon/ is the core: it never imports I/O libraries and never reads the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "daemon"
FORBIDDEN = {
    "kafka",
    "socket",
    "socketserver",
    "asyncio",
    "prometheus_client",
    "http",
    "urllib",
    "requests",
    "selectors",
    "ssl",
}


def _modules(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_core_module_has_no_io_imports_or_env_reads(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [
        f"{path.name}:{line} imports {mod}"
        for line, mod in _modules(tree)
        if mod.split(".")[0] in FORBIDDEN or mod.startswith("learnd.adapters")
    ]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            bad.append(f"{path.name}:{node.lineno} reads os.{node.attr}")
    assert not bad, bad


def test_the_walker_catches_a_forbidden_import(tmp_path):
    tree = ast.parse(
        "import os\nfrom kafka import KafkaConsumer\nfrom learnd.adapters.logs import x\n"
        "y = os.environ['A']\n"
    )
    assert [m for _, m in _modules(tree)] == ["os", "kafka", "learnd.adapters.logs"]
    assert any(isinstance(n, ast.Attribute) and n.attr == "environ" for n in ast.walk(tree))


ROOT = CORE.parent
FOLDERS = {"learnd.daemon": ROOT / "daemon", "learnd.adapters": ROOT / "adapters"}


def _module_files() -> dict[str, Path]:
    """Every module of the installed package by its import name (learnd.daemon..., ...)."""
    out = {}
    for prefix, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((prefix, *parts))] = path
    return out


def _import_graph() -> dict[str, set[str]]:
    """Who imports whom among learnd's own modules, counting every import in a file (top level,
    inside functions, under TYPE_CHECKING): a cycle anywhere is a tangle for a reader."""
    modules = _module_files()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for _, mod in _modules(ast.parse(path.read_text(), filename=str(path))):
            while mod and mod not in modules:
                mod = mod.rpartition(".")[0]
            if mod and mod != name and not name.startswith(mod + "."):
                graph[name].add(mod)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_package_installs_every_folder_under_one_top_level_name():
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"learnd.daemon": "daemon", "learnd.adapters": "adapters"}
    folders = {
        ".".join((prefix, *init.parent.relative_to(folder).parts))
        for prefix, folder in FOLDERS.items()
        for init in folder.rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == folders
    assert all(p.split(".")[0] == "learnd" for p in setuptools["packages"])


def test_no_module_is_over_500_lines():
    long = {
        m: n for m, p in _module_files().items() if (n := len(p.read_text().splitlines())) > 500
    }
    assert long == {}
