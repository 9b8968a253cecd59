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

from ..core.fastclass import dataclass

from ..core.errors import LedgerConflictError, RunLockedError, RunNotFoundError
from ..core.markers import stored_run
from ..core.models import RunState, RunStatus, StepRecord, StepStatus, WaitReason
from ..core.ports import Capability, StoredCheckpoint
from ..core.records import JCS_FORMATS, expand_records
from .base import LedgerHead, LedgerStore, RunStore
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


@dataclass
class _Kept:
    """One run's stored checkpoint document and the run as readers see it."""

    document: dict[str, Any]
    view: RunState
    external: bool = False


class InMemoryRunStore(RunStore):
    """Checkpoints in a dict; queryable; per-run non-blocking locks.

    ``save(run)`` (upstream 0.0.1's way of editing a run) keeps the state as an *external* edit
    the runtime records in the ledger the next time it opens the run: this store has no ledger
    of its own to record it in, and lives only in this process.
    """

    capabilities = frozenset({Capability.CHECKPOINTS, Capability.LOCKS, Capability.CHECKPOINT_TOKENS,
                              Capability.QUERIES, Capability.WAITING_ON})

    def __init__(self) -> None:
        self._checkpoints: dict[str, _Kept] = {}
        self._versions: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def save(self, run: RunState) -> None:
        """Keep a copy of ``run`` as edited outside the runtime (recorded at the run's next open)."""
        with self._guard:
            old = self._checkpoints.get(run.run_id)
            document = copy.deepcopy(old.document) if old is not None else {
                "format": 3, "state": {"run": stored_run(run.to_dict()), "kernel": {}}, "ledger": {"seq": 0, "head_hash": None}}
            self._checkpoints[run.run_id] = _Kept(document, _copy_run(run), external=True)
            self._versions[run.run_id] = self._versions.get(run.run_id, 0) + 1

    def load(self, run_id: str) -> Optional[RunState]:
        """A copy of the stored run as readers see it, or ``None``."""
        with self._guard:
            kept = self._checkpoints.get(run_id)
            return _copy_run(kept.view) if kept is not None else None

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Keep a copy of the checkpoint document and of the run as readers see it."""
        kept = _Kept(copy.deepcopy(checkpoint.to_dict()), _copy_run(checkpoint.run_view()))
        with self._guard:
            self._checkpoints[checkpoint.run_id] = kept
            self._versions[checkpoint.run_id] = self._versions.get(checkpoint.run_id, 0) + 1

    def checkpoint_token(self, run_id: str) -> int:
        """A counter that every save of the run moves."""
        with self._guard:
            return self._versions.get(run_id, 0)

    def written_token(self, run_id: str) -> None:
        """Not known without asking (:meth:`checkpoint_token`)."""
        return None

    def load_checkpoint(self, run_id: str) -> Optional[StoredCheckpoint]:
        """A copy of the stored checkpoint, or ``None``."""
        with self._guard:
            kept = self._checkpoints.get(run_id)
            if kept is None:
                return None
            stored = StoredCheckpoint.from_dict(copy.deepcopy(kept.document))
            if kept.external:
                stored.external = True
                view = _copy_run(kept.view)
                stored.view = lambda: view
            return stored

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
            return [_copy_run(c.view) for c in self._checkpoints.values()]

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
        self.capabilities = frozenset({Capability.SEALED_LINES, Capability.POSITION_TOKENS}
                                      | ({Capability.CHAINED} if chained else set()))
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._completed: dict[tuple[str, str], int] = {}
        self._intent_keys: dict[tuple[str, int], str] = {}
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
            for doc in sealed:
                self._store_locked(doc["run_id"], [doc])

    def append_lines(self, run_id: str, docs: Sequence[dict[str, Any]], lines: Sequence[bytes],
                     *, expect: LedgerHead) -> LedgerHead:
        """Conditional group append of sealed records: nothing is stored unless the head is ``expect``."""
        with self._guard:
            head = self._head_locked(run_id)
            if head.seq != expect.seq or head.head_hash != expect.head_hash:
                raise LedgerConflictError(f"run {run_id}: the ledger is at seq {head.seq}, not {expect.seq} "
                                          "as this writer read it; nothing was written")
            self._store_locked(run_id, [copy.deepcopy(dict(d)) for d in docs])
            return self._head_locked(run_id)

    def _store_locked(self, run_id: str, docs: list[dict[str, Any]]) -> None:
        rows = self._records.setdefault(run_id, [])
        for doc in docs:
            rows.append(doc)
            key, effect_id = doc.get("idempotency_key"), doc.get("effect_id")
            if doc.get("format") in JCS_FORMATS and isinstance(effect_id, int):
                if key and doc.get("status") == StepStatus.STARTED.value:
                    self._intent_keys[(run_id, effect_id)] = key
                elif key is None and doc.get("kind") == "effect":
                    key = self._intent_keys.get((run_id, effect_id))
            if key and doc.get("status") == StepStatus.COMPLETED.value:
                self._completed.setdefault((run_id, key), len(rows) - 1)

    def list(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """The run's records, oldest first, expanded as upstream 0.0.1 code reads them."""
        return expand_records(self.stored(run_id), run_id)

    def stored(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """Copies of the run's records exactly as stored, oldest first."""
        with self._guard:
            return copy.deepcopy(self._records.get(run_id, []))

    def position_token_at(self, run_id: str, head: LedgerHead) -> None:
        """Not known without looking: ``None`` (ask :meth:`position_token`)."""
        return None

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
