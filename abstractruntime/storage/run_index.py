"""A rebuildable SQLite index of run checkpoints, so queries never re-parse every run file.

``<store>/index.sqlite3`` holds one row per run (status, wait reason, workflow, ``until``,
``updated_at``, parent). It is a cache of the ``run.json`` files, which stay the truth:

- before a checkpoint is written its row is set to the new values with ``dirty = 1``, and
  after the write succeeds ``dirty = 0``. A crash in between leaves a dirty row, and queries
  always re-read dirty rows' files, so the index can never hide a run from a query;
- query results are re-read from ``run.json`` and re-checked against the filter;
- a run directory the index has never seen (copied in by hand) is picked up because the
  ``runs/`` directory's mtime differs from the one last recorded;
- ``rebuild()`` (CLI: ``abstractruntime runs reindex``) recreates it from the files.

WAL mode with ``synchronous=NORMAL``: an index write survives a process crash; after power
loss the index may lag the files, which ``rebuild()`` repairs.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from ..core.models import RunState, RunStatus, WaitReason
from .query import timestamp

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow_id TEXT,
    status TEXT,
    wait_reason TEXT,
    until_ts REAL,
    updated_ts REAL,
    parent_run_id TEXT,
    dirty INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_status_updated ON runs (status, updated_ts);
CREATE INDEX IF NOT EXISTS runs_updated ON runs (updated_ts);
CREATE INDEX IF NOT EXISTS runs_until ON runs (status, wait_reason, until_ts);
CREATE INDEX IF NOT EXISTS runs_parent ON runs (parent_run_id);
CREATE INDEX IF NOT EXISTS runs_dirty ON runs (dirty);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

INDEX_FILENAME = "index.sqlite3"

log = logging.getLogger("abstractruntime.storage")


def _row(run: RunState, dirty: int) -> tuple[object, ...]:
    waiting = run.waiting
    return (
        run.run_id,
        run.workflow_id,
        RunStatus(run.status).value,
        WaitReason(waiting.reason).value if waiting else None,
        timestamp(waiting.until) if waiting else None,
        timestamp(run.updated_at) or 0.0,
        run.parent_run_id,
        dirty,
    )


class RunIndex:
    """The SQLite index of one store's runs (thread-safe, shared by processes)."""

    def __init__(self, root: Path, runs_dir: Path, loader: Callable[[str], Optional[RunState]]) -> None:
        self._path = root / INDEX_FILENAME
        self._runs_dir = runs_dir
        self._load = loader
        self._lock = threading.RLock()
        self._conn: Optional[sqlite3.Connection] = None

    def _execute(self, sql: str, params: tuple[object, ...]) -> sqlite3.Cursor:
        """Run one statement; a damaged index file is set aside and rebuilt once."""
        try:
            return self._db().execute(sql, params)
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
            return self._db().execute(sql, params)

    def _set_aside(self, exc: Exception) -> None:
        """Move a damaged index out of the way (kept for inspection); the next use rebuilds it."""
        self.close()
        aside = self._path.with_name(f"{INDEX_FILENAME}.damaged")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{self._path}{suffix}", f"{aside}{suffix}")
            except FileNotFoundError:
                pass
        log.warning("%s was damaged (%s); moved to %s and rebuilt from the run files", self._path, exc, aside)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                return self._open()
            except sqlite3.DatabaseError as exc:
                self._set_aside(exc)
                return self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            fresh = not self._path.exists()
            if fresh:
                # Create it 0600 before SQLite does (SQLite would use the umask).
                os.close(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            conn = sqlite3.connect(self._path, timeout=30.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
            if fresh:
                self.rebuild()
        return self._conn

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def put(self, run: RunState, *, dirty: bool) -> None:
        """Record ``run``'s queryable fields (``dirty`` while its checkpoint is being written).

        """
        with self._lock:
            self._execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)", _row(run, int(dirty)))

    def forget(self, run_id: str) -> None:
        """Drop a run's row."""
        with self._lock:
            self._execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    def note_runs_dir(self) -> None:
        """Remember the ``runs/`` directory's mtime (after this process created a run)."""
        with self._lock:
            self._set_meta("runs_mtime_ns", str(self._runs_mtime()))

    def _runs_mtime(self) -> int:
        try:
            return self._runs_dir.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def _set_meta(self, key: str, value: str) -> None:
        self._db().execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _get_meta(self, key: str) -> Optional[str]:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def rebuild(self) -> int:
        """Recreate every row from the run files; returns the number of runs indexed."""
        with self._lock:
            db = self._db()
            mtime = self._runs_mtime()
            rows = [_row(run, 0) for run in self._scan()]
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM runs")
                db.executemany("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)", rows)
                self._set_meta("runs_mtime_ns", str(mtime))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return len(rows)

    def _scan(self) -> Iterator[RunState]:
        try:
            names = os.listdir(self._runs_dir)
        except FileNotFoundError:
            return
        for name in names:
            run = self._safe_load(name)
            if run is not None:
                yield run

    def _safe_load(self, run_id: str) -> Optional[RunState]:
        try:
            return self._load(run_id)
        except Exception:  # an unreadable run must not hide the others from a query
            return None

    def _reconcile(self) -> None:
        """Pick up run directories created behind the index's back (cheap when none were)."""
        mtime = self._runs_mtime()
        if self._get_meta("runs_mtime_ns") == str(mtime):
            return
        try:
            on_disk = set(os.listdir(self._runs_dir))
        except FileNotFoundError:
            on_disk = set()
        known = {r[0] for r in self._db().execute("SELECT run_id FROM runs")}
        for run_id in on_disk - known:
            run = self._safe_load(run_id)
            if run is not None:
                self.put(run, dirty=False)
        for run_id in known - on_disk:
            self.forget(run_id)
        self._set_meta("runs_mtime_ns", str(mtime))

    def query(
        self,
        where: str,
        params: Iterable[object],
        order: str,
        accept: Callable[[RunState], bool],
        sort_key: Callable[[RunState], object],
        limit: Optional[int],
    ) -> list[RunState]:
        """Runs whose rows match ``where``, re-read and re-checked with ``accept``, in ``order``."""
        with self._lock:
            db = self._db()
            self._reconcile()
            dirty_ids = [r[0] for r in db.execute("SELECT run_id FROM runs WHERE dirty = 1")]
            cursor = db.execute(f"SELECT run_id FROM runs WHERE dirty = 0 AND ({where}) ORDER BY {order}",
                                tuple(params))
            found: list[RunState] = []
            for run_id in dirty_ids:
                run = self._safe_load(run_id)
                # Only the run's writer clears ``dirty``: doing it here could race with a
                # writer mid-checkpoint and leave a stale clean row.
                if run is not None and accept(run):
                    found.append(run)
            wanted = None if limit is None else limit + len(found)
            clean: list[RunState] = []
            for (run_id,) in cursor:
                run = self._safe_load(run_id)
                if run is not None and accept(run):
                    clean.append(run)
                    if wanted is not None and len(clean) >= wanted:
                        break
        merged = sorted(found + clean, key=sort_key)  # type: ignore[arg-type]
        return merged if limit is None else merged[:limit]
