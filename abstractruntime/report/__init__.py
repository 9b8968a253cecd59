"""A run as one self-contained HTML page: ``abstractruntime report RUN``.

    from abstractruntime.report import write_report, write_index
    write_report(open_store("."), "run-1", "run-1.html")   # one page
    write_index(open_store("."), "reports/")                # a page per run + index.html

The page shows the run's header and the verification verdict computed when it was written,
the path through the workflow as SVG, every ledger record on a paginated timeline with its
duration, waits and answers, and each effect in full on demand. It loads nothing from any
host (inline CSS, JS and SVG under a Content-Security-Policy) and never imports workflow
code. Standard library only; Graphviz's ``dot`` lays out the graph when installed.
"""

from __future__ import annotations

from .index import index_html, write_index
from .load import RunData, load_run
from .write import ReportFile, build_report, render_run, write_report

__all__ = ["build_report", "write_report", "write_index", "index_html", "load_run", "render_run", "RunData",
           "ReportFile"]
