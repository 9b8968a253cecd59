"""Artifact store conformance (abstractruntime.testing) over the in-memory and file stores."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.storage.artifacts import ArtifactStore, FileArtifactStore, InMemoryArtifactStore
from abstractruntime.testing import ArtifactStoreConformance


class TestArtifactStores(ArtifactStoreConformance):
    @pytest.fixture(params=["memory", "file"])
    def store(self, request: pytest.FixtureRequest, tmp_path: Path, clock: FixedClock) -> Iterator[ArtifactStore]:
        """Once per store we ship."""
        if request.param == "memory":
            yield InMemoryArtifactStore(clock=clock)
        else:
            yield FileArtifactStore(tmp_path / "store", durability="none", clock=clock)
