"""The workflow graph as SVG, with the run's path highlighted.

Nodes and edges come from ledgers only (the workflow code is never imported): the run's own
transitions (the ``node_id`` of consecutive records and each ``next_node`` result), plus the
transitions of other runs of the same workflow, drawn grey as paths not taken.

Layout is Graphviz's ``dot -Tsvg`` when the ``dot`` binary is installed. Without it the
fallback does no layout at all: nodes stacked in the order the run first reached them,
forward transitions as arcs on the right, backward ones on the left (an arc diagram).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Optional

DOT_TIMEOUT = 20.0
DOT_ENV = "ABSTRACTRUNTIME_DOT"  # path of the dot binary; "" or "none" disables Graphviz
LABEL_CHARS = 40


@dataclass
class Graph:
    """Nodes in first-reached order, taken edges with counts and first step, known-but-untaken ones."""

    nodes: list[str] = field(default_factory=list)
    visited: set[str] = field(default_factory=set)
    taken: dict[tuple[str, str], int] = field(default_factory=dict)
    order: dict[tuple[str, str], int] = field(default_factory=dict)
    other: set[tuple[str, str]] = field(default_factory=set)
    entry: Optional[str] = None
    current: Optional[str] = None
    status: Optional[str] = None
    path: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (embedded in the page for its script and tests)."""
        return {"nodes": self.nodes, "visited": sorted(self.visited), "entry": self.entry, "current": self.current,
                "status": self.status, "path": self.path,
                "taken": [[a, b, n] for (a, b), n in self.taken.items()], "other": sorted(map(list, self.other))}


def transitions(records: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str]]]:
    """Nodes in the order the records reach them, and every transition in order (repeats kept)."""
    nodes: list[str] = []
    steps: list[tuple[str, str]] = []
    prev: Optional[str] = None

    def reach(node: str) -> None:
        nonlocal prev
        if node not in nodes:
            nodes.append(node)
        if prev is not None and prev != node:
            steps.append((prev, node))
        prev = node

    for rec in records:
        node = rec.get("node_id")
        if not isinstance(node, str):
            continue
        reach(node)
        result = rec.get("result")
        if isinstance(result, dict) and isinstance(result.get("next_node"), str):
            reach(result["next_node"])
    return nodes, steps


Related = list[tuple[list[str], list[tuple[str, str]]]]


def build_graph(records: list[dict[str, Any]], *, related: Optional[Related] = None,
                current: Optional[str] = None, status: Optional[str] = None) -> Graph:
    """The run's graph; ``related`` (other runs' :func:`transitions`) adds the nodes and edges not taken."""
    nodes, steps = transitions(records)
    graph = Graph(nodes=list(nodes), visited=set(nodes), entry=nodes[0] if nodes else None,
                  current=current if current in nodes else (nodes[-1] if nodes else None), status=status)
    for index, edge in enumerate(steps, start=1):
        graph.taken[edge] = graph.taken.get(edge, 0) + 1
        graph.order.setdefault(edge, index)
    graph.path = ([steps[0][0]] if steps else nodes[:1]) + [b for _, b in steps]
    for more, their in related or []:
        for node in more:
            if node not in graph.visited and node not in graph.nodes:
                graph.nodes.append(node)
        graph.other.update(e for e in their if e not in graph.taken)
    return graph


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def _dot_str(text: str) -> str:
    # Graphviz passes "&entity;" sequences through to SVG, so "&" is written as an entity
    # itself; backslash escapes (\n, \l, ...) and quotes are neutralised.
    text = text.replace("&", "&amp;").replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", " ").replace("\r", " ") + '"'


def _node_style(graph: Graph, name: str) -> tuple[str, str]:
    if name not in graph.visited:
        return "notvisited", 'color="#9e9e9e" fontcolor="#757575" style="dashed,rounded"'
    classes = ["visited"]
    fill = "#d7f5dd"
    if name == graph.current:
        classes.append("current")
        fill = {"failed": "#ffd6d6", "waiting": "#fff3c4", "cancelled": "#e0e0e0"}.get(graph.status or "", fill)
    if name == graph.entry:
        classes.append("entry")
    return " ".join(classes), f'color="#2e7d32" fillcolor="{fill}" style="filled,rounded" penwidth=2'


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text for ``graph`` (node ids are ``n0..``; names are labels only)."""
    ids = {name: f"n{i}" for i, name in enumerate(graph.nodes)}
    lines = ["digraph run {", '  graph [rankdir=TB bgcolor="transparent" nodesep=0.35 ranksep=0.45];',
             '  node [shape=box fontname="Helvetica" fontsize=11 margin="0.15,0.06"];',
             '  edge [fontname="Helvetica" fontsize=9 arrowsize=0.7];']
    if graph.entry in ids:
        lines.append('  start [shape=circle label="" width=0.18 style=filled fillcolor="#2e7d32" color="#2e7d32" '
                     'class="start"];')
        lines.append(f'  start -> {ids[graph.entry]} [color="#2e7d32" penwidth=2 class="taken"];')
    for name, nid in ids.items():
        cls, style = _node_style(graph, name)
        lines.append(f"  {nid} [label={_dot_str(_short(name))} tooltip={_dot_str(name)} id=\"node_{nid}\" "
                     f'class="{cls}" {style}];')
    for (a, b), count in graph.taken.items():
        label = f"×{count}" if count > 1 else ""
        lines.append(f'  {ids[a]} -> {ids[b]} [color="#2e7d32" penwidth=2.4 class="taken" label={_dot_str(label)} '
                     f'fontcolor="#2e7d32"];')
    for a, b in sorted(graph.other):
        if a in ids and b in ids:
            lines.append(f'  {ids[a]} -> {ids[b]} [color="#9e9e9e" style=dashed class="nottaken"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_binary() -> Optional[str]:
    """The ``dot`` executable to use, or None ($ABSTRACTRUNTIME_DOT overrides the PATH lookup)."""
    configured = os.environ.get(DOT_ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "none", "0", "off") else configured
    return shutil.which("dot")


_SVG_START = re.compile(r"<svg\b")


def render_dot(dot_text: str, binary: str) -> str:
    """``dot -Tsvg``'s output reduced to the ``<svg>`` element (no prolog, doctype or comments)."""
    proc = subprocess.run([binary, "-Tsvg"], input=dot_text.encode("utf-8"), capture_output=True,
                          timeout=DOT_TIMEOUT, check=True)
    svg = proc.stdout.decode("utf-8", "replace")
    match = _SVG_START.search(svg)
    if match is None:
        raise ValueError("dot produced no <svg> element")
    svg = re.sub(r"<!--.*?-->", "", svg[match.start():], flags=re.S)
    # Graphviz links to its own namespace documents in attributes only; no element points at
    # another host, but xlink:href attributes are dropped anyway so the page stays offline.
    svg = re.sub(r'\s(?:xlink:)?href="[^"]*"', "", svg)
    return svg.replace("<svg ", '<svg class="graph" role="img" aria-label="workflow graph" ', 1)


def fallback_svg(graph: Graph) -> str:
    """An arc diagram: nodes stacked in first-reached order, transitions as arcs beside them."""
    row_h, box_h, left = 46, 28, 150
    width_box = max([len(_short(n)) for n in graph.nodes] + [6]) * 7 + 24
    cx = left + width_box / 2
    ys = {name: 20 + i * row_h for i, name in enumerate(graph.nodes)}
    height = 40 + len(graph.nodes) * row_h
    width = left * 2 + width_box
    parts = [f'<svg class="graph fallback" role="img" aria-label="workflow graph" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             "<defs>" + "".join(
                 f'<marker id="arrow-{cls}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
                 f'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>'
                 for cls, color in (("taken", "#2e7d32"), ("nottaken", "#9e9e9e"))) + "</defs>"]

    def arc(a: str, b: str, cls: str, label: str) -> None:
        y1, y2 = ys[a] + box_h / 2, ys[b] + box_h / 2
        forward = y2 > y1
        x = left + width_box if forward else left
        bend = 30 + abs(y2 - y1) * 0.35
        cxp = x + bend if forward else x - bend
        parts.append(f'<g class="edge {cls}"><path d="M{x},{y1} C{cxp},{y1} {cxp},{y2} {x},{y2}" fill="none" '
                     f'marker-end="url(#arrow-{cls})"/>'
                     + (f'<text x="{cxp + (4 if forward else -4)}" y="{(y1 + y2) / 2 + 4}" '
                        f'text-anchor="{"start" if forward else "end"}">{html.escape(label)}</text>' if label else "")
                     + "</g>")

    for (a, b), count in graph.taken.items():
        arc(a, b, "taken", f"×{count}" if count > 1 else "")
    for a, b in sorted(graph.other):
        if a in ys and b in ys:
            arc(a, b, "nottaken", "")
    for name in graph.nodes:
        cls = _node_style(graph, name)[0]
        y = ys[name]
        parts.append(f'<g class="node {cls}"><title>{html.escape(name)}</title>'
                     f'<rect x="{left}" y="{y}" width="{width_box}" height="{box_h}" rx="6"/>'
                     f'<text x="{cx}" y="{y + box_h / 2 + 4}" text-anchor="middle">'
                     f"{html.escape(_short(name))}</text></g>")
    parts.append("</svg>")
    return "".join(parts)


def render_graph(graph: Graph, *, layout: str = "auto") -> tuple[str, str]:
    """``(svg, engine)``: engine is ``"dot"`` or ``"simple"``. ``layout``: auto | dot | simple."""
    if layout not in ("auto", "dot", "simple"):
        raise ValueError(f"unknown graph layout {layout!r} (auto, dot or simple)")
    if not graph.nodes:
        return '<p class="muted">No nodes recorded.</p>', "none"
    binary = dot_binary() if layout != "simple" else None
    if layout == "dot" and binary is None:
        from ..core.errors import InvalidInputError

        raise InvalidInputError("--layout dot needs Graphviz's dot binary (apt-get install graphviz)")
    if binary is not None:
        try:
            return render_dot(to_dot(graph), binary), "dot"
        except (OSError, subprocess.SubprocessError, ValueError):
            if layout == "dot":
                raise
    return fallback_svg(graph), "simple"


__all__ = ["Graph", "build_graph", "transitions", "to_dot", "render_dot", "fallback_svg", "render_graph",
           "dot_binary"]
