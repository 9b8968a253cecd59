"""Writing one run's page to a file (atomically: a reader never sees half a page)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.redaction import Redactor
from ..storage.fsio import FILE_MODE, atomic_write_bytes
from .load import RELATED_RUNS, RunData, load_run
from .page import build_page


@dataclass
class ReportFile:
    """One written page: where, how many timeline rows, the verdict it shows, how it was laid out."""

    run_id: str
    path: Optional[str]
    rows: Optional[int] = None
    verified: Optional[bool] = None
    status: Optional[str] = None
    graph_engine: Optional[str] = None
    problems: Optional[int] = None
    bytes: Optional[int] = None
    workflow_id: Optional[str] = None
    updated_at: Optional[str] = None
    error: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the CLI's ``--json``)."""
        return asdict(self)


def render_run(data: RunData, *, layout: str = "auto", version: str = "",
               generated_at: Optional[str] = None) -> tuple[str, dict[str, Any]]:
    """The page of an already loaded run and its facts (see :func:`~.page.build_page`)."""
    return build_page(data, layout=layout, version=version, generated_at=generated_at)


def build_report(store: Any, run_id: str, *, at: Optional[int] = None, layout: str = "auto",
                 related: int = RELATED_RUNS, redactor: Optional[Redactor] = None) -> str:
    """The HTML page of one run of ``store`` (a ``FileStore`` or any store with the same attributes).

    Built from redacted values only (``redactor`` adds rules of your own; see :func:`~.load.load_run`).
    """
    from .. import __version__

    data = load_run(store, run_id, at=at, related=related, redactor=redactor)
    html, _ = render_run(data, layout=layout, version=__version__)
    return html


REPORT_MODE = FILE_MODE  # a page shows what a run did: readable by its writer only, like the store's files


def write_text(path: str | os.PathLike[str], content: str) -> None:
    """Replace ``path`` with ``content`` (mode 0600), atomically and durably, as the store writes its files."""
    atomic_write_bytes(Path(path), content.encode("utf-8"))


def write_report(store: Any, run_id: str, path: str | os.PathLike[str], *, at: Optional[int] = None,
                 layout: str = "auto", related: int = RELATED_RUNS, redactor: Optional[Redactor] = None) -> ReportFile:
    """Write the page of ``run_id`` to ``path`` (mode 0600, from redacted values only) and say what it shows."""
    from .. import __version__

    data = load_run(store, run_id, at=at, related=related, redactor=redactor)
    html, info = render_run(data, layout=layout, version=__version__)
    target = Path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_text(target, html)
    return ReportFile(run_id=run_id, path=str(target), bytes=len(html.encode("utf-8")), workflow_id=data.workflow_id,
                      updated_at=data.run.get("updated_at"), **info)


__all__ = ["ReportFile", "build_report", "write_report", "render_run", "write_text", "REPORT_MODE"]
