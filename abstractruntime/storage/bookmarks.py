"""Bookmarks: named positions in a run's ledger that ``verify`` re-checks.

A bookmark pins one ledger record, its ``seq`` and ``record_hash``, under a name ("audited",
"sent-to-customer"). It copies no state. :func:`abstractruntime.storage.verify.verify_run`
proves that the ledger still holds exactly that record at that position, which catches a
rewritten or truncated ledger even when the rewrite is internally consistent.

File ``runs/<run_id>/bookmarks.json``, replaced atomically on every change::

    {"format": 1, "bookmarks": {"<name>": {"name", "seq", "record_hash", "note",
                                          "created_at", "checkpoint_seq"}}}

``checkpoint_seq`` is the checkpoint's ledger seq when the bookmark was added. A run's
checkpoint only ever moves forward, so a checkpoint found *behind* it later was rolled back.

Concurrency: adding or removing is a read-modify-write of one small file, serialised by a
``flock`` on ``runs/<run_id>/.bookmarks.lock`` (waiting up to :data:`LOCK_WAIT_SECONDS`). It is
deliberately not the run's own lock: that one is held for a whole tick, effect handlers
included, which may take minutes, and bookmarking a run while it executes is legitimate: a
bookmark only names records already in the ledger, and those never change. Readers take no
lock because the file is replaced atomically.
"""

from __future__ import annotations

import os
from ..core.fastclass import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional

from ..core.clock import to_iso, utc_now_iso
from ..core.errors import BookmarkNotFoundError, CorruptRecordError, InvalidInputError, RunNotFoundError
from .fsio import (
    Durability,
    RunLock,
    atomic_write_bytes,
    check_durability,
    dumps_compact,
    load_json_file,
    validate_id,
)
from .segments import list_parts, read_range
from .json_files import read_checkpoint
from .run_files import CHECKPOINT_FILE, LEDGER_FILE, RunFiles
from .ledger_parse import parse_ledger

BOOKMARKS_FILE = "bookmarks.json"
BOOKMARKS_FORMAT = 1
LOCK_FILE = ".bookmarks.lock"
LOCK_WAIT_SECONDS = 5.0
MAX_NOTE_CHARS = 2000



def bookmark_position(run_id: str, head: int, seq: Optional[int]) -> int:
    """The seq a new bookmark names: ``seq``, else the ledger's head ``head``.

    Raises :class:`InvalidInputError` for an empty ledger or a seq past its head.
    """
    if head == 0:
        raise InvalidInputError(f"Run {run_id} has an empty ledger: nothing to bookmark")
    wanted = head if seq is None else seq
    if wanted > head:
        raise InvalidInputError(f"Run {run_id}'s ledger ends at seq {head}; cannot bookmark seq {wanted}",
                                run_id=run_id, seq=wanted, head_seq=head)
    return wanted

@dataclass(frozen=True)
class Bookmark:
    """A named ledger position: the record at ``seq`` had hash ``record_hash``."""

    name: str
    seq: int
    record_hash: str
    note: Optional[str] = None
    created_at: str = ""
    checkpoint_seq: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (one entry of ``bookmarks.json``, and the CLI's ``--json``)."""
        return {
            "name": self.name,
            "seq": self.seq,
            "record_hash": self.record_hash,
            "note": self.note,
            "created_at": self.created_at,
            "checkpoint_seq": self.checkpoint_seq,
        }

    @classmethod
    def from_dict(cls, name: str, data: Any, *, path: str = "bookmarks.json") -> "Bookmark":
        """Inverse of :meth:`to_dict`; :class:`CorruptRecordError` naming ``path`` if malformed."""
        if not isinstance(data, dict):
            raise CorruptRecordError(f"bookmark {name!r} is not a JSON object", path=path)
        seq: Any = data.get("seq")
        record_hash, ckpt = data.get("record_hash"), data.get("checkpoint_seq")
        if not _is_int(seq) or seq < 1 or not isinstance(record_hash, str):
            raise CorruptRecordError(f"bookmark {name!r} has no valid seq/record_hash", path=path)
        if ckpt is not None and not _is_int(ckpt):
            raise CorruptRecordError(f"bookmark {name!r} has a non-integer checkpoint_seq", path=path)
        note = data.get("note")
        return cls(name=name, seq=seq, record_hash=record_hash, note=note if isinstance(note, str) else None,
                   created_at=str(data.get("created_at") or ""), checkpoint_seq=ckpt)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_bookmarks(path: os.PathLike[str] | str) -> dict[str, Bookmark]:
    """The bookmarks in one ``bookmarks.json`` (``{}`` if the file does not exist).

    Raises :class:`CorruptRecordError` / :class:`UnsupportedFormatError` naming the file.
    """
    file = Path(path)
    try:
        doc = load_json_file(file, expected_format=BOOKMARKS_FORMAT, kind="bookmarks file")
    except FileNotFoundError:
        return {}
    entries = doc.get("bookmarks")
    if not isinstance(entries, dict):
        raise CorruptRecordError("bookmarks file has no 'bookmarks' object", path=str(file))
    return {name: Bookmark.from_dict(name, data, path=str(file)) for name, data in entries.items()}


def bookmarks_in_order(path: os.PathLike[str] | str) -> list[Bookmark]:
    """:func:`read_bookmarks` as a list ordered by ``seq``, then name (how they are listed and verified)."""
    return sorted(read_bookmarks(path).values(), key=lambda b: (b.seq, b.name))


class BookmarkStore:
    """Bookmarks of the runs in one store root (``runs/<run_id>/bookmarks.json``)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        durability: Durability = "fsync",
        *,
        clock: Optional[Callable[[], datetime]] = None,
    ) -> None:
        self._files = RunFiles(root, create=False)
        self.durability = check_durability(durability)
        self._clock = clock

    def path(self, run_id: str) -> Path:
        """``runs/<run_id>/bookmarks.json``."""
        return self._files.run_dir(run_id) / BOOKMARKS_FILE

    def _run_dir(self, run_id: str) -> Path:
        run_dir = self._files.run_dir(run_id)
        if not (run_dir / CHECKPOINT_FILE).exists():
            raise RunNotFoundError(run_id)
        return run_dir

    def add(
        self,
        run_id: str,
        name: str,
        *,
        seq: Optional[int] = None,
        note: Optional[str] = None,
        replace: bool = False,
    ) -> Bookmark:
        """Bookmark the record at ``seq`` (default: the ledger's current head) and return it.

        Refuses an unknown run (:class:`RunNotFoundError`), an invalid name
        (:class:`InvalidIdError`), a ``seq`` outside the ledger or a name already in use
        unless ``replace=True`` (:class:`InvalidInputError`), and a ledger whose chain does
        not verify (:class:`CorruptRecordError`): a bookmark must never bless tampering.
        """
        validate_id(name, "bookmark name")
        if seq is not None and (not _is_int(seq) or seq < 1):
            raise InvalidInputError(f"Bookmark seq must be a positive integer, not {seq!r}")
        if note is not None and not isinstance(note, str):
            raise InvalidInputError(f"Bookmark note must be a string, not {type(note).__name__}")
        if note is not None and len(note) > MAX_NOTE_CHARS:
            raise InvalidInputError(f"Bookmark note is {len(note)} characters long; the limit is {MAX_NOTE_CHARS}")
        run_dir = self._run_dir(run_id)
        with RunLock(run_dir / LOCK_FILE, run_id, wait=LOCK_WAIT_SECONDS):
            bookmarks = read_bookmarks(run_dir / BOOKMARKS_FILE)
            if name in bookmarks and not replace:
                raise InvalidInputError(
                    f"Run {run_id} already has a bookmark named {name!r}; pass replace=True to move it",
                    run_id=run_id, name=name)
            # Read the checkpoint before the ledger: the ledger can only be longer by then.
            checkpoint_seq = read_checkpoint(run_dir / CHECKPOINT_FILE).ledger.seq
            target_seq, target_hash = self._record_at(run_id, run_dir / LEDGER_FILE, seq)
            bookmark = Bookmark(
                name=name, seq=target_seq, record_hash=target_hash, note=note or None,
                created_at=to_iso(self._clock()) if self._clock else utc_now_iso(),
                checkpoint_seq=checkpoint_seq,
            )
            bookmarks[name] = bookmark
            self._write(run_dir / BOOKMARKS_FILE, bookmarks)
        return bookmark

    def _record_at(self, run_id: str, ledger_path: Path, seq: Optional[int]) -> tuple[int, str]:
        """(seq, record_hash) of the wanted record, read from a chain-checked ledger."""
        data = read_range(list_parts(ledger_path.parent))
        parsed = parse_ledger(data, path=str(ledger_path), verify_chain=True, run_id=run_id)
        wanted = bookmark_position(run_id, parsed.head.seq, seq)
        if self.durability == "fsync":
            # The record we name must survive power loss, even if its writer has not fsynced yet.
            try:
                fd = os.open(ledger_path, os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:
                fd = -1  # all sealed into segments, which were fsynced when sealed
            if fd >= 0:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        record = parsed.records[wanted - 1]  # the chain check guarantees records[i] has seq i + 1
        return wanted, str(record["record_hash"])

    def _write(self, path: Path, bookmarks: dict[str, Bookmark]) -> None:
        doc = {"format": BOOKMARKS_FORMAT,
               "bookmarks": {name: bookmarks[name].to_dict() for name in sorted(bookmarks)}}
        atomic_write_bytes(path, dumps_compact(doc) + b"\n", durable=self.durability == "fsync")

    def list(self, run_id: str) -> list[Bookmark]:
        """The run's bookmarks ordered by ``seq`` (then name); ``[]`` if it has none."""
        run_dir = self._run_dir(run_id)
        return bookmarks_in_order(run_dir / BOOKMARKS_FILE)

    def get(self, run_id: str, name: str) -> Bookmark:
        """One bookmark (:class:`BookmarkNotFoundError`, a ``KeyError``, if there is none)."""
        validate_id(name, "bookmark name")
        run_dir = self._run_dir(run_id)
        found = read_bookmarks(run_dir / BOOKMARKS_FILE).get(name)
        if found is None:
            raise BookmarkNotFoundError(run_id, name)
        return found

    def remove(self, run_id: str, name: str) -> Bookmark:
        """Delete a bookmark and return it (:class:`BookmarkNotFoundError` if there is none)."""
        validate_id(name, "bookmark name")
        run_dir = self._run_dir(run_id)
        with RunLock(run_dir / LOCK_FILE, run_id, wait=LOCK_WAIT_SECONDS):
            bookmarks = read_bookmarks(run_dir / BOOKMARKS_FILE)
            removed = bookmarks.pop(name, None)
            if removed is None:
                raise BookmarkNotFoundError(run_id, name)
            self._write(run_dir / BOOKMARKS_FILE, bookmarks)
        return removed


__all__ = ["Bookmark", "BookmarkStore", "bookmarks_in_order", "read_bookmarks", "BOOKMARKS_FILE", "BOOKMARKS_FORMAT"]
