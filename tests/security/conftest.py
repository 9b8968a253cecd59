"""Fixtures of the security tests: a fresh PostgreSQL database for the installed command."""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """The URL of a database of its own in the session's throwaway cluster (the command's stores
    use its default schema)."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"db_{uuid.uuid4().hex[:12]}"
    admin: Any
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(postgres_url)
    yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
