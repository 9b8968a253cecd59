"""Ledger store conformance (abstractruntime.testing) over every backend (the ``backend`` fixture, tests/conftest.py)."""

from __future__ import annotations

from abstractruntime.testing import LedgerStoreConformance


class TestLedgerStores(LedgerStoreConformance):
    """Runs once per backend: memory, files, chained wrappers, upstream-style, PostgreSQL."""
