"""A workflow's graph: edges read from the handlers' source, a run's path, Mermaid text.

Edges are where each handler's ``StepPlan`` may go: its ``next_node`` (and a wait's
``resume_to_node``) values, read from the source by :mod:`abstractruntime.transitions`; a
string that merely appears in a handler (an output, a message) is no edge. A node whose
handler can return ``complete_output`` gets an edge to the end. Given a run's ledger records,
the transitions it actually took are drawn bold, and any taken transition the source reading
missed is added as a dotted edge.
"""

from __future__ import annotations

from typing import Any, Optional

from .transitions import read_nodes


def static_edges(spec: Any) -> list[tuple[str, str]]:
    """``(from, to)`` pairs found in the handlers' source, in node order (targets that are nodes)."""
    edges: list[tuple[str, str]] = []
    for reading in read_nodes(spec):
        targets = [t.name for t in reading.targets if t.name in spec.nodes]
        edges.extend((reading.node_id, target) for target in dict.fromkeys(targets))
    return edges


def ending_nodes(spec: Any) -> list[str]:
    """The nodes whose handler can complete the run (``complete_output`` not ``None``), in node order."""
    return [reading.node_id for reading in read_nodes(spec) if reading.completes]


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


def _completed_at(records: list[dict[str, Any]]) -> Optional[str]:
    """The node whose ``complete`` record ended the run (``None`` while it has not)."""
    for rec in reversed(records):
        if rec.get("kind") == "complete" and isinstance(rec.get("node_id"), str):
            return str(rec["node_id"])
    return None


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
    ends = ending_nodes(spec)
    if ends:
        lines.append('  stop(("end"))')  # "end" is a Mermaid keyword: the id is stop, the label end
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
    completed_at = _completed_at(records) if records is not None else None
    for name in ends:
        lines.append(f"  {ids[name]} --> stop")
        if name == completed_at:
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


__all__ = ["ending_nodes", "static_edges", "run_path", "mermaid"]
