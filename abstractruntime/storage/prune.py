"""Pruning finished runs while keeping proof of them: ``abstractruntime prune`` and its library API.

    report = prune_store(store, finished_before=parse_age("30d"))

:func:`prune_store` removes the runs that finished (completed, failed or cancelled; or the
``statuses`` given) before a moment, and for each appends a sealed tombstone to the store's
tombstone log (:mod:`abstractruntime.storage.tombstones`) *before* removing anything, so
``verify --all`` still accounts for every pruned run and a pruned id is never used again.
A run goes with its ledger, checkpoint, kept secret values, bookmarks, anchors, query-index
row and the closed event records that went only to pruned runs. Artifacts stay: they are
content-addressed and may serve other runs.

What is never pruned, and why it is kept (each listed in the report's ``kept``): a run that
is waiting or running (its status is not a finished one); a subworkflow run whose parent is
still going (the parent reads its child's outcome); a run a snapshot names, unless
``include_snapshotted`` (its snapshots then go with it); a run with bookmarks, unless
``include_bookmarked``; a run being advanced (its lock is held); a run whose checkpoint is
behind its ledger; and a run that does not verify — a tombstone sealing a damaged run would
vouch for the damage. Every run is verified, with the offline verifier, before its tombstone.

Crash safety: on a folder store each prune first finishes the prunes a killed one left
(``pruning/<run_id>``); on PostgreSQL a run is tombstoned and deleted in one transaction.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import field
from ..core.fastclass import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ..core.clock import parse_iso
from ..core.errors import CorruptRecordError, InvalidInputError, RunLockedError, RunNotFoundError, StorageError
from ..core.models import RunStatus
from .fsio import ensure_dir, fsync_dir
from .run_files import RUNS_DIR
from .tombstones import FileTombstones, Tombstone, refuse_damaged

FINISHED = ("completed", "failed", "cancelled")
# A limit larger than any store holds: list every run of a status.
_ALL = 1 << 62
_REMOVING_PREFIX = ".pruning-"
_AGE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"2w"``, ``"1d12h"``... (units s, m, h, d, w) as a duration;
    :class:`InvalidInputError` otherwise."""
    cleaned = (text or "").strip().lower()
    parts = _AGE.findall(cleaned)
    if not parts or _AGE.sub("", cleaned).strip():
        raise InvalidInputError(f"an age is a number and a unit (s, m, h, d, w), e.g. 30d or 12h, not {text!r}")
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNITS[unit]: int(number)})
    return total


@dataclass
class PruneReport:
    """What :func:`prune_store` did (or, with ``dry_run``, would do)."""

    pruned: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the CLI's ``--json``): ``pruned`` (their tombstones; with ``dry_run``, what they
        would say), ``kept`` (``{"run_id", "reason"}``), ``finished`` (prunes a killed one left,
        completed now), ``count``, ``dry_run``."""
        return {"pruned": self.pruned, "kept": self.kept, "finished": self.finished, "count": len(self.pruned),
                "dry_run": self.dry_run}


def _is_database(store: Any) -> bool:
    return getattr(store, "db", None) is not None


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise InvalidInputError("finished_before must be timezone-aware (UTC)")
    return moment.astimezone(timezone.utc)


def prune_store(store: Any, *, finished_before: datetime | timedelta, statuses: Iterable[str] = FINISHED,
                dry_run: bool = False, include_snapshotted: bool = False, include_bookmarked: bool = False,
                now: Optional[Callable[[], datetime]] = None,
                on_run: Optional[Callable[[str, str], None]] = None) -> PruneReport:
    """Prune the finished runs of ``store`` (a ``FileStore`` or ``PostgresStore``) that finished
    before ``finished_before`` (a moment, or an age before now); see the module docstring.

    ``statuses`` limits the finished statuses pruned; ``dry_run`` changes nothing and reports
    what would go; ``now`` is the clock (UTC). ``on_run(run_id, outcome)`` is called after each
    run (``"pruned"`` or why it was kept). The tombstone of each pruned run is in the report.
    """
    clock = now or (lambda: datetime.now(timezone.utc))
    cutoff = _cutoff(finished_before, clock)
    wanted = _statuses(statuses)
    report = PruneReport(dry_run=dry_run)
    pruner = _Pruner(store, clock, report, include_snapshotted=include_snapshotted,
                     include_bookmarked=include_bookmarked, dry_run=dry_run, on_run=on_run)
    pruner.check_log()  # once, whole: each append then reads only the log's end
    if not dry_run:
        pruner.finish_interrupted()
    for run_id in finished_runs(store, cutoff, statuses=wanted):
        pruner.prune(run_id, cutoff, wanted)
    return report


def _cutoff(finished_before: datetime | timedelta, clock: Callable[[], datetime]) -> datetime:
    return _as_utc(clock() - finished_before if isinstance(finished_before, timedelta) else finished_before)


def _statuses(statuses: Iterable[str]) -> list[str]:
    wanted = []
    for status in statuses:
        if status not in FINISHED:
            raise InvalidInputError(f"only finished runs are selected: status must be one of {', '.join(FINISHED)}, "
                                    f"not {status!r}")
        wanted.append(status)
    return wanted


def finished_runs(store: Any, finished_before: datetime | timedelta, *, statuses: Iterable[str] = FINISHED,
                  now: Optional[Callable[[], datetime]] = None) -> list[str]:
    """The runs of ``store`` that finished (with one of ``statuses``) before ``finished_before``
    (a moment, or an age before ``now()``), oldest first, as the store's index lists them
    (a prune checks each one again under its lock)."""
    cutoff = _cutoff(finished_before, now or (lambda: datetime.now(timezone.utc)))
    candidates: list[tuple[datetime, str]] = []
    for status in _statuses(statuses):
        for run in store.runs.list_runs(status=RunStatus(status), limit=_ALL, as_stored=True):
            finished = _finished_at(run.updated_at)
            if finished is not None and finished < cutoff:
                candidates.append((finished, run.run_id))
    return [run_id for _, run_id in sorted(candidates)]


def _finished_at(value: Optional[str]) -> Optional[datetime]:
    try:
        return parse_iso(value).astimezone(timezone.utc) if value else None
    except (TypeError, ValueError):
        return None


class _Pruner:
    """The work of one :func:`prune_store` call (the store's snapshots and events read once)."""

    def __init__(self, store: Any, clock: Callable[[], datetime], report: PruneReport, *, include_snapshotted: bool,
                 include_bookmarked: bool, dry_run: bool, on_run: Optional[Callable[[str, str], None]]) -> None:
        self.store = store
        self.clock = clock
        self.report = report
        self.include_snapshotted = include_snapshotted
        self.include_bookmarked = include_bookmarked
        self.dry_run = dry_run
        self.on_run = on_run
        self.database = _is_database(store)
        self.files = None if self.database else FileTombstones(store.root, durable=store.durability == "fsync")
        self._snapshotted: Optional[dict[str, list[str]]] = None
        self._events: Optional[list[Any]] = None
        self.pruned_ids: set[str] = set()

    def check_log(self) -> None:
        """Refuse to add to a tombstone log that does not verify."""
        if self.files is not None:
            refuse_damaged(self.files.read(), str(self.files.path))
            return
        from .postgres.tombstones import check

        refuse_damaged(check(self.store), f"{self.store.describe()} tombstones")

    # -- what names a run --------------------------------------------------------------------

    def snapshots_of(self, run_id: str) -> list[str]:
        if self._snapshotted is None:
            found: dict[str, list[str]] = {}
            for snapshot in self.store.snapshots.list(limit=None):
                found.setdefault(snapshot.run_id, []).append(snapshot.snapshot_id)
            self._snapshotted = found
        return self._snapshotted.get(run_id, [])

    def events_of(self, run_id: str) -> list[str]:
        """Closed events that went to this run and otherwise only to runs already pruned."""
        if self._events is None:
            self._events = [e for e in self.store.events.records() if e.state != "open" and e.targets]
        gone = self.pruned_ids | {run_id}
        return [e.event_id for e in self._events
                if any(t.get("run_id") == run_id for t in e.targets) and all(t.get("run_id") in gone for t in e.targets)]

    # -- one run -------------------------------------------------------------------------------

    def keep(self, run_id: str, reason: str) -> None:
        self.report.kept.append({"run_id": run_id, "reason": reason})
        if self.on_run is not None:
            self.on_run(run_id, reason)

    def prune(self, run_id: str, cutoff: datetime, statuses: list[str]) -> None:
        try:
            with self.store.runs.lock(run_id):
                self._prune_locked(run_id, cutoff, statuses)
        except RunLockedError:
            self.keep(run_id, "being advanced (its lock is held)")
        except RunNotFoundError:
            pass  # removed meanwhile (another prune)

    def _prune_locked(self, run_id: str, cutoff: datetime, statuses: list[str]) -> None:
        checkpoint, verified = self._verify(run_id)
        if verified is None or not verified.ok:
            first = verified.problems[0].type if verified is not None and verified.problems else "unreadable"
            self.keep(run_id, f"does not verify ({first}): a tombstone would vouch for it")
            return
        if checkpoint is None or checkpoint.ledger.seq != verified.head_seq:
            self.keep(run_id, "its checkpoint is behind its ledger (a writer stopped between them): the next worker "
                      "pass stores it; prune again after")
            return
        run = checkpoint.shown_run()
        finished = _finished_at(run.updated_at)
        if run.status.value not in statuses or finished is None or finished >= cutoff:
            return  # it changed since it was listed (e.g. retried): not a candidate any more
        parent = self._live_parent(run.parent_run_id)
        if parent is not None:
            self.keep(run_id, f"its parent run {parent} is still going and may read it")
            return
        snapshots = self.snapshots_of(run_id)
        if snapshots and not self.include_snapshotted:
            self.keep(run_id, f"named by snapshot {snapshots[0]} (--include-snapshotted prunes it with its snapshots)")
            return
        if verified.bookmarks_checked and not self.include_bookmarked:
            self.keep(run_id, "it has bookmarks (--include-bookmarked prunes it with them)")
            return
        fields = {"run_id": run_id, "workflow_id": run.workflow_id, "status": run.status.value,
                  "head_seq": verified.head_seq, "head_hash": verified.head_hash, "count": verified.count,
                  "signature": checkpoint.signature,
                  "pruned_at": self.clock().astimezone(timezone.utc).isoformat()}
        if self.dry_run:
            self.report.pruned.append({**fields, "seq": None, "hash": None, "prev_hash": None, "format": None})
        else:
            tombstone = self._remove(run_id, fields, snapshots)
            self.report.pruned.append(tombstone.to_dict())
        self.pruned_ids.add(run_id)
        if self.on_run is not None:
            self.on_run(run_id, "pruned")

    def _live_parent(self, parent_run_id: Optional[str]) -> Optional[str]:
        """The parent run's id when it exists and has not finished (a subworkflow's parent)."""
        if not parent_run_id:
            return None
        try:
            parent = self.store.runs.load(parent_run_id)
        except (CorruptRecordError, StorageError):
            return parent_run_id  # unreadable: assume it still needs its child
        if parent is None or parent.status.value in FINISHED:
            return None
        return parent_run_id

    def _verify(self, run_id: str) -> tuple[Any, Any]:
        """The run's checkpoint and its verification report, read while its lock is held."""
        if self.database:
            from .postgres import verify as pg_verify

            report = pg_verify.verify_run(self.store, run_id)
        else:
            from .verify import verify_run

            report = verify_run(self.store, run_id)
        try:
            checkpoint = self.store.runs.load_checkpoint(run_id)
        except (CorruptRecordError, StorageError):
            checkpoint = None
        return checkpoint, report

    def _remove(self, run_id: str, fields: dict[str, Any], snapshots: list[str]) -> Tombstone:
        snapshot_ids = snapshots if self.include_snapshotted else []
        events = self.events_of(run_id)
        if self.database:
            from .postgres.tombstones import prune_run

            return prune_run(self.store, run_id, fields, snapshots=bool(snapshot_ids), event_ids=events)
        files = self.files
        assert files is not None
        files.intend(run_id)  # first: whatever happens next, the next prune finishes this one
        with files.lock():
            tombstone = files.append(fields)
        self._finish_folder(run_id, snapshot_ids, events)
        return tombstone

    def _finish_folder(self, run_id: str, snapshot_ids: list[str], events: list[str]) -> None:
        """After the tombstone: keep the id, drop what names the run, remove it, end the intent."""
        files = self.files
        assert files is not None
        files.mark(run_id)
        for snapshot_id in snapshot_ids:
            self.store.snapshots.delete(snapshot_id)
        for event_id in events:
            self.store.events.delete(event_id)
        root = Path(self.store.root)
        runs = root / RUNS_DIR
        run_dir = runs / run_id
        release = getattr(getattr(self.store, "ledger", None), "release", None)
        if release is not None:
            release(run_id)  # this process's kept ledger descriptor would keep the deleted file's space
        if run_dir.is_dir():
            # One rename takes the run out of runs/ whole; the directory is deleted after.
            aside = ensure_dir(root, durable=True) / f"{_REMOVING_PREFIX}{run_id}-{uuid.uuid4().hex[:8]}"
            os.rename(run_dir, aside)
            fsync_dir(runs)
            shutil.rmtree(aside, ignore_errors=True)
        self.store.runs.forget(run_id)
        files.done(run_id)

    # -- prunes a killed process left ----------------------------------------------------------

    def finish_interrupted(self) -> None:
        """Finish every prune a killed process began (folder stores; PostgreSQL's are atomic).

        Each is decided holding the run's lock, so a prune still at work (it holds the lock
        from its intent to its end) is left alone."""
        if self.files is None:
            return
        root = Path(self.store.root)
        for leftover in root.glob(f"{_REMOVING_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)  # moved out of runs/ already: only its deletion remained
        intended = self.files.intended()
        if not intended:
            return
        tombstoned = self.files.read().by_run()
        for run_id in intended:
            try:
                with self.store.runs.lock(run_id):
                    tombstone = tombstoned.get(run_id) or self.files.read().by_run().get(run_id)
                    if tombstone is None:
                        # Killed before its tombstone was written: the run is whole; prune it again
                        # if it still qualifies (the filters of this call decide).
                        self.files.done(run_id)
                    else:
                        self._complete(run_id, tombstone)
            except RunNotFoundError:
                # The run is out of runs/ already: only what follows the removal remained.
                if run_id in tombstoned or run_id in self.files.read().by_run():
                    self._finish_folder(run_id, self._all_snapshots(run_id), self.events_of(run_id))
                    self.report.finished.append(run_id)
                else:
                    self.files.done(run_id)
            except RunLockedError:
                self.keep(run_id, "its prune was interrupted and its lock is held: run prune again")

    def _all_snapshots(self, run_id: str) -> list[str]:
        # A run with snapshots was tombstoned only when they were to go with it.
        return self.snapshots_of(run_id)

    def _complete(self, run_id: str, tombstone: Tombstone) -> None:
        from .verify import verify_run

        report = verify_run(self.store, run_id)
        if report.head_hash != tombstone.head_hash or report.head_seq != tombstone.head_seq:
            self.keep(run_id, f"its tombstone names head seq {tombstone.head_seq} but the run's ledger ends at "
                      f"seq {report.head_seq}: left as it is (verify --all reports it)")
            return
        self._finish_folder(run_id, self._all_snapshots(run_id), self.events_of(run_id))
        self.report.finished.append(run_id)


__all__ = ["FINISHED", "PruneReport", "finished_runs", "parse_age", "prune_store"]
