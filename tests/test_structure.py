"""The package's shape: its modules import each other without a cycle, and the
model path needs neither the file readers nor their validation library."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT

PACKAGE = ROOT / "gridstress"


def _module(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every import of a gridstress module by another, at any depth of the file."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found = sub if sub in modules else target
                if found in modules and found != name:
                    graph[name].add(found)
    return graph


def test_modules_import_each_other_without_a_cycle():
    graph = import_graph()
    assert "gridstress.engine" in graph and graph["gridstress.engine"]
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == "gridstress":  # the package's own lazy API is not a dependency
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail + [node, nxt]))
            if not state.get(nxt):
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [])
    assert "gridstress.distributed" not in graph["gridstress.prepared"]


def test_the_model_path_does_not_import_the_config_reader():
    code = (
        "import sys; import gridstress.engine, gridstress.model, gridstress.reference; "
        "bad = [m for m in ('pydantic', 'yaml', 'gridstress.config') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
