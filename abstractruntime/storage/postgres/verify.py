"""Verifying runs of a PostgreSQL store with the folder stores' offline verifier.

The runs are exported to a temporary folder (their exact lines, checkpoints and bookmarks,
:func:`~.transfer.export_run`) and checked there by
:mod:`abstractruntime.storage.verify`, so a run is verified by the same code whichever store
holds it, with the same report. The reports name the database, never the temporary folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..json_files import RUNS_DIR
from .copy import run_ids
from .transfer import export_run


def _relabel(report: Any, store: Any, folder: Path) -> Any:
    label = f"{store.describe()} run {report.run_id}"
    where = str(folder / RUNS_DIR / report.run_id)
    report.path = label
    for finding in [*report.problems, *report.notes]:
        finding.message = finding.message.replace(where, label)
    return report


def verify_run(store: Any, run_id: str, *, expect_head: Optional[str] = None, public_key: Any = None) -> Any:
    """The :class:`~abstractruntime.storage.verify.VerifyReport` of one run of ``store``."""
    from ..verify import verify_run as verify_folder_run

    with tempfile.TemporaryDirectory(prefix="abstractruntime-verify-") as tmp:
        export_run(store, run_id, tmp, durable=False)
        return _relabel(verify_folder_run(tmp, run_id, expect_head=expect_head, public_key=public_key),
                        store, Path(tmp))


def verify_store(store: Any, *, expect_head: Optional[str | Mapping[str, str]] = None,
                 progress: Optional[Callable[[int, int, Any], None]] = None, public_key: Any = None) -> list[Any]:
    """The reports of every run of ``store`` in run-id order (``verify_store`` of folders, same
    arguments and semantics)."""
    from ..verify import verify_store as verify_folder_store

    with tempfile.TemporaryDirectory(prefix="abstractruntime-verify-") as tmp:
        folder = Path(tmp)
        for run_id in run_ids(store):
            export_run(store, run_id, folder, durable=False)
        relabelled = None if progress is None else (
            lambda done, total, report: progress(done, total, _relabel(report, store, folder)))
        reports = verify_folder_store(folder, expect_head=expect_head, progress=relabelled, public_key=public_key)
        return [_relabel(report, store, folder) for report in reports]


__all__ = ["verify_run", "verify_store"]
