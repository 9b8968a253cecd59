"""The snapshot model: a named, full copy of one run's state, and the port of the stores that keep it.

A :class:`Snapshot` is a full, independent copy of a run's state at one moment, with a
name, a description and tags so people can find it again, plus where the run stood
(its workflow source hash and ledger position) so a later restore or fork can refuse a
changed workflow. Snapshots never change the run they were taken from.

A snapshot taken of a run (format 2, :func:`~abstractruntime.core.restore.take_snapshot`)
holds no real secret: ``state`` is the run's state document as the ledger holds it (secrets
as markers committing to their values, large values as references), ``run_state`` the same
state as readers see it (secrets shown redacted). The values stay in the run's secrets
store while the snapshot exists, and a restore proves ``state`` against the run's ledger.

The model lives in core because taking and restoring a snapshot are runtime operations
(:mod:`abstractruntime.core.restore`); the stores that keep snapshots are in
:mod:`abstractruntime.storage.snapshots`, the shared list semantics in
:mod:`abstractruntime.storage.snapshot_search`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import field
from .fastclass import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, cast, runtime_checkable

from .clock import parse_iso, to_iso, utc_now_iso
from .errors import InvalidInputError, SnapshotNotFoundError
from .ids import uuid4_text, validate_id
from .json_codec import dumps_compact, loads_strict
from .models import RunState

SNAPSHOT_FORMAT = 2
"""The ``format`` written in every snapshot file (1: ``run_state`` only, still read); newer files
are refused, not misread."""

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
    taken; both are optional. Timestamps are ISO-8601 UTC text. ``state``, when present, is
    the run's state document at ``ledger`` (secrets as markers) and ``run_state`` the readers'
    view of it; a snapshot without ``state`` (format 1, or :meth:`from_run`) restores
    ``run_state`` as it is.
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
    state: Optional[dict[str, Any]] = None

    @classmethod
    def from_state(
        cls,
        *,
        state: Mapping[str, Any],
        run: RunState,
        name: str,
        ledger: Mapping[str, Any],
        description: Optional[str] = None,
        tags: Optional[Iterable[str]] = None,
        workflow: Optional[Mapping[str, Any]] = None,
        clock: Optional[ClockFn] = None,
    ) -> "Snapshot":
        """Snapshot a run's state document ``state`` at ledger position ``ledger`` (``run`` is the
        same state as readers see it, secrets shown redacted), under a new random id."""
        snapshot = cls.from_run(run=run, name=name, description=description, tags=tags, workflow=workflow,
                                ledger=ledger, clock=clock)
        snapshot.state = _json_copy(dict(state), "Snapshot state")
        snapshot.validate()
        return snapshot

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
            snapshot_id=uuid4_text(),
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
        self._check_state()

    def _check_state(self) -> None:
        if self.state is None:
            return
        state = self.state
        if not isinstance(state, dict) or not isinstance(state.get("run"), dict) \
                or not isinstance(state.get("kernel"), dict) or not isinstance(state["run"].get("vars"), dict):
            raise InvalidInputError("Snapshot state must be a state document {run: {...}, kernel: {...}} or None")
        if state["run"].get("run_id") != self.run_id:
            raise InvalidInputError(f"Snapshot state belongs to run {state['run'].get('run_id')!r}, not "
                                    f"{self.run_id!r}")

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
        """A fresh :class:`RunState` built from ``run_state`` (nothing is shared): as readers see it
        when the snapshot has a ``state`` (secrets redacted; restore it with
        :func:`~abstractruntime.core.restore.restore_snapshot` to get their values back)."""
        return RunState.from_dict(copy.deepcopy(self.run_state))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (a deep copy); the file adds ``"format"`` to it."""
        return copy.deepcopy({
            "snapshot_id": self.snapshot_id, "run_id": self.run_id, "step_id": self.step_id,
            "name": self.name, "description": self.description, "tags": self.tags,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "workflow": self.workflow, "ledger": self.ledger, "run_state": self.run_state, "state": self.state,
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
            tags=cast("list[str]", data.get("tags") if data.get("tags") is not None else []),
            created_at=data["created_at"],
            updated_at=data.get("updated_at") or data["created_at"],
            run_state=data["run_state"],
            workflow=data.get("workflow"),
            ledger=data.get("ledger"),
            state=data.get("state"),
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


__all__ = ["SNAPSHOT_FORMAT", "MAX_NAME_CHARS", "MAX_TAG_CHARS", "Snapshot", "SnapshotStore", "require_snapshot"]
