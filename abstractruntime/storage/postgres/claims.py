"""Work claims of a worker fleet on PostgreSQL: leases taken with ``FOR UPDATE SKIP LOCKED``,
wake-ups through ``LISTEN/NOTIFY``.

A worker asks :meth:`PostgresClaims.claim` for runnable runs — a due ``wait_until`` timer, a
run left ``running`` (handed off by ``emit --hand-off``, cut short by ``max_steps``, or left
by a worker that died), or a run whose row is marked as behind its ledger (``ledger_ahead``: its
writer stopped between an append and the checkpoint; core/ahead.py) — that no live lease covers. The claim locks those ``runs`` rows with
``SKIP LOCKED`` (two workers claiming at once take different runs, neither waits) and records
a lease ``(owner, until)`` in the ``leases`` table, in one statement. The worker renews its
leases while it works and deletes them when done; a worker killed with -9 leaves leases that
expire after ``lease_s`` seconds, and its runs are claimed by another worker then. Lease times
are the server's clock, so workers on machines with skewed clocks agree.

A lease spreads work; it is not what keeps one writer per run. That is the run's advisory
lock (released by the server the moment a dead worker's connection goes) and the ledger
append conditional on the head the writer read: a worker whose lease expired while it was
still working cannot append over another's records.

``emit --hand-off`` answers a run without advancing it and calls :meth:`wake`:
``pg_notify`` on the store's channel. Idle workers block in :meth:`wait_for_work` on
``LISTEN`` and claim the run at once, with no polling interval in between. A ``LISTEN``
connection the server closes (``idle_session_timeout``, ``pg_terminate_backend``, a restart)
is opened and listened again at once, and the wait returns as if woken: a wake-up sent
while nobody listened is not lost, the next pass claims its run. When the server cannot be
reached, :class:`~abstractruntime.core.errors.DatabaseUnavailableError` tells the worker's
loop to back off and retry (:mod:`abstractruntime.scheduler.work_pass`).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Callable, Iterable, Optional

from ...core.clock import parse_iso
from .db import PgDatabase

# How long one wait on the LISTEN connection blocks before checking the stop flag again.
_STOP_CHECK_S = 0.2


def wake_channel(schema: str) -> str:
    """The NOTIFY channel of a store's schema (an identifier: at most 63 characters)."""
    return ("wake_" + schema)[:63]


class PostgresClaims:
    """One worker's leases in one database (``owner`` names the worker in the ``leases`` table)."""

    def __init__(self, db: PgDatabase, *, owner: str, lease_s: float,
                 parse: Optional[Callable[[str, Any], Any]] = None) -> None:
        if not lease_s > 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s!r}")
        self.db, self.owner, self.lease_s = db, owner, float(lease_s)
        self._s = db.s
        self._parse = parse
        # run id -> the checkpoint bytes read with its claim (see take_checkpoint).
        self._claimed: dict[str, bytes] = {}
        # Runs claimed because their rows are marked as behind their ledgers (see was_ahead).
        self._ahead: set[str] = set()
        self._listen: Optional[Any] = None
        self._listen_guard = threading.Lock()

    def claim(self, *, now_iso: str, limit: int, exclude: Iterable[str] = (),
              release: Iterable[str] = ()) -> list[str]:
        """Lease up to ``limit`` runnable runs no live lease covers; their ids (none in ``exclude``).

        A timer is due when its ``until`` is at or before ``now_iso`` (the runtime's clock, as
        for ``tick --due``); due timers come first, then runs left running. ``release`` gives up this worker's leases on those
        runs in the same statement (they must be in ``exclude``): one round trip per run.
        """
        done = list(release)
        if limit < 1:
            self.release(done)
            return []
        now = parse_iso(now_iso)
        s = self._s
        free = f"NOT EXISTS (SELECT 1 FROM {s}.leases l WHERE l.run_id = r.run_id AND l.until >= now())"
        sql = f"""
            WITH gone AS (
                DELETE FROM {s}.leases WHERE owner = %(owner)s AND run_id = ANY(%(release)s)),
            -- Two index scans (runs_due, runs_running), each stopping after ``limit`` free rows:
            -- the cost of a claim does not grow with the queue.
            due AS (
                SELECT r.run_id, r.checkpoint_json, r.ledger_ahead FROM {s}.runs r
                WHERE r.status = 'waiting' AND r.wait_reason = 'until' AND r.until_ts <= %(now)s
                  AND r.run_id <> ALL(%(exclude)s) AND {free}
                ORDER BY r.until_ts, r.run_id
                LIMIT %(limit)s
                FOR UPDATE OF r SKIP LOCKED),
            running AS (
                SELECT r.run_id, r.checkpoint_json, r.ledger_ahead FROM {s}.runs r
                WHERE r.status = 'running' AND r.run_id <> ALL(%(exclude)s) AND {free}
                ORDER BY r.updated_ts, r.run_id
                LIMIT %(limit)s
                FOR UPDATE OF r SKIP LOCKED),
            -- Rows behind their ledgers that the two scans above do not take (index runs_ahead).
            ahead AS (
                SELECT r.run_id, r.checkpoint_json, r.ledger_ahead FROM {s}.runs r
                WHERE r.ledger_ahead AND r.status <> 'running'
                  AND NOT (r.status = 'waiting' AND r.wait_reason = 'until' AND r.until_ts <= %(now)s)
                  AND r.run_id <> ALL(%(exclude)s) AND {free}
                ORDER BY r.updated_ts, r.run_id
                LIMIT %(limit)s
                FOR UPDATE OF r SKIP LOCKED),
            picked AS (
                SELECT * FROM (SELECT * FROM due UNION ALL SELECT * FROM running UNION ALL SELECT * FROM ahead)
                    AS every_kind LIMIT %(limit)s),
            leased AS (
                INSERT INTO {s}.leases (run_id, owner, until)
                    SELECT run_id, %(owner)s, now() + make_interval(secs => %(lease)s) FROM picked
                ON CONFLICT (run_id) DO UPDATE SET owner = EXCLUDED.owner, until = EXCLUDED.until,
                    claimed_at = now()
                    WHERE {s}.leases.until < now()
                RETURNING run_id)
            SELECT leased.run_id, picked.checkpoint_json, picked.ledger_ahead FROM leased JOIN picked USING (run_id)"""
        params = {"now": now, "exclude": sorted({*exclude, *done}), "limit": int(limit), "owner": self.owner,
                  "lease": self.lease_s, "release": done}
        with self.db.connection() as conn:
            rows = conn.execute(sql, params).fetchall()
            if not rows:
                # Idle: drop leases that expired (e.g. of a worker killed after finishing a
                # run); claims ignore them anyway, this only keeps the table small.
                conn.execute(f"DELETE FROM {s}.leases WHERE until < now()")
        if not rows:
            self._claimed.clear()  # whatever was not taken is stale by now
        self._ahead.difference_update(done)
        # A row behind its ledger: its checkpoint is not handed on, the worker reads the run's ledger.
        self._ahead.update(str(row[0]) for row in rows if row[2])
        self._claimed.update({str(row[0]): bytes(row[1]) for row in rows if not row[2]})
        return sorted(str(row[0]) for row in rows)

    def take_checkpoint(self, run_id: str) -> Optional[Any]:
        """The checkpoint of a run claimed by the last :meth:`claim`, as its row held it then (once;
        ``None`` when not at hand). It may be behind the ledger (a writer that died between its
        append and its checkpoint): good for choosing the workflow, the tick reopens the run."""
        data = self._claimed.pop(run_id, None)
        return None if data is None or self._parse is None else self._parse(run_id, data)

    def was_ahead(self, run_id: str) -> bool:
        """Whether the run was claimed because its row is marked as behind its ledger."""
        return run_id in self._ahead

    def renew(self, run_ids: Iterable[str]) -> None:
        """Extend this worker's leases on ``run_ids`` by ``lease_s`` from now."""
        ids = list(run_ids)
        if ids:
            with self.db.connection() as conn:
                conn.execute(f"UPDATE {self._s}.leases SET until = now() + make_interval(secs => %s)"
                             " WHERE owner = %s AND run_id = ANY(%s)", [self.lease_s, self.owner, ids])

    def release(self, run_ids: Iterable[str]) -> None:
        """Give up this worker's leases on ``run_ids`` (other workers' leases are left alone)."""
        ids = list(run_ids)
        if ids:
            with self.db.connection() as conn:
                conn.execute(f"DELETE FROM {self._s}.leases WHERE owner = %s AND run_id = ANY(%s)",
                             [self.owner, ids])

    def next_due(self) -> Optional[datetime]:
        """The earliest ``until`` of the runs waiting on a timer (``None``: no timer)."""
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT min(until_ts) FROM {self._s}.runs"
                               " WHERE status = 'waiting' AND wait_reason = 'until'").fetchone()
        return row[0] if row and row[0] is not None else None

    def listen(self) -> None:
        """Start listening for wake-ups (idempotent); notifications sent from now on are kept."""
        with self._listen_guard:
            if self._listen is None or self._listen.closed or self._listen.broken:
                conn = self.db.connect()
                try:
                    conn.execute(f'LISTEN "{wake_channel(self.db.schema)}"')
                except self.db.psycopg.Error as exc:
                    conn.close()
                    raise self.db.storage_error(exc, lost=conn.broken) from None
                self._listen = conn

    def wait_for_work(self, timeout: float, stop: Optional[threading.Event] = None) -> bool:
        """Block until a wake-up arrives (``True``), ``timeout`` seconds pass or ``stop`` is set.

        Wake-ups that arrived since the last call return at once (they are drained together).
        """
        import time

        self.listen()
        conn = self._listen
        assert conn is not None
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            left = deadline - time.monotonic()
            step = min(left, _STOP_CHECK_S) if stop is not None else left
            try:
                woken = any(True for _ in conn.notifies(timeout=max(step, 0.0), stop_after=1))
                if woken:
                    # Several emits in a row: take them all now, one pass serves them together.
                    for _ in conn.notifies(timeout=0):
                        pass
                    return True
            except self.db.psycopg.Error:
                # The server closed the session: listen again on a new one (an outage raises
                # DatabaseUnavailableError here), and look for work sent meanwhile.
                self.close()
                self.listen()
                return True
            if left <= 0 or (stop is not None and stop.is_set()):
                return False

    def reset(self) -> None:
        """After an outage: give up every lease of this worker (the passes that held them were
        cut short; nothing is in hand now), so its runs are claimable at once, and forget what
        the last claims read."""
        self._claimed.clear()
        self._ahead.clear()
        with self.db.connection() as conn:
            conn.execute(f"DELETE FROM {self._s}.leases WHERE owner = %s", [self.owner])

    def close(self) -> None:
        """Stop listening (the leases stay until released or expired)."""
        with self._listen_guard:
            if self._listen is not None:
                self._listen.close()
                self._listen = None


def notify_wake(db: PgDatabase, run_ids: Iterable[str]) -> None:
    """Wake the workers listening on this store: ``run_ids`` are ready to be claimed."""
    ids = list(run_ids)
    if ids:
        with db.connection() as conn:
            # The payload is informative only (a worker claims whatever is runnable); NOTIFY
            # payloads are limited to 8,000 bytes, so long lists are cut.
            conn.execute("SELECT pg_notify(%s, %s)", [wake_channel(db.schema), ",".join(ids)[:7000]])


__all__ = ["PostgresClaims", "notify_wake", "wake_channel"]
