"""The run index's SQLite schema: its table, one row per run, in-place migrations, error kinds.

:mod:`.run_index` keeps the rows in step with the ``run.json`` files; this module only says
what a row holds and how an index file written by an older release is brought up to date.
Columns added after the first release are added in place (``ALTER TABLE``), never by
recreating the file, so an index can be shared by processes of different releases:

- ``ck_mtime_ns``, ``ck_size``, ``ck_ino`` (the identity of the ``run.json`` a row was taken
  from): rows without one are re-read once, then recorded;
- ``wait_key`` (the key a WAITING run waits on, for ``list_waiting_on``): when it is added to
  an index that already has rows, their identities are cleared in the same transaction, so
  every row is re-read from its file and refilled by the next query (or ``runs reindex``).
"""

from __future__ import annotations

import sqlite3
from typing import Optional

from ..core.models import RunState, RunStatus, WaitReason
from .query import timestamp

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow_id TEXT,
    status TEXT,
    wait_reason TEXT,
    until_ts REAL,
    updated_ts REAL,
    parent_run_id TEXT,
    dirty INTEGER NOT NULL DEFAULT 0,
    ck_mtime_ns INTEGER,
    ck_size INTEGER,
    ck_ino INTEGER,
    wait_key TEXT
);
CREATE INDEX IF NOT EXISTS runs_status_updated ON runs (status, updated_ts);
CREATE INDEX IF NOT EXISTS runs_updated ON runs (updated_ts);
CREATE INDEX IF NOT EXISTS runs_until ON runs (status, wait_reason, until_ts);
CREATE INDEX IF NOT EXISTS runs_parent ON runs (parent_run_id);
CREATE INDEX IF NOT EXISTS runs_dirty ON runs (dirty);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
# Created after the migration: an index from before wait keys has no column to index yet.
_WAIT_KEY_INDEX = "CREATE INDEX IF NOT EXISTS runs_wait_key ON runs (wait_key, updated_ts)"

IDENTITY_COLUMNS = ("ck_mtime_ns", "ck_size", "ck_ino")
# Added after the first release, in this order: (column, SQL type).
ADDED_COLUMNS = (("ck_mtime_ns", "INTEGER"), ("ck_size", "INTEGER"), ("ck_ino", "INTEGER"), ("wait_key", "TEXT"))

# The columns a row sets, in the order of :func:`row`; named, so the order of a migrated
# table's columns (added columns come last) does not matter.
ROW_COLUMNS = ("run_id", "workflow_id", "status", "wait_reason", "until_ts", "updated_ts", "parent_run_id", "dirty",
               *IDENTITY_COLUMNS, "wait_key")
INSERT = f"INSERT OR REPLACE INTO runs ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"
# What a repair sets from a re-read run: every column of :func:`fields`, then the identity.
REPAIR_SET = ", ".join(f"{c}=?" for c in (*ROW_COLUMNS[1:7], "wait_key", *IDENTITY_COLUMNS))

Identity = tuple[Optional[int], Optional[int], Optional[int]]
MISSING: Identity = (None, None, None)


def fields(run: RunState) -> tuple[object, ...]:
    """The run's queryable fields: workflow, status, wait reason, until, updated, parent, wait key."""
    waiting = run.waiting
    return (run.workflow_id, RunStatus(run.status).value,
            WaitReason(waiting.reason).value if waiting else None, timestamp(waiting.until) if waiting else None,
            timestamp(run.updated_at) or 0.0, run.parent_run_id, waiting.wait_key if waiting else None)


def row(run: RunState, dirty: int, identity: Identity) -> tuple[object, ...]:
    """The values of :data:`ROW_COLUMNS` for ``run``."""
    *head, wait_key = fields(run)
    return (run.run_id, *head, dirty, *identity, wait_key)


def columns(conn: sqlite3.Connection) -> set[str]:
    """The columns the ``runs`` table has."""
    return {r[1] for r in conn.execute("PRAGMA table_info(runs)")}


def migrate(conn: sqlite3.Connection) -> bool:
    """Create the schema, or bring an older index up to date in place (one transaction); ``True``
    when rows were left to be refilled from their files.

    ``BEGIN IMMEDIATE`` serialises processes opening an old index at the same moment: the
    second finds the columns already there.
    """
    conn.executescript(SCHEMA)
    refill = False
    if not {c for c, _ in ADDED_COLUMNS} <= columns(conn):
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            have = columns(conn)
            for column, sql_type in ADDED_COLUMNS:
                if column not in have:
                    conn.execute(f"ALTER TABLE runs ADD COLUMN {column} {sql_type}")
            if "wait_key" not in have:
                # Existing rows have no wait key: make each one re-read from its file and refilled.
                conn.execute(f"UPDATE runs SET {', '.join(f'{c} = NULL' for c in IDENTITY_COLUMNS)}")
                refill = True
    conn.execute(_WAIT_KEY_INDEX)
    return refill


_CODES = {11: "corrupt", 26: "corrupt", 8: "readonly", 13: "full", 10: "io", 14: "io", 5: "busy", 6: "busy"}
_TEXTS = (("not a database", "corrupt"), ("malformed", "corrupt"), ("readonly", "readonly"), ("read-only", "readonly"),
          ("disk is full", "full"), ("disk i/o", "io"), ("unable to open", "io"), ("locked", "busy"))


def error_kind(exc: sqlite3.Error) -> str:
    """``corrupt`` | ``readonly`` | ``full`` | ``io`` | ``busy`` | ``other`` (codes on 3.11+, text before)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return _CODES.get(code & 0xFF, "other")
    text = str(exc).lower()
    return next((kind for needle, kind in _TEXTS if needle in text), "other")


__all__ = ["ADDED_COLUMNS", "IDENTITY_COLUMNS", "INSERT", "MISSING", "REPAIR_SET", "ROW_COLUMNS", "SCHEMA",
           "Identity", "columns", "error_kind", "fields", "migrate", "row"]
