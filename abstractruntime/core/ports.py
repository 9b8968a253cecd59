"""The kernel's ports: what the runtime needs from a run store and a ledger store.

``RunStore`` and ``LedgerStore`` are small ABCs (upstream-compatible: ``save``/``load`` and
``append``/``list``). The extra methods have working defaults, so a store written for
upstream AbstractRuntime 0.0.1 still plugs in; our stores override them to add checkpoint
metadata, locking, conditional group appends, tail reads and O(1) key lookups.

The ledger is the write-ahead log (docs/durability.md): every record carries the state
change it made, and a :class:`Checkpoint` is a cache of the state at one ledger position.
"""

from __future__ import annotations

import builtins
import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ContextManager, Optional, Protocol, Sequence, runtime_checkable

from .models import RunState, RunStatus, StepRecord, StepStatus, WaitReason

# run.json format 2: adds ledger.offset, effects, metadata, external; format 1 stays readable.
CHECKPOINT_FORMAT = 2
READABLE_CHECKPOINT_FORMATS = (1, 2)


@dataclass(frozen=True)
class LedgerHead:
    """A ledger position: the last record's ``seq`` (0 when empty), its hash, and (files) the
    byte offset just past that record's line, so a reader can start right after it."""

    seq: int = 0
    head_hash: Optional[str] = None
    offset: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        """``{"seq", "head_hash"}`` plus ``offset`` when known."""
        data: dict[str, Any] = {"seq": self.seq, "head_hash": self.head_hash}
        if self.offset is not None:
            data["offset"] = self.offset
        return data

    @classmethod
    def from_dict(cls, data: Optional[dict[str, Any]]) -> "LedgerHead":
        """Inverse of :meth:`to_dict` (``None`` → empty head; ``ValueError`` on bad types)."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise ValueError("ledger position is not an object")
        seq, head_hash, offset = data.get("seq") or 0, data.get("head_hash"), data.get("offset")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError(f"ledger.seq must be a non-negative integer, not {seq!r}")
        if head_hash is not None and not isinstance(head_hash, str):
            raise ValueError("ledger.head_hash must be a string")
        if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool) or offset < 0):
            raise ValueError("ledger.offset must be a non-negative integer")
        return cls(seq=seq, head_hash=head_hash, offset=offset)


@dataclass
class Checkpoint:
    """A run's state as of ledger position ``ledger``, plus what the runtime keeps beside it.

    ``effects`` counts the effects the run has begun (an effect's id is its ordinal);
    ``pending`` is the effect whose intent is durable but whose outcome is not yet recorded;
    ``metadata`` is run-level configuration recorded in the ledger (e.g. the LLM settings the
    CLI reuses); ``workflow`` the workflow's source and sha256; ``origin`` links a fork to its
    source; ``signature`` the signed head. ``external`` marks a state written with
    :meth:`RunStore.save` outside the runtime (0.0.1 code editing a run): the runtime records
    the edit in the ledger the next time it opens the run.
    """

    run: RunState
    ledger: LedgerHead
    workflow: Optional[dict[str, Any]] = None
    signature: Optional[dict[str, Any]] = None
    origin: Optional[dict[str, Any]] = None
    pending: Optional[dict[str, Any]] = None
    effects: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    external: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``run.json``."""
        return {
            "format": CHECKPOINT_FORMAT,
            "run": self.run.to_dict(),
            "ledger": self.ledger.to_dict(),
            "workflow": self.workflow,
            "signature": self.signature,
            "origin": self.origin,
            "pending": self.pending,
            "effects": self.effects,
            "metadata": self.metadata,
            "external": self.external,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Checkpoint":
        """Inverse of :meth:`to_dict`; every field is type-checked (``ValueError`` names it)."""
        if not isinstance(data, dict):
            raise ValueError("checkpoint is not a JSON object")
        run = data.get("run")
        if not isinstance(run, dict):
            raise ValueError("checkpoint.run must be an object")
        for name in ("workflow", "signature", "origin", "pending"):
            if data.get(name) is not None and not isinstance(data[name], dict):
                raise ValueError(f"checkpoint.{name} must be an object or null")
        effects = data.get("effects") or 0
        if not isinstance(effects, int) or isinstance(effects, bool) or effects < 0:
            raise ValueError("checkpoint.effects must be a non-negative integer")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ValueError("checkpoint.metadata must be an object")
        return cls(
            run=RunState.from_dict(run),
            ledger=LedgerHead.from_dict(data.get("ledger")),
            workflow=data.get("workflow"),
            signature=data.get("signature"),
            origin=data.get("origin"),
            pending=data.get("pending"),
            effects=effects,
            metadata=metadata,
            external=bool(data.get("external", False)),
        )


class RunStore(ABC):
    """Where run checkpoints live."""

    @abstractmethod
    def save(self, run: RunState) -> None:
        """Persist ``run`` (keeping any checkpoint metadata already stored for it)."""

    @abstractmethod
    def load(self, run_id: str) -> Optional[RunState]:
        """The run, or ``None`` if unknown."""

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Persist a checkpoint; stores without metadata support keep just the run."""
        self.save(checkpoint.run)

    def load_checkpoint(self, run_id: str) -> Optional[Checkpoint]:
        """The checkpoint, or ``None``; stores without metadata report an untracked head."""
        run = self.load(run_id)
        return None if run is None else Checkpoint(run=run, ledger=LedgerHead())

    def lock(self, run_id: str, *, wait: float = 0.0, create: bool = False) -> ContextManager[Any]:
        """Exclusive access to one run for tick/resume/cancel (default: no locking).

        ``create=True`` is used by ``start``: the run need not exist yet, and the lock makes
        creating it exclusive.
        """
        return contextlib.nullcontext()


@runtime_checkable
class QueryableRunStore(Protocol):
    """A run store that can answer the scheduler's and the CLI's questions.

    One optional method, deliberately not a member of this Protocol (a store written for
    upstream 0.0.1 must still pass ``isinstance``)::

        def list_waiting_on(self, wait_key: str, *, limit: int = 1000) -> list[RunState]:
            '''WAITING runs whose ``waiting.wait_key == wait_key``, least recently updated first.'''

    Every store abstractruntime ships answers it from an index. Callers use
    ``abstractruntime.storage.query.waiting_on(run_store, wait_key, limit)``, which calls it
    when present and otherwise filters ``list_runs(status=WAITING)``.
    """

    def list_runs(
        self,
        *,
        status: Optional[RunStatus] = None,
        wait_reason: Optional[WaitReason] = None,
        workflow_id: Optional[str] = None,
        limit: int = 100,
    ) -> list[RunState]:
        """Runs matching all given filters, most recently updated first."""
        ...

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> list[RunState]:
        """WAITING runs with reason UNTIL whose ``until`` <= ``now_iso``, earliest first."""
        ...

    def list_children(self, *, parent_run_id: str, status: Optional[RunStatus] = None) -> list[RunState]:
        """Runs whose ``parent_run_id`` is the given run."""
        ...


class LedgerStore(ABC):
    """An append-only journal of step records, per run."""

    @abstractmethod
    def append(self, record: StepRecord) -> None:
        """Append one record."""

    @abstractmethod
    def list(self, run_id: str) -> list[dict[str, Any]]:
        """All records of a run, oldest first, as dicts."""

    def append_batch(self, records: Sequence[StepRecord]) -> None:
        """Append several records; file stores make them durable with one write and one fsync.

        Records whose ``seq`` is already set must land exactly there: a store that finds its
        head elsewhere raises :class:`~abstractruntime.core.errors.CorruptRecordError` and
        writes nothing (another writer moved the ledger).
        """
        for record in records:
            self.append(record)

    def head(self, run_id: str) -> LedgerHead:
        """The ledger's current head (stores without seq report an empty head)."""
        records = self.list(run_id)
        if not records:
            return LedgerHead()
        last = records[-1]
        return LedgerHead(seq=int(last.get("seq") or len(records)), head_hash=last.get("record_hash"))

    def read_after(self, run_id: str, position: LedgerHead, *,
                   until_seq: Optional[int] = None) -> tuple[LedgerHead, builtins.list[dict[str, Any]]]:
        """The records after ``position`` (up to ``until_seq``) and the ledger's head (default: a full read).

        File stores seek to ``position.offset``; the first record read must continue the
        chain from ``position`` or the whole ledger is read instead.
        """
        records = self.list(run_id)
        tail = [r for r in records if isinstance(r.get("seq"), int) and r["seq"] > position.seq
                and (until_seq is None or r["seq"] <= until_seq)]
        if not records:
            return LedgerHead(), []
        last = records[-1]
        seq: Any = last.get("seq") if isinstance(last.get("seq"), int) else len(records)
        return LedgerHead(seq=seq, head_hash=last.get("record_hash")), tail

    def put_anchor(self, run_id: str, anchor: dict[str, Any]) -> None:  # noqa: B027 - optional; keeping none is valid
        """Keep a redacted state at a ledger position, so past states rebuild from near them.

        ``anchor`` is ``{"seq", "head_hash", "offset", "checkpoint"}``. A cache: losing one
        only makes :meth:`~abstractruntime.core.runtime.Runtime.state_at` replay further.
        The default keeps none.
        """

    def find_anchor(self, run_id: str, seq: int) -> Optional[dict[str, Any]]:
        """The kept anchor with the highest ``seq`` not after ``seq`` (default: none)."""
        return None

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[dict[str, Any]]:
        """The first COMPLETED record with this idempotency key, or ``None`` (default: a scan)."""
        for record in self.list(run_id):
            if record.get("idempotency_key") == idempotency_key and record.get("status") == StepStatus.COMPLETED.value:
                return record
        return None

    def put_secrets(self, run_id: str, entries: Sequence[dict[str, Any]]) -> None:
        """Keep the real values the ledger's records redacted (never hashed; see docs/provenance.md).

        Each entry is ``{"record_hash", "field", "path", "value"}``. The default keeps them
        in this process only; file stores write ``runs/<id>/secrets.jsonl`` (0600) durably
        before the records that need them.
        """
        kept: dict[str, list[dict[str, Any]]] = self.__dict__.setdefault("_secrets_in_memory", {})
        kept.setdefault(run_id, []).extend(dict(e) for e in entries)

    def get_secrets(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """The entries :meth:`put_secrets` kept for the run (oldest first)."""
        kept: dict[str, list[dict[str, Any]]] = self.__dict__.get("_secrets_in_memory", {})
        return list(kept.get(run_id, []))

    def prune_secrets(self, run_id: str, *, through_seq: int) -> None:
        """Forget kept values of records up to ``through_seq``: a checkpoint now holds the state
        they were needed to rebuild, so secrets stay on disk only inside the recovery window."""
        kept: dict[str, list[dict[str, Any]]] = self.__dict__.get("_secrets_in_memory", {})
        if run_id in kept:
            kept[run_id] = [e for e in kept[run_id] if int(e.get("seq") or 0) > through_seq]
