"""The hash chain for any ledger store: :class:`HashChainedLedgerStore` (upstream 0.0.1 name).

Sealing and chain verification are pure functions of :mod:`abstractruntime.core.chain`,
re-exported here under their 0.0.1 import path.
"""

from __future__ import annotations

import builtins
import threading
from typing import Any, Collection, Optional, Sequence

from ..core.chain import GENESIS_PREV_HASH, seal_record, seal_record_line, verify_ledger_chain
from ..core.models import StepRecord
from ..core.ports import Capability, LedgerHead, LedgerStore, has_capability

__all__ = ["GENESIS_PREV_HASH", "HashChainedLedgerStore", "seal_record", "seal_record_line", "verify_ledger_chain"]


class HashChainedLedgerStore(LedgerStore):
    """Adds the hash chain to any :class:`LedgerStore`.

    Our file ledger chains natively (``chained = True``); wrapping it simply delegates, so
    ``HashChainedLedgerStore(JsonlLedgerStore(d))`` works as in upstream. Records the runtime
    already sealed (``record_hash`` set) pass through unchanged.
    """

    chained = True

    def __init__(self, inner: LedgerStore) -> None:
        self._inner = inner
        self._native = has_capability(inner, Capability.CHAINED)
        # What this wrapper does is what its inner store does, plus the chain; sealed lines only
        # pass through when the inner store keeps them (it then chains them as sealed).
        self.capabilities = inner.capabilities | {Capability.CHAINED}
        self._heads: dict[str, LedgerHead] = {}
        self._lock = threading.Lock()

    @property
    def inner(self) -> LedgerStore:
        """The wrapped store."""
        return self._inner

    def _head(self, run_id: str) -> LedgerHead:
        if run_id not in self._heads:
            self._heads[run_id] = self._inner.head(run_id)
        return self._heads[run_id]

    def append(self, record: StepRecord) -> None:
        """Chain ``record`` onto the run's head, then append it to the inner store."""
        if self._native:
            self._inner.append(record)
            return
        with self._lock:
            head = self._head(record.run_id)
            if not (record.record_hash and record.seq == head.seq + 1 and record.prev_hash == head.head_hash):
                seal_record(record, head=head)
            self._inner.append(record)
            self._heads[record.run_id] = LedgerHead(int(record.seq or 0), record.record_hash)

    def append_batch(self, records: Sequence[StepRecord]) -> None:
        """Append several records in order."""
        if self._native:
            self._inner.append_batch(records)
            return
        for record in records:
            self.append(record)

    def append_lines(self, run_id: str, docs: Sequence[dict[str, Any]], lines: Sequence[bytes],
                     *, expect: LedgerHead) -> LedgerHead:
        """Conditional group append of sealed records (delegated when the inner store has it)."""
        if has_capability(self._inner, Capability.SEALED_LINES):
            head: LedgerHead = self._inner.append_lines(run_id, docs, lines, expect=expect)  # type: ignore[attr-defined]
            with self._lock:
                self._heads[run_id] = LedgerHead(head.seq, head.head_hash)
            return head
        for doc in docs:
            self.append(StepRecord.from_dict(doc))
        return self.head(run_id)

    def list(self, run_id: str) -> list[dict[str, Any]]:
        """The inner store's records."""
        return self._inner.list(run_id)

    def stored(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """The inner store's records as stored."""
        return self._inner.stored(run_id)

    def record_at(self, run_id: str, position: LedgerHead) -> Optional[dict[str, Any]]:
        """Delegates to the inner store."""
        return self._inner.record_at(run_id, position)

    def records_at(self, run_id: str,
                   positions: Sequence[tuple[int, Optional[int]]]) -> builtins.list[dict[str, Any]]:
        """Delegates to the inner store."""
        return self._inner.records_at(run_id, positions)

    def position_token(self, run_id: str) -> Any:
        """Delegates to the inner store (declared only when it declares ``POSITION_TOKENS``)."""
        return self._inner.position_token(run_id)  # type: ignore[attr-defined]

    def position_token_at(self, run_id: str, head: LedgerHead) -> Any:
        """Delegates to the inner store."""
        return self._inner.position_token_at(run_id, head)  # type: ignore[attr-defined]

    def segment_due(self, run_id: str) -> Optional[dict[str, Any]]:
        """Delegates to the inner store (declared only when it declares ``SEGMENTS``)."""
        due: Optional[dict[str, Any]] = self._inner.segment_due(run_id)  # type: ignore[attr-defined]
        return due

    def seal_segment(self, run_id: str) -> bool:
        """Delegates to the inner store."""
        return bool(self._inner.seal_segment(run_id))  # type: ignore[attr-defined]

    def peek_head(self, run_id: str) -> LedgerHead:
        """Delegates to the inner store."""
        head: LedgerHead = self._inner.peek_head(run_id)  # type: ignore[attr-defined]
        return head

    def head(self, run_id: str) -> LedgerHead:
        """The chained head."""
        if self._native:
            return self._inner.head(run_id)
        with self._lock:
            return self._head(run_id)

    def read_after(self, run_id: str, position: LedgerHead, *,
                   until_seq: Optional[int] = None) -> tuple[LedgerHead, builtins.list[dict[str, Any]]]:
        """Delegates to the inner store."""
        return self._inner.read_after(run_id, position, until_seq=until_seq)

    def put_anchor(self, run_id: str, anchor: dict[str, Any]) -> None:
        """Delegates to the inner store."""
        self._inner.put_anchor(run_id, anchor)

    def find_anchor(self, run_id: str, seq: int) -> Optional[dict[str, Any]]:
        """Delegates to the inner store."""
        return self._inner.find_anchor(run_id, seq)

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[dict[str, Any]]:
        """Delegates to the inner store's lookup."""
        return self._inner.find_completed(run_id, idempotency_key)

    def put_secrets(self, run_id: str, entries: Sequence[dict[str, Any]]) -> None:
        """Delegates to the inner store."""
        self._inner.put_secrets(run_id, entries)

    def get_secrets(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """Delegates to the inner store."""
        return self._inner.get_secrets(run_id)

    def retain_secrets(self, run_id: str, commitments: Collection[str]) -> None:
        """Delegates to the inner store."""
        self._inner.retain_secrets(run_id, commitments)

    def runs_keeping_secrets(self) -> builtins.list[str]:
        """Delegates to the inner store."""
        return self._inner.runs_keeping_secrets()
