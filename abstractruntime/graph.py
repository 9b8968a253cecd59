"""A workflow's graph: edges read from the handlers' source, a run's path, Mermaid text.

Node handlers are Python functions, so edges are found by reading each handler's source:
every string literal in it that names another node of the workflow is an edge (this catches
``StepPlan(next_node="x")``, ``resume_to_node="x"`` and helper tables alike). Given a run's
ledger records, the transitions it actually took are drawn bold, and any taken transition the
source reading missed is added as a dotted edge.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any, Optional


def static_edges(spec: Any) -> list[tuple[str, str]]:
    """``(from, to)`` pairs found in the handlers' source, in node order."""
    names = set(spec.nodes)
    edges: list[tuple[str, str]] = []
    for node_id, handler in spec.nodes.items():
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(handler)))
        except (OSError, TypeError, SyntaxError):
            continue
        targets: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                if node.value != node_id or _is_next_node(tree, node):
                    targets.append(node.value)
        for target in dict.fromkeys(targets):
            edges.append((node_id, target))
    return edges


def _is_next_node(tree: ast.AST, const: ast.Constant) -> bool:
    """A literal naming the handler's own node counts only as an explicit loop (next_node=...)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in ("next_node", "resume_to_node") and node.value is const:
            return True
    return False


def run_path(records: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str]]]:
    """Nodes visited and transitions taken, in order, from a run's ledger records."""
    visited: list[str] = []
    taken: list[tuple[str, str]] = []
    prev: Optional[str] = None
    for rec in records:
        node = rec.get("node_id")
        if not isinstance(node, str):
            continue
        if prev is not None and node != prev:
            taken.append((prev, node))
        if node not in visited:
            visited.append(node)
        prev = node
        result = rec.get("result")
        if isinstance(result, dict) and isinstance(result.get("next_node"), str):
            nxt = result["next_node"]
            if nxt != node:
                taken.append((node, nxt))
                if nxt not in visited:
                    visited.append(nxt)
            prev = nxt
    return visited, list(dict.fromkeys(taken))


def _label(text: str) -> str:
    # Mermaid labels are quoted; quotes and angle brackets become entity codes.
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def mermaid(spec: Any, *, records: Optional[list[dict[str, Any]]] = None, current: Optional[str] = None) -> str:
    """Mermaid ``flowchart TD`` text for a workflow (and a run's path when records are given)."""
    ids = {name: f"n{i}" for i, name in enumerate(spec.nodes)}
    lines = ["flowchart TD", '  start(("start"))']
    for name, nid in ids.items():
        lines.append(f'  {nid}["{_label(name)}"]')
    lines.append(f"  start --> {ids[spec.entry_node]}" if spec.entry_node in ids else "  start --> missing")
    edges = static_edges(spec)
    visited: list[str] = []
    taken: list[tuple[str, str]] = []
    if records is not None:
        visited, taken = run_path(records)
    link = 1  # link 0 is start --> entry
    bold: list[int] = [0] if records is not None else []
    for a, b in edges:
        lines.append(f"  {ids[a]} --> {ids[b]}")
        if (a, b) in taken:
            bold.append(link)
        link += 1
    for a, b in taken:
        if (a, b) not in edges and a in ids and b in ids:
            lines.append(f"  {ids[a]} -.-> {ids[b]}")
            bold.append(link)
            link += 1
    if records is not None:
        lines.append("  classDef visited fill:#d7f5dd,stroke:#2e7d32,stroke-width:2px")
        lines.append("  classDef current fill:#fff3c4,stroke:#f9a825,stroke-width:3px")
        seen = [ids[n] for n in visited if n in ids and n != current]
        if seen:
            lines.append(f"  class {','.join(seen)} visited")
        if current in ids:
            lines.append(f"  class {ids[current]} current")
        if bold:
            lines.append(f"  linkStyle {','.join(str(i) for i in bold)} stroke:#2e7d32,stroke-width:3px")
    return "\n".join(lines)


__all__ = ["static_edges", "run_path", "mermaid"]
