"""Schedules on PostgreSQL: the ``schedule_log`` and ``schedule_ticks`` tables (schema migration 9).

``schedule_log`` holds each schedule's append-only log, ``(name, seq)`` its primary key; an
append takes a transaction-level advisory lock on the name, runs its check over the log, and
inserts the next ``seq``. ``schedule_ticks`` holds the one decision per tick: its primary key
``(name, tick)`` is the unique key that makes a fleet of workers decide each tick once —
``INSERT ... ON CONFLICT DO NOTHING``, and whoever inserted nothing reads the row that holds.
Records are stored as the canonical JSON they were written as (``bytea``).
"""

from __future__ import annotations

from datetime import timezone
from typing import TYPE_CHECKING, Any, Callable, Optional

from ...core.canonical import canonical_json
from ...core.clock import parse_iso
from ...core.errors import CorruptRecordError, InvalidInputError
from ...core.json_codec import loads_strict

if TYPE_CHECKING:
    from .db import PgDatabase

SCHEDULES_SCHEMA_VERSION = 9
"""The schema migration that adds the schedule tables (one place to renumber it)."""

SCHEDULES_MIGRATION: tuple[int, str, tuple[str, ...]] = (SCHEDULES_SCHEMA_VERSION, "schedules and their ticks", (
    """CREATE TABLE {s}.schedule_log (
        name   text NOT NULL,
        seq    bigint NOT NULL CHECK (seq >= 1),
        record bytea NOT NULL,
        PRIMARY KEY (name, seq))""",
    # One decision per (schedule, tick): the key a fleet of workers decides each tick by, once.
    """CREATE TABLE {s}.schedule_ticks (
        name     text NOT NULL,
        tick     timestamptz NOT NULL,
        decision bytea NOT NULL,
        PRIMARY KEY (name, tick))""",
))


def _doc(raw: Any, where: str) -> dict[str, Any]:
    try:
        doc = loads_strict(bytes(raw))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptRecordError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CorruptRecordError(f"{where}: not a JSON object")
    return doc


class PostgresScheduleStore:
    """The schedule tables of one store (``PostgresStore.schedules``)."""

    def __init__(self, db: "PgDatabase") -> None:
        self.db = db
        self._log = f"{db.s}.schedule_log"
        self._ticks = f"{db.s}.schedule_ticks"

    def names(self) -> list[str]:
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT DISTINCT name FROM {self._log} ORDER BY name").fetchall()
        return [row[0] for row in rows]

    def records(self, name: str) -> list[dict[str, Any]]:
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT seq, record FROM {self._log} WHERE name = %s ORDER BY seq",
                                [name]).fetchall()
        return self._records(name, rows)

    def _records(self, name: str, rows: list[Any]) -> list[dict[str, Any]]:
        out = []
        for seq, raw in rows:
            record = _doc(raw, f"schedule {name!r} record {seq} in {self.db.describe()}")
            if record.get("format") != 1 or not isinstance(record.get("event"), str):
                raise CorruptRecordError(f"schedule {name!r} record {seq} in {self.db.describe()}: "
                                         "not a schedule record")
            out.append(record)
        return out

    def append(self, name: str, record: dict[str, Any],
               check: Optional[Callable[[list[dict[str, Any]]], None]] = None) -> None:
        key = "\x1f".join(("abstractruntime", "schedule", self.db.schema, name))
        with self.db.connection() as conn, conn.transaction():
            # One appender per schedule at a time (the key hashed by the server: a 64-bit lock key).
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])
            rows = conn.execute(f"SELECT seq, record FROM {self._log} WHERE name = %s ORDER BY seq",
                                [name]).fetchall()
            if check is not None:
                check(self._records(name, rows))
            conn.execute(f"INSERT INTO {self._log} (name, seq, record) VALUES (%s, %s, %s)",
                         [name, (rows[-1][0] if rows else 0) + 1, canonical_json(record)])

    def decide(self, name: str, key: str, decision: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        tick = parse_iso(str(decision.get("tick")))
        if tick.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") != key:
            raise InvalidInputError(f"tick key {key!r} is not the decision's tick {decision.get('tick')!r}")
        with self.db.connection() as conn:
            inserted = conn.execute(
                f"INSERT INTO {self._ticks} (name, tick, decision) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [name, tick, canonical_json(decision)]).rowcount
            if inserted:
                return decision, True
            row = conn.execute(f"SELECT decision FROM {self._ticks} WHERE name = %s AND tick = %s",
                               [name, tick]).fetchone()
        if row is None:  # pragma: no cover - a decision is never deleted
            raise CorruptRecordError(f"schedule {name!r}: the decision of tick {key} vanished")
        return self._decision(name, key, row[0]), False

    def _decision(self, name: str, key: str, raw: Any) -> dict[str, Any]:
        where = f"schedule {name!r} tick {key} in {self.db.describe()}"
        doc = _doc(raw, where)
        try:
            placed = parse_iso(str(doc.get("tick"))).strftime("%Y%m%dT%H%M%SZ") == key
        except ValueError:
            placed = False
        if not placed:  # the row's content must agree with its key
            raise CorruptRecordError(f"{where}: names tick {doc.get('tick')!r}")
        return doc

    def recent(self, name: str, limit: int) -> list[dict[str, Any]]:
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT tick, decision FROM {self._ticks} WHERE name = %s ORDER BY tick DESC "
                                "LIMIT %s", [name, max(limit, 0)]).fetchall()
        return [self._decision(name, tick.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ"), raw)
                for tick, raw in rows]


__all__ = ["PostgresScheduleStore", "SCHEDULES_MIGRATION", "SCHEDULES_SCHEMA_VERSION"]
