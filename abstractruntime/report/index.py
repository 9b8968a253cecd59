"""``report --all``: one page per run plus an ``index.html`` linking them."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import quote

from ..core.errors import AbstractRuntimeError, NotFoundError
from ..core.redaction import Redactor
from .escape import text
from .graph import transitions
from .load import load_run
from .page import page_head
from .write import ReportFile, render_run, write_text


def _verified_runs(store: Any) -> dict[str, Optional[dict[str, Any]]]:
    """Every run of the store, in run-id order, with its verification when the store has files.

    A file store is listed by ``verify_store`` (which reads the run directories and writes
    nothing); any other store through its query API.
    """
    if getattr(store, "root", None) is not None:
        from ..storage.verify import verify_store

        return {r.run_id: r.to_dict() for r in verify_store(store)}
    return {run_id: None for run_id in sorted({r.run_id for r in store.runs.list_runs(limit=1_000_000)})}


def _related_by_workflow(store: Any, run_ids: list[str]) -> dict[str, list[tuple[str, list[Any], list[Any]]]]:
    """Each workflow's runs reduced to their transitions: the graph of the paths not taken."""
    out: dict[str, list[tuple[str, list[Any], list[Any]]]] = {}
    for run_id in run_ids:
        try:
            run = store.runs.load(run_id)
            records = store.ledger.list(run_id)
        except AbstractRuntimeError:
            continue
        if run is None:
            continue
        nodes, steps = transitions(records)
        out.setdefault(run.workflow_id, []).append((run_id, nodes, list(dict.fromkeys(steps))))
    return out


def write_index(store: Any, out_dir: str | os.PathLike[str], *, layout: str = "auto", version: str = "",
                progress: Optional[Callable[[int, int, ReportFile], None]] = None,
                redactor: Optional[Redactor] = None) -> tuple[Path, list[ReportFile]]:
    """Write ``<out_dir>/<run_id>.html`` for every run and ``<out_dir>/index.html``; returns both.

    A run whose files cannot be read at all still gets a row in the index, with the error
    (redacted, like every page: see :func:`~.load.load_run`). A store without runs raises
    :class:`NotFoundError` (an empty index would hide a wrong store).
    """
    redactor = redactor if redactor is not None else Redactor()
    if not version:
        from .. import __version__ as version
    verified = _verified_runs(store)
    run_ids = list(verified)
    if not run_ids:
        raise NotFoundError(f"no runs to report on in store {getattr(store, 'root', store)}")
    target = Path(out_dir)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    related = _related_by_workflow(store, run_ids)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    written: list[ReportFile] = []
    for run_id in run_ids:
        path = target / f"{run_id}.html"
        try:
            data = load_run(store, run_id, related=0, verify=verified[run_id], redactor=redactor)
            data.related = [(n, e) for rid, n, e in related.get(data.workflow_id, []) if rid != run_id]
            html, info = render_run(data, layout=layout, version=version, generated_at=generated)
            write_text(path, html)
            item = ReportFile(run_id=run_id, path=str(path), bytes=len(html.encode("utf-8")), **info,
                              workflow_id=data.workflow_id, updated_at=data.run.get("updated_at"))
        except AbstractRuntimeError as exc:
            item = ReportFile(run_id=run_id, path=None, error=redactor.redact_error(exc))
        written.append(item)
        if progress is not None:
            progress(len(written), len(run_ids), item)
    index = target / "index.html"
    write_text(index, index_html(written, store_path=str(getattr(store, "root", "") or ""), generated_at=generated,
                                 version=version))
    return index, written


def index_html(items: list[ReportFile], *, store_path: str, generated_at: str, version: str = "") -> str:
    """The index page: one row per run with its status and verdict, linking its page."""
    bad = sum(1 for i in items if i.verified is False)
    rows = []
    for item in items:
        if item.path is None:
            name = text(item.run_id)
            verdict, cls = f"not written: {item.error}", "v-failed"
        else:
            name = f'<a href="{text(quote(Path(item.path).name))}">{text(item.run_id)}</a>'
            verdict, cls = ("verified", "v-ok") if item.verified else ("FAILED", "v-failed")
        rows.append(f'<tr data-run="{text(item.run_id)}"><td>{name}</td><td>{text(item.workflow_id)}</td>'
                    f'<td>{text(item.status)}</td><td class="{cls}">{text(verdict)}</td><td>{text(item.rows)}</td>'
                    f"<td>{text(item.updated_at)}</td></tr>")
    summary = f"{len(items)} run(s); " + ("every ledger verified" if not bad else f"{bad} FAILED verification")
    return (f"{page_head('abstractruntime runs — report index', script=None)}<body><header>"
            f'<p class="kicker">abstractruntime report index {text(version)}</p><h1>Runs in {text(store_path)}</h1>'
            f'<p id="summary">{text(summary)}; written {text(generated_at)}</p></header><main>'
            '<table class="index"><thead><tr><th>run</th><th>workflow</th><th>status</th><th>verification</th>'
            f'<th>records</th><th>updated</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            '<p class="muted">Each verdict was computed when the pages were written; re-check with '
            f"<code>abstractruntime --store {text(store_path)} verify --all</code>.</p></main></body></html>\n")


__all__ = ["write_index", "index_html"]
