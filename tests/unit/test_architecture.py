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
    "adapters",
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
        if mod.split(".")[0] in FORBIDDEN
    ]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            bad.append(f"{path.name}:{node.lineno} reads os.{node.attr}")
    assert not bad, bad


def test_the_walker_catches_a_forbidden_import(tmp_path):
    tree = ast.parse("import os\nfrom kafka import KafkaConsumer\nx = os.environ['A']\n")
    assert [m for _, m in _modules(tree)] == ["os", "kafka"]
    assert any(isinstance(n, ast.Attribute) and n.attr == "environ" for n in ast.walk(tree))
