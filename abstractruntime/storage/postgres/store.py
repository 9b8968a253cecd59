"""``PostgresStore``: the stores of one PostgreSQL database, with the surface of ``FileStore``.

    store = open_store("postgresql://app@db.internal/runs")   # or PostgresStore(url)
    runtime = store.runtime()
    store.runs, store.ledger, store.snapshots, store.bookmarks, store.artifacts, store.events,
    store.schedules

``url`` is a ``postgresql://`` URL or a libpq key/value string (``host=db dbname=runs``).
Credentials come only from it or libpq's ``PG*`` environment variables; every message shows
it with its password replaced by ``***``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from .artifacts import PostgresArtifactStore
from .db import PgDatabase
from .events import PostgresEventLog
from .ledger import PostgresLedgerStore
from .marks import PostgresBookmarkStore, PostgresSnapshotStore
from .runs import PostgresRunStore
from .schedules import PostgresScheduleStore
from .schema import DEFAULT_SCHEMA


class PostgresStore:
    """The stores of one database (``schema`` names the PostgreSQL schema)."""

    def __init__(self, url: str, *, schema: str = DEFAULT_SCHEMA, create: bool = True) -> None:
        self.db = PgDatabase(url, schema=schema, create=create)
        self.runs = PostgresRunStore(self.db)
        self.ledger = PostgresLedgerStore(self.db)
        # Keyword arguments every runtime() of this store gets unless given otherwise: the CLI
        # puts the operator's signing key here (--signing-key), so every command that writes signs.
        self.runtime_defaults: dict[str, Any] = {}

    @property
    def url(self) -> str:
        """The connection string with its password redacted (safe to print)."""
        return self.db.conninfo.redacted()

    def describe(self) -> str:
        """Where the store is, for messages: the redacted URL (and the schema when not the default)."""
        return self.db.describe()

    @cached_property
    def snapshots(self) -> PostgresSnapshotStore:
        """Snapshots in the ``snapshots`` table."""
        return PostgresSnapshotStore(self.db)

    @cached_property
    def bookmarks(self) -> PostgresBookmarkStore:
        """Bookmarks in the ``bookmarks`` table."""
        return PostgresBookmarkStore(self.db)

    @cached_property
    def artifacts(self) -> PostgresArtifactStore:
        """Artifacts in the ``artifacts`` table."""
        return PostgresArtifactStore(self.db)

    @cached_property
    def events(self) -> PostgresEventLog:
        """Delivered event ids in the ``events`` table."""
        return PostgresEventLog(self.db)

    @cached_property
    def schedules(self) -> PostgresScheduleStore:
        """Schedules in the ``schedule_log`` and ``schedule_ticks`` tables."""
        return PostgresScheduleStore(self.db)

    def runtime(self, **kwargs: Any) -> Any:
        """A :class:`~abstractruntime.core.runtime.Runtime` over this store (kwargs pass through,
        over :attr:`runtime_defaults`)."""
        from ...core.runtime import Runtime

        kwargs.setdefault("artifact_store", self.artifacts)
        for name, value in self.runtime_defaults.items():
            kwargs.setdefault(name, value)
        kwargs.setdefault("snapshot_store", self.snapshots)
        return Runtime(run_store=self.runs, ledger_store=self.ledger, **kwargs)

    def close(self) -> None:
        """Close every connection (locks still held are released by the server)."""
        self.db.close()

    def __enter__(self) -> "PostgresStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.db.describe()!r})"


__all__ = ["PostgresStore"]
