"""``FileStore``: one store directory with everything a run needs, wired together.

    store = FileStore(".abstractruntime")
    runtime = store.runtime()              # Runtime over the store's run and ledger files
    store.snapshots, store.artifacts, store.bookmarks

The CLI uses exactly this; embedders may too, or assemble the stores themselves.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

from .fsio import Durability, check_durability, ensure_dir
from .json_files import JsonFileRunStore, JsonlLedgerStore

DEFAULT_STORE_DIR = ".abstractruntime"
STORE_ENV = "ABSTRACTRUNTIME_STORE"


def default_store_path(explicit: Optional[str | os.PathLike[str]] = None) -> Path:
    """``explicit``, else ``$ABSTRACTRUNTIME_STORE``, else ``./.abstractruntime``."""
    return Path(explicit or os.environ.get(STORE_ENV) or DEFAULT_STORE_DIR)


class FileStore:
    """The file stores of one store root (runs, ledgers, snapshots, artifacts, bookmarks)."""

    def __init__(self, root: str | os.PathLike[str], *, durability: Durability = "fsync") -> None:
        self.durability = check_durability(durability)
        self.root = ensure_dir(Path(root), durable=durability == "fsync")
        self.runs = JsonFileRunStore(self.root, durability=durability)
        self.ledger = JsonlLedgerStore(self.root, durability=durability)

    @cached_property
    def snapshots(self) -> Any:
        """:class:`~abstractruntime.storage.snapshots.JsonSnapshotStore` under ``snapshots/``."""
        from .snapshots import JsonSnapshotStore

        return JsonSnapshotStore(self.root / "snapshots", durability=self.durability)

    @cached_property
    def artifacts(self) -> Any:
        """:class:`~abstractruntime.storage.artifacts.FileArtifactStore` under ``artifacts/``."""
        from .artifacts import FileArtifactStore

        return FileArtifactStore(self.root, durability=self.durability)

    @cached_property
    def bookmarks(self) -> Any:
        """:class:`~abstractruntime.storage.bookmarks.BookmarkStore` (``runs/<id>/bookmarks.json``)."""
        from .bookmarks import BookmarkStore

        return BookmarkStore(self.root, durability=self.durability)

    def runtime(self, **kwargs: Any) -> Any:
        """A :class:`~abstractruntime.core.runtime.Runtime` over this store (kwargs pass through)."""
        from ..core.runtime import Runtime

        kwargs.setdefault("artifact_store", self.artifacts)
        return Runtime(run_store=self.runs, ledger_store=self.ledger, **kwargs)

    def close(self) -> None:
        """Release the query index connection."""
        self.runs.close()


def open_store(root: Optional[str | os.PathLike[str]] = None, *, durability: Durability = "fsync") -> FileStore:
    """Open (creating if needed) the store at ``root`` or the default location."""
    return FileStore(default_store_path(root), durability=durability)
