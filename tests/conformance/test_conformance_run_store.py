"""Run store conformance (abstractruntime.testing) over every run store we ship (tests/conftest.py)."""

from __future__ import annotations

import pytest

from abstractruntime.testing import RunStoreConformance, StoreBackend


class TestRunStores(RunStoreConformance):
    @pytest.fixture
    def backend(self, run_backend: StoreBackend) -> StoreBackend:
        """Once per distinct run store (memory, files with and without fsync, upstream-style, PostgreSQL)."""
        return run_backend
