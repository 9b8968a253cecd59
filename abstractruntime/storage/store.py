"""``FileStore``: one store directory with everything a run needs, wired together.

    store = FileStore(".abstractruntime")
    runtime = store.runtime()              # Runtime over the store's run and ledger files
    store.snapshots, store.artifacts, store.bookmarks, store.events

The CLI uses exactly this; embedders may too, or assemble the stores themselves.
:func:`locate_store` / :func:`find_store` find the store the way git finds ``.git``: an
explicit path, else ``$ABSTRACTRUNTIME_STORE``, else the nearest ``.abstractruntime``
directory in the current directory or a parent.
"""

from __future__ import annotations

import os
from functools import cached_property

from ..core.lazy import LazyNames

# typing.TYPE_CHECKING without importing typing (type checkers read any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Optional

    from ..core.errors import StoreNotFoundError as StoreNotFoundError
    from .fsio import Durability, check_durability, ensure_dir
    from .json_files import JsonFileRunStore, JsonlLedgerStore
    # Defined in location.py, importable from here as before.
    from .location import DEFAULT_STORE_DIR as DEFAULT_STORE_DIR, STORE_ENV as STORE_ENV, \
        StoreLocation as StoreLocation, default_store_path as default_store_path, find_store as find_store, \
        locate_store as locate_store
    from .postgres.store import PostgresStore

# What this module's code uses, imported by the first ``FileStore()`` or ``open_store()`` (or the
# first lookup of one of these names here), so that ``from abstractruntime import FileStore``
# loads none of it; the block above says the same to type checkers (tests/packaging/
# test_lazy_imports.py checks that they agree).
_USES = LazyNames(globals(), __package__, {
    "pathlib": ("Path",),
    "typing": ("Any", "Optional"),  # annotations only: for typing.get_type_hints (the modules below load typing)
    "..core.errors": ("StoreNotFoundError",),
    ".fsio": ("Durability", "check_durability", "ensure_dir"),
    ".json_files": ("JsonFileRunStore", "JsonlLedgerStore"),
    ".location": ("DEFAULT_STORE_DIR", "STORE_ENV", "StoreLocation", "default_store_path", "find_store",
                  "locate_store"),
})


def __getattr__(name: str) -> Any:
    """The names above, for code that imports them from here (``locate_store``, ``StoreLocation``)."""
    return _USES.attribute(name)


__all__ = ["DEFAULT_STORE_DIR", "STORE_ENV", "FileStore", "StoreLocation", "default_store_path", "find_store",
           "locate_store", "open_store"]


class FileStore:
    """The file stores of one store root (runs, ledgers, snapshots, artifacts, bookmarks)."""

    def __init__(self, root: str | os.PathLike[str], *, durability: Durability = "fsync",
                 segment_bytes: Optional[int] = None, segment_records: Optional[int] = None) -> None:
        _USES.load()  # the first store imports what its methods use
        self.durability = check_durability(durability)
        self.root = ensure_dir(Path(root), durable=durability == "fsync")
        self.runs = JsonFileRunStore(self.root, durability=durability)
        # A run's ledger is sealed into segments/ every segment_bytes or segment_records (file-format.md);
        # None: the ledger store's default, 64 MiB or 100,000 records (storage/segments.py).
        sizes = {"segment_bytes": segment_bytes, "segment_records": segment_records}
        self.ledger = JsonlLedgerStore(self.root, durability=durability,
                                       **{name: size for name, size in sizes.items() if size is not None})
        # Keyword arguments every runtime() of this store gets unless given otherwise: the CLI
        # puts the operator's signing key here (--signing-key), so every command that writes signs.
        self.runtime_defaults: dict[str, Any] = {}

    @cached_property
    def snapshots(self) -> Any:
        """:class:`~abstractruntime.storage.snapshots.JsonSnapshotStore` under ``snapshots/``."""
        from .snapshots import JsonSnapshotStore

        return JsonSnapshotStore(self.root / "snapshots", durability=self.durability)

    @cached_property
    def artifacts(self) -> Any:
        """:class:`~abstractruntime.storage.artifacts.FileArtifactStore` under ``artifacts/``."""
        from .artifact_files import FileArtifactStore  # its module alone: not the in-memory store beside it

        return FileArtifactStore(self.root, durability=self.durability)

    @cached_property
    def bookmarks(self) -> Any:
        """:class:`~abstractruntime.storage.bookmarks.BookmarkStore` (``runs/<id>/bookmarks.json``)."""
        from .bookmarks import BookmarkStore

        return BookmarkStore(self.root, durability=self.durability)

    @cached_property
    def events(self) -> Any:
        """:class:`~abstractruntime.storage.event_files.FileEventLog` under ``events/``: the event
        ids ``emit --id`` delivered, one lookup each."""
        from .event_files import FileEventLog

        return FileEventLog(self.root / "events", durability=self.durability)

    @cached_property
    def schedules(self) -> Any:
        """:class:`~abstractruntime.storage.schedule_files.FileScheduleStore` under ``schedules/``
        (read through :class:`~abstractruntime.scheduler.schedules.Schedules`)."""
        from .schedule_files import FileScheduleStore

        return FileScheduleStore(self.root / "schedules", durability=self.durability)

    def runtime(self, **kwargs: Any) -> Any:
        """A :class:`~abstractruntime.core.runtime.Runtime` over this store (kwargs pass through,
        over :attr:`runtime_defaults`)."""
        from ..core.runtime import Runtime

        kwargs.setdefault("artifact_store", self.artifacts)
        for name, value in self.runtime_defaults.items():
            kwargs.setdefault(name, value)
        kwargs.setdefault("snapshot_store", self.snapshots)
        return Runtime(run_store=self.runs, ledger_store=self.ledger, **kwargs)

    def close(self) -> None:
        """Release the query index connection and the ledger descriptors kept between appends."""
        self.runs.close()
        self.ledger.close()


def open_store(root: Optional[str | os.PathLike[str]] = None, *, durability: Durability = "fsync",
               create: bool = True) -> "FileStore | PostgresStore":
    """Open the store at ``root`` or the one :func:`default_store_path` finds.

    With ``create=False`` a missing store is a :class:`StoreNotFoundError` (naming the
    paths searched) and nothing is written; with ``create=True`` it is created.

    A ``postgresql://`` URL or a libpq key/value string such as ``host=db dbname=runs``
    (given, or in ``$ABSTRACTRUNTIME_STORE``; :mod:`abstractruntime.storage.dsn`) opens a
    :class:`~abstractruntime.storage.postgres.store.PostgresStore` instead (the ``postgres``
    extra; docs/postgres.md): every commit is durable there, so ``durability`` does not apply.
    """
    from .dsn import is_connection_string

    _USES.load()
    target = root if root else os.environ.get(STORE_ENV)
    if isinstance(target, str) and is_connection_string(target):
        from .postgres.store import PostgresStore

        return PostgresStore(target.strip(), create=create)
    path = default_store_path(root) if create else find_store(root)
    return FileStore(path, durability=durability)
