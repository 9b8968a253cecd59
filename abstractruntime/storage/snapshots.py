"""Named snapshots of run state, and the stores that keep them.

A :class:`Snapshot` is a full, independent copy of a run's state at one moment, with a
name, a description and tags so people can find it again, plus where the run stood
(its workflow source hash and ledger position) so a later restore or fork can refuse a
changed workflow. Snapshots never change the run they were taken from.

Two stores implement the :class:`SnapshotStore` protocol and pass the same tests:

- :class:`InMemorySnapshotStore` — a dict, for tests and short-lived processes.
- :class:`JsonSnapshotStore` — one ``<snapshot_id>.json`` file per snapshot, written
  atomically (see docs/snapshots.md for the file format).

Both store and return *copies*: mutating a snapshot after ``save`` or after ``load``
never changes what the store holds.
"""

from __future__ import annotations

import copy
import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, runtime_checkable

from ..core.clock import parse_iso, to_iso, utc_now_iso
from ..core.errors import (AbstractRuntimeError, CorruptRecordError, InvalidInputError, SnapshotNotFoundError,
                           StorageError, UnsupportedFormatError)
from ..core.models import RunState
from .fsio import (atomic_write_bytes, check_durability, child_path, dumps_compact, ensure_dir, fsync_dir,
                   load_json_file, loads_strict, validate_id)

SNAPSHOT_FORMAT = 1
"""The ``format`` written in every snapshot file; newer files are refused, not misread."""

MAX_NAME_CHARS = 200
MAX_TAG_CHARS = 100
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

ClockFn = Callable[[], datetime]


def _now_iso(clock: Optional[ClockFn]) -> str:
    return to_iso(clock()) if clock is not None else utc_now_iso()


def _json_copy(value: Any, what: str) -> Any:
    """Deep-copy ``value`` through JSON, so the copy is exactly what a file would hold."""
    try:
        return loads_strict(dumps_compact(value))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{what} is not JSON-serialisable: {exc}") from exc


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"Snapshot name must be a non-empty string, not {name!r}")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInputError(f"Snapshot name is {len(name)} characters long; the limit is {MAX_NAME_CHARS}")
    if _CONTROL_CHARS.search(name):
        # Names are one line: they are printed in tab-separated listings.
        raise InvalidInputError(f"Snapshot name {name!r} contains control characters (tab, newline, ...)")
    return name


def _check_tags(tags: object) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise InvalidInputError(f"Snapshot tags must be a list of strings, not {type(tags).__name__}")
    result: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidInputError(f"Snapshot tag must be a non-empty string, not {tag!r}")
        if len(tag) > MAX_TAG_CHARS or _CONTROL_CHARS.search(tag):
            raise InvalidInputError(f"Snapshot tag {tag!r} is longer than {MAX_TAG_CHARS} characters "
                                    "or contains control characters")
        if tag not in result:
            result.append(tag)
    return result


def _check_optional_str(value: object, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"Snapshot {what} must be a string or None, not {type(value).__name__}")


@dataclass
class Snapshot:
    """A named, full copy of one run's state (``run_state`` is ``RunState.to_dict()``).

    ``workflow`` is ``{"source", "sha256", "workflow_id"}`` of the workflow the run used
    and ``ledger`` is ``{"seq", "head_hash"}`` of the ledger when the snapshot was
    taken; both are optional. Timestamps are ISO-8601 UTC text.
    """

    snapshot_id: str
    run_id: str
    step_id: Optional[str] = None
    name: str = ""
    description: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=utc_now_iso)
    updated_at: str = field(default_factory=utc_now_iso)
    run_state: dict[str, Any] = field(default_factory=dict)
    workflow: Optional[dict[str, Any]] = None
    ledger: Optional[dict[str, Any]] = None

    @classmethod
    def from_run(
        cls,
        *,
        run: RunState,
        name: str,
        description: Optional[str] = None,
        tags: Optional[Iterable[str]] = None,
        step_id: Optional[str] = None,
        workflow: Optional[Mapping[str, Any]] = None,
        ledger: Optional[Mapping[str, Any]] = None,
        clock: Optional[ClockFn] = None,
    ) -> "Snapshot":
        """Snapshot ``run`` now, under a new random id.

        The run state is deep-copied through JSON: later changes to ``run`` do not reach
        the snapshot, and state that could not be stored is refused here with
        :class:`InvalidInputError` (as are an empty or over-long ``name`` and bad tags).
        ``clock`` (an aware-datetime callable such as ``Runtime.now``) sets ``created_at``.
        """
        if not isinstance(run, RunState):
            raise InvalidInputError(f"Snapshot.from_run needs a RunState, not {type(run).__name__}")
        now = _now_iso(clock)
        snapshot = cls(
            snapshot_id=str(uuid.uuid4()),
            run_id=run.run_id,
            step_id=step_id,
            name=_check_name(name),
            description=description or None,
            tags=_check_tags(tags),
            created_at=now,
            updated_at=now,
            run_state=_json_copy(run.to_dict(), "Run state"),
            workflow=_json_copy(dict(workflow), "Snapshot workflow") if workflow is not None else None,
            ledger=_json_copy(dict(ledger), "Snapshot ledger") if ledger is not None else None,
        )
        snapshot.validate()
        return snapshot

    def validate(self) -> None:
        """Raise :class:`InvalidInputError` (or ``InvalidIdError``) unless every field is well-formed."""
        validate_id(self.snapshot_id, "snapshot_id")
        if not isinstance(self.run_id, str) or not self.run_id:
            raise InvalidInputError(f"Snapshot run_id must be a non-empty string, not {self.run_id!r}")
        _check_optional_str(self.step_id, "step_id")
        _check_name(self.name)
        _check_optional_str(self.description, "description")
        if not isinstance(self.tags, list) or _check_tags(self.tags) != self.tags:
            raise InvalidInputError(f"Snapshot tags must be a list of distinct non-empty strings, not {self.tags!r}")
        for what in ("created_at", "updated_at"):
            value = getattr(self, what)
            try:
                parse_iso(value)
            except (TypeError, ValueError):
                raise InvalidInputError(f"Snapshot {what} is not an ISO-8601 timestamp: {value!r}") from None
        self._check_run_state()
        self._check_position()

    def _check_run_state(self) -> None:
        if not isinstance(self.run_state, dict):
            raise InvalidInputError("Snapshot run_state must be a dict (RunState.to_dict())")
        try:
            state = RunState.from_dict(self.run_state)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInputError(f"Snapshot run_state is not a valid run state ({type(exc).__name__}: {exc})") from None
        if state.run_id != self.run_id:
            raise InvalidInputError(f"Snapshot run_state belongs to run {state.run_id!r}, not {self.run_id!r}")

    def _check_position(self) -> None:
        if self.workflow is not None:
            if not isinstance(self.workflow, dict):
                raise InvalidInputError("Snapshot workflow must be a dict {source, sha256, workflow_id} or None")
            for key in ("source", "sha256", "workflow_id"):
                _check_optional_str(self.workflow.get(key), f"workflow.{key}")
        if self.ledger is not None:
            if not isinstance(self.ledger, dict):
                raise InvalidInputError("Snapshot ledger must be a dict {seq, head_hash} or None")
            seq = self.ledger.get("seq")
            if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 0):
                raise InvalidInputError(f"Snapshot ledger.seq must be a non-negative integer, not {seq!r}")
            _check_optional_str(self.ledger.get("head_hash"), "ledger.head_hash")

    def to_run_state(self) -> RunState:
        """A fresh :class:`RunState` built from the stored state (nothing is shared)."""
        return RunState.from_dict(copy.deepcopy(self.run_state))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (a deep copy); the file adds ``"format"`` to it."""
        return copy.deepcopy({
            "snapshot_id": self.snapshot_id, "run_id": self.run_id, "step_id": self.step_id,
            "name": self.name, "description": self.description, "tags": self.tags,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "workflow": self.workflow, "ledger": self.ledger, "run_state": self.run_state,
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Snapshot":
        """Inverse of :meth:`to_dict`; validates and raises :class:`InvalidInputError` on bad data.

        Unknown keys (and ``format``) are ignored.
        """
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"Snapshot data must be an object, not {type(data).__name__}")
        for key in ("snapshot_id", "run_id", "name", "created_at", "run_state"):
            if key not in data:
                raise InvalidInputError(f"Snapshot data has no {key!r}")
        data = copy.deepcopy(dict(data))
        snapshot = cls(
            snapshot_id=data["snapshot_id"],
            run_id=data["run_id"],
            step_id=data.get("step_id"),
            name=data["name"],
            description=data.get("description"),
            tags=data.get("tags") if data.get("tags") is not None else [],
            created_at=data["created_at"],
            updated_at=data.get("updated_at") or data["created_at"],
            run_state=data["run_state"],
            workflow=data.get("workflow"),
            ledger=data.get("ledger"),
        )
        snapshot.validate()
        return snapshot


@runtime_checkable
class SnapshotStore(Protocol):
    """Where snapshots live. ``load`` returns ``None`` for an unknown id.

    ``list`` returns newest first (``created_at`` descending, then ``snapshot_id``
    ascending); ``run_id`` matches exactly, ``tag`` matches a tag case-insensitively and
    ``query`` is a case-insensitive substring of the name or the description.
    """

    def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` (replacing one with the same id)."""
        ...

    def load(self, snapshot_id: str) -> Optional[Snapshot]:
        """The snapshot with this id, or ``None``."""
        ...

    def delete(self, snapshot_id: str) -> bool:
        """Remove it; ``False`` if it did not exist."""
        ...

    def list(self, *, run_id: Optional[str] = None, tag: Optional[str] = None,
             query: Optional[str] = None, limit: Optional[int] = 100) -> list[Snapshot]:
        """Matching snapshots, newest first, at most ``limit`` (``None``: all)."""
        ...


def require_snapshot(store: SnapshotStore, snapshot_id: str) -> Snapshot:
    """``store.load(snapshot_id)``, raising :class:`SnapshotNotFoundError` instead of returning ``None``."""
    snapshot = store.load(snapshot_id)
    if snapshot is None:
        raise SnapshotNotFoundError(snapshot_id)
    return snapshot


def select_snapshots(snapshots: Iterable[Snapshot], *, run_id: Optional[str] = None, tag: Optional[str] = None,
                     query: Optional[str] = None, limit: Optional[int] = 100) -> list[Snapshot]:
    """Filter and order snapshots with the :class:`SnapshotStore` ``list`` semantics.

    Empty ``run_id``/``tag``/``query`` mean "no filter". Timestamps are compared as
    datetimes, not text, so mixed offsets order correctly.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise InvalidInputError(f"limit must be a non-negative integer or None, not {limit!r}")
    wanted_tag = tag.casefold() if tag else None
    needle = query.casefold() if query else None
    matches = []
    for snap in snapshots:
        if run_id and snap.run_id != run_id:
            continue
        if wanted_tag is not None and all(t.casefold() != wanted_tag for t in snap.tags):
            continue
        if needle is not None and needle not in snap.name.casefold() \
                and needle not in (snap.description or "").casefold():
            continue
        matches.append(snap)
    matches.sort(key=lambda s: s.snapshot_id)
    matches.sort(key=lambda s: parse_iso(s.created_at), reverse=True)  # stable: ties keep id order
    return matches if limit is None else matches[:limit]


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


__all__ = ["SNAPSHOT_FORMAT", "MAX_NAME_CHARS", "Snapshot", "SnapshotStore", "InMemorySnapshotStore",
           "JsonSnapshotStore", "require_snapshot", "select_snapshots"]
