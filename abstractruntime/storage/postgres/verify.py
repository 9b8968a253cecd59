"""Verifying runs of a PostgreSQL store with the folder stores' offline verifier.

The runs are exported to a temporary folder (their exact lines, checkpoints and bookmarks,
:func:`~.transfer.export_run`) and checked there by
:mod:`abstractruntime.storage.verify`, so a run is verified by the same code whichever store
holds it, with the same report. The reports name the database, never the temporary folder.

What only a database has is checked here too (:func:`check_row`): the ``runs`` row's indexed
columns — what ``runs list``, ``emit`` and workers read — must say what its checkpoint says
(``row_columns_mismatch``), and a row that says *waiting* or *ended* must not be behind its
ledger (``checkpoint_behind_ledger``: a stale row hides what the ledger says).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ...core.errors import CorruptRecordError, RunLockedError, RunNotFoundError, UnsupportedFormatError
from ...core.models import RunStatus
from ...core.canonical import canonical_json
from ...core.ids import validate_id
from ..run_files import RUNS_DIR
from ..tombstones import TOMBSTONES_FILE
from .copy import run_ids
from .runs import ROW_COLUMNS, row_columns
from .transfer import export_run


def _read_row(store: Any, run_id: str) -> Optional[tuple[Any, list[Any], int]]:
    """``(checkpoint, indexed columns, ledger head seq)`` read in one statement (one snapshot),
    or ``None`` when the run has no row or its checkpoint does not parse (the folder verifier
    reports that one)."""
    db = store.db
    columns = ", ".join(f"r.{name}" for name in ROW_COLUMNS)
    with db.connection() as conn:
        row = conn.execute(
            f"SELECT {columns}, r.checkpoint_json,"
            f" coalesce((SELECT coalesce(last_seq, seq) FROM {db.s}.ledger l WHERE l.run_id = r.run_id"
            " ORDER BY seq DESC LIMIT 1), 0)"
            f" FROM {db.s}.runs r WHERE r.run_id = %s", [run_id]).fetchone()
    if row is None:
        return None
    try:
        checkpoint = store.runs.parse_checkpoint(run_id, row[len(ROW_COLUMNS)])
    except (CorruptRecordError, UnsupportedFormatError):
        return None
    return checkpoint, list(row[:len(ROW_COLUMNS)]), int(row[-1])


def _stale(found: Optional[tuple[Any, list[Any], int]]) -> bool:
    if found is None:
        return False
    checkpoint, _, head = found
    return checkpoint.ledger.seq < head and checkpoint.shown_run().status is not RunStatus.RUNNING


def check_row(store: Any, run_id: str, report: Any) -> None:
    """Add to ``report`` what is wrong with run ``run_id``'s row of the ``runs`` table, and with
    its ledger rows as rows (their keys and columns against their lines)."""
    for message in store.ledger.row_problems(run_id):
        report.problem("ledger_row_mismatch", f"run {run_id}: {message} (the queries and the writer read these)")
    found = _read_row(store, run_id)
    if found is None:
        return
    checkpoint, stored, _ = found
    wanted = row_columns(checkpoint)
    differ = [f"{name}: row {have!r}, checkpoint {want!r}" for name, have, want in zip(ROW_COLUMNS, stored, wanted)
              if have != want]
    if differ:
        report.problem("row_columns_mismatch", f"the runs row of run {run_id} disagrees with its own checkpoint "
                       f"({'; '.join(differ)}): runs list, emit and workers read these columns",
                       seq=checkpoint.ledger.seq)
    if not _stale(found):
        return
    # A writer between its append and its checkpoint leaves the row behind for a moment: look
    # again holding the run, as no writer is then.
    try:
        with store.runs.lock(run_id):
            found = _read_row(store, run_id)
    except (RunLockedError, RunNotFoundError):
        report.note("run_in_progress", f"run {run_id} is being advanced; its row was not compared with its ledger")
        return
    if found is not None and _stale(found):
        checkpoint, _, head = found
        status = checkpoint.shown_run().status.value
        report.problem("checkpoint_behind_ledger",
                       f"the runs row of run {run_id} says {status} at seq {checkpoint.ledger.seq}, but the ledger "
                       f"goes on to seq {head}: runs list, emit and workers read the row (the run's next tick "
                       "rebuilds it from the ledger)", seq=checkpoint.ledger.seq, ledger_seq=head, row_status=status)


def _relabel(report: Any, store: Any, folder: Path) -> Any:
    described = store.describe()
    log = str(folder / TOMBSTONES_FILE)
    if report.path.startswith(log):  # a pruned run or the log itself: named by the tombstone rows
        where, label = log, f"{described} tombstones"
        report.path = report.path.replace(where, label)
    else:
        label = f"{described} run {report.run_id}"
        where = str(folder / RUNS_DIR / report.run_id)
        report.path = label
    for finding in [*report.problems, *report.notes]:
        finding.message = finding.message.replace(where, label).replace(str(folder), described)
    return report


def _stage_tombstones(store: Any, folder: Path, *, marker: Optional[str] = None) -> None:
    """Lay the store's tombstone rows out as a folder store's log and head, so the folder
    verifier checks them; ``marker``: the one pruned id verified alone (a row keeps its id, as
    ``pruned/<id>`` does in a folder)."""
    from ..tombstones import PRUNED_DIR, TOMBSTONES_HEAD_FILE
    from .tombstones import read_log

    lines, head = read_log(store)
    if not lines and head is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TOMBSTONES_FILE).write_bytes(b"".join(line + b"\n" for line in lines))
    if head is not None:
        (folder / TOMBSTONES_HEAD_FILE).write_bytes(canonical_json(head) + b"\n")
    if marker is not None:
        (folder / PRUNED_DIR).mkdir(exist_ok=True)
        (folder / PRUNED_DIR / validate_id(marker, "run id")).touch()


def verify_run(store: Any, run_id: str, *, expect_head: Optional[str] = None, public_key: Any = None) -> Any:
    """The :class:`~abstractruntime.storage.verify.VerifyReport` of one run of ``store``."""
    from ..verify import verify_run as verify_folder_run

    with tempfile.TemporaryDirectory(prefix="abstractruntime-verify-") as tmp:
        try:
            export_run(store, run_id, tmp, durable=False)
        except RunNotFoundError:
            if not store.runs.pruned(run_id):
                raise
            _stage_tombstones(store, Path(tmp), marker=run_id)  # a pruned run: reported from its tombstone
        report = _relabel(verify_folder_run(tmp, run_id, expect_head=expect_head, public_key=public_key),
                          store, Path(tmp))
    if report.pruned is None:
        check_row(store, run_id, report)
    return report


def verify_store(store: Any, *, expect_head: Optional[str | Mapping[str, str]] = None,
                 progress: Optional[Callable[[int, int, Any], None]] = None, public_key: Any = None) -> list[Any]:
    """The reports of every run of ``store`` in run-id order (``verify_store`` of folders, same
    arguments and semantics)."""
    from ..verify import verify_store as verify_folder_store

    with tempfile.TemporaryDirectory(prefix="abstractruntime-verify-") as tmp:
        folder = Path(tmp)
        for run_id in run_ids(store):
            export_run(store, run_id, folder, durable=False)
        _stage_tombstones(store, folder)
        done_ids: set[int] = set()

        def checked(report: Any) -> Any:
            if id(report) not in done_ids:  # progress sees the reports the list returns: once each
                done_ids.add(id(report))
                _relabel(report, store, folder)
                if report.pruned is None:
                    check_row(store, report.run_id, report)
            return report

        relabelled = None if progress is None else (lambda done, total, report: progress(done, total, checked(report)))
        reports = verify_folder_store(folder, expect_head=expect_head, progress=relabelled, public_key=public_key,
                                      check_markers=False)
        return [checked(report) for report in reports]


__all__ = ["check_row", "verify_run", "verify_store"]
