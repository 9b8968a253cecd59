"""Delivered event ids: the store-level record that makes ``emit KEY --id ID`` deliver at most once.

An :class:`EventRecord` names one event (its id, key and the runs it goes to) and ends in one of
three states: ``open`` (recorded, not yet delivered to every run it names, or kept for a run that
has not started waiting yet), ``delivered`` or ``expired`` (a kept event no run took in time). An
:class:`EventLog` keeps them, one lookup per id; every change is durable when the call returns.

The protocol that uses it (:mod:`abstractruntime.scheduler.events`) records an event *before* it
resumes any run, under the event's lock, and names the runs it goes to: a process killed between
the record and the resumes leaves an open event whose runs the next ``emit`` of the same id
answers — each by the wait it named, which a wait accepts once — so an id is neither lost nor
delivered twice. A run's ledger is the truth about a delivery: its ``resume`` record carries
``result.event_id``.

Backends: :class:`~abstractruntime.storage.event_files.FileEventLog` (a folder store's
``events/`` directory: one append-only file per id, fsynced, 0600), :class:`InMemoryEventLog`,
and the PostgreSQL ``events`` table (:mod:`abstractruntime.storage.postgres.events`).
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import field, replace
from ..core.fastclass import dataclass
from typing import Any, Iterator, Optional, Protocol

from ..core.canonical import canonical_json, sha256_hex
from ..core.clock import parse_iso, utc_now_iso
from ..core.errors import InvalidInputError, StorageError

EVENT_FORMAT = 1
MAX_EVENT_ID_CHARS = 200
OPEN, DELIVERED, EXPIRED = "open", "delivered", "expired"
STATES = (OPEN, DELIVERED, EXPIRED)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_event_id(event_id: Any) -> str:
    """``event_id`` when it is usable: text of 1 to 200 characters without control characters."""
    if not isinstance(event_id, str) or not event_id.strip():
        raise InvalidInputError(f"An event id must be non-empty text, not {event_id!r}")
    if len(event_id) > MAX_EVENT_ID_CHARS:
        raise InvalidInputError(f"An event id has at most {MAX_EVENT_ID_CHARS} characters, not {len(event_id)}")
    if _CONTROL.search(event_id):
        raise InvalidInputError(f"Event id {event_id!r} contains control characters (tab, newline, ...)")
    return event_id


@dataclass
class EventRecord:
    """One event as the store recorded it.

    ``targets`` are the waits it goes to, ``[{"run_id", "wait_id"}]``: every run waiting on the
    key when it was emitted, or — for a kept event — the run chosen when one started waiting.
    ``payload`` is kept only while a kept event waits for a run (``None`` otherwise);
    ``payload_sha256`` always. ``keep_until`` (ISO) marks a kept event.
    """

    event_id: str
    event_key: str
    payload_sha256: str
    created_at: str = field(default_factory=utc_now_iso)
    keep_until: Optional[str] = None
    payload: Any = None
    targets: list[dict[str, Any]] = field(default_factory=list)
    state: str = OPEN
    finished_at: Optional[str] = None

    @property
    def kept(self) -> bool:
        """Whether the event was kept for a run that was not waiting yet."""
        return self.keep_until is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``--json``)."""
        return {"event_id": self.event_id, "event_key": self.event_key, "state": self.state,
                "created_at": self.created_at, "keep_until": self.keep_until, "targets": list(self.targets),
                "finished_at": self.finished_at, "payload_sha256": self.payload_sha256}


def payload_digest(payload: Any) -> str:
    """The sha256 of a payload's canonical JSON: what a retried emit is compared with."""
    return sha256_hex(canonical_json(payload))


class EventLog(Protocol):
    """Where a store records the events it delivered (see the module docstring)."""

    def get(self, event_id: str) -> Optional[EventRecord]:
        """The event, or ``None`` when the id was never recorded (one lookup)."""
        ...

    def lock(self, event_id: str, *, wait: float = 0.0) -> contextlib.AbstractContextManager[bool]:
        """Exclusive right to change one event, across processes; yields ``False`` when another
        holder kept it for ``wait`` seconds (nothing is held then)."""
        ...

    def create(self, record: EventRecord) -> None:
        """Record a new event (the caller holds its lock and saw no record); durable on return."""
        ...

    def add_target(self, event_id: str, target: dict[str, Any]) -> None:
        """Name one more wait the event goes to (a kept event's run), durably, before it is resumed."""
        ...

    def finish(self, event_id: str, state: str, at: Optional[str] = None) -> None:
        """Close the event: ``delivered`` or ``expired``; a kept event's payload is deleted."""
        ...

    def open_kept(self, *, limit: int = 1000) -> list[EventRecord]:
        """Kept events still open, oldest first: what a worker pass tries to deliver."""
        ...

    def records(self) -> list[EventRecord]:
        """Every event the log holds, oldest first (``store copy``)."""
        ...

    def put(self, record: EventRecord) -> None:
        """Write a whole record as another store holds it, state included, all or nothing
        (``store copy``; the caller holds its lock and saw no record); durable on return."""
        ...


def same_event(a: EventRecord, b: EventRecord) -> bool:
    """Whether two stores hold the same event: id, key, payload, times, targets and state
    (times compared as instants: a database writes them in its own form)."""
    def instant(value: Optional[str]) -> Any:
        return parse_iso(value) if value else None

    return (a.event_id, a.event_key, a.payload_sha256, a.state, a.targets) == \
        (b.event_id, b.event_key, b.payload_sha256, b.state, b.targets) and \
        all(instant(x) == instant(y) for x, y in ((a.created_at, b.created_at), (a.keep_until, b.keep_until),
                                                 (a.finished_at, b.finished_at)))


def copy_event(record: EventRecord, log: EventLog, *, wait: float = 10.0) -> str:
    """Write ``record`` (read from another store) into ``log``: ``"copied"``, ``"already"`` (held
    there identically) or ``"different"`` (another event under its id: left as it is)."""
    with log.lock(record.event_id, wait=wait) as held:
        if not held:
            raise StorageError(f"event {record.event_id!r} stayed locked for {wait:g} s (an emit in progress?)")
        there = log.get(record.event_id)
        if there is None:
            log.put(record)
            return "copied"
        return "already" if same_event(there, record) else "different"


class InMemoryEventLog:
    """Event ids in a dict (tests, embedding with in-memory stores); nothing survives the process."""

    def __init__(self) -> None:
        self._records: dict[str, EventRecord] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, event_id: str) -> Optional[EventRecord]:
        with self._guard:
            record = self._records.get(check_event_id(event_id))
            return None if record is None else replace(record, targets=[dict(t) for t in record.targets])

    @contextlib.contextmanager
    def lock(self, event_id: str, *, wait: float = 0.0) -> Iterator[bool]:
        with self._guard:
            lock = self._locks.setdefault(check_event_id(event_id), threading.Lock())
        if not (lock.acquire(timeout=wait) if wait > 0 else lock.acquire(blocking=False)):
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def create(self, record: EventRecord) -> None:
        with self._guard:
            if record.event_id in self._records:
                raise StorageError(f"event {record.event_id!r} is already recorded")
            self._records[record.event_id] = replace(record, targets=[dict(t) for t in record.targets])

    def add_target(self, event_id: str, target: dict[str, Any]) -> None:
        with self._guard:
            self._records[event_id].targets.append(dict(target))

    def finish(self, event_id: str, state: str, at: Optional[str] = None) -> None:
        with self._guard:
            record = self._records[event_id]
            record.state, record.finished_at, record.payload = state, at or utc_now_iso(), None

    def open_kept(self, *, limit: int = 1000) -> list[EventRecord]:
        with self._guard:
            found = [replace(r, targets=[dict(t) for t in r.targets]) for r in self._records.values()
                     if r.state == OPEN and r.kept]
        found.sort(key=lambda r: (parse_iso(r.created_at), r.event_id))
        return found[: max(limit, 0)]

    def records(self) -> list[EventRecord]:
        with self._guard:
            found = [replace(r, targets=[dict(t) for t in r.targets]) for r in self._records.values()]
        found.sort(key=lambda r: (parse_iso(r.created_at), r.event_id))
        return found

    def put(self, record: EventRecord) -> None:
        with self._guard:
            if record.event_id in self._records:
                raise StorageError(f"event {record.event_id!r} is already recorded")
            self._records[record.event_id] = replace(record, targets=[dict(t) for t in record.targets])


__all__ = ["DELIVERED", "EXPIRED", "EVENT_FORMAT", "EventLog", "EventRecord", "InMemoryEventLog", "OPEN", "STATES",
           "check_event_id", "copy_event", "payload_digest", "same_event"]
