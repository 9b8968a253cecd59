"""In-memory stores: the reference backends for tests and embedding (nothing survives the process).

They honour the same contracts as the file stores (the conformance suite runs against both):
stored objects are copies, the ledger is hash-chained, a per-run lock refuses a second writer.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from typing import Any, Iterator, Optional, Sequence

from ..core.errors import RunLockedError, RunNotFoundError
from ..core.models import RunState, RunStatus, StepRecord, StepStatus, WaitReason
from .base import Checkpoint, LedgerHead, LedgerStore, RunStore
from .ledger_chain import seal_record_line
from ..core.canonical import check_size
from .query import (
    earliest_until_first,
    is_due,
    matches,
    newest_first,
    reason_value,
    status_value,
    timestamp,
)


def _copy_run(run: RunState) -> RunState:
    return RunState.from_dict(copy.deepcopy(run.to_dict()))


class InMemoryRunStore(RunStore):
    """Checkpoints in a dict; queryable; per-run non-blocking locks."""

    def __init__(self) -> None:
        self._checkpoints: dict[str, Checkpoint] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def save(self, run: RunState) -> None:
        """Store a copy of ``run``, keeping existing checkpoint metadata."""
        with self._guard:
            old = self._checkpoints.get(run.run_id)
            self._checkpoints[run.run_id] = Checkpoint(
                run=_copy_run(run),
                ledger=old.ledger if old else LedgerHead(),
                workflow=old.workflow if old else None,
                signature=old.signature if old else None,
                origin=old.origin if old else None,
            )

    def load(self, run_id: str) -> Optional[RunState]:
        """A copy of the stored run, or ``None``."""
        checkpoint = self.load_checkpoint(run_id)
        return checkpoint.run if checkpoint else None

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a copy of the checkpoint."""
        stored = Checkpoint(
            run=_copy_run(checkpoint.run),
            ledger=checkpoint.ledger,
            workflow=copy.deepcopy(checkpoint.workflow),
            signature=copy.deepcopy(checkpoint.signature),
            origin=copy.deepcopy(checkpoint.origin),
            pending=copy.deepcopy(checkpoint.pending),
        )
        with self._guard:
            self._checkpoints[checkpoint.run.run_id] = stored

    def load_checkpoint(self, run_id: str) -> Optional[Checkpoint]:
        """A copy of the stored checkpoint, or ``None``."""
        with self._guard:
            stored = self._checkpoints.get(run_id)
        if stored is None:
            return None
        return Checkpoint(
            run=_copy_run(stored.run),
            ledger=stored.ledger,
            workflow=copy.deepcopy(stored.workflow),
            signature=copy.deepcopy(stored.signature),
            origin=copy.deepcopy(stored.origin),
            pending=copy.deepcopy(stored.pending),
        )

    @contextlib.contextmanager
    def lock(self, run_id: str, *, wait: float = 0.0) -> Iterator[None]:
        """Exclusive access to one run; :class:`RunLockedError` if held (after ``wait`` s)."""
        with self._guard:
            if run_id not in self._checkpoints:
                raise RunNotFoundError(run_id)
            lock = self._locks.setdefault(run_id, threading.Lock())
        if not lock.acquire(timeout=wait) if wait > 0 else not lock.acquire(blocking=False):
            raise RunLockedError(run_id)
        try:
            yield
        finally:
            lock.release()

    def _all(self) -> list[RunState]:
        with self._guard:
            return [_copy_run(c.run) for c in self._checkpoints.values()]

    def list_runs(
        self,
        *,
        status: Optional[RunStatus] = None,
        wait_reason: Optional[WaitReason] = None,
        workflow_id: Optional[str] = None,
        limit: int = 100,
    ) -> list[RunState]:
        """Runs matching the filters, most recently updated first."""
        found = [
            r for r in self._all()
            if matches(r, status=status_value(status), wait_reason=reason_value(wait_reason), workflow_id=workflow_id)
        ]
        return newest_first(found)[: max(limit, 0)]

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> list[RunState]:
        """Due WAITING/UNTIL runs, earliest ``until`` first."""
        now_ts = timestamp(now_iso)
        if now_ts is None:
            raise ValueError(f"now_iso is not an ISO timestamp: {now_iso!r}")
        return earliest_until_first(r for r in self._all() if is_due(r, now_ts))[: max(limit, 0)]

    def list_children(self, *, parent_run_id: str, status: Optional[RunStatus] = None) -> list[RunState]:
        """Child runs of ``parent_run_id``, most recently updated first."""
        found = [r for r in self._all() if matches(r, parent_run_id=parent_run_id, status=status_value(status))]
        return newest_first(found)

    def delete(self, run_id: str) -> bool:
        """Forget a run; ``True`` if it existed."""
        with self._guard:
            return self._checkpoints.pop(run_id, None) is not None


class InMemoryLedgerStore(LedgerStore):
    """A hash-chained ledger per run, in memory, with an O(1) idempotency index."""

    chained = True

    def __init__(self) -> None:
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._completed: dict[tuple[str, str], int] = {}
        self._guard = threading.Lock()

    def append(self, record: StepRecord) -> None:
        """Seal and append one record."""
        self.append_batch([record])

    def append_batch(self, records: Sequence[StepRecord]) -> None:
        """Seal and append records in order."""
        with self._guard:
            # Seal everything first, so a record that cannot be stored leaves nothing behind
            # (as in the file store, which writes a batch with one write).
            heads: dict[str, LedgerHead] = {}
            sealed: list[dict[str, Any]] = []
            for record in records:
                head = heads.get(record.run_id) or self._head_locked(record.run_id)
                doc, line = seal_record_line(record, head=head)
                check_size(line, what=f"Ledger record for node {record.node_id!r}")
                heads[record.run_id] = LedgerHead(doc["seq"], doc["record_hash"])
                sealed.append(doc)
            for doc in sealed:
                rows = self._records.setdefault(doc["run_id"], [])
                rows.append(doc)
                key = doc.get("idempotency_key")
                if key and doc.get("status") == StepStatus.COMPLETED.value:
                    self._completed.setdefault((doc["run_id"], key), len(rows) - 1)

    def list(self, run_id: str) -> list[dict[str, Any]]:
        """Copies of the run's records, oldest first."""
        with self._guard:
            return copy.deepcopy(self._records.get(run_id, []))

    def _head_locked(self, run_id: str) -> LedgerHead:
        rows = self._records.get(run_id)
        if not rows:
            return LedgerHead()
        return LedgerHead(seq=rows[-1]["seq"], head_hash=rows[-1]["record_hash"])

    def head(self, run_id: str) -> LedgerHead:
        """The run's last seq and record hash."""
        with self._guard:
            return self._head_locked(run_id)

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[dict[str, Any]]:
        """O(1): the first completed record with this key."""
        with self._guard:
            index = self._completed.get((run_id, idempotency_key))
            return None if index is None else copy.deepcopy(self._records[run_id][index])
