"""In-flight slots on PostgreSQL: one session-level advisory lock per slot.

Slot ``n`` of key ``k`` is the advisory lock ``advisory_key("slot", schema, k, n)``. Taking a
slot tries ``pg_try_advisory_lock`` on slots ``0 .. limit-1`` on a connection of its own (a
session-level lock belongs to its session, as run locks do), and keeps that connection while
the slot is held. Every worker of the fleet, on any machine, contends for the same locks; a
worker that dies or loses its connection releases its slots with its session. Nothing is
written to any table.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

from .keys import advisory_key

if TYPE_CHECKING:
    from .db import PgDatabase


class PostgresSlots:
    """The slots of one store's schema (a :class:`~abstractruntime.core.observe.SlotBackend`)."""

    def __init__(self, db: "PgDatabase") -> None:
        self.db = db

    def try_acquire(self, key: str, limit: int) -> Optional[tuple[Any, int, int]]:
        """``(connection, lock key, pid)`` of a held slot, or ``None`` when all are taken."""
        conn = self.db.take_lock_connection()
        try:
            for n in range(limit):
                lock = advisory_key("slot", self.db.schema, key, str(n))
                if conn.execute("SELECT pg_try_advisory_lock(%s)", [lock]).fetchone()[0]:
                    return conn, lock, os.getpid()
        except self.db.psycopg.Error as exc:
            conn.close()  # its session, and any lock it took, ends with it
            raise self.db.storage_error(exc, lost=conn.closed or conn.broken) from None
        except BaseException:
            conn.close()
            raise
        self.db.give_back(conn)
        return None

    def release(self, handle: tuple[Any, int, int]) -> None:
        """Give the slot back (a child of ``fork()`` never releases its parent's)."""
        conn, lock, pid = handle
        if pid != os.getpid():
            return
        try:
            released = conn.execute("SELECT pg_advisory_unlock(%s)", [lock]).fetchone()[0]
        except self.db.psycopg.Error:
            released = False  # the session is gone, and the server released the lock with it
        if released:
            self.db.give_back(conn)
        else:
            conn.close()


__all__ = ["PostgresSlots"]
