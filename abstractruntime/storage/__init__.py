"""Storage backends: run stores, ledger stores, snapshots, artifacts (standard library only)."""

from .base import Checkpoint, LedgerHead, LedgerStore, QueryableRunStore, RunStore
from .in_memory import InMemoryLedgerStore, InMemoryRunStore
from .json_files import JsonFileRunStore, JsonlLedgerStore
from .ledger_chain import HashChainedLedgerStore, verify_ledger_chain

__all__ = [
    "Checkpoint",
    "LedgerHead",
    "RunStore",
    "LedgerStore",
    "QueryableRunStore",
    "InMemoryRunStore",
    "InMemoryLedgerStore",
    "JsonFileRunStore",
    "JsonlLedgerStore",
    "HashChainedLedgerStore",
    "verify_ledger_chain",
    "Snapshot",
    "SnapshotStore",
    "InMemorySnapshotStore",
    "JsonSnapshotStore",
]


def __getattr__(name: str) -> object:
    # Snapshots load on first use (they are not needed to run workflows).
    if name in ("Snapshot", "SnapshotStore", "InMemorySnapshotStore", "JsonSnapshotStore"):
        from . import snapshots

        return getattr(snapshots, name)
    raise AttributeError(f"module 'abstractruntime.storage' has no attribute {name!r}")
