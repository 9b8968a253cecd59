"""Storage Protocols: what the runtime needs from a run store and a ledger store.

``RunStore`` and ``LedgerStore`` are small ABCs (upstream-compatible: ``save``/``load`` and
``append``/``list``). The extra methods have working defaults, so a store written for
upstream AbstractRuntime 0.0.1 still plugs in; our stores override them to add
checkpoint metadata, locking, group commit and O(1) idempotency lookups.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ContextManager, Optional, Protocol, Sequence, runtime_checkable

from ..core.models import RunState, RunStatus, StepRecord, StepStatus, WaitReason

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class LedgerHead:
    """The position of a ledger: the last record's ``seq`` (0 when empty) and its hash."""

    seq: int = 0
    head_hash: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """``{"seq": ..., "head_hash": ...}``."""
        return {"seq": self.seq, "head_hash": self.head_hash}

    @classmethod
    def from_dict(cls, data: Optional[dict[str, Any]]) -> "LedgerHead":
        """Inverse of :meth:`to_dict` (``None`` → empty head)."""
        if not data:
            return cls()
        return cls(seq=int(data.get("seq") or 0), head_hash=data.get("head_hash"))


@dataclass
class Checkpoint:
    """A run's state plus what it reflects: the ledger head and the workflow source.

    ``signature`` is an optional signed head (see :mod:`abstractruntime.storage.signing`);
    ``origin`` links a forked run to its source run and snapshot. ``pending`` is the effect
    a node asked for, recorded with its intent before the handler runs: after a crash the
    runtime performs (or reuses) that effect instead of running the node body again.
    """

    run: RunState
    ledger: LedgerHead
    workflow: Optional[dict[str, Any]] = None
    signature: Optional[dict[str, Any]] = None
    origin: Optional[dict[str, Any]] = None
    pending: Optional[dict[str, Any]] = None

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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Checkpoint":
        """Inverse of :meth:`to_dict` (``KeyError``/``ValueError`` on a malformed document)."""
        return cls(
            run=RunState.from_dict(data["run"]),
            ledger=LedgerHead.from_dict(data.get("ledger")),
            workflow=data.get("workflow"),
            signature=data.get("signature"),
            origin=data.get("origin"),
            pending=data.get("pending"),
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

    def lock(self, run_id: str, *, wait: float = 0.0) -> ContextManager[Any]:
        """Exclusive access to one run for tick/resume/cancel (default: no locking)."""
        return contextlib.nullcontext()


@runtime_checkable
class QueryableRunStore(Protocol):
    """A run store that can answer the scheduler's and the CLI's questions."""

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
        """Append several records; file stores make them durable with one fsync."""
        for record in records:
            self.append(record)

    def head(self, run_id: str) -> LedgerHead:
        """The ledger's current head (stores without seq report an empty head)."""
        records = self.list(run_id)
        if not records:
            return LedgerHead()
        last = records[-1]
        return LedgerHead(seq=int(last.get("seq") or len(records)), head_hash=last.get("record_hash"))

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[dict[str, Any]]:
        """The first COMPLETED record with this idempotency key, or ``None`` (default: a scan)."""
        for record in self.list(run_id):
            if record.get("idempotency_key") == idempotency_key and record.get("status") == StepStatus.COMPLETED.value:
                return record
        return None
