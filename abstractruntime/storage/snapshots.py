"""The stores that keep named snapshots of run state.

Two stores implement the :class:`SnapshotStore` protocol and pass the same tests
(:mod:`abstractruntime.testing`):

- :class:`InMemorySnapshotStore` — a dict, for tests and short-lived processes.
- :class:`JsonSnapshotStore` — one ``<snapshot_id>.json`` file per snapshot, written
  atomically (see docs/snapshots.md for the file format).

Both store and return *copies*: mutating a snapshot after ``save`` or after ``load``
never changes what the store holds. The :class:`Snapshot` model itself is
:mod:`abstractruntime.core.snapshot` (re-exported here).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ..core.errors import (AbstractRuntimeError, CorruptRecordError, InvalidInputError, StorageError,
                           UnsupportedFormatError)
from ..core.snapshot import (MAX_NAME_CHARS, MAX_TAG_CHARS, SNAPSHOT_FORMAT, ClockFn, Snapshot, SnapshotStore,
                             _check_name, _check_optional_str, _check_tags, _now_iso, require_snapshot)
from ..core.snapshot import _json_copy as _json_copy  # the PostgreSQL snapshot store copies through it too
from .fsio import (atomic_write_bytes, check_durability, child_path, dumps_compact, ensure_dir, fsync_dir,
                   load_json_file, validate_id)
from .snapshot_search import select_snapshots


class _EditableStore:
    """``get`` and ``update`` for any store built on ``load``/``save``."""

    _clock: Optional[ClockFn]
    load: Callable[[str], Optional[Snapshot]]
    save: Callable[[Snapshot], None]

    def get(self, snapshot_id: str) -> Snapshot:
        """Like ``load``, but an unknown id raises :class:`SnapshotNotFoundError`."""
        return require_snapshot(self, snapshot_id)  # type: ignore[arg-type]

    def update(self, snapshot_id: str, *, name: Optional[str] = None, description: Optional[str] = None,
               tags: Optional[Iterable[str]] = None) -> Snapshot:
        """Rename, re-describe or re-tag a snapshot; bumps ``updated_at``; returns the new version.

        ``None`` leaves a field as it is; ``description=""`` clears the description and
        ``tags=[]`` removes every tag. The run state is never edited. Concurrent updates
        of one snapshot from several processes: the last writer wins (each write is atomic).
        """
        snapshot = self.get(snapshot_id)
        if name is not None:
            snapshot.name = _check_name(name)
        if description is not None:
            _check_optional_str(description, "description")
            snapshot.description = description or None
        if tags is not None:
            snapshot.tags = _check_tags(tags)
        snapshot.updated_at = _now_iso(self._clock)
        self.save(snapshot)
        return snapshot


class InMemorySnapshotStore(_EditableStore):
    """Snapshots in a dict (thread-safe); gone when the process exits."""

    def __init__(self, *, clock: Optional[ClockFn] = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._docs: dict[str, dict[str, Any]] = {}

    def save(self, snapshot: Snapshot) -> None:
        """Store a copy of ``snapshot`` (validated; replaces one with the same id)."""
        snapshot.validate()
        doc = _json_copy(snapshot.to_dict(), "Snapshot")
        with self._lock:
            self._docs[snapshot.snapshot_id] = doc

    def load(self, snapshot_id: str) -> Optional[Snapshot]:
        """A copy of the snapshot, or ``None``; an unsafe id raises ``InvalidIdError``."""
        validate_id(snapshot_id, "snapshot_id")
        with self._lock:
            doc = self._docs.get(snapshot_id)
        return Snapshot.from_dict(doc) if doc is not None else None

    def delete(self, snapshot_id: str) -> bool:
        """Remove it; ``False`` if it did not exist."""
        validate_id(snapshot_id, "snapshot_id")
        with self._lock:
            return self._docs.pop(snapshot_id, None) is not None

    def list(self, *, run_id: Optional[str] = None, tag: Optional[str] = None,
             query: Optional[str] = None, limit: Optional[int] = 100) -> list[Snapshot]:
        """Matching snapshots, newest first (see :func:`select_snapshots`)."""
        with self._lock:
            docs = list(self._docs.values())
        return select_snapshots((Snapshot.from_dict(d) for d in docs), run_id=run_id, tag=tag,
                                query=query, limit=limit)


class JsonSnapshotStore(_EditableStore):
    """One ``<base_dir>/<snapshot_id>.json`` file per snapshot.

    ``base_dir`` is the snapshots directory itself (``<store>/snapshots`` in the default
    layout); it is created with mode 0700 by the first :meth:`save`, never by reading, so
    listing the snapshots of a read-only store works and writes nothing. Files are written
    atomically with mode 0600; ``durability="none"`` skips fsync (tests, benchmarks).

    ``load`` of a damaged file raises :class:`CorruptRecordError` naming it, and of a file
    from a newer release :class:`UnsupportedFormatError`. ``list`` skips such files
    instead of failing and reports them in :attr:`last_skipped` / :attr:`last_skipped_errors`.
    """

    def __init__(self, base_dir: str | os.PathLike[str], durability: str = "fsync", *,
                 clock: Optional[ClockFn] = None) -> None:
        self._durable = check_durability(durability) == "fsync"
        self._base = Path(base_dir)
        self._clock = clock
        self.last_skipped: tuple[str, ...] = ()
        """Paths of the files the last :meth:`list` call could not read."""
        self.last_skipped_errors: tuple[AbstractRuntimeError, ...] = ()
        """The errors behind :attr:`last_skipped`, in the same order."""

    @property
    def base_dir(self) -> Path:
        """The snapshots directory."""
        return self._base

    def path_for(self, snapshot_id: str) -> Path:
        """The file that holds (or would hold) this snapshot; validates the id."""
        validate_id(snapshot_id, "snapshot_id")
        return child_path(self._base, f"{snapshot_id}.json")

    def save(self, snapshot: Snapshot) -> None:
        """Validate and write the snapshot atomically (readers see the old file or the new one)."""
        snapshot.validate()
        doc = {"format": SNAPSHOT_FORMAT, **_json_copy(snapshot.to_dict(), "Snapshot")}
        ensure_dir(self._base, durable=self._durable)
        atomic_write_bytes(self.path_for(snapshot.snapshot_id), dumps_compact(doc) + b"\n",
                           durable=self._durable)

    def _read(self, path: Path, snapshot_id: str) -> Snapshot:
        doc = load_json_file(path, expected_format=SNAPSHOT_FORMAT, kind="snapshot file")
        try:
            snapshot = Snapshot.from_dict(doc)
        except InvalidInputError as exc:
            raise CorruptRecordError(f"invalid snapshot: {exc}", path=str(path)) from exc
        if snapshot.snapshot_id != snapshot_id:
            # A copied or renamed file: loading it under this id would return another snapshot.
            raise CorruptRecordError(f"file holds snapshot {snapshot.snapshot_id!r}, not {snapshot_id!r}",
                                     path=str(path))
        return snapshot

    def load(self, snapshot_id: str) -> Optional[Snapshot]:
        """The snapshot, or ``None`` if there is no file for it."""
        path = self.path_for(snapshot_id)
        try:
            return self._read(path, snapshot_id)
        except FileNotFoundError:
            return None

    def delete(self, snapshot_id: str) -> bool:
        """Remove the file; ``False`` if it did not exist."""
        path = self.path_for(snapshot_id)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"Cannot delete {path}: {exc.strerror or exc}") from exc
        if self._durable:
            fsync_dir(self._base)
        return True

    def list(self, *, run_id: Optional[str] = None, tag: Optional[str] = None,
             query: Optional[str] = None, limit: Optional[int] = 100) -> list[Snapshot]:
        """Matching snapshots, newest first; reads every file (cost grows with the count).

        Unreadable files are skipped and listed in :attr:`last_skipped`; temp files
        (dot-files) and other names are ignored.
        """
        found: list[Snapshot] = []
        skipped: list[str] = []
        errors: list[AbstractRuntimeError] = []
        try:
            names = sorted(os.listdir(self._base))
        except FileNotFoundError:
            names = []
        except OSError as exc:
            raise StorageError(f"Cannot list {self._base}: {exc.strerror or exc}") from exc
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            path = self._base / name
            try:
                snapshot_id = validate_id(name[: -len(".json")], "snapshot_id")
                found.append(self._read(path, snapshot_id))
            except FileNotFoundError:
                continue  # deleted while we were listing
            except (CorruptRecordError, UnsupportedFormatError, StorageError, InvalidInputError) as exc:
                skipped.append(str(path))
                errors.append(exc)
        self.last_skipped = tuple(skipped)
        self.last_skipped_errors = tuple(errors)
        return select_snapshots(found, run_id=run_id, tag=tag, query=query, limit=limit)


__all__ = ["SNAPSHOT_FORMAT", "MAX_NAME_CHARS", "MAX_TAG_CHARS", "Snapshot", "SnapshotStore", "InMemorySnapshotStore",
           "JsonSnapshotStore", "require_snapshot", "select_snapshots"]
