"""Storage Protocols, re-exported from the kernel's ports (:mod:`abstractruntime.core.ports`).

The kernel owns its interfaces; this module keeps the upstream 0.0.1 import path
``abstractruntime.storage.base`` working (``QueryableRunStore`` and friends).
"""

from __future__ import annotations

from ..core.ports import (
    CHECKPOINT_FORMAT,
    READABLE_CHECKPOINT_FORMATS,
    Checkpoint,
    LedgerHead,
    LedgerStore,
    QueryableRunStore,
    RunStore,
    StoredCheckpoint,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "READABLE_CHECKPOINT_FORMATS",
    "Checkpoint",
    "LedgerHead",
    "LedgerStore",
    "QueryableRunStore",
    "RunStore",
    "StoredCheckpoint",
]
