"""Delivered event ids on PostgreSQL: the ``events`` table, with the semantics of the folder store's.

One row per event id (the primary key: an id is recorded once per store), written before any run
is resumed with the event; ``state`` says whether it was delivered, is still open (a kept event
waiting for a run, or a delivery a killed emitter left unfinished) or expired. A writer holds a
session-level advisory lock on the id, on a connection of its own, as run locks are held, so a
process killed with -9 frees it at once. The resumes themselves are the ledger's transactions:
the row is committed first and each run's ``resume`` record carries ``result.event_id``, which
is what decides whether a run got the event (see :mod:`abstractruntime.storage.event_ids`).
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterator, Optional

from ...core.canonical import canonical_json
from ...core.clock import parse_iso, to_iso, utc_now_iso
from ...core.errors import CorruptRecordError, InvalidInputError, StorageError
from ..event_ids import DELIVERED, EXPIRED, OPEN, EventRecord, check_event_id
from .keys import advisory_key

if TYPE_CHECKING:
    from .db import PgDatabase

EVENTS_SCHEMA_VERSION = 6
"""The schema migration that adds the ``events`` table (one place to renumber it)."""

EVENTS_MIGRATION: tuple[int, str, tuple[str, ...]] = (EVENTS_SCHEMA_VERSION, "delivered event ids", (
    """CREATE TABLE {s}.events (
        event_id       text PRIMARY KEY,
        event_key      text NOT NULL,
        payload_sha256 text NOT NULL,
        payload        bytea,
        created_at     timestamptz NOT NULL,
        keep_until     timestamptz,
        targets        bytea NOT NULL,
        state          text NOT NULL CHECK (state IN ('open', 'delivered', 'expired')),
        finished_at    timestamptz)""",
    # What a worker pass reads: kept events still waiting for a run, oldest first.
    "CREATE INDEX events_kept ON {s}.events (created_at, event_id) WHERE state = 'open' AND keep_until IS NOT NULL",
))

_COLUMNS = "event_id, event_key, payload_sha256, payload, created_at, keep_until, targets, state, finished_at"


class PostgresEventLog:
    """The ``events`` table of one store (see :class:`~abstractruntime.storage.event_ids.EventLog`)."""

    def __init__(self, db: "PgDatabase") -> None:
        self.db = db
        self._t = f"{db.s}.events"

    def get(self, event_id: str) -> Optional[EventRecord]:
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM {self._t} WHERE event_id = %s",
                               [check_event_id(event_id)]).fetchone()
        return None if row is None else self._record(row)

    @contextlib.contextmanager
    def lock(self, event_id: str, *, wait: float = 0.0) -> Iterator[bool]:
        key = advisory_key("event", self.db.schema, check_event_id(event_id))
        conn = self.db.take_lock_connection()
        try:
            got = self._acquire(conn, key, wait)
        except BaseException:
            conn.close()  # its session, and any lock it might hold, ends with it
            raise
        if not got:
            self.db.give_back(conn)
            yield False
            return
        owner = os.getpid()
        try:
            yield True
        finally:
            if os.getpid() == owner:  # a child of fork() must not release its parent's lock
                self._release(conn, key)

    def _acquire(self, conn: Any, key: int, wait: float) -> bool:
        psycopg = self.db.psycopg
        try:
            if wait <= 0:
                return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0])
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", [f"{max(1, int(wait * 1000))}ms"])
                conn.execute("SELECT pg_advisory_lock(%s)", [key])
            return True
        except psycopg.errors.LockNotAvailable:
            return False
        except psycopg.Error as exc:
            raise self.db.storage_error(exc) from None

    def _release(self, conn: Any, key: int) -> None:
        try:
            released = conn.execute("SELECT pg_advisory_unlock(%s)", [key]).fetchone()[0]
        except self.db.psycopg.Error:
            released = False  # the connection is gone, and the server released the lock with it
        if released:
            self.db.give_back(conn)
        else:
            conn.close()

    def create(self, record: EventRecord) -> None:
        payload = canonical_json(record.payload) if record.kept else None
        with self.db.connection() as conn:
            inserted = conn.execute(
                f"""INSERT INTO {self._t} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL)
                    ON CONFLICT (event_id) DO NOTHING""",
                [record.event_id, record.event_key, record.payload_sha256, payload, parse_iso(record.created_at),
                 parse_iso(record.keep_until) if record.keep_until else None, canonical_json(record.targets),
                 OPEN]).rowcount
        if not inserted:
            raise StorageError(f"event {record.event_id!r} is already recorded in {self.db.describe()}")

    def add_target(self, event_id: str, target: dict[str, Any]) -> None:
        record = self.get(event_id)
        if record is None:
            raise StorageError(f"event {event_id!r} is not recorded in {self.db.describe()}")
        targets = [*record.targets, {"run_id": target["run_id"], "wait_id": target.get("wait_id")}]
        with self.db.connection() as conn:
            conn.execute(f"UPDATE {self._t} SET targets = %s WHERE event_id = %s", [canonical_json(targets), event_id])

    def finish(self, event_id: str, state: str, at: Optional[str] = None) -> None:
        if state not in (DELIVERED, EXPIRED):
            raise InvalidInputError(f"an event finishes delivered or expired, not {state!r}")
        with self.db.connection() as conn:
            conn.execute(f"UPDATE {self._t} SET state = %s, finished_at = %s, payload = NULL WHERE event_id = %s",
                         [state, parse_iso(at or utc_now_iso()), event_id])

    def open_kept(self, *, limit: int = 1000) -> list[EventRecord]:
        with self.db.connection() as conn:
            rows = conn.execute(
                f"""SELECT {_COLUMNS} FROM {self._t} WHERE state = 'open' AND keep_until IS NOT NULL
                    ORDER BY created_at, event_id LIMIT %s""", [max(limit, 0)]).fetchall()
        return [self._record(row) for row in rows]

    def records(self) -> list[EventRecord]:
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM {self._t} ORDER BY created_at, event_id").fetchall()
        return [self._record(row) for row in rows]

    def put(self, record: EventRecord) -> None:
        open_kept = record.kept and record.state == OPEN
        with self.db.connection() as conn:
            inserted = conn.execute(
                f"""INSERT INTO {self._t} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (event_id) DO NOTHING""",
                [check_event_id(record.event_id), record.event_key, record.payload_sha256,
                 canonical_json(record.payload) if open_kept else None, parse_iso(record.created_at),
                 parse_iso(record.keep_until) if record.keep_until else None, canonical_json(record.targets),
                 record.state, parse_iso(record.finished_at) if record.finished_at else None]).rowcount
        if not inserted:
            raise StorageError(f"event {record.event_id!r} is already recorded in {self.db.describe()}")

    def _record(self, row: Any) -> EventRecord:
        from ..fsio import loads_strict

        event_id, key, digest, payload, created, keep_until, targets, state, finished = row
        where = f"event {event_id!r} in {self.db.describe()}"
        try:
            target_list = loads_strict(bytes(targets))
            value = loads_strict(bytes(payload)) if payload is not None else None
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CorruptRecordError(f"{where} is not valid JSON ({exc})") from None
        if not isinstance(target_list, list) or not all(isinstance(t, dict) for t in target_list):
            raise CorruptRecordError(f"{where}: targets must be a list of objects")
        return EventRecord(event_id=event_id, event_key=key, payload_sha256=digest, created_at=_iso(created),
                           keep_until=_iso(keep_until) if keep_until is not None else None, payload=value,
                           targets=target_list, state=state, finished_at=_iso(finished) if finished else None)


def _iso(moment: datetime) -> str:
    return to_iso(moment)


__all__ = ["EVENTS_MIGRATION", "EVENTS_SCHEMA_VERSION", "PostgresEventLog"]
