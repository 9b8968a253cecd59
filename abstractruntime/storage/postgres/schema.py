"""The PostgreSQL schema, versioned by its own ``schema_migrations`` table.

Every table lives in one PostgreSQL schema (``abstractruntime`` unless the store is opened
with another), so the store can share a database with an application's own tables. A
migration is applied once, in order, inside a transaction that holds a transaction-level
advisory lock, so processes opening a fresh database at the same moment do not race. A
database whose schema is newer than this code is refused: an older release must not write
rows it does not understand.
"""

from __future__ import annotations


import re
from typing import Any

from ...core.errors import InvalidInputError, StorageError, UnsupportedFormatError
from .events import EVENTS_MIGRATION
from .schedules import SCHEDULES_MIGRATION

SCHEMA_VERSION = 11
DEFAULT_SCHEMA = "abstractruntime"

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Each entry: (version, description, statements). ``{s}`` is the quoted schema name.
# Never edit an applied migration: add the next one (databases already at version N skip 1..N).
MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "runs, ledger, secrets, anchors", (
        # checkpoint_json is the checkpoint exactly as written and what is read back: jsonb
        # rewrites numbers (a float 1e16 comes back as the integer 10000000000000000) and
        # cannot hold U+0000. checkpoint is the jsonb copy for queries (NULL when it cannot).
        """CREATE TABLE {s}.runs (
            run_id         text PRIMARY KEY,
            status         text NOT NULL,
            workflow_id    text NOT NULL,
            wait_reason    text,
            wait_key       text,
            until_ts       timestamptz,
            updated_ts     timestamptz,
            parent_run_id  text,
            version        bigint NOT NULL DEFAULT 1,
            checkpoint      jsonb,
            checkpoint_json bytea NOT NULL)""",
        "CREATE INDEX runs_updated ON {s}.runs (updated_ts DESC, run_id)",
        "CREATE INDEX runs_status ON {s}.runs (status, updated_ts DESC)",
        "CREATE INDEX runs_workflow ON {s}.runs (workflow_id, updated_ts DESC)",
        "CREATE INDEX runs_due ON {s}.runs (until_ts, run_id) WHERE status = 'waiting' AND wait_reason = 'until'",
        "CREATE INDEX runs_wait_key ON {s}.runs (wait_key) WHERE wait_key IS NOT NULL",
        "CREATE INDEX runs_parent ON {s}.runs (parent_run_id) WHERE parent_run_id IS NOT NULL",
        # line: the record exactly as sealed (hashes re-verify byte for byte, offline);
        # record: the same record as jsonb for queries (NULL when jsonb cannot hold it).
        """CREATE TABLE {s}.ledger (
            run_id          text NOT NULL,
            seq             bigint NOT NULL CHECK (seq >= 1),
            line            bytea NOT NULL,
            record          jsonb,
            record_hash     text,
            prev_hash       text,
            status          text,
            idempotency_key text,
            PRIMARY KEY (run_id, seq))""",
        """CREATE INDEX ledger_completed ON {s}.ledger (run_id, idempotency_key, seq)
            WHERE status = 'completed' AND idempotency_key IS NOT NULL""",
        # Real values of redacted fields: never hashed, pruned once a checkpoint covers them.
        """CREATE TABLE {s}.secrets (
            id     bigserial PRIMARY KEY,
            run_id text NOT NULL,
            seq    bigint NOT NULL,
            entry  bytea NOT NULL)""",
        "CREATE INDEX secrets_run ON {s}.secrets (run_id, seq)",
        # Redacted states every ANCHOR_EVERY records: a cache for point-in-time reads.
        """CREATE TABLE {s}.anchors (
            run_id text NOT NULL,
            seq    bigint NOT NULL,
            anchor bytea NOT NULL,
            PRIMARY KEY (run_id, seq))""",
    )),
    (2, "snapshots, bookmarks, artifacts", (
        """CREATE TABLE {s}.snapshots (
            snapshot_id  text PRIMARY KEY,
            run_id       text NOT NULL,
            created_ts   timestamptz,
            snapshot      jsonb,
            snapshot_json bytea NOT NULL)""",
        "CREATE INDEX snapshots_run ON {s}.snapshots (run_id, created_ts DESC)",
        """CREATE TABLE {s}.bookmarks (
            run_id         text NOT NULL,
            name           text NOT NULL,
            seq            bigint NOT NULL CHECK (seq >= 1),
            record_hash    text NOT NULL,
            note           text,
            created_at     text NOT NULL,
            checkpoint_seq bigint,
            PRIMARY KEY (run_id, name))""",
        """CREATE TABLE {s}.artifacts (
            artifact_id  text PRIMARY KEY,
            content      bytea NOT NULL,
            content_type text NOT NULL,
            size_bytes   bigint NOT NULL,
            sha256       text,
            created_at   text NOT NULL,
            created_ts   timestamptz NOT NULL,
            run_id       text,
            tags         jsonb,
            tags_json    bytea NOT NULL)""",
        "CREATE INDEX artifacts_run ON {s}.artifacts (run_id, created_ts) WHERE run_id IS NOT NULL",
        "CREATE INDEX artifacts_created ON {s}.artifacts (created_ts DESC, artifact_id DESC)",
    )),
    (3, "work leases of a worker fleet", (
        # A lease says which worker took a run's due work and until when (server time); it
        # spreads work, the run's advisory lock and conditional appends keep one writer.
        """CREATE TABLE {s}.leases (
            run_id      text PRIMARY KEY,
            owner       text NOT NULL,
            until       timestamptz NOT NULL,
            claimed_at  timestamptz NOT NULL DEFAULT now())""",
        "CREATE INDEX runs_running ON {s}.runs (updated_ts, run_id) WHERE status = 'running'",
    )),
    (4, "checkpoint rows fenced by their ledger position", (
        # The ledger seq the row's checkpoint reflects: a checkpoint write is conditional on it
        # (a row never moves backwards, whoever writes it). Adding a column with a constant
        # default rewrites nothing; existing rows take their position from the checkpoint.
        "ALTER TABLE {s}.runs ADD COLUMN ledger_seq bigint NOT NULL DEFAULT 0",
        """UPDATE {s}.runs SET ledger_seq = (checkpoint -> 'ledger' ->> 'seq')::bigint
            WHERE jsonb_typeof(checkpoint -> 'ledger' -> 'seq') = 'number'""",
    )),
    (5, "format-3 ledger records: effect positions", (
        # A format-3 outcome names its effect by position and takes its idempotency key from its
        # intent: find_completed goes from the intent's key to the completed record of that effect.
        "ALTER TABLE {s}.ledger ADD COLUMN effect_id bigint",
        """CREATE INDEX ledger_effect_completed ON {s}.ledger (run_id, effect_id, seq)
            WHERE status = 'completed' AND effect_id IS NOT NULL""",
    )),
    EVENTS_MIGRATION,  # the events table (storage/postgres/events.py)
    (7, "block marks of code-first runs", (
        # A code-first run whose code diverged from its history (core/blocks.py): a hint for
        # `runs list` and workers, never evidence; the mark names the ledger head it was made at.
        """CREATE TABLE {s}.blocks (
            run_id text PRIMARY KEY,
            mark   bytea NOT NULL)""",
    )),
    (8, "runs whose ledger may be past their checkpoint", (
        # Set by the statement that appends to a run's ledger past its checkpoint, cleared by the
        # checkpoint at the ledger's head (core/ahead.py): a writer killed in between leaves the run
        # marked, so workers find it with an index scan. Runs already behind are marked here.
        "ALTER TABLE {s}.runs ADD COLUMN ledger_ahead boolean NOT NULL DEFAULT false",
        "CREATE INDEX runs_ahead ON {s}.runs (updated_ts, run_id) WHERE ledger_ahead",
        """UPDATE {s}.runs r SET ledger_ahead = true
            WHERE EXISTS (SELECT 1 FROM {s}.ledger l WHERE l.run_id = r.run_id AND l.seq > r.ledger_seq)""",
    )),
    SCHEDULES_MIGRATION,  # schedule_log, schedule_ticks (storage/postgres/schedules.py)
    (10, "tombstones of pruned runs", (
        # The store's tombstone log (storage/tombstones.py): one sealed line per pruned run, chained
        # by hash; run_id is unique, so a pruned id is never tombstoned (nor created) twice.
        """CREATE TABLE {s}.tombstones (
            seq    bigint PRIMARY KEY CHECK (seq >= 1),
            run_id text NOT NULL UNIQUE,
            line   bytea NOT NULL,
            hash   text NOT NULL)""",
        # The log's head, written in the transaction of each tombstone: a log cut short misses it.
        """CREATE TABLE {s}.tombstone_head (
            id   smallint PRIMARY KEY CHECK (id = 1),
            seq  bigint NOT NULL,
            hash text NOT NULL)""",
    )),
    (11, "one copy of each record: the exact bytes", (
        # Every document was kept twice: its exact bytes (what is read back and verified) and a
        # jsonb copy nothing reads, which doubled the WAL of each step. The copies go, and with
        # them the ledger's prev_hash (the line holds it; the chain check reads it there).
        # Dropping a column rewrites nothing: old rows keep their bytes until rewritten.
        # (IF EXISTS: a schema whose row of this migration was deleted by hand meets the column
        # added below, and gets the sentence about edited schema_migrations rows.)
        "ALTER TABLE {s}.ledger DROP COLUMN IF EXISTS record, DROP COLUMN IF EXISTS prev_hash",
        # A row may hold the consecutive records of one append (their lines joined by newlines):
        # seq is its first record's, last_seq its last one's (NULL: one record, as every older row).
        # One row per step instead of one per record halves the rows, primary-key entries and WAL.
        "ALTER TABLE {s}.ledger ADD COLUMN last_seq bigint",
        "ALTER TABLE {s}.runs DROP COLUMN IF EXISTS checkpoint",
        "ALTER TABLE {s}.snapshots DROP COLUMN IF EXISTS snapshot",
        "ALTER TABLE {s}.artifacts DROP COLUMN IF EXISTS tags",
        # find_completed went from an intent's key to its effect's outcome through an index entry
        # per completed effect: now an index of the intents that name a key (explicit keys only,
        # so normally empty), then the ledger's primary key from the intent on.
        "DROP INDEX IF EXISTS {s}.ledger_effect_completed",
        """CREATE INDEX ledger_intent_keys ON {s}.ledger (run_id, idempotency_key)
            WHERE status = 'started' AND idempotency_key IS NOT NULL AND effect_id IS NOT NULL""",
    )),
]


def check_schema_name(name: str) -> str:
    """``name`` if it is a plain lower-case SQL identifier, else :class:`InvalidInputError`."""
    if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name):
        raise InvalidInputError(f"PostgreSQL schema name must match [a-z_][a-z0-9_]{{0,62}}, not {name!r}")
    return name


def quoted(name: str) -> str:
    """The schema name as a quoted identifier (already restricted by :func:`check_schema_name`)."""
    return '"' + check_schema_name(name) + '"'


def _tables_of() -> list[tuple[str, int]]:
    """The tables a schema's migrations create, with the version that creates each."""
    found = []
    for version, _, statements in MIGRATIONS:
        for statement in statements:
            match = re.match(r"\s*CREATE TABLE \{s\}\.(\w+)", statement)
            if match:
                found.append((match.group(1), version))
    return found


def _foreign(schema: str, table: str, where: str, why: str) -> StorageError:
    return StorageError(
        f'the PostgreSQL schema "{schema}" in {where} holds a table "{table}" not created by abstractruntime '
        f"({why}); abstractruntime keeps its tables in a schema of their own and does not touch another "
        "program's: move that table, or open the store on another schema (PostgresStore(url, schema=...))",
        schema=schema, table=table)


def _edited(schema: str, where: str, version: int, found: str) -> StorageError:
    """The error for a schema whose ``schema_migrations`` rows say less than its tables hold."""
    recorded = "no migration" if version == 0 else f"version {version}"
    return StorageError(
        f'the PostgreSQL schema "{schema}" in {where} already holds {found}, but its schema_migrations table '
        f"records {recorded}: rows of schema_migrations were deleted or edited by hand (or by another program); "
        "put them back, or restore a backup, before opening it: abstractruntime does not guess a schema's version "
        "and does not create its tables twice",
        schema=schema, recorded=version)


# SQLSTATEs of a migration statement meeting what it was about to create: duplicate_table,
# duplicate_column, duplicate_object (an index or constraint of that name).
_DUPLICATE = {"42P07": "a table", "42701": "a column", "42710": "an object"}


def _refuse_foreign_tables(conn: Any, schema: str, where: str, *, after: int, why: str | None = None) -> None:
    """Refuse a schema that already holds a table the migrations after version ``after`` create.

    With ``why`` the table is another program's; without, abstractruntime's own tables with
    ``schema_migrations`` rows missing.
    """
    present = {row[0] for row in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]).fetchall()}
    for table, version in _tables_of():
        if version > after and table in present:
            if why is None:
                raise _edited(schema, where, after, f'a table "{table}" (made by schema version {version})')
            raise _foreign(schema, table, where, why)


def installed_version(conn: Any, schema: str, *, where: str = "the database") -> int:
    """The highest applied migration (0 when the schema or its migrations table is absent).

    A ``schema_migrations`` table of another shape, or — with none — a table of the names
    abstractruntime creates, was made by another program: a :class:`StorageError` saying so,
    before anything is read or written.
    """
    columns = dict(conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = 'schema_migrations'", [schema]).fetchall())
    if not columns:
        _refuse_foreign_tables(conn, schema, where, after=0, why="there is no schema_migrations table beside it")
        return 0
    if columns.get("version") not in ("integer", "bigint", "smallint") or "description" not in columns:
        raise _foreign(schema, "schema_migrations", where, "its columns are not version, description, applied_at")
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {quoted(schema)}.schema_migrations").fetchone()
    version = int(row[0])
    if version == 0:
        # An empty schema_migrations beside abstractruntime's tables: its rows were deleted.
        _refuse_foreign_tables(conn, schema, where, after=0)
    return version


def refuse_newer(version: int, where: str) -> None:
    """Raise :class:`UnsupportedFormatError` when ``version`` is newer than this code's."""
    if version > SCHEMA_VERSION:
        raise UnsupportedFormatError(
            f"the abstractruntime schema in {where} is version {version}, newer than this abstractruntime "
            f"understands ({SCHEMA_VERSION}); upgrade abstractruntime before opening it",
            found=version, supported=SCHEMA_VERSION)


def migrate(conn: Any, schema: str, *, lock_key: int, where: str) -> int:
    """Create or upgrade the schema to :data:`SCHEMA_VERSION`; returns the version found before.

    ``conn`` is in autocommit mode; all migrations run in one transaction.
    """
    s = quoted(schema)
    with conn.transaction():
        # Serialises concurrent first opens; released at commit.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key])
        before = installed_version(conn, schema, where=where)
        refuse_newer(before, where)
        if before == SCHEMA_VERSION:
            return before
        if before:
            _refuse_foreign_tables(conn, schema, where, after=before)
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        conn.execute(f"""CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
            version     integer PRIMARY KEY,
            description text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now())""")
        for version, description, statements in MIGRATIONS:
            if version <= before:
                continue
            for statement in statements:
                try:
                    conn.execute(statement.format(s=s))
                except Exception as exc:
                    # What a migration adds is already there (a column, an index): the recorded
                    # version is behind the schema. The transaction rolls back whole.
                    kind = _DUPLICATE.get(str(getattr(exc, "sqlstate", "") or ""))
                    if kind is None:
                        raise
                    raise _edited(schema, where, before, f"{kind} that schema version {version} adds") from None
            conn.execute(f"INSERT INTO {s}.schema_migrations (version, description) VALUES (%s, %s)",
                         [version, description])
    return before


__all__ = ["DEFAULT_SCHEMA", "MIGRATIONS", "SCHEMA_VERSION", "check_schema_name", "installed_version", "migrate",
           "quoted", "refuse_newer"]
