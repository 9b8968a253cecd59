"""Rebuilding a file store's query index from its run files: the library side of ``runs reindex``.

The index (:mod:`.run_index`) is a cache of the ``run.json`` files and repairs itself row by
row as it is read; :func:`rebuild_index` recreates it whole, for an operator who wants a clean
start (after restoring a backup, say) or to learn which run directories cannot be read.
"""

from __future__ import annotations

from dataclasses import field
from ..core.fastclass import dataclass
from pathlib import Path
from typing import Any

from .json_files import JsonFileRunStore


@dataclass
class ReindexReport:
    """What :func:`rebuild_index` did: runs indexed, run directories it could not read."""

    path: str
    indexed: int
    unreadable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """``{"path", "indexed", "unreadable"}``."""
        return {"path": self.path, "indexed": self.indexed, "unreadable": list(self.unreadable)}


def rebuild_index(store: Any) -> ReindexReport:
    """Recreate a file store's query index from its run files (CLI: ``abstractruntime runs reindex``).

    ``store`` is a ``FileStore``, a ``JsonFileRunStore`` or the store's root path. Returns how
    many runs were indexed and which run directories could not be read (they are left out;
    ``verify`` says why). Raises :class:`StorageError` when the store cannot be written.
    """

    runs = getattr(store, "runs", store)
    own = not isinstance(runs, JsonFileRunStore)
    if own:
        runs = JsonFileRunStore(Path(store), durability="none")
    try:
        index = runs._index
        count = index.rebuild()
        return ReindexReport(path=str(index._path), indexed=count, unreadable=list(index.last_unreadable))
    finally:
        if own:
            runs.close()


__all__ = ["ReindexReport", "rebuild_index"]
