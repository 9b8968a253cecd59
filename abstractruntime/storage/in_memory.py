"""In-memory stores: the reference backends for tests and embedding (nothing survives the process).

They honour the same contracts as the file stores (the conformance suite runs against both):
stored objects are copies, the ledger is hash-chained, a per-run lock refuses a second writer.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import threading
from typing import Any, Iterator, Optional, Sequence

from ..core.errors import LedgerConflictError, RunLockedError, RunNotFoundError
from ..core.models import RunState, RunStatus, StepRecord, StepStatus, WaitReason
from .base import Checkpoint, LedgerHead, LedgerStore, RunStore
from .ledger_chain import seal_record_line
from ..core.canonical import check_size
from .query import (
    earliest_until_first,
    is_due,
    is_waiting_on,
    matches,
    newest_first,
    oldest_first,
    reason_value,
    status_value,
    timestamp,
)


def _copy_run(run: RunState) -> RunState:
    return RunState.from_dict(copy.deepcopy(run.to_dict()))


def _copy_checkpoint(checkpoint: Checkpoint, **changes: Any) -> Checkpoint:
    data: dict[str, Any] = {
        "run": _copy_run(checkpoint.run),
        "ledger": checkpoint.ledger,
        "workflow": copy.deepcopy(checkpoint.workflow),
        "signature": copy.deepcopy(checkpoint.signature),
        "origin": copy.deepcopy(checkpoint.origin),
        "pending": copy.deepcopy(checkpoint.pending),
        "effects": checkpoint.effects,
        "metadata": copy.deepcopy(checkpoint.metadata),
        "external": checkpoint.external,
    }
    data.update(changes)
    return Checkpoint(**data)


class InMemoryRunStore(RunStore):
    """Checkpoints in a dict; queryable; per-run non-blocking locks."""

    def __init__(self) -> None:
        self._checkpoints: dict[str, Checkpoint] = {}
        self._versions: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def save(self, run: RunState) -> None:
        """Store a copy of ``run`` as edited outside the runtime, keeping checkpoint metadata.

        The runtime records such an edit in the ledger the next time it opens the run.
        """
        with self._guard:
            old = self._checkpoints.get(run.run_id)
            base = old if old is not None else Checkpoint(run=run, ledger=LedgerHead())
            self._checkpoints[run.run_id] = _copy_checkpoint(base, run=_copy_run(run), external=True)
            self._versions[run.run_id] = self._versions.get(run.run_id, 0) + 1

    def load(self, run_id: str) -> Optional[RunState]:
        """A copy of the stored run, or ``None``."""
        checkpoint = self.load_checkpoint(run_id)
        return checkpoint.run if checkpoint else None

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a copy of the checkpoint."""
        stored = _copy_checkpoint(checkpoint)
        with self._guard:
            self._checkpoints[checkpoint.run.run_id] = stored
            self._versions[checkpoint.run.run_id] = self._versions.get(checkpoint.run.run_id, 0) + 1

    def checkpoint_token(self, run_id: str) -> int:
        """A counter that every save of the run moves."""
        with self._guard:
            return self._versions.get(run_id, 0)

    def load_checkpoint(self, run_id: str) -> Optional[Checkpoint]:
        """A copy of the stored checkpoint, or ``None``."""
        with self._guard:
            stored = self._checkpoints.get(run_id)
        return None if stored is None else _copy_checkpoint(stored)

    @contextlib.contextmanager
    def lock(self, run_id: str, *, wait: float = 0.0, create: bool = False) -> Iterator[None]:
        """Exclusive access to one run; :class:`RunLockedError` if held (after ``wait`` s).

        ``create=True`` (used by ``start``) locks an id that has no run yet.
        """
        with self._guard:
            if run_id not in self._checkpoints and not create:
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

    def list_waiting_on(self, wait_key: str, *, limit: int = 1000) -> list[RunState]:
        """WAITING runs whose wait is on ``wait_key``, least recently updated first."""
        return oldest_first(r for r in self._all() if is_waiting_on(r, wait_key))[: max(limit, 0)]

    def list_children(self, *, parent_run_id: str, status: Optional[RunStatus] = None) -> list[RunState]:
        """Child runs of ``parent_run_id``, most recently updated first."""
        found = [r for r in self._all() if matches(r, parent_run_id=parent_run_id, status=status_value(status))]
        return newest_first(found)

    def delete(self, run_id: str) -> bool:
        """Forget a run; ``True`` if it existed."""
        with self._guard:
            self._versions[run_id] = self._versions.get(run_id, 0) + 1
            return self._checkpoints.pop(run_id, None) is not None


class InMemoryLedgerStore(LedgerStore):
    """A ledger per run, in memory, with an O(1) idempotency index.

    As in upstream 0.0.1, records carry no hash chain on their own (``record_hash`` stays
    ``None``); wrap the store in :class:`~abstractruntime.storage.ledger_chain.HashChainedLedgerStore`
    to chain it, or pass ``chained=True``.
    """

    def __init__(self, *, chained: bool = False) -> None:
        self.chained = chained
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._completed: dict[tuple[str, str], int] = {}
        self._guard = threading.Lock()

    def append(self, record: StepRecord) -> None:
        """Append one record (sealed here unless the caller already sealed it)."""
        self.append_batch([record])

    def append_batch(self, records: Sequence[StepRecord]) -> None:
        """Append records in order, all or nothing."""
        with self._guard:
            heads: dict[str, LedgerHead] = {}
            sealed: list[dict[str, Any]] = []
            for record in records:
                head = heads.get(record.run_id) or self._head_locked(record.run_id)
                if record.seq == head.seq + 1 and (record.record_hash or not self.chained):
                    doc = record.to_dict()
                else:
                    doc, line = seal_record_line(record, head=head, chained=self.chained)
                    check_size(line, what=f"Ledger record for node {record.node_id!r}")
                heads[record.run_id] = LedgerHead(doc["seq"], doc["record_hash"])
                sealed.append(doc)
            self._store_locked(sealed)

    def append_lines(self, run_id: str, docs: Sequence[dict[str, Any]], lines: Sequence[bytes],
                     *, expect: LedgerHead) -> LedgerHead:
        """Conditional group append of sealed records: nothing is stored unless the head is ``expect``."""
        with self._guard:
            head = self._head_locked(run_id)
            if head.seq != expect.seq or head.head_hash != expect.head_hash:
                raise LedgerConflictError(f"run {run_id}: the ledger is at seq {head.seq}, not {expect.seq} "
                                          "as this writer read it; nothing was written")
            self._store_locked([copy.deepcopy(dict(d)) for d in docs])
            return self._head_locked(run_id)

    def _store_locked(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            rows = self._records.setdefault(doc["run_id"], [])
            rows.append(doc)
            key = doc.get("idempotency_key")
            if key and doc.get("status") == StepStatus.COMPLETED.value:
                self._completed.setdefault((doc["run_id"], key), len(rows) - 1)

    def list(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """Copies of the run's records, oldest first."""
        with self._guard:
            return copy.deepcopy(self._records.get(run_id, []))

    def position_token(self, run_id: str) -> tuple[int, int]:
        """``(id of the run's list, its length)``: changes with every append."""
        with self._guard:
            rows = self._records.get(run_id)
            return (id(rows), len(rows)) if rows is not None else (0, 0)

    def read_after(self, run_id: str, position: LedgerHead, *,
                   until_seq: Optional[int] = None) -> tuple[LedgerHead, builtins.list[dict[str, Any]]]:
        """Copies of the records after ``position`` (up to ``until_seq``) and the current head."""
        with self._guard:
            rows = self._records.get(run_id, [])
            end = len(rows) if until_seq is None else min(until_seq, len(rows))
            tail = copy.deepcopy(rows[position.seq:end]) if position.seq <= len(rows) else []
            return self._head_locked(run_id), tail

    def _head_locked(self, run_id: str) -> LedgerHead:
        rows = self._records.get(run_id)
        if not rows:
            return LedgerHead()
        return LedgerHead(seq=rows[-1]["seq"] or len(rows), head_hash=rows[-1].get("record_hash"))

    def head(self, run_id: str) -> LedgerHead:
        """The run's last seq and record hash."""
        with self._guard:
            return self._head_locked(run_id)

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[dict[str, Any]]:
        """O(1): the first completed record with this key."""
        with self._guard:
            index = self._completed.get((run_id, idempotency_key))
            return None if index is None else copy.deepcopy(self._records[run_id][index])
