"""Artifacts in a dict: for tests and short-lived processes (thread-safe, gone at exit)."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Callable

from .artifact_base import (Artifact, ArtifactMetadata, ArtifactStore, _check_limit, _newest_first, _oldest_first,
                            validate_artifact_id)


class InMemoryArtifactStore(ArtifactStore):
    """Artifacts in a dict: for tests and short-lived processes. Thread-safe."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(clock=clock)
        self._items: dict[str, Artifact] = {}
        self._lock = threading.Lock()

    def _put(self, content: bytes, meta: ArtifactMetadata) -> None:
        with self._lock:
            self._items[meta.artifact_id] = Artifact(metadata=meta.copy(), content=content)

    def load(self, artifact_id: str) -> Artifact | None:
        """See :meth:`ArtifactStore.load`."""
        item = self._items.get(validate_artifact_id(artifact_id))
        return None if item is None else Artifact(metadata=item.metadata.copy(), content=item.content)

    def get_metadata(self, artifact_id: str) -> ArtifactMetadata | None:
        """See :meth:`ArtifactStore.get_metadata`."""
        item = self._items.get(validate_artifact_id(artifact_id))
        return None if item is None else item.metadata.copy()

    def exists(self, artifact_id: str) -> bool:
        """See :meth:`ArtifactStore.exists`."""
        return validate_artifact_id(artifact_id) in self._items

    def delete(self, artifact_id: str) -> bool:
        """See :meth:`ArtifactStore.delete`."""
        with self._lock:
            return self._items.pop(validate_artifact_id(artifact_id), None) is not None

    def list_by_run(self, run_id: str) -> list[ArtifactMetadata]:
        """See :meth:`ArtifactStore.list_by_run`."""
        with self._lock:
            metas = [a.metadata.copy() for a in self._items.values() if a.metadata.run_id == run_id]
        return _oldest_first(metas)

    def list_all(self, *, limit: int = 1000) -> list[ArtifactMetadata]:
        """See :meth:`ArtifactStore.list_all`."""
        _check_limit(limit)
        with self._lock:
            metas = [a.metadata.copy() for a in self._items.values()]
        return _newest_first(metas, limit)


__all__ = ["InMemoryArtifactStore"]
