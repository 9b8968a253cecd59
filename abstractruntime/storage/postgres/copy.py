"""Copying whole stores between a folder and PostgreSQL: runs, snapshots, artifacts and event ids.

Each run goes over by the one transfer path (:mod:`.transfer`): read at one moment,
verified, then written whole or not at all. So a copy can be run again after any failure:
what the destination already holds identically is skipped, and only a *different* run,
snapshot or artifact under the same id is refused (never overwritten). A run that does not
verify is refused and the others are copied; the command then fails, naming it. Ledgers
keep their bytes and hashes, so ``verify`` passes on either side. Snapshots of the copied
runs and artifacts (those of the copied runs, and those of no run) follow each run, with
their ids, timestamps and metadata unchanged. The store's event ids (what ``emit --id``
delivered, and events ``--keep`` keeps) follow too, each written whole, so an emit retried
against the destination is still a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ...core.errors import (
    CorruptRecordError,
    InvalidInputError,
    RunExistsError,
    VerificationFailedError,
)
from ...core.ids import validate_id
from ..event_ids import copy_event
from ..run_files import RUNS_DIR
from ..segments import has_ledger
from .store import PostgresStore
from .transfer import read_run, transfer_run, where

# A limit larger than any store holds: list every artifact.
_ALL = 1 << 62


def run_ids(store: Any) -> list[str]:
    """Every run id a folder store or a PostgreSQL store holds, sorted."""
    if isinstance(store, PostgresStore):
        db = store.db
        with db.connection() as conn:
            rows = conn.execute(f"SELECT run_id FROM {db.s}.runs UNION SELECT DISTINCT run_id FROM {db.s}.ledger "
                                "ORDER BY 1").fetchall()
        return [row[0] for row in rows]
    runs = Path(store.root) / RUNS_DIR
    if not runs.is_dir():
        return []
    # A directory without a ledger holds no run (e.g. a start that failed before its first record).
    return sorted(p.name for p in runs.iterdir()
                  if not p.is_symlink() and not p.name.startswith(".") and has_ledger(p))


@dataclass
class CopyReport:
    """What :func:`copy_store` did: runs ``copied`` now, runs ``already`` there identically,
    and the snapshots and artifacts written."""

    copied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    snapshots: int = 0
    artifacts: int = 0
    events: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the CLI's ``--json``)."""
        return {"copied": self.copied, "already": self.already, "count": len(self.copied),
                "snapshots": self.snapshots, "artifacts": self.artifacts, "events": self.events}


class _Refusals:
    """Runs (and the snapshots or artifacts of runs) the copy refused, with why."""

    def __init__(self) -> None:
        self.unverified: dict[str, str] = {}
        self.different: dict[str, str] = {}

    def raise_if_any(self, report: CopyReport, src: Any) -> None:
        if not self.unverified and not self.different:
            return
        refused = {**self.different, **self.unverified}
        done = f"copied {len(report.copied)} run(s), {len(report.already)} already there"
        details = {**report.to_dict(), "refused": refused}
        if self.unverified:
            first = next(iter(self.unverified.values()))
            raise VerificationFailedError(f"{len(self.unverified)} run(s) of {where(src)} do not verify and were not "
                                          f"copied ({first}); {done}", **details)
        first = next(iter(self.different.values()))
        raise RunExistsError(f"{len(self.different)} item(s) under an id the destination already uses for something "
                             f"different were not copied ({first}); {done}", **details)


def copy_store(src: Any, dst: Any, *, runs: Optional[Iterable[str]] = None,
               on_run: Optional[Callable[[str, str], None]] = None) -> CopyReport:
    """Copy ``runs`` (default: all) from ``src`` to ``dst``, one a folder store and the other a
    PostgreSQL store; returns a :class:`CopyReport`. ``on_run(run_id, outcome)`` is called after
    each run (``"copied"`` or ``"already"``).

    Restartable: a run, snapshot or artifact the destination holds identically is skipped.
    :class:`VerificationFailedError` when runs of ``src`` do not verify,
    :class:`RunExistsError` when ``dst`` holds something different under one of the ids — in
    both cases after every other run was copied, and naming those refused. Any other failure
    stops the copy: the runs copied so far are whole, the one in progress is not there.
    :class:`InvalidInputError` for a copy between two stores of the same kind.
    """
    to_postgres = isinstance(dst, PostgresStore)
    if to_postgres == isinstance(src, PostgresStore):
        raise InvalidInputError("store copy moves runs between a folder store and a PostgreSQL store")
    return transfer_store(src, dst, runs=runs, on_run=on_run)


def transfer_store(src: Any, dst: Any, *, runs: Optional[Iterable[str]] = None,
                   on_run: Optional[Callable[[str, str], None]] = None, unattached: bool = True) -> CopyReport:
    """:func:`copy_store` between any two stores, of the same kind too (archives go through a
    folder on each side: :mod:`abstractruntime.storage.archive`). ``unattached=False`` leaves
    out the artifacts of no run."""
    wanted = sorted(validate_id(r, "run id") for r in runs) if runs is not None else run_ids(src)
    report, refusals = CopyReport(), _Refusals()
    for run_id in wanted:
        try:
            outcome = transfer_run(read_run(src, run_id), dst)
        except (VerificationFailedError, CorruptRecordError) as exc:  # the source run is damaged
            refusals.unverified[run_id] = str(exc)
            continue
        except RunExistsError as exc:
            refusals.different[run_id] = str(exc)
            continue
        (report.copied if outcome == "copied" else report.already).append(run_id)
        _copy_marks(src, dst, run_id, report, refusals)
        if on_run is not None:
            on_run(run_id, outcome)
    if unattached:
        _copy_artifacts(src, dst, [m for m in src.artifacts.list_all(limit=_ALL) if m.run_id is None], report,
                        refusals)
    _copy_events(src, dst, None if runs is None else set(wanted), report, refusals)
    refusals.raise_if_any(report, src)
    return report


def _copy_events(src: Any, dst: Any, runs: Optional[set[str]], report: CopyReport, refusals: _Refusals) -> None:
    """The event ids ``emit --id`` delivered (and events ``--keep`` still keeps), so a retried emit
    stays a no-op on the destination: all of them for a whole store, else those that went to the
    runs copied."""
    for record in src.events.records():
        if runs is not None and not any(t.get("run_id") in runs for t in record.targets):
            continue
        outcome = copy_event(record, dst.events)
        if outcome == "copied":
            report.events += 1
        elif outcome == "different":
            refusals.different[f"event {record.event_id}"] = (
                f"{where(dst)} holds a different event {record.event_id!r}; not overwritten")


def _copy_marks(src: Any, dst: Any, run_id: str, report: CopyReport, refusals: _Refusals) -> None:
    """The run's snapshots and artifacts (skipped when already there, refused when different)."""
    for snapshot in src.snapshots.list(run_id=run_id, limit=None):
        there = dst.snapshots.load(snapshot.snapshot_id)
        if there is None:
            dst.snapshots.save(snapshot)
            report.snapshots += 1
        elif there.to_dict() != snapshot.to_dict():
            refusals.different[f"snapshot {snapshot.snapshot_id}"] = (
                f"{where(dst)} holds a different snapshot {snapshot.snapshot_id}; not overwritten")
    _copy_artifacts(src, dst, src.artifacts.list_by_run(run_id), report, refusals)


def _copy_artifacts(src: Any, dst: Any, metas: list[Any], report: CopyReport, refusals: _Refusals) -> None:
    for meta in metas:
        there = dst.artifacts.get_metadata(meta.artifact_id)
        if there is not None:
            if there.to_dict() != meta.to_dict():
                refusals.different[f"artifact {meta.artifact_id}"] = (
                    f"{where(dst)} holds a different artifact {meta.artifact_id}; not overwritten")
            continue
        artifact = src.artifacts.load(meta.artifact_id)
        if artifact is not None:
            # _put is the stores' write hook: the metadata (id, created_at) is kept as it was.
            dst.artifacts._put(artifact.content, artifact.metadata)
            report.artifacts += 1


__all__ = ["CopyReport", "copy_store", "run_ids", "transfer_store"]
