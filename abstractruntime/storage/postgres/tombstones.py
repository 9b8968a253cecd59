"""The tombstones of a PostgreSQL store: the ``tombstones`` table and its ``tombstone_head`` row.

The rows hold the same sealed lines as a folder store's ``tombstones.jsonl``
(:mod:`abstractruntime.storage.tombstones`), so one checker reads both. A run is pruned in
one transaction (:func:`prune_run`): its tombstone and the log's head are written and its
rows deleted together, so a prune killed at any point leaves the run or its tombstone, never
neither. The table lock serialises prunes, which keeps the chain a line.
"""

from __future__ import annotations

from typing import Any, Optional

from ...core.errors import CorruptRecordError
from ..tombstones import LogCheck, Tombstone, check_rows, parse_line, seal

# The tables whose rows belong to one run and go with it (snapshots only when asked).
RUN_TABLES = ("ledger", "secrets", "anchors", "bookmarks", "leases", "blocks", "runs")


def read_log(store: Any) -> tuple[list[bytes], Optional[dict[str, Any]]]:
    """The tombstone lines in seq order and the recorded head (``None`` when there is none)."""
    db = store.db
    with db.connection() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        lines = [bytes(row[0]) for row in conn.execute(f"SELECT line FROM {db.s}.tombstones ORDER BY seq")]
        row = conn.execute(f"SELECT seq, hash FROM {db.s}.tombstone_head WHERE id = 1").fetchone()
    return lines, (None if row is None else {"seq": int(row[0]), "hash": row[1]})


def check(store: Any) -> LogCheck:
    """The store's tombstone log, checked like a folder's (a missing head with rows is a problem)."""
    lines, head = read_log(store)
    found = check_rows(lines, head=head)
    if head is None and lines:
        found.problems.append(("tombstones_head_missing", "the tombstone_head row is missing (removed)", None))
    return found


def _last(conn: Any, s: str) -> Optional[Tombstone]:
    """The last tombstone, which must be the one the head row names (a cut or edited log is
    refused: a tombstone chained to it would seal the damage)."""
    row = conn.execute(f"SELECT line FROM {s}.tombstones ORDER BY seq DESC LIMIT 1").fetchone()
    head = conn.execute(f"SELECT seq, hash FROM {s}.tombstone_head WHERE id = 1").fetchone()
    if row is None and head is None:
        return None
    last = None if row is None else parse_line(bytes(row[0]))[0]
    if last is None or head is None or (last.seq, last.hash) != (int(head[0]), head[1]):
        raise CorruptRecordError("the tombstone log does not end at its recorded head (rows removed or edited); "
                                 "nothing pruned: run verify --all")
    return last


def prune_run(store: Any, run_id: str, fields: dict[str, Any], *, snapshots: bool,
              event_ids: list[str]) -> Tombstone:
    """Tombstone run ``run_id`` and delete its rows (and its snapshots when ``snapshots``, and
    the events ``event_ids``) in one transaction; returns the tombstone."""
    db = store.db
    s = db.s
    with db.connection() as conn, conn.transaction():
        conn.execute(f"LOCK TABLE {s}.tombstones IN EXCLUSIVE MODE")
        tombstone, line = seal(previous=_last(conn, s), **fields)
        conn.execute(f"INSERT INTO {s}.tombstones (seq, run_id, line, hash) VALUES (%s, %s, %s, %s)",
                     [tombstone.seq, run_id, line, tombstone.hash])
        conn.execute(f"INSERT INTO {s}.tombstone_head (id, seq, hash) VALUES (1, %s, %s) ON CONFLICT (id) "
                     "DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash", [tombstone.seq, tombstone.hash])
        for table in RUN_TABLES + (("snapshots",) if snapshots else ()):
            conn.execute(f"DELETE FROM {s}.{table} WHERE run_id = %s", [run_id])
        if event_ids:
            conn.execute(f"DELETE FROM {s}.events WHERE event_id = ANY(%s)", [event_ids])
    return tombstone


__all__ = ["RUN_TABLES", "check", "prune_run", "read_log"]
