"""Sealed ledger segments: a long run's ledger as ``segments/000001.jsonl``, … then ``ledger.jsonl``.

A run's ledger is one hash chain from genesis, stored as the concatenation of its sealed
segments (in number order) and the live file ``ledger.jsonl``. Byte offsets (checkpoints,
anchors, value hints) count in that concatenation, so renaming the live file into a segment
moves no offset and a checkpoint written before a rotation still proves after it.

A segment is sealed in three steps, each of which leaves a run that opens and verifies:

1. a ``segment`` record is appended to ``ledger.jsonl`` (fsynced, in the chain, with the state
   digest of the run, which it does not change), naming the segment's number, the hash the
   segment continues from and its record count;
2. ``ledger.jsonl`` is renamed to ``segments/<number>.jsonl`` and both directories fsynced;
3. the next append creates a new ``ledger.jsonl``.

A kill after step 1 leaves a live file that ends with a ``segment`` record: the next writer
finishes the rename before it appends (:func:`seal_tail`). Readers see the same bytes in every
state. Only the standard library is used.
"""

from __future__ import annotations

import os
import re
import stat as stat_module
from dataclasses import field
from ..core.fastclass import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from ..core.errors import StorageError
from .fsio import fsync_dir, loads_strict

SEGMENTS_DIR = "segments"
SEGMENT_KIND = "segment"
# Whichever comes first closes a segment: 64 MiB keeps each file easy to copy and scan, 100,000
# records bounds the replay a damaged live file could cost.
SEGMENT_BYTES = 64 << 20
SEGMENT_RECORDS = 100_000

_NAME = re.compile(r"^([0-9]{6,9})\.jsonl$")
# A segment record is a few hundred bytes: its line is always inside this window.
_WINDOW = 1 << 13


def segment_name(number: int) -> str:
    """The file name of sealed segment ``number`` (``000001.jsonl``)."""
    return f"{number:06d}.jsonl"


@dataclass(frozen=True)
class Part:
    """One file of a run's ledger: where it starts in the concatenation and how long it is."""

    path: Path
    number: Optional[int]  # None: the live ledger.jsonl
    start: int
    size: int
    inode: int

    @property
    def end(self) -> int:
        """The offset just past this file in the concatenation."""
        return self.start + self.size


@dataclass
class Parts:
    """A run's ledger files in chain order; ``strays``: entries of ``segments/`` that are not segments."""

    sealed: list[Part] = field(default_factory=list)
    tail: Optional[Part] = None
    strays: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[Part]:
        """Sealed segments, then the live file when there is one."""
        return self.sealed + ([self.tail] if self.tail is not None else [])

    @property
    def size(self) -> int:
        """The length of the whole ledger (every file)."""
        return self.tail.end if self.tail is not None else (self.sealed[-1].end if self.sealed else 0)

    @property
    def base(self) -> int:
        """Where the live file starts in the concatenation."""
        return self.sealed[-1].end if self.sealed else 0

    @property
    def exists(self) -> bool:
        """True when the run has any ledger file."""
        return bool(self.sealed) or self.tail is not None

    def identity(self) -> list[tuple[int, int]]:
        """``(inode, size)`` of each file, in order: what a cache of the ledger depends on."""
        return [(p.inode, p.size) for p in self.all]


def _regular(path: Path) -> Optional[os.stat_result]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat_module.S_ISREG(st.st_mode):
        raise StorageError(f"Refusing {path}: a ledger file must be a regular file, not a symlink")
    return st


def list_parts(run_dir: Path, ledger_name: str = "ledger.jsonl") -> Parts:
    """The files of the ledger in ``run_dir`` (one directory listing and a stat per file).

    ``segments/`` is listed again after the live file was looked at: a seal (the live file renamed
    into a segment) between the two would otherwise give a listing that never existed — the new
    segment missing, so the ledger would seem to end a segment early."""
    seg_dir = run_dir / SEGMENTS_DIR
    for _ in range(16):
        scanned = _scan(seg_dir)
        parts = Parts()
        start = 0
        if scanned is not None:
            numbered, parts.strays = scanned
            for number, name in numbered:
                path = seg_dir / name
                st = _regular(path)
                if st is None:
                    continue
                parts.sealed.append(Part(path, number, start, st.st_size, st.st_ino))
                start += st.st_size
        tail = run_dir / ledger_name
        st = _regular(tail)
        if st is not None:
            parts.tail = Part(tail, None, start, st.st_size, st.st_ino)
        if _scan(seg_dir) == scanned:
            return parts
    raise StorageError(f"Cannot list the ledger files of {run_dir}: its segments keep changing")


def _scan(seg_dir: Path) -> Optional[tuple[list[tuple[int, str]], list[str]]]:
    """The numbered entries of ``segments/`` (sorted) and its strays, or ``None`` without one."""
    try:
        # One lstat answers both "is there one" (most runs have none) and "is it a symlink".
        if not stat_module.S_ISDIR(os.lstat(seg_dir).st_mode):
            raise StorageError(f"Refusing {seg_dir}: the segments directory must be a directory, not a symlink")
        numbered: list[tuple[int, str]] = []
        strays: list[str] = []
        for entry in os.scandir(seg_dir):
            match = _NAME.match(entry.name)
            if match is None:
                strays.append(entry.name)
            else:
                numbered.append((int(match.group(1)), entry.name))
    except FileNotFoundError:
        return None
    return sorted(numbered), sorted(strays)


def has_ledger(run_dir: Path, ledger_name: str = "ledger.jsonl") -> bool:
    """True when the run has a ledger file (the live one, or sealed segments after a rotation)."""
    return (run_dir / ledger_name).exists() or (run_dir / SEGMENTS_DIR).is_dir()


def ledger_size(run_dir: str | Path, ledger_name: str = "ledger.jsonl") -> int:
    """The length of the run's whole ledger (the offset its next record will start at)."""
    try:
        os.lstat(f"{run_dir}{os.sep}{SEGMENTS_DIR}")
    except FileNotFoundError:
        # No sealed segments (most runs): the live file alone, one lstat and no path objects,
        # which an index rebuild pays once per run.
        tail = f"{run_dir}{os.sep}{ledger_name}"
        try:
            st = os.lstat(tail)
        except FileNotFoundError:
            return 0
        if not stat_module.S_ISREG(st.st_mode):
            raise StorageError(f"Refusing {tail}: a ledger file must be a regular file, not a symlink") from None
        return st.st_size
    return list_parts(Path(run_dir), ledger_name).size


def iter_bytes(parts: Parts, offset: int = 0, end: Optional[int] = None, *,
               chunk: int = 1 << 20) -> Iterator[bytes]:
    """The ledger's bytes from ``offset`` to ``end`` (the whole rest by default), in chunks."""
    stop = parts.size if end is None else min(end, parts.size)
    for part in parts.all:
        if part.end <= offset or part.start >= stop:
            continue
        try:
            handle = open(part.path, "rb")
        except FileNotFoundError:
            handle = None
        if handle is None or os.fstat(handle.fileno()).st_ino != part.inode:
            if handle is not None:
                handle.close()
            raise StorageError(f"{part.path} was sealed into a segment or replaced while it was being read; "
                               "read the ledger again")
        with handle:
            handle.seek(max(0, offset - part.start))
            left = min(part.end, stop) - max(offset, part.start)
            while left > 0:
                data = handle.read(min(chunk, left))
                if not data:
                    break  # shrank since it was listed: the reader's chain check will see it
                left -= len(data)
                yield data


def read_range(parts: Parts, offset: int = 0, end: Optional[int] = None) -> bytes:
    """The ledger's bytes from ``offset`` to ``end`` as one buffer."""
    return b"".join(iter_bytes(parts, offset, end))


def last_record(path: Path) -> Optional[dict[str, Any]]:
    """The record on the last complete line of ``path`` (not chain-checked), or ``None``."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - _WINDOW))
            window = handle.read()
    except FileNotFoundError:
        return None
    if not window.endswith(b"\n"):
        window = window[: window.rfind(b"\n") + 1]
    raw = window[:-1].rsplit(b"\n", 1)[-1] if window else b""
    try:
        doc = loads_strict(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def check_seals(parts: Parts) -> Optional[str]:
    """What is wrong with the sealed segments' order, read off their last lines only (one small
    read per segment), or ``None``: each must end with the ``segment`` record of its own number,
    continuing from the hash the segment before it ended at. Edits inside a segment are the
    chain check's to find (``verify``, and every reader of that segment)."""
    if parts.strays:
        return f"segments/{parts.strays[0]} is not a segment file name"
    before: Optional[str] = None
    for index, part in enumerate(parts.sealed, start=1):
        doc = last_record(part.path) or {}
        result = doc.get("result") if doc.get("kind") == SEGMENT_KIND else None
        if part.number != index:
            return f"segment {index} is missing (the next file is {part.path.name})"
        if not isinstance(result, dict) or result.get("segment") != index or result.get("head_hash") != before:
            return f"{part.path.name} does not end with the segment record of segment {index} (cut, renamed or reordered)"
        before = doc.get("record_hash")
    return None


def seal_tail(run_dir: Path, number: int, *, durable: bool, ledger_name: str = "ledger.jsonl") -> Path:
    """Rename the live file to ``segments/<number>.jsonl`` and make both entries durable.

    The caller holds the ledger's ``flock`` and has checked that the live file ends with the
    ``segment`` record numbered ``number``. A segment of that number already present is
    refused (``StorageError``): nothing is overwritten.
    """
    seg_dir = run_dir / SEGMENTS_DIR
    created = False
    try:
        os.mkdir(seg_dir, 0o700)
        created = True
    except FileExistsError:
        if os.path.islink(seg_dir) or not seg_dir.is_dir():
            raise StorageError(f"Refusing {seg_dir}: the segments directory must be a directory") from None
    if created and durable:
        fsync_dir(run_dir)
    target = seg_dir / segment_name(number)
    if os.path.lexists(target):
        raise StorageError(f"Refusing to seal {run_dir / ledger_name}: {target} already exists")
    rename(run_dir / ledger_name, target)
    if durable:
        fsync_dir(seg_dir)
        fsync_dir(run_dir)
    return target


def rename(source: Path, target: Path) -> None:
    """``os.rename`` (one name, so a crash test can stop right before or after it)."""
    os.rename(source, target)


__all__ = ["Part", "Parts", "check_seals", "has_ledger", "ledger_size", "SEGMENTS_DIR", "SEGMENT_BYTES", "SEGMENT_KIND", "SEGMENT_RECORDS", "iter_bytes",
           "last_record", "list_parts", "read_range", "seal_tail", "segment_name"]
