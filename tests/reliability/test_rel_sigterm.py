"""Battery: SIGTERM of two `worker --concurrency 3` processes with synchronous handlers, restarted
at once, on a folder store and on PostgreSQL (tests/reliability/sigterm.py says what is checked).

``RELIABILITY_SIGTERMS`` sets the number of signals per store (CI: 12); ``python -m
tests.reliability.run --only sigterm --sigterms 100`` runs the long form with the same code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .sigterm import sigterm_battery

SIGTERMS = int(os.environ.get("RELIABILITY_SIGTERMS", "12"))
SEED = int(os.environ.get("RELIABILITY_SEED", "0"))


def _check(stats: object) -> None:
    found = stats.to_dict()  # type: ignore[attr-defined]
    print(f"sigterm battery: {found}")
    assert found["failures"] == []
    assert found["signals"] >= SIGTERMS
    assert found["corrupt_ledgers"] == 0
    assert found["overlaps"] == 0
    assert found["executed_again_beyond_window"] == 0
    assert found["completed"] == found["runs"]
    assert found["exits"].get(0, 0) > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigterm_of_concurrent_workers_on_a_folder_store(tmp_path: Path) -> None:
    _check(sigterm_battery(tmp_path, signals=SIGTERMS, seed=SEED))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigterm_of_concurrent_workers_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    _check(sigterm_battery(tmp_path, store_url=fresh_database(postgres_url), signals=SIGTERMS, seed=SEED))


def fresh_database(url: str) -> str:
    """The URL of a new database in the cluster of ``url`` (the CLI's stores use the default schema)."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"db_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
