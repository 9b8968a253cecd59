"""Artifacts: large values kept out of run state and the ledger, referenced by id.

A node stores a document, a long LLM answer or a tool's output with
``meta = store.store_json(value, run_id=run.run_id)`` and keeps only the small reference
``artifact_ref(meta.artifact_id) == {"$artifact": meta.artifact_id}`` in ``run.vars``.

Ids are content addresses by default: :func:`compute_artifact_id` is the first 32 hex
digits of the SHA-256 of the bytes, so the same bytes always get the same id (stored
once). A caller may pass its own ``artifact_id`` instead (``[A-Za-z0-9_-]``, 1-128 chars).

:class:`FileArtifactStore` keeps ``<base>/artifacts/<id>.bin`` (the bytes) and
``<id>.meta`` (versioned JSON metadata). The ``.meta`` file is what makes an artifact
exist: it is written after the ``.bin`` and removed before it, so a crash can only leave
an invisible orphan ``.bin``, which the next store of that id overwrites. See
docs/artifacts.md.
"""

from __future__ import annotations

from .artifact_base import (META_FORMAT, Artifact, ArtifactMetadata, ArtifactStore, artifact_ref,
                            compute_artifact_id, get_artifact_id, is_artifact_ref, resolve_artifact,
                            validate_artifact_id)
from .artifact_base import _check_limit as _check_limit  # used by the PostgreSQL store
from .artifact_files import FileArtifactStore
from .artifact_memory import InMemoryArtifactStore

__all__ = [
    "Artifact",
    "ArtifactMetadata",
    "ArtifactStore",
    "FileArtifactStore",
    "InMemoryArtifactStore",
    "META_FORMAT",
    "artifact_ref",
    "compute_artifact_id",
    "get_artifact_id",
    "is_artifact_ref",
    "resolve_artifact",
    "validate_artifact_id",
]
