"""The package's shape: its modules import each other without a cycle, the
model path needs neither the file readers nor their validation library, the
run pipeline imports nothing from analysis/, the CLI is a package, no module
is over the size limit, and docs/layout.md names every module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from conftest import ROOT

PACKAGE = ROOT / "gridstress"
#: The modules that plan, compute and write a run: none of them reads a cube's
#: analyses (analysis/ reads cubes; it may import them, not the other way).
RUN_PIPELINE = (
    "gridstress.config",
    "gridstress.prepared",
    "gridstress.store",
    "gridstress.engine",
    "gridstress.distributed",
    "gridstress.headline",
    "gridstress.cube",
    "gridstress.model",
    "gridstress.kernels",
)
#: The most lines a module of gridstress/ may have: one job per module.
MAX_MODULE_LINES = 700


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


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt not in seen and nxt != "gridstress":
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_run_pipeline_imports_nothing_from_analysis():
    graph = import_graph()
    for module in RUN_PIPELINE:
        assert module in graph, module
        found = sorted(m for m in _reachable(graph, module) if m.startswith("gridstress.analysis"))
        assert not found, f"{module} reaches {found}"


def test_the_cli_is_a_package_of_command_modules():
    cli = PACKAGE / "cli"
    assert (cli / "__init__.py").is_file() and not (PACKAGE / "cli.py").exists()
    assert len(list(cli.glob("*.py"))) >= 4


def test_no_module_is_over_the_size_limit():
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    over = {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not over, f"over {MAX_MODULE_LINES} lines: {over}"


def test_the_layout_page_names_every_module_and_no_other():
    """docs/layout.md names each module as `gridstress/...py` (a package by its
    `__init__.py` or its folder), so the page follows the code."""
    text = (ROOT / "docs" / "layout.md").read_text()
    named = set(re.findall(r"`(gridstress/[\w/]+\.py)`", text))
    actual = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert not (actual - named), f"modules the page does not name: {sorted(actual - named)}"
    assert not (named - actual), (
        f"the page names modules that do not exist: {sorted(named - actual)}"
    )
