"""The import contract of design.md §2, checked over the source with ``ast``.

Layers, lowest first: ``core`` and ``identity`` (standard library only), ``storage``,
``scheduler``, ``integrations.abstractcore``, then the CLI (the top-level ``cli/`` folder,
installed as ``abstractruntime.cli``). Imports point downward only. Every import counts,
including the lazy ones inside functions: a lazy import still makes the lower layer know
about the upper one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "abstractruntime"
CLI = ROOT / "cli"

# Layers that may import nothing third-party, and what above them they must never import.
# ``flow`` (code-first workflows) sits above the kernel, beside the loader: standard library only.
KERNEL = ("core", "identity", "storage", "scheduler", "flow")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("storage", "scheduler", "integrations", "cli", "report", "testing", "loader", "trust", "flow"),
    "identity": ("storage", "scheduler", "integrations", "cli", "report", "testing", "flow"),
    "storage": ("scheduler", "integrations", "cli", "report", "testing", "flow"),
    "scheduler": ("integrations", "cli", "report", "testing", "flow"),
    "flow": ("integrations", "cli", "report", "testing", "loader", "registry", "workflow_files"),
    "integrations": ("cli", "testing"),
}

# Optional extras a kernel module may import lazily, inside the function that needs them.
# storage/postgres/ is the one storage package built on a third-party driver: db.py loads
# psycopg through importlib when a store is opened, so it never shows up as an import here.
LAZY_EXTRAS: dict[str, set[str]] = {
    "abstractruntime.storage.signing": {"cryptography"},
    "abstractruntime.scheduler.cron": {"croniter"},
}


def _modules(base: Path, package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join([package, *parts]), path


def _imports(module: str, path: Path) -> Iterator[tuple[str, int, bool]]:
    """``(absolute module imported, line, at module level)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
            for name in names:
                yield name, node.lineno, id(node) in top_level
    for key in _lazy_table_keys(tree):
        # A LazyNames table (core/lazy.py) imports its modules on first use: a lazy import.
        module_name = str(key.value)
        level = len(module_name) - len(module_name.lstrip("."))
        if level:
            base = module.split(".")
            base = base[: len(base) - level + (1 if is_package else 0)]
            module_name = ".".join(base + [module_name.lstrip(".")])
        yield module_name, key.lineno, False


def _lazy_table_keys(tree: ast.AST) -> Iterator[ast.Constant]:
    """The module names of every ``LazyNames(namespace, package, {module: names})`` table."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("LazyNames") and len(node.args) == 3 \
                and isinstance(node.args[2], ast.Dict):
            yield from (key for key in node.args[2].keys if isinstance(key, ast.Constant))


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "abstractruntime" else parts[0]


ALL = list(_modules(PACKAGE, "abstractruntime")) + list(_modules(CLI, "abstractruntime.cli"))


def test_the_scan_sees_every_layer() -> None:
    layers = {_layer(m) for m, _ in ALL}
    assert {"core", "identity", "storage", "scheduler", "integrations", "cli"} <= layers


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_downward_only(layer: str) -> None:
    bad = []
    for module, path in ALL:
        if _layer(module) != layer:
            continue
        for target, line, _ in _imports(module, path):
            if target.startswith("abstractruntime.") and _layer(target) in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("layer", KERNEL)
def test_kernel_layers_import_only_the_standard_library(layer: str) -> None:
    bad = []
    for module, path in ALL:
        if _layer(module) != layer:
            continue
        for target, line, module_level in _imports(module, path):
            top = target.split(".")[0]
            if top in sys.stdlib_module_names or top in ("abstractruntime", "__future__"):
                continue
            if not module_level and top in LAZY_EXTRAS.get(module, set()):
                continue
            bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_only_the_abstractcore_integration_imports_abstractcore() -> None:
    bad = []
    for module, path in ALL:
        if module.startswith("abstractruntime.integrations.abstractcore"):
            continue
        for target, line, _ in _imports(module, path):
            if target.split(".")[0] == "abstractcore":
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_integrations_package_init_stays_empty() -> None:
    tree = ast.parse((PACKAGE / "integrations" / "__init__.py").read_text(encoding="utf-8"))
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    assert body == [], "abstractruntime/integrations/__init__.py must hold nothing but a docstring"


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a relative import from core into storage is resolved and seen."""
    core = tmp_path / "core"
    core.mkdir()
    path = core / "bad.py"
    path.write_text("def f():\n    from ..storage.snapshots import Snapshot\n    from . import ids\n")
    found = [t for t, _, _ in _imports("abstractruntime.core.bad", path)]
    assert found == ["abstractruntime.storage.snapshots", "abstractruntime.core.ids"]
    assert _layer(found[0]) in FORBIDDEN["core"]



def test_the_contract_sees_the_modules_of_a_lazy_table(tmp_path: Path) -> None:
    """A LazyNames table (core/lazy.py) counts as lazy imports of its modules."""
    core = tmp_path / "core"
    core.mkdir()
    path = core / "bad.py"
    path.write_text("_USES = LazyNames(globals(), __package__, {\n    '..storage.store': ('FileStore',),\n"
                    "    '.ids': ('validate_id',),\n    'inspect': (),\n})\n")
    found = [(t, line, top) for t, line, top in _imports("abstractruntime.core.bad", path)]
    assert found == [("abstractruntime.storage.store", 2, False), ("abstractruntime.core.ids", 3, False),
                     ("inspect", 4, False)]


def _runtime_imports(module: str, path: Path) -> Iterator[str]:
    """Every import that runs (module level or inside a function), not those under ``TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    lines = {node.lineno for node in ast.walk(tree)
             if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in typing_only}
    lines.update(key.lineno for key in _lazy_table_keys(tree))
    for target, line, _ in _imports(module, path):
        if line in lines:
            yield target


def _import_graph(modules: list[tuple[str, Path]]) -> dict[str, set[str]]:
    known = {name for name, _ in modules}
    graph: dict[str, set[str]] = {}
    for module, path in modules:
        targets = set()
        for target in _runtime_imports(module, path):
            while target and target not in known:  # ``from .mod import Name`` names mod.Name
                target = target.rpartition(".")[0]
            if target and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def test_no_import_circles() -> None:
    # A circle (module level or lazy) means neither module can be understood, tested or loaded
    # without the other; a lazy import that only dodges the load order is still one.
    assert _circles(_import_graph(ALL)) == []


def test_the_circle_check_sees_a_lazy_circle_and_ignores_typing_only_imports(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("from .b import g\n")
    b.write_text("def g():\n    from .a import x\n")
    c.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n")
    graph = _import_graph([("pkg.a", a), ("pkg.b", b), ("pkg.c", c)])
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": set()}
    assert _circles(graph) == [["pkg.a", "pkg.b"]]
