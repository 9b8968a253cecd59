"""PostgreSQL stores (the ``postgres`` extra: psycopg 3), for many processes on many machines.

``open_store("postgresql://...")`` returns a :class:`PostgresStore`; its stores implement the
same ports as the folder stores (docs/postgres.md). psycopg is imported only when a store is
opened, never by importing this package.
"""

from __future__ import annotations

import importlib

from ..dsn import is_connection_string, redact as redact  # re-exported

is_postgres_url = is_connection_string  # a URL or a libpq key/value string

# name -> module of this package that defines it (loaded on first access).
_LAZY = {
    "PgDatabase": "db",
    "PostgresStore": "store",
    "PostgresRunStore": "runs",
    "PostgresLedgerStore": "ledger",
    "PostgresSnapshotStore": "marks",
    "PostgresBookmarkStore": "marks",
    "PostgresArtifactStore": "artifacts",
    "SCHEMA_VERSION": "schema",
    "copy_store": "copy",
    "export_run": "transfer",
    "import_run": "transfer",
    "verify_run": "verify",
    "verify_store": "verify",
}

__all__ = sorted([*_LAZY, "is_postgres_url", "redact"])


def __getattr__(name: str) -> object:
    # The store modules pull in much of the storage package; a caller that only checks a URL
    # should not pay for that.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
