"""A folder store's event ids: ``<store>/events/``, one append-only file per id (docs/file-format.md).

The record, its states and the protocol that uses it are in :mod:`.event_ids`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional

from ..core.canonical import canonical_json
from ..core.clock import parse_iso, utc_now_iso
from ..core.errors import CorruptRecordError, InvalidInputError, StorageError
from .event_ids import (
    DELIVERED,
    EVENT_FORMAT,
    EXPIRED,
    OPEN,
    STATES,
    EventRecord,
    check_event_id,
    payload_digest,
)
from .fsio import (
    FileLock,
    append_bytes,
    atomic_write_bytes,
    ensure_dir,
    fsync_dir,
    loads_strict,
    open_append,
    read_bytes,
)


def _file_name(event_id: str) -> str:
    # Ids are free text: the file is named by a digest, and the file names its id.
    return hashlib.sha256(event_id.encode("utf-8")).hexdigest()


class FileEventLog:
    """A folder store's event ids: ``<store>/events/<sha256 of the id>.jsonl``.

    Each file is append-only JSON lines, fsynced per write, 0600: the event first, then what
    happened to it (``{"target": ...}``, ``{"state": ...}``). Writers hold an ``flock`` on the
    file; a line without its newline is an interrupted write (ignored, cut by the next writer).
    A kept event's payload is in ``events/kept/<name>`` (written atomically before the event,
    deleted when it closes), so a worker lists kept events without reading every id, and a
    payload is on disk only while it may still be delivered.
    """

    def __init__(self, directory: str | os.PathLike[str], *, durability: str = "fsync") -> None:
        self.directory = Path(directory)
        self._durable = durability == "fsync"

    def _path(self, event_id: str) -> Path:
        return self.directory / f"{_file_name(check_event_id(event_id))}.jsonl"

    def _marker(self, event_id: str) -> Path:
        return self.directory / "kept" / _file_name(event_id)

    def _ensure(self) -> None:
        ensure_dir(self.directory, durable=self._durable)  # each level 0700
        ensure_dir(self.directory / "kept", durable=self._durable)

    def get(self, event_id: str) -> Optional[EventRecord]:
        path = self._path(event_id)
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            return None
        return self._with_payload(_replay(data, str(path), event_id))

    def _with_payload(self, record: Optional[EventRecord]) -> Optional[EventRecord]:
        """A kept, open event with its payload read back from its ``kept/`` file."""
        if record is None or not record.kept or record.state != OPEN:
            return record
        marker = self._marker(record.event_id)
        try:
            record.payload = loads_strict(read_bytes(marker))
        except FileNotFoundError:
            # Closed since it was read (the state line is written before the payload is deleted)?
            path = self._path(record.event_id)
            again = _replay(read_bytes(path), str(path), record.event_id)
            if again is not None and again.state != OPEN:
                return again
            raise CorruptRecordError(f"kept event {record.event_id!r} has lost its payload", path=str(marker)) \
                from None
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CorruptRecordError(f"kept payload is not valid JSON ({exc})", path=str(marker)) from None
        if payload_digest(record.payload) != record.payload_sha256:
            raise CorruptRecordError(f"kept payload of event {record.event_id!r} does not match its sha256",
                                     path=str(marker))
        return record

    @contextlib.contextmanager
    def lock(self, event_id: str, *, wait: float = 0.0) -> Iterator[bool]:
        path = self._path(event_id)
        self._ensure()
        busy = _Busy()
        try:
            held = FileLock(path, wait=max(wait, 0.0), busy=lambda: busy)
            held.__enter__()
        except _Busy:
            yield False
            return
        try:
            yield True
        finally:
            held.__exit__(None, None, None)

    def create(self, record: EventRecord) -> None:
        self._ensure()
        if record.kept:
            # The payload first: an event recorded as kept always finds it.
            atomic_write_bytes(self._marker(record.event_id), canonical_json(record.payload), durable=self._durable)
        doc = {"format": EVENT_FORMAT, "event_id": record.event_id, "event_key": record.event_key,
               "payload_sha256": record.payload_sha256, "created_at": record.created_at,
               "keep_until": record.keep_until, "targets": record.targets}
        self._append(record.event_id, doc, new=True)

    def delete(self, event_id: str) -> None:
        """Remove a closed event's file (its runs were pruned); the kept payload too, if any."""
        for path in (self._marker(event_id), self._path(event_id)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self._durable and self.directory.is_dir():
            fsync_dir(self.directory)

    def add_target(self, event_id: str, target: dict[str, Any]) -> None:
        self._append(event_id, {"target": {"run_id": target["run_id"], "wait_id": target.get("wait_id")},
                                "at": utc_now_iso()})

    def finish(self, event_id: str, state: str, at: Optional[str] = None) -> None:
        if state not in (DELIVERED, EXPIRED):
            raise InvalidInputError(f"an event finishes delivered or expired, not {state!r}")
        self._append(event_id, {"state": state, "at": at or utc_now_iso()})
        try:
            os.unlink(self._marker(event_id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"Cannot remove {self._marker(event_id)}: {exc.strerror or exc}") from exc

    def open_kept(self, *, limit: int = 1000) -> list[EventRecord]:
        try:
            names = sorted(os.listdir(self.directory / "kept"))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"Cannot list {self.directory / 'kept'}: {exc.strerror or exc}") from exc
        found: list[EventRecord] = []
        for name in names:
            if not re.fullmatch(r"[0-9a-f]{64}", name):
                continue
            path = self.directory / f"{name}.jsonl"
            try:
                record = _replay(read_bytes(path), str(path), None)
            except FileNotFoundError:
                continue  # the payload of an emit killed before it wrote the event: nothing to deliver
            if record is not None and record.state == OPEN and record.kept:
                found.append(self._with_payload(record) or record)
            elif record is not None and record.state != OPEN:
                # Closed by a writer stopped before it deleted the payload: no one needs it now.
                with contextlib.suppress(OSError):
                    os.unlink(self.directory / "kept" / name)
        found.sort(key=lambda r: (parse_iso(r.created_at), r.event_id))
        return found[: max(limit, 0)]

    def records(self) -> list[EventRecord]:
        try:
            names = sorted(p for p in os.listdir(self.directory) if re.fullmatch(r"[0-9a-f]{64}\.jsonl", p))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"Cannot list {self.directory}: {exc.strerror or exc}") from exc
        found = []
        for name in names:
            path = self.directory / name
            try:
                record = self._with_payload(_replay(read_bytes(path), str(path), None))
            except FileNotFoundError:
                continue
            if record is not None:
                found.append(record)
        found.sort(key=lambda r: (parse_iso(r.created_at), r.event_id))
        return found

    def put(self, record: EventRecord) -> None:
        self._ensure()
        if record.kept and record.state == OPEN:
            # The payload first, as create() writes it: an open kept event always finds it.
            atomic_write_bytes(self._marker(record.event_id), canonical_json(record.payload), durable=self._durable)
        doc: dict[str, Any] = {"format": EVENT_FORMAT, "event_id": record.event_id, "event_key": record.event_key,
                               "payload_sha256": record.payload_sha256, "created_at": record.created_at,
                               "keep_until": record.keep_until, "targets": record.targets}
        if record.state != OPEN:
            # A closed event copied whole is one line: a copy killed mid-write leaves a torn
            # line (ignored, then cut), never an event that looks open.
            doc.update(state=record.state, finished_at=record.finished_at or utc_now_iso())
        self._append(record.event_id, doc, new=True)

    def _append(self, event_id: str, doc: dict[str, Any], *, new: bool = False) -> None:
        """Append one line (the caller holds the event's lock); cut an interrupted line first."""
        path = self._path(event_id)
        data = read_bytes(path) if path.exists() else b""
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            try:
                os.truncate(path, cut)
            except OSError as exc:
                raise StorageError(f"Cannot repair {path}: {exc.strerror or exc}") from exc
            data = data[:cut]
        if new and data.strip():
            raise StorageError(f"{path}: event {event_id!r} is already recorded")
        if not new and not data.strip():
            raise StorageError(f"{path}: event {event_id!r} is not recorded")
        fd = open_append(path)
        try:
            append_bytes(fd, canonical_json(doc) + b"\n", path=path, durable=self._durable)
        finally:
            os.close(fd)
        if new and self._durable:
            fsync_dir(self.directory)  # the file's name is durable with its first line


class _Busy(Exception):
    """Raised by :class:`FileLock` when another process holds an event's lock."""


def _replay(data: bytes, where: str, event_id: Optional[str]) -> Optional[EventRecord]:
    """The event a file holds (``None`` for an empty one: a writer killed before its first line)."""
    lines = data.split(b"\n")
    complete = lines[:-1]  # what follows the last newline is an interrupted write
    record: Optional[EventRecord] = None
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            doc = loads_strict(line)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CorruptRecordError(f"event record is not valid JSON ({exc})", path=where, line=number) from None
        if not isinstance(doc, dict):
            raise CorruptRecordError("event record is not a JSON object", path=where, line=number)
        if record is None:
            record = _first(doc, where, number, event_id)
        elif "target" in doc and isinstance(doc["target"], dict):
            record.targets.append(dict(doc["target"]))
        elif doc.get("state") in (DELIVERED, EXPIRED):
            record.state, record.finished_at, record.payload = doc["state"], doc.get("at"), None
        else:
            raise CorruptRecordError("unknown event record", path=where, line=number)
    return record


def _first(doc: dict[str, Any], where: str, number: int, event_id: Optional[str]) -> EventRecord:
    found = doc.get("format")
    if not isinstance(found, int) or isinstance(found, bool) or not 1 <= found <= EVENT_FORMAT:
        from ..core.errors import UnsupportedFormatError

        if isinstance(found, int) and not isinstance(found, bool) and found > EVENT_FORMAT:
            raise UnsupportedFormatError(f"{where}: event format {found} is newer than this abstractruntime "
                                         f"understands ({EVENT_FORMAT}); upgrade abstractruntime")
        raise CorruptRecordError("event record has no valid format", path=where, line=number)
    recorded = doc.get("event_id")
    if not isinstance(recorded, str) or (event_id is not None and recorded != event_id) \
            or Path(where).stem != _file_name(recorded):
        raise CorruptRecordError(f"file does not hold event {event_id!r}", path=where, line=number)
    targets = doc.get("targets")
    if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
        raise CorruptRecordError("event targets must be a list of objects", path=where, line=number)
    state = doc.get("state", OPEN)  # an event copied from another store may arrive closed
    if state not in STATES:
        raise CorruptRecordError(f"unknown event state {state!r}", path=where, line=number)
    return EventRecord(event_id=recorded, event_key=str(doc.get("event_key")),
                       payload_sha256=str(doc.get("payload_sha256")), created_at=str(doc.get("created_at")),
                       keep_until=doc.get("keep_until"), payload=None if state != OPEN else doc.get("payload"),
                       targets=[dict(t) for t in targets], state=state, finished_at=doc.get("finished_at"))


__all__ = ["FileEventLog"]
