"""Tombstones: what a store keeps of each run it pruned, as a sealed, hash-chained log.

A pruned run leaves one line in ``<store>/tombstones.jsonl`` (a PostgreSQL store: rows of
the ``tombstones`` table holding the same lines): its run id, workflow id, final status,
the seq and hash of its ledger's last record, its record count, the signature of that head
when the run was signed, and when it was pruned. Each line carries the hash of the one
before (``prev_hash``; ``null`` for the first) and its own ``hash``, the SHA-256 of its
canonical JSON without ``hash``, so editing, removing or reordering a line breaks the chain.
The log's head (seq and hash of its last line) is also written beside it
(``tombstones.head.json``; the ``tombstone_head`` row): a log cut short no longer reaches
it. ``verify --all`` reads the log to account for every pruned run (:func:`check_log`).

A tombstone keeps its run id for ever: ``pruned/<run_id>`` (folder) or the row (PostgreSQL)
makes :meth:`~abstractruntime.core.ports.RunStore.pruned` true, and ``start`` refuses it.

Crash safety of a folder prune (:mod:`abstractruntime.storage.prune`): an intent file
``pruning/<run_id>`` is written first, then the tombstone (appended and fsynced), then the
id's marker, then the run is moved out of ``runs/`` in one rename and deleted, and the intent
last. A prune killed anywhere leaves either the run or its tombstone (or both, with the
intent): the next prune finishes what the intent names. A line torn by a crash (no newline)
held no complete tombstone; its run is still there, and the next append cuts it.
"""

from __future__ import annotations

import os
from dataclasses import field
from ..core.fastclass import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from ..core.canonical import canonical_json, is_sha256_hex, sha256_hex
from ..core.errors import CorruptRecordError, StorageError
from ..core.ids import validate_id
from .run_files import PRUNED_DIR
from .fsio import (
    FILE_MODE,
    FileLock,
    append_bytes,
    atomic_write_bytes,
    ensure_dir,
    fsync_dir,
    loads_strict,
    open_append,
    read_bytes,
)

TOMBSTONES_FILE = "tombstones.jsonl"
TOMBSTONES_HEAD_FILE = "tombstones.head.json"
TOMBSTONES_LOCK_FILE = ".tombstones.lock"
PRUNING_DIR = "pruning"
# How much of the log's end an append reads: far more than one tombstone line.
TAIL_BYTES = 1 << 16
TOMBSTONE_FORMAT = 1

# The fields of a tombstone line, in the order the docs list them.
FIELDS = ("format", "seq", "run_id", "workflow_id", "status", "head_seq", "head_hash", "count", "signature",
          "pruned_at", "prev_hash", "hash")


@dataclass(frozen=True)
class Tombstone:
    """One pruned run as its tombstone line says (see the module docstring)."""

    seq: int
    run_id: str
    workflow_id: Optional[str]
    status: str
    head_seq: int
    head_hash: Optional[str]
    count: int
    signature: Optional[dict[str, Any]]
    pruned_at: str
    prev_hash: Optional[str]
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The line's JSON object (also the ``--json`` form)."""
        return {"format": TOMBSTONE_FORMAT, "seq": self.seq, "run_id": self.run_id, "workflow_id": self.workflow_id,
                "status": self.status, "head_seq": self.head_seq, "head_hash": self.head_hash, "count": self.count,
                "signature": self.signature, "pruned_at": self.pruned_at, "prev_hash": self.prev_hash,
                "hash": self.hash}


def seal(*, run_id: str, workflow_id: Optional[str], status: str, head_seq: int, head_hash: Optional[str],
         count: int, signature: Optional[dict[str, Any]], pruned_at: str,
         previous: Optional[Tombstone]) -> tuple[Tombstone, bytes]:
    """The tombstone after ``previous`` (``None``: the first) and its line (no newline)."""
    doc: dict[str, Any] = {"format": TOMBSTONE_FORMAT, "seq": (previous.seq if previous else 0) + 1,
                           "run_id": validate_id(run_id, "run id"), "workflow_id": workflow_id, "status": status,
                           "head_seq": int(head_seq), "head_hash": head_hash, "count": int(count),
                           "signature": signature, "pruned_at": pruned_at,
                           "prev_hash": previous.hash if previous else None}
    doc["hash"] = sha256_hex(canonical_json(doc))
    return _from_doc(doc), canonical_json(doc)


def _from_doc(doc: dict[str, Any]) -> Tombstone:
    return Tombstone(seq=doc["seq"], run_id=doc["run_id"], workflow_id=doc["workflow_id"], status=doc["status"],
                     head_seq=doc["head_seq"], head_hash=doc["head_hash"], count=doc["count"],
                     signature=doc["signature"], pruned_at=doc["pruned_at"], prev_hash=doc["prev_hash"],
                     hash=doc["hash"])


@dataclass
class LogCheck:
    """What :func:`check_log` found: the tombstones up to the first bad line, ``problems``
    (``(type, message, line)``: any one means the log was edited or cut) and ``notes``."""

    entries: list[Tombstone] = field(default_factory=list)
    problems: list[tuple[str, str, Optional[int]]] = field(default_factory=list)
    notes: list[tuple[str, str, Optional[int]]] = field(default_factory=list)
    valid_end: int = 0
    head: Optional[dict[str, Any]] = None

    @property
    def ok(self) -> bool:
        """True when the log holds its chain and reaches its recorded head."""
        return not self.problems

    @property
    def last(self) -> Optional[Tombstone]:
        """The last tombstone (``None`` for an empty log)."""
        return self.entries[-1] if self.entries else None

    def by_run(self) -> dict[str, Tombstone]:
        """Tombstones by run id."""
        return {t.run_id: t for t in self.entries}


def parse_line(raw: bytes, number: int = 1) -> tuple[Optional[Tombstone], str, str]:
    """One line on its own (fields, format, its own hash): ``(tombstone, "", "")`` or
    ``(None, problem type, message)``; the chain is :func:`check_log`'s."""
    try:
        doc = loads_strict(raw)
    except (ValueError, UnicodeDecodeError):
        return None, "tombstone_invalid", f"line {number} is not JSON"
    if not isinstance(doc, dict) or set(doc) != set(FIELDS):
        return None, "tombstone_invalid", f"line {number} is not a tombstone (its fields differ)"
    if doc["format"] != TOMBSTONE_FORMAT:
        return None, "tombstone_invalid", f"line {number} has format {doc['format']!r}, not {TOMBSTONE_FORMAT}"
    body = {k: v for k, v in doc.items() if k != "hash"}
    if not is_sha256_hex(doc["hash"]) or sha256_hex(canonical_json(body)) != doc["hash"]:
        return None, "tombstone_hash_mismatch", f"line {number} does not hash to its hash (edited)"
    if not isinstance(doc["run_id"], str) or not isinstance(doc["seq"], int) or \
            not isinstance(doc["head_seq"], int) or not isinstance(doc["count"], int) or \
            not isinstance(doc["status"], str):
        return None, "tombstone_invalid", f"line {number} has a field of the wrong type"
    return _from_doc(doc), "", ""


def _check_line(raw: bytes, number: int, previous: Optional[Tombstone]) -> tuple[Optional[Tombstone], str, str]:
    tombstone, kind, message = parse_line(raw, number)
    if tombstone is None:
        return None, kind, message
    want_seq = (previous.seq if previous else 0) + 1
    if tombstone.seq != want_seq:
        return None, "tombstone_chain_broken", f"line {number} has seq {tombstone.seq!r}, not {want_seq} " \
            "(a tombstone removed or reordered)"
    if tombstone.prev_hash != (previous.hash if previous else None):
        return None, "tombstone_chain_broken", f"line {number}'s prev_hash is not the hash of the line before " \
            "(a tombstone removed, replaced or reordered)"
    return tombstone, "", ""


def check_log(data: bytes, *, head: Optional[dict[str, Any]] = None) -> LogCheck:
    """Check a tombstone log's bytes (and its recorded ``head``, ``{"seq", "hash"}``): the chain
    from the first line, one run id per tombstone, and that the log reaches the head."""
    found = LogCheck(head=head)
    seen: set[str] = set()
    offset, number = 0, 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        number += 1
        if end < 0:
            # No newline: a write cut by a crash. It held no complete tombstone (its run is
            # still in the store); the next append removes it.
            found.notes.append(("tombstone_torn_tail", f"line {number} is incomplete (an append interrupted by a "
                                "crash; cut by the next prune)", number))
            break
        tombstone, kind, message = _check_line(data[offset:end], number, found.last)
        if tombstone is None:
            found.problems.append((kind, message, number))
            return found
        if tombstone.run_id in seen:
            found.problems.append(("tombstone_duplicate", f"line {number} tombstones run {tombstone.run_id} "
                                   "a second time", number))
            return found
        seen.add(tombstone.run_id)
        found.entries.append(tombstone)
        offset = end + 1
        found.valid_end = offset
    if head is not None:
        seq, want = head.get("seq"), head.get("hash")
        if not isinstance(seq, int) or seq > len(found.entries):
            found.problems.append(("tombstones_truncated", f"the tombstone log ends at seq {len(found.entries)} but "
                                   f"its recorded head is seq {seq!r} (tombstones removed from its end)", None))
        elif seq > 0 and found.entries[seq - 1].hash != want:
            found.problems.append(("tombstones_head_mismatch", f"tombstone {seq} does not have the hash the log's "
                                   "recorded head names (the log was rewritten)", seq))
    return found


def check_rows(lines: Iterable[bytes], *, head: Optional[dict[str, Any]] = None) -> LogCheck:
    """:func:`check_log` over stored lines (a database's rows, in seq order)."""
    return check_log(b"".join(bytes(line) + b"\n" for line in lines), head=head)


class FileTombstones:
    """The tombstones of a folder store (``tombstones.jsonl``, its head, ``pruned/``, ``pruning/``)."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = Path(root)
        self.durable = durable
        self.path = self.root / TOMBSTONES_FILE
        self.head_path = self.root / TOMBSTONES_HEAD_FILE

    def lock(self) -> FileLock:
        """The log's writer lock (one prune appends at a time)."""
        ensure_dir(self.root, durable=self.durable)
        return FileLock(self.root / TOMBSTONES_LOCK_FILE)

    def _head(self) -> Optional[dict[str, Any]]:
        try:
            doc = loads_strict(read_bytes(self.head_path))
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):
            return {"seq": None, "hash": None}  # reported as a log that does not reach its head
        return doc if isinstance(doc, dict) else {"seq": None, "hash": None}

    def read(self) -> LogCheck:
        """The log as it is now, checked (no lock: a line being appended shows as a torn tail)."""
        try:
            data = read_bytes(self.path)
        except FileNotFoundError:
            data = b""
        head = self._head()
        if head is None and data:
            return _with_problem(check_log(data), "tombstones_head_missing",
                                 f"{self.head_path} is missing (the log's head was removed)")
        return check_log(data, head=head)

    def append(self, fields: dict[str, Any]) -> Tombstone:
        """Seal ``fields`` after the last tombstone and append it durably (the caller holds
        :meth:`lock`). Only the log's end is read (a prune checks the whole log once, first:
        :func:`refuse_damaged`); an end that is not the recorded head is refused
        (:class:`CorruptRecordError`): a tombstone chained to an edited log would seal the edit."""
        last, valid_end, size = self._tail()
        existed = size > 0 or self.path.exists()
        if not existed and not self.head_path.exists():
            # The head before the first line: from then on a log without its head was tampered with.
            atomic_write_bytes(self.head_path, canonical_json({"seq": 0, "hash": None}) + b"\n",
                               durable=self.durable)
        tombstone, line_bytes = seal(previous=last, **fields)
        if valid_end < size:
            os.truncate(self.path, valid_end)  # a torn line left by a crash
        fd = open_append(self.path)
        try:
            append_bytes(fd, line_bytes + b"\n", path=self.path, durable=self.durable)
        finally:
            os.close(fd)
        if not existed and self.durable:
            fsync_dir(self.root)
        # After the line: a crash in between leaves a log one line past its head, which reads fine.
        atomic_write_bytes(self.head_path, canonical_json({"seq": tombstone.seq, "hash": tombstone.hash}) + b"\n",
                           durable=self.durable)
        return tombstone

    def _tail(self) -> tuple[Optional[Tombstone], int, int]:
        """``(last tombstone, end of the last whole line, file size)``, the last line checked
        against the recorded head."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        start = max(0, size - TAIL_BYTES)
        data = read_bytes(self.path, offset=start) if size else b""
        end = data.rfind(b"\n")
        head = self._head()
        if end < 0:
            if start:
                raise self._damaged("its last line is longer than a tombstone can be")
            if head not in (None, {"seq": 0, "hash": None}):
                raise self._damaged("it holds no tombstone but its head names one")
            return None, 0, size
        begin = data.rfind(b"\n", 0, end) + 1
        if begin == 0 and start:
            raise self._damaged("its last line is longer than a tombstone can be")
        last, kind, message = parse_line(data[begin:end])
        if last is None:
            raise self._damaged(f"its last line: {kind}: {message}")
        at_head = head is not None and (head.get("seq"), head.get("hash")) == (last.seq, last.hash)
        # A prune killed between the line and its head leaves the log one line past the head.
        one_past = head is not None and head.get("seq") == last.seq - 1 and head.get("hash") == last.prev_hash
        if not (at_head or one_past):
            raise self._damaged("it does not end at its recorded head")
        return last, start + end + 1, size

    def _damaged(self, why: str) -> CorruptRecordError:
        return CorruptRecordError(f"the tombstone log does not verify ({why}); nothing pruned: run verify --all",
                                  path=str(self.path))

    # -- markers ---------------------------------------------------------------------------

    def _touch(self, directory: str, run_id: str) -> None:
        folder = ensure_dir(self.root / directory, durable=self.durable)
        path = folder / validate_id(run_id, "run id")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        except OSError as exc:
            raise StorageError(f"Cannot write {path}: {exc.strerror or exc}") from exc
        try:
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if self.durable:
            fsync_dir(folder)

    def mark(self, run_id: str) -> None:
        """Keep ``run_id`` from ever naming a new run."""
        self._touch(PRUNED_DIR, run_id)

    def marked(self, run_id: str) -> bool:
        """Whether ``run_id`` was pruned (its marker is there)."""
        return (self.root / PRUNED_DIR / run_id).exists()

    def intend(self, run_id: str) -> None:
        """Record that ``run_id`` is being pruned (before its tombstone)."""
        self._touch(PRUNING_DIR, run_id)

    def intended(self) -> list[str]:
        """Runs a prune began and may not have finished."""
        try:
            return sorted(os.listdir(self.root / PRUNING_DIR))
        except FileNotFoundError:
            return []

    def done(self, run_id: str) -> None:
        """The prune of ``run_id`` is finished."""
        try:
            os.unlink(self.root / PRUNING_DIR / run_id)
        except FileNotFoundError:
            pass


def refuse_damaged(found: LogCheck, where: str) -> None:
    """:class:`CorruptRecordError` naming the first problem of a log that does not verify."""
    if not found.ok:
        kind, message, line = found.problems[0]
        raise CorruptRecordError(f"the tombstone log does not verify ({kind}: {message}); nothing pruned",
                                 path=where, line=line)


def _with_problem(found: LogCheck, kind: str, message: str) -> LogCheck:
    found.problems.append((kind, message, None))
    return found


__all__ = ["FIELDS", "FileTombstones", "LogCheck", "PRUNED_DIR", "PRUNING_DIR", "TOMBSTONES_FILE",
           "TOMBSTONES_HEAD_FILE", "TOMBSTONE_FORMAT", "Tombstone", "check_log", "check_rows", "parse_line", "refuse_damaged", "seal"]
