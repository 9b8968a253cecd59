"""In-flight slots of a folder store: one lock file per slot, held with ``flock``.

``<store>/slots/<key digest>/<n>.lock`` for ``n`` in ``0 .. limit-1``: taking a slot is a
non-blocking exclusive ``flock`` on the first free file; giving it back closes the
descriptor. Every process that shares the store (workers, ``run``, ``tick`` ...) sees the same
files, so a limit of 2 means 2 in flight among all of them; a process that dies (even with
``kill -9``) releases its slots with its descriptors. The files stay (empty) and are reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any, Optional

from ..core.errors import StorageError
from .fsio import FILE_MODE, ensure_dir

SLOTS_DIR = "slots"


def key_dir_name(key: str) -> str:
    """The directory of a key's slots: a digest (keys may hold any character), with a readable prefix."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:40]
    return f"{safe}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:16]}"


class FileSlots:
    """The slots of the folder store at ``root`` (a :class:`~abstractruntime.core.observe.SlotBackend`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / SLOTS_DIR

    def try_acquire(self, key: str, limit: int) -> Optional[int]:
        """A held slot's descriptor, or ``None`` when all ``limit`` slots of ``key`` are taken."""
        directory = ensure_dir(self.root / key_dir_name(key))
        for n in range(limit):
            path = directory / f"{n}.lock"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
            except OSError as exc:
                raise StorageError(f"Cannot open slot {path}: {exc.strerror or exc}", path=str(path)) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except OSError as exc:
                os.close(fd)
                raise StorageError(f"Cannot lock slot {path}: {exc.strerror or exc}", path=str(path)) from exc
            return fd
        return None

    def release(self, handle: int) -> None:
        """Give the slot back (closing the descriptor releases its ``flock``)."""
        os.close(handle)


def slots_for(store: Any) -> Optional[Any]:
    """The in-flight slot backend of a ``FileStore`` or ``PostgresStore`` (``None`` for others)."""
    db = getattr(store, "db", None)
    if db is not None and hasattr(db, "schema"):
        from .postgres.slots import PostgresSlots

        return PostgresSlots(db)
    root = getattr(store, "root", None)
    if isinstance(root, Path):
        return FileSlots(root)
    return None


__all__ = ["FileSlots", "SLOTS_DIR", "key_dir_name", "slots_for"]
