"""Storage backends: run stores, ledger stores, snapshots, artifacts (standard library only).

Names load on first use, so importing one backend (the CLI opening a file store) does not
import the others.
"""

from __future__ import annotations

import importlib

# typing.TYPE_CHECKING without importing typing (type checkers read any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_EXPORTS = {
    "Checkpoint": "base",
    "LedgerHead": "base",
    "RunStore": "base",
    "LedgerStore": "base",
    "QueryableRunStore": "base",
    "InMemoryRunStore": "in_memory",
    "InMemoryLedgerStore": "in_memory",
    "JsonFileRunStore": "json_files",
    "JsonlLedgerStore": "json_files",
    "HashChainedLedgerStore": "ledger_chain",
    "verify_ledger_chain": "ledger_chain",
    "Snapshot": "snapshots",
    "SnapshotStore": "snapshots",
    "InMemorySnapshotStore": "snapshots",
    "JsonSnapshotStore": "snapshots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'abstractruntime.storage' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
