"""Fixtures of the PostgreSQL tests: stores in a fresh schema of the session's throwaway
database (``postgres_url``, started by tests/conftest.py with tests/postgres/cluster.py)."""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterator

import pytest


@pytest.fixture
def pg_schema() -> str:
    """A schema name no other test uses (created on first open)."""
    return f"t_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def open_pg(postgres_url: str, pg_schema: str) -> Iterator[Callable[..., Any]]:
    """``open_pg(**kwargs)`` → a PostgresStore on this test's schema; all closed at teardown.

    Each call opens its own connections, as another process or machine would.
    """
    from abstractruntime.storage.postgres.store import PostgresStore

    opened: list[Any] = []

    def open_(**kwargs: Any) -> Any:
        kwargs.setdefault("schema", pg_schema)
        store = PostgresStore(postgres_url, **kwargs)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def admin(postgres_url: str) -> Iterator[Any]:
    """A superuser connection of its own (autocommit), for inspecting and interfering."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def database_url(admin: Any, postgres_url: str) -> str:
    """The URL of a fresh database of its own (the CLI's stores use the default schema)."""
    from urllib.parse import urlsplit, urlunsplit

    name = f"db_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(postgres_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
