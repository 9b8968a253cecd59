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
from ..core.fastclass import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..core.errors import StoreNotFoundError
from .fsio import Durability, check_durability, ensure_dir
from .json_files import JsonFileRunStore, JsonlLedgerStore
from .segments import SEGMENT_BYTES, SEGMENT_RECORDS

if TYPE_CHECKING:
    from .postgres.store import PostgresStore

DEFAULT_STORE_DIR = ".abstractruntime"
STORE_ENV = "ABSTRACTRUNTIME_STORE"


@dataclass(frozen=True)
class StoreLocation:
    """Where the store is (or would be created) and how that was decided.

    ``source`` is ``"option"`` (an explicit path), ``"env"`` (``$ABSTRACTRUNTIME_STORE``),
    ``"found"`` (a ``.abstractruntime`` directory in the start directory or a parent) or
    ``"default"`` (none found: ``<start>/.abstractruntime``, not created yet).
    """

    path: Path
    source: str
    searched: tuple[Path, ...] = ()

    @property
    def exists(self) -> bool:
        """Whether the store directory is there."""
        return self.path.is_dir()

    def describe(self) -> str:
        """Where the store came from, for messages."""
        return {"option": "--store", "env": f"${STORE_ENV}"}.get(self.source, "")


def locate_store(explicit: Optional[str | os.PathLike[str]] = None, *,
                 start: Optional[str | os.PathLike[str]] = None) -> StoreLocation:
    """Decide which store a command means, the way git finds ``.git``.

    ``explicit``, else ``$ABSTRACTRUNTIME_STORE``, else the nearest ``.abstractruntime``
    directory in ``start`` (default: the current directory) or one of its parents, else
    ``<start>/.abstractruntime`` (source ``"default"``). Nothing is created.
    """
    if explicit:
        return StoreLocation(Path(explicit), "option", (Path(explicit),))
    env = os.environ.get(STORE_ENV)
    if env:
        return StoreLocation(Path(env), "env", (Path(env),))
    here = Path(start) if start is not None else Path.cwd()
    here = here.absolute()
    searched: list[Path] = []
    for directory in (here, *here.parents):
        candidate = directory / DEFAULT_STORE_DIR
        searched.append(candidate)
        if candidate.is_dir():
            return StoreLocation(candidate, "found", tuple(searched))
    return StoreLocation(here / DEFAULT_STORE_DIR, "default", tuple(searched))


def find_store(explicit: Optional[str | os.PathLike[str]] = None, *,
               start: Optional[str | os.PathLike[str]] = None) -> Path:
    """The path of an existing store (see :func:`locate_store`); ``StoreNotFoundError`` if none."""
    location = locate_store(explicit, start=start)
    if not location.exists:
        raise StoreNotFoundError(_missing_message(location), path=str(location.path),
                                 searched=[str(p) for p in location.searched])
    return location.path


def _missing_message(location: StoreLocation) -> str:
    if location.source in ("option", "env"):
        return f"no store at {location.path} (from {location.describe()})"
    first, last = location.searched[0], location.searched[-1]
    where = str(first) if first == last else f"{first} and every parent up to {last}"
    return f"no store found: looked for {where}; give --store DIR or set ${STORE_ENV}"


def default_store_path(explicit: Optional[str | os.PathLike[str]] = None) -> Path:
    """``explicit``, else ``$ABSTRACTRUNTIME_STORE``, else the nearest ``.abstractruntime``
    up from the current directory, else ``./.abstractruntime``."""
    location = locate_store(explicit)
    return Path(DEFAULT_STORE_DIR) if location.source == "default" else location.path


class FileStore:
    """The file stores of one store root (runs, ledgers, snapshots, artifacts, bookmarks)."""

    def __init__(self, root: str | os.PathLike[str], *, durability: Durability = "fsync",
                 segment_bytes: int = SEGMENT_BYTES, segment_records: int = SEGMENT_RECORDS) -> None:
        self.durability = check_durability(durability)
        self.root = ensure_dir(Path(root), durable=durability == "fsync")
        self.runs = JsonFileRunStore(self.root, durability=durability)
        # A run's ledger is sealed into segments/ every segment_bytes or segment_records (file-format.md).
        self.ledger = JsonlLedgerStore(self.root, durability=durability, segment_bytes=segment_bytes,
                                       segment_records=segment_records)
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
        from .artifacts import FileArtifactStore

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

    target = root if root else os.environ.get(STORE_ENV)
    if isinstance(target, str) and is_connection_string(target):
        from .postgres.store import PostgresStore

        return PostgresStore(target.strip(), create=create)
    path = default_store_path(root) if create else find_store(root)
    return FileStore(path, durability=durability)
