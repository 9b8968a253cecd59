"""The data a run is made of: effects, plans, waits, run state and ledger records.

Everything here is JSON-serialisable (``to_dict`` / ``from_dict``) because everything is
persisted: a run must be resumable by another process from files alone. Enums are
``str`` enums so callers may compare ``.value`` or the member.
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import field
from .fastclass import dataclass
from enum import Enum
from typing import Any, Callable, Optional

from .clock import utc_now_iso
from .ids import uuid4_text, uuid_text

# Step ids only need to be unique, not unpredictable: drawn from a generator seeded once from
# the OS, because os.urandom per record (uuid4) costs hundreds of microseconds on some VMs.
_STEP_IDS = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):  # a forked child must not repeat its parent's ids
    os.register_at_fork(after_in_child=lambda: _STEP_IDS.seed(os.urandom(32)))


def _step_id() -> str:
    """A random (version 4) UUID for a ledger record."""
    return uuid_text(_STEP_IDS.getrandbits(128), 4)


# What ``StepRecord.start`` gives as the record's ``step_id``: drawn the first time it is read.
# Format-3 and format-4 records never store it (their expanded view derives one from the run and
# ``seq``), so a record a sealed-lines store writes never draws one. Compared by identity: a
# string a caller passes is kept as it is.
_UNDRAWN = "".join(("step id ", "not drawn yet"))


# Version of one ledger line; bumped only with a reader for the old form. Format 2 records
# carry the state change they made (``delta``) and their effect's position (``effect_id``).
LEDGER_RECORD_FORMAT = 2


class RunStatus(str, Enum):
    """Where a run is in its life."""

    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and cancelled runs (nothing advances them)."""
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class WaitReason(str, Enum):
    """Why a waiting run waits."""

    EVENT = "event"
    UNTIL = "until"
    USER = "user"
    JOB = "job"
    SUBWORKFLOW = "subworkflow"
    # The run reached its budget (tokens, cost or calls): an operator raises it or stops the run.
    BUDGET = "budget"


class EffectType(str, Enum):
    """The side effects a node may ask the runtime to perform."""

    WAIT_EVENT = "wait_event"
    WAIT_UNTIL = "wait_until"
    ASK_USER = "ask_user"
    WAIT_JOB = "wait_job"
    LLM_CALL = "llm_call"
    TOOL_CALLS = "tool_calls"
    START_SUBWORKFLOW = "start_subworkflow"


class StepStatus(str, Enum):
    """Status of one ledger record."""

    STARTED = "started"
    COMPLETED = "completed"
    WAITING = "waiting"
    FAILED = "failed"


class RecordKind(str, Enum):
    """What a ledger record stands for (our addition to the upstream record)."""

    START = "start"
    NODE = "node"
    EFFECT = "effect"
    RESUME = "resume"
    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"
    RESTORE = "restore"
    EDIT = "edit"
    RETRY = "retry"
    METADATA = "metadata"
    PART = "part"
    CHECKPOINT = "checkpoint"
    SIGNING = "signing"
    # Code-first workflows (abstractruntime.flow): a step or recorded value, a patch marker,
    # and an upgrade to a changed workflow file accepted by replaying the run's history.
    STEP = "step"
    PATCH = "patch"
    UPGRADE = "upgrade"
    # The kernel paused the run (a budget reached, a rate limit to wait out): the whole change is in its delta.
    PAUSE = "pause"
    # Approving or denying tool calls: bound to the calls' hash before any of them runs.
    DECISION = "decision"
    # Closes a sealed segment of a long ledger (a file store's): changes nothing in the run.
    SEGMENT = "segment"


@dataclass(frozen=True)
class Effect:
    """A request for a side effect; the result lands in ``vars[result_key]`` (dotted path)."""

    type: EffectType
    payload: dict[str, Any] = field(default_factory=dict)
    result_key: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form as stored in ledger records."""
        return {"type": EffectType(self.type).value, "payload": self.payload, "result_key": self.result_key}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Effect":
        """Inverse of :meth:`to_dict`."""
        return cls(type=EffectType(data["type"]), payload=dict(data.get("payload") or {}),
                   result_key=data.get("result_key"))


@dataclass(frozen=True)
class StepPlan:
    """What a node handler returns: an effect, a next node, or the run's output."""

    node_id: str
    effect: Optional[Effect] = None
    next_node: Optional[str] = None
    complete_output: Optional[dict[str, Any]] = None


@dataclass
class WaitState:
    """A durable pause. ``until`` is an ISO timestamp (UTC); it is mutable on purpose."""

    reason: WaitReason
    wait_key: Optional[str] = None
    until: Optional[str] = None
    resume_to_node: Optional[str] = None
    result_key: Optional[str] = None
    prompt: Optional[str] = None
    choices: Optional[list[str]] = None
    allow_free_text: bool = True
    details: Optional[dict[str, Any]] = None
    # The wait's identity, from its position: "w<effect ordinal>" (None for waits set by hand).
    wait_id: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the ``waiting`` object of a checkpoint)."""
        return {
            "wait_id": self.wait_id,
            "reason": WaitReason(self.reason).value,
            "wait_key": self.wait_key,
            "until": self.until,
            "resume_to_node": self.resume_to_node,
            "result_key": self.result_key,
            "prompt": self.prompt,
            "choices": list(self.choices) if self.choices is not None else None,
            "allow_free_text": self.allow_free_text,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WaitState":
        """Inverse of :meth:`to_dict` (``ValueError`` naming the field on a wrong type)."""
        if not isinstance(data, dict):
            raise ValueError("waiting must be an object")
        choices = data.get("choices")
        if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
            raise ValueError("waiting.choices must be a list of strings or null")
        for name in ("wait_key", "until", "resume_to_node", "result_key", "prompt", "wait_id"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise ValueError(f"waiting.{name} must be a string or null")
        if data.get("details") is not None and not isinstance(data["details"], dict):
            raise ValueError("waiting.details must be an object or null")
        return cls(
            reason=WaitReason(data["reason"]),
            wait_key=data.get("wait_key"),
            until=data.get("until"),
            resume_to_node=data.get("resume_to_node"),
            result_key=data.get("result_key"),
            prompt=data.get("prompt"),
            choices=data.get("choices"),
            allow_free_text=bool(data.get("allow_free_text", True)),
            details=data.get("details"),
            wait_id=data.get("wait_id"),
        )


@dataclass
class RunState:
    """The durable state of one run: where it is, its variables, its wait or its output."""

    run_id: str
    workflow_id: str
    status: RunStatus
    current_node: str
    vars: dict[str, Any] = field(default_factory=dict)
    waiting: Optional[WaitState] = None
    output: Optional[dict[str, Any]] = None
    error: Optional[str] = None
    created_at: str = field(default_factory=utc_now_iso)
    updated_at: str = field(default_factory=utc_now_iso)
    actor_id: Optional[str] = None
    parent_run_id: Optional[str] = None

    @classmethod
    def new(
        cls,
        *,
        workflow_id: str,
        entry_node: str,
        actor_id: Optional[str] = None,
        vars: Optional[dict[str, Any]] = None,
        parent_run_id: Optional[str] = None,
        run_id: Optional[str] = None,
    ) -> "RunState":
        """A fresh RUNNING run at ``entry_node`` (random uuid4 id unless ``run_id`` is given)."""
        return cls(
            run_id=run_id or uuid4_text(),
            workflow_id=workflow_id,
            status=RunStatus.RUNNING,
            current_node=entry_node,
            vars=vars or {},
            actor_id=actor_id,
            parent_run_id=parent_run_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the ``run`` object of a checkpoint, and ``--json`` output)."""
        return {
            "run_id": self.run_id,
            "workflow_id": self.workflow_id,
            "status": RunStatus(self.status).value,
            "current_node": self.current_node,
            "vars": self.vars,
            "waiting": self.waiting.to_dict() if self.waiting is not None else None,
            "output": self.output,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "actor_id": self.actor_id,
            "parent_run_id": self.parent_run_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunState":
        """Inverse of :meth:`to_dict` (``ValueError`` naming the field on a wrong type)."""
        if not isinstance(data, dict):
            raise ValueError("run must be an object")
        for name in ("run_id", "workflow_id", "current_node"):
            if not isinstance(data.get(name), str):
                raise ValueError(f"run.{name} must be a string")
        if data.get("vars") is not None and not isinstance(data["vars"], dict):
            raise ValueError("run.vars must be an object")
        if data.get("output") is not None and not isinstance(data["output"], dict):
            raise ValueError("run.output must be an object or null")
        waiting = data.get("waiting")
        return cls(
            run_id=data["run_id"],
            workflow_id=data["workflow_id"],
            status=RunStatus(data["status"]),
            current_node=data["current_node"],
            vars=dict(data.get("vars") or {}),
            waiting=WaitState.from_dict(waiting) if waiting else None,
            output=data.get("output"),
            error=data.get("error"),
            created_at=data.get("created_at") or utc_now_iso(),
            updated_at=data.get("updated_at") or utc_now_iso(),
            actor_id=data.get("actor_id"),
            parent_run_id=data.get("parent_run_id"),
        )


class DeferredVars:
    """Variables a :class:`RunState` holds as a snapshot, copied when first read: what a tick
    returns when the runtime keeps the live variables for the run's next tick (a caller that
    never looks at them pays nothing for the copy). ``copy`` makes them; a pickle or a deep copy
    of the state holds the copy itself."""

    __slots__ = ("_copy", "_made", "_lock")

    def __init__(self, copy: Callable[[], dict[str, Any]]) -> None:
        self._copy = copy
        self._made: Optional[dict[str, Any]] = None
        self._lock = threading.Lock()

    def materialize(self) -> dict[str, Any]:
        """The variables: a ``dict`` nothing else holds, made once (threads reading the state for
        the first time at once get the same one, so that none loses what another wrote in it)."""
        made = self._made
        if made is None:
            with self._lock:
                made = self._made
                if made is None:
                    made = self._made = self._copy()
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.materialize(),))


def _get_vars(self: RunState) -> dict[str, Any]:
    own = self.__dict__
    value = own["vars"]
    if value.__class__ is DeferredVars:
        value = own["vars"] = value.materialize()
    return value  # type: ignore[no-any-return]


def _set_vars(self: RunState, value: Any) -> None:
    self.__dict__["vars"] = value


# ``vars`` is a field of the dataclass (its ``__init__``, ``__eq__``, ``fields`` and ``replace``
# see it as one) read through a property, so that a tick may return its snapshot unmade; the
# property keeps the value in the instance's ``__dict__`` under the field's own name, so that
# ``vars(state)["vars"]`` is the variables once read (until then, the snapshot's maker).
RunState.vars = property(_get_vars, _set_vars, doc="The run's variables (a JSON object).")  # type: ignore[assignment]


@dataclass
class StepRecord:
    """One append-only ledger entry.

    ``seq``, ``prev_hash`` and ``record_hash`` are filled by a chained ledger store;
    ``kind`` says what the record stands for (see :class:`RecordKind`).
    """

    run_id: str
    step_id: str
    node_id: str
    status: StepStatus
    effect: Optional[dict[str, Any]] = None
    result: Optional[dict[str, Any]] = None
    error: Optional[str] = None
    started_at: str = field(default_factory=utc_now_iso)
    ended_at: Optional[str] = None
    actor_id: Optional[str] = None
    attempt: int = 1
    idempotency_key: Optional[str] = None
    prev_hash: Optional[str] = None
    record_hash: Optional[str] = None
    signature: Optional[str] = None
    seq: Optional[int] = None
    kind: str = RecordKind.EFFECT.value
    format: int = LEDGER_RECORD_FORMAT
    # The effect's position in the run (its ordinal), on every record of that effect.
    effect_id: Optional[int] = None
    # The state change this record made (see abstractruntime.core.wal); None in format 1.
    delta: Optional[dict[str, Any]] = None
    # Format 3: where an effect's run goes when it completes (on its intent), and when the
    # record was made (one timestamp per record).
    next_node: Optional[str] = None
    at: Optional[str] = None
    # Format 3: named extensions (docs/file-format.md), e.g. ``{"step": {"name", "kind"}}``. Not a
    # dataclass field on purpose: stores written for 0.0.1 keep ``asdict(record)``, and the hash
    # taken over ``to_dict()`` must match it. Written by stores that keep sealed lines.
    ext = None  # type: Optional[dict[str, Any]]

    @classmethod
    def start(
        cls,
        *,
        run: RunState,
        node_id: str,
        effect: Optional[Effect],
        attempt: int = 1,
        idempotency_key: Optional[str] = None,
    ) -> "StepRecord":
        """A STARTED record for ``node_id`` (an effect's intent, or a plain node step)."""
        return cls(
            run_id=run.run_id,
            step_id=_UNDRAWN,
            node_id=node_id,
            status=StepStatus.STARTED,
            effect=effect.to_dict() if effect is not None else None,
            actor_id=run.actor_id,
            attempt=attempt,
            idempotency_key=idempotency_key,
            kind=(RecordKind.EFFECT if effect is not None else RecordKind.NODE).value,
        )

    def finish_success(self, result: Optional[dict[str, Any]] = None) -> "StepRecord":
        """Mark COMPLETED with ``result``; returns self."""
        self.status = StepStatus.COMPLETED
        self.result = result
        self.ended_at = utc_now_iso()
        return self

    def finish_waiting(self, wait_state: WaitState) -> "StepRecord":
        """Mark WAITING with the wait in ``result["wait"]``; returns self."""
        self.status = StepStatus.WAITING
        self.result = {"wait": wait_state.to_dict()}
        self.ended_at = utc_now_iso()
        return self

    def finish_failure(self, error: str) -> "StepRecord":
        """Mark FAILED with ``error``; returns self."""
        self.status = StepStatus.FAILED
        self.error = error
        self.ended_at = utc_now_iso()
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON form (one ledger line, before chaining adds hashes)."""
        return {
            "format": self.format,
            "run_id": self.run_id,
            "step_id": self.step_id,
            "node_id": self.node_id,
            "status": StepStatus(self.status).value,
            "kind": self.kind,
            "effect": self.effect,
            "result": self.result,
            "error": self.error,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "actor_id": self.actor_id,
            "attempt": self.attempt,
            "idempotency_key": self.idempotency_key,
            "seq": self.seq,
            "effect_id": self.effect_id,
            "delta": self.delta,
            "prev_hash": self.prev_hash,
            "record_hash": self.record_hash,
            "signature": self.signature,
            # Always present, as in ``dataclasses.asdict(record)`` (how upstream-style stores keep
            # records): a hash taken over this dict must match one taken over what they store.
            "next_node": self.next_node,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StepRecord":
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        return cls(
            run_id=data["run_id"],
            step_id=data.get("step_id") or _step_id(),
            node_id=data.get("node_id") or "",
            status=StepStatus(data["status"]),
            effect=data.get("effect"),
            result=data.get("result"),
            error=data.get("error"),
            started_at=data.get("started_at") or utc_now_iso(),
            ended_at=data.get("ended_at"),
            actor_id=data.get("actor_id"),
            attempt=int(data.get("attempt", 1)),
            idempotency_key=data.get("idempotency_key"),
            prev_hash=data.get("prev_hash"),
            record_hash=data.get("record_hash"),
            signature=data.get("signature"),
            seq=data.get("seq"),
            kind=data.get("kind") or RecordKind.EFFECT.value,
            format=int(data.get("format") or 1),
            effect_id=data.get("effect_id"),
            delta=data.get("delta"),
            next_node=data.get("next_node"),
            at=data.get("at"),
        )


def _get_step_id(self: StepRecord) -> str:
    own = self.__dict__
    value = own["step_id"]
    if value is _UNDRAWN:
        value = own["step_id"] = _step_id()
    return value  # type: ignore[no-any-return]


def _set_step_id(self: StepRecord, value: str) -> None:
    self.__dict__["step_id"] = value


def _record_state(self: StepRecord) -> dict[str, Any]:
    """What pickling a record keeps: its fields, the step id drawn (the marker is this process's)."""
    _get_step_id(self)
    return dict(self.__dict__)


# ``step_id`` is a field of the dataclass read through a property, like ``RunState.vars``: the
# value lives in the instance's ``__dict__`` under the field's name, and a record made by
# ``start`` draws its id only when something reads it (``to_dict``, ``asdict``, ``==``, ``repr``).
StepRecord.step_id = property(_get_step_id, _set_step_id,  # type: ignore[assignment]
                              doc="The record's id (a version-4 UUID unless one was given).")
StepRecord.__getstate__ = _record_state  # type: ignore[attr-defined]


def new_record(run: RunState, kind: RecordKind, node_id: Optional[str] = None) -> StepRecord:
    """A record of ``kind`` for the run's current node (or ``node_id``)."""
    rec = StepRecord.start(run=run, node_id=node_id or run.current_node, effect=None)
    rec.kind = kind.value
    return rec
