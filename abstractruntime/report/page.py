"""One run's page: header, verdict, graph, state, marks and the timeline, as one HTML string.

Everything written here from data goes through :func:`escape.text` (HTML) or
:func:`escape.script_json` (the embedded JSON block); the page's script then builds the
timeline with ``textContent`` only. A Content-Security-Policy forbids every request and
allows exactly the page's own inline script, so even a mistake here could not load
anything or run injected code.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from .escape import csp_hash, pretty_json, script_json, text
from .graph import build_graph, render_graph
from .load import RunData
from .rows import build_rows
from .script import SCRIPT
from .style import STYLE
from .verdict import verdict_html

PAGE_SIZE = 500
PATH_SHOWN = 60


def page_head(title: str, *, script: Optional[str] = SCRIPT) -> str:
    """``<head>`` with the policy that keeps the page offline (and allows only ``script``), and the style."""
    allowed = csp_hash(script) if script else "'none'"
    # The style element and the script are allowed by their hashes: nothing else inline can
    # apply or run (the script still sets bar widths through the CSSOM, which CSP allows).
    policy = (f"default-src 'none'; img-src data:; style-src {csp_hash(STYLE)}; "
              f"script-src {allowed}; base-uri 'none'; form-action 'none'")
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{text(policy)}">'
            '<meta name="referrer" content="no-referrer">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{text(title)}</title><style>{STYLE}</style></head>")


def status_at(records: list[dict[str, Any]]) -> str:
    """The run's status as its last record leaves it (for a report cut with ``at``)."""
    last = records[-1] if records else {}
    kind, status = last.get("kind"), last.get("status")
    return {"complete": "completed", "fail": "failed", "cancel": "cancelled"}.get(
        str(kind), "waiting" if status == "waiting" else "running")


def _fields(pairs: list[tuple[str, Any, Optional[str]]]) -> str:
    out = []
    for label, value, fid in pairs:
        if value is None or value == "":
            continue
        ident = f' id="{text(fid)}"' if fid else ""
        out.append(f"<dt>{text(label)}</dt><dd{ident}>{text(value)}</dd>")
    return f'<dl class="fields">{"".join(out)}</dl>'


def _marks(data: RunData) -> tuple[dict[int, list[dict[str, Any]]], str]:
    """Bookmarks and snapshots by seq (for the rows), and their table."""
    by_seq: dict[int, list[dict[str, Any]]] = {}
    rows = []
    for b in data.bookmarks:
        seq = b.get("seq")
        if isinstance(seq, int):
            by_seq.setdefault(seq, []).append({"type": "bookmark", "name": b.get("name"), "note": b.get("note")})
        rows.append(("bookmark", b.get("name"), seq, b.get("note"), b.get("created_at"), b.get("record_hash")))
    for s in data.snapshots:
        seq = (s.get("ledger") or {}).get("seq")
        if isinstance(seq, int):
            by_seq.setdefault(seq, []).append({"type": "snapshot", "name": s.get("name"), "id": s.get("snapshot_id")})
        tags = ", ".join(map(str, s.get("tags") or []))
        desc = " — ".join(x for x in (s.get("description"), f"tags: {tags}" if tags else None,
                                       f"run {s.get('run_status')}" if s.get("run_status") else None) if x)
        rows.append(("snapshot", f"{s.get('name')} ({s.get('snapshot_id')})", seq, desc, s.get("created_at"),
                     (s.get("ledger") or {}).get("head_hash")))
    if not rows:
        return by_seq, '<p class="muted">No bookmarks or snapshots.</p>'
    body = "".join(
        f'<tr class="mark-{text(kind)}"><td>{text(kind)}</td><td>{text(name)}</td>'
        + (f'<td><a href="#seq-{text(seq)}">{text(seq)}</a></td>' if seq is not None else "<td>?</td>")
        + f"<td>{text(note)}</td><td>{text(created)}</td><td><code>{text((h or '')[:16])}</code></td></tr>"
        for kind, name, seq, note, created, h in rows)
    return by_seq, ('<table class="marks"><thead><tr><th>type</th><th>name</th><th>seq</th><th>note</th>'
                    f"<th>created</th><th>record hash</th></tr></thead><tbody>{body}</tbody></table>")


def _origin(checkpoint: Optional[dict[str, Any]]) -> Optional[str]:
    origin = (checkpoint or {}).get("origin")
    if not isinstance(origin, dict):
        return None
    pos = (origin.get("ledger") or {}).get("seq") if isinstance(origin.get("ledger"), dict) else None
    return f"run {origin.get('run_id')}" + (f" at seq {pos}" if pos is not None else "") + (
        f" (snapshot {origin.get('snapshot_id')})" if origin.get("snapshot_id") else "")


def _path_text(path: list[str]) -> str:
    shown = path if len(path) <= PATH_SHOWN else path[: PATH_SHOWN // 2] + ["…"] + path[-PATH_SHOWN // 2:]
    more = f" ({len(path) - 1} transitions)" if len(path) > PATH_SHOWN else ""
    return f'<p class="path" id="path-text">path: {text(" → ".join(shown))}{text(more)}</p>'


def _state(data: RunData) -> str:
    if data.at is not None:
        return f'<p class="muted">As of seq {text(data.at)}.</p>' + _state_blocks(data.run)
    return _state_blocks(data.run)


def _state_blocks(run: dict[str, Any]) -> str:
    parts = []
    for key in ("output", "error", "waiting", "vars"):
        value = run.get(key)
        if value in (None, {}, ""):
            continue
        opened = " open" if key in ("output", "error", "waiting") else ""
        parts.append(f'<details class="state-{key}"{opened}><summary>{text(key)}</summary>'
                     f"<pre>{pretty_json(value)}</pre></details>")
    return "".join(parts) or '<p class="muted">No output, error, wait or variables.</p>'


def _usage(records: list[dict[str, Any]]) -> Optional[str]:
    """What the run's LLM calls (and the children it collected) spent, from the records shown."""
    from ..usage import describe_totals

    def number(value: Any) -> int:
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

    calls = tokens_in = tokens_out = unpriced = 0
    cost: Optional[float] = None
    for rec in records:
        ext: Any = rec.get("ext")
        for name in ("usage", "child_usage"):
            report = ext.get(name) if isinstance(ext, dict) else None
            if not isinstance(report, dict):
                continue
            calls += number(report.get("calls", 1 if name == "usage" else 0))
            tokens_in += number(report.get("input_tokens"))
            tokens_out += number(report.get("output_tokens"))
            unpriced += number(report.get("unpriced"))
            value = report.get("cost")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                cost = round((cost or 0.0) + float(value), 10)
            elif name == "usage":
                unpriced += 1
    if not calls:
        return None
    return describe_totals({"calls": calls, "input_tokens": tokens_in, "output_tokens": tokens_out,
                            "tokens": tokens_in + tokens_out, "cost": cost, "unpriced": unpriced})


def _duration(ms: float) -> str:
    """A duration as people read it: ``0.253 ms``, ``41 ms``, ``4.10 s``."""
    if ms < 10:
        return f"{ms:.3f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.2f} s"


def _stats(stats: dict[str, Any], rows: int) -> str:
    items = [("records", rows), ("LLM calls", stats["llm_calls"]), ("tool call batches", stats["tool_calls"]),
             ("waits", stats["waits"]), ("failures", stats["failures"]), ("retries", stats["retries"]),
             ("slowest step", f"{_duration(stats['max_ms'])} (seq {stats['slowest']})"
              if stats["slowest"] is not None else None)]
    return "".join(f'<div class="stat"><span class="n">{text(v)}</span> {text(k)}</div>'
                   for k, v in items if v is not None)


def build_page(data: RunData, *, layout: str = "auto", generated_at: Optional[str] = None,
              version: str = "") -> tuple[str, dict[str, Any]]:
    """The page's HTML and facts about it (``rows``, ``verified``, ``graph_engine``)."""
    generated_at = generated_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    run = data.run
    # A report cut at a seq shows the status that seq left: the rebuilt state's, else the record's.
    cut_unrebuilt = data.at is not None and not data.rebuilt
    status = status_at(data.records) if cut_unrebuilt or not run.get("status") else run.get("status")
    problems: dict[int, list[str]] = {}
    for p in data.verify.get("problems") or []:
        if isinstance(p.get("seq"), int):
            problems.setdefault(p["seq"], []).append(f"{p.get('type')}: {p.get('message')}")
    marks_by_seq, marks_html = _marks(data)
    rows, stats = build_rows(data.records, problems=problems, marks=marks_by_seq)
    current = run.get("current_node") if not cut_unrebuilt else None
    graph = build_graph(data.records, related=data.related, current=current, status=status)
    svg, engine = render_graph(graph, layout=layout)
    workflow = data.recorded_workflow
    at_text = f"{data.at} of {data.total_records}" if data.at is not None else None
    header = _fields([
        ("workflow", data.workflow_id, "f-workflow"), ("run id", data.run_id, "f-run"),
        ("status", status, "f-status"), ("as of seq", at_text, "f-at"),
        ("current node", current, None),
        ("created", run.get("created_at"), "f-created"), ("updated", run.get("updated_at"), "f-updated"),
        ("actor", run.get("actor_id") or "—", "f-actor"), ("parent run", run.get("parent_run_id"), None),
        ("workflow sha256", workflow.get("sha256"), "f-sha256"),
        ("forked from", _origin(data.checkpoint), None),
        ("LLM usage", _usage(data.records), "f-usage"),
        ("store", data.store_path, None), ("report written", generated_at, None),
    ])
    warnings = "".join(f"<li>{text(w)}</li>" for w in data.warnings)
    payload = {"run_id": data.run_id, "workflow_id": data.workflow_id, "status": status, "page_size": PAGE_SIZE,
               "rows": rows, "stats": stats, "graph": graph.to_dict(), "graph_engine": engine,
               "verified": bool(data.verify.get("ok")), "at": data.at}
    title = f"{data.workflow_id} · {data.run_id} · {status}"
    body = (
        f'{page_head(f"{title} — abstractruntime report")}<body class="status-{text(status)}">'
        f'<header><p class="kicker">abstractruntime run report {text(version)}</p>'
        f'<h1><span class="wf">{text(data.workflow_id)}</span> <span class="run">{text(data.run_id)}</span> '
        f'<span class="badge status-{text(status)}" id="status-badge">{text(status)}</span></h1>{header}'
        + (f'<ul class="warnings">{warnings}</ul>' if warnings else "")
        + "</header><main>"
        + verdict_html(data.verify, data.verify_scope, store_path=data.store_path, run_id=data.run_id,
                       generated_at=generated_at)
        + '<div class="overview">'
        + f'<section id="graph-section"><h2>Path through the workflow</h2><div class="graph-wrap" '
          f'data-engine="{text(engine)}">{svg}</div>'
          '<p class="legend"><span class="lg taken"></span> taken (×N: N times) '
          '<span class="lg nottaken"></span> seen in other runs of this workflow, not taken here</p></section>'
        + f'<div class="side"><section id="summary"><h2>Summary</h2><div class="stats">{_stats(stats, len(rows))}'
          f'</div>{_path_text(graph.path)}</section>'
        + f'<section id="state"><h2>State</h2>{_state(data)}</section>'
        + f'<section id="marks"><h2>Bookmarks and snapshots</h2>{marks_html}</section></div></div>'
        + '<section id="timeline"><h2>Timeline</h2><div class="controls">'
          '<label>show <select id="filter-kind"><option value="">every record</option>'
          '<option value="llm_call">LLM calls</option><option value="tool_calls">tool calls</option>'
          '<option value="wait">waits and answers</option><option value="failed">failures and retries</option>'
          '<option value="marked">bookmarks and snapshots</option></select></label> '
          '<label>find <input id="filter-text" type="search" placeholder="node, text…"></label> '
          '<span class="pager"><button id="prev" type="button">◀</button> <span id="page-info"></span> '
          '<button id="next" type="button">▶</button></span></div>'
          '<div class="thead"><span>seq</span><span>time</span><span>node</span><span>record</span>'
          '<span>what happened</span><span>duration</span></div><div id="rows"></div>'
          '<noscript><p>The timeline is drawn by the page\'s script. Without it, read the records with '
          f'<code>abstractruntime ledger show {text(data.run_id)}</code>.</p></noscript></section></main>'
        + f'<script type="application/json" id="report-data">{script_json(payload)}</script>'
        + f"<script>{SCRIPT}</script></body></html>\n")
    info = {"rows": len(rows), "verified": bool(data.verify.get("ok")), "graph_engine": engine,
            "status": status, "problems": len(data.verify.get("problems") or [])}
    return body, info


__all__ = ["build_page", "page_head", "status_at", "PAGE_SIZE"]
