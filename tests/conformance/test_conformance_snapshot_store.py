"""Snapshot store conformance (abstractruntime.testing) over the in-memory and JSON-file stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.storage.snapshots import InMemorySnapshotStore, JsonSnapshotStore
from abstractruntime.testing import SnapshotStoreConformance
from abstractruntime.testing.snapshot_store import StoreFactory


class TestSnapshotStores(SnapshotStoreConformance):
    @pytest.fixture(params=["memory", "json"])
    def make_store(self, request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
        """Build a store of the parametrised kind; ``clock`` is passed through."""

        def factory(clock: Optional[FixedClock] = None) -> Any:
            if request.param == "memory":
                return InMemorySnapshotStore(clock=clock)
            return JsonSnapshotStore(tmp_path / "snapshots", clock=clock)

        return factory
