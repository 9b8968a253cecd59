"""PostgreSQL stores (the ``postgres`` extra: psycopg 3), for many processes on many machines.

``open_store("postgresql://...")`` returns a :class:`PostgresStore`; the run and ledger stores
implement the same ports as the file stores (docs/postgres.md). psycopg is imported only when
a store is opened, never by importing this package.
"""

from __future__ import annotations

from .url import is_postgres_url, redact

__all__ = ["PgDatabase", "PostgresLedgerStore", "PostgresRunStore", "PostgresStore", "SCHEMA_VERSION",
           "is_postgres_url", "redact"]


def __getattr__(name: str) -> object:
    # Lazy: the store classes pull in the kernel's storage modules, not psycopg, but keep the
    # package itself as light as possible for callers that only check a URL.
    modules = {"PgDatabase": "db", "PostgresLedgerStore": "ledger", "PostgresRunStore": "runs",
               "PostgresStore": "store", "SCHEMA_VERSION": "schema"}
    if name in modules:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{modules[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
