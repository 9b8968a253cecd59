"""One locked run being advanced: its checkpoint, the records not yet durable, and commit.

Group commit lives here: pure steps queue records with :meth:`RunSession.record`;
:meth:`RunSession.commit` appends them with one fsync and then replaces the checkpoint that
reflects them; :meth:`RunSession.append_now` makes an effect's records durable at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..storage.base import Checkpoint
from .canonical import canonical_json
from .models import RecordKind, RunState, RunStatus, StepRecord

if TYPE_CHECKING:
    from .runtime import Runtime


class RunSession:
    """One locked run being advanced: its checkpoint and the records not yet committed."""

    def __init__(self, runtime: "Runtime", checkpoint: Checkpoint) -> None:
        self.rt = runtime
        self.checkpoint = checkpoint
        self.pending: list[StepRecord] = []
        # True when the run changed since the checkpoint was last written.
        self.dirty = False
        # Nodes run since the last commit (named when their state cannot be stored).
        self.uncommitted_nodes: list[str] = []

    @property
    def run(self) -> RunState:
        return self.checkpoint.run

    def record(self, rec: StepRecord) -> StepRecord:
        """Redact and queue ``rec``; it becomes durable at the next :meth:`commit`."""
        self.pending.append(self.rt.redact_record(rec))
        self.dirty = True
        return rec

    def append_now(self, rec: StepRecord) -> None:
        """Make ``rec`` (and anything queued before it) durable now, without a checkpoint."""
        self.pending.append(self.rt.redact_record(rec))
        self.dirty = True
        self.rt.ledger_store.append_batch(self.pending)
        self.pending = []

    def commit(self) -> None:
        """Ledger first (one batch, one fsync), then the checkpoint that reflects it.

        The run state is encoded before anything is written, so state that cannot be
        stored (non-JSON vars) raises before the ledger moves. The checkpoint itself has no
        size limit; single ledger records do.
        """
        run = self.run
        run.updated_at = self.rt.now().isoformat()
        canonical_json(run.to_dict())  # refuses non-JSON state before anything is written
        if self.pending:
            self.rt.ledger_store.append_batch(self.pending)
            self.pending = []
        self.checkpoint.ledger = self.rt.ledger_store.head(run.run_id)
        signer = self.rt.signer
        if signer is not None:
            self.checkpoint.signature = signer.sign_head(
                run_id=run.run_id, seq=self.checkpoint.ledger.seq, head_hash=self.checkpoint.ledger.head_hash)
        self.rt.run_store.save_checkpoint(self.checkpoint)
        self.dirty = False
        self.uncommitted_nodes = []


def fail_run(session: RunSession, node_id: str, message: str, *, exception_type: Optional[str] = None) -> None:
    """Fail the run with ``message`` and queue the ``fail`` record naming the node."""
    run = session.run
    rec = StepRecord.start(run=run, node_id=node_id, effect=None)
    rec.kind = RecordKind.FAIL.value
    rec.finish_failure(message)
    rec.result = {"exception_type": exception_type} if exception_type else None
    session.record(rec)
    run.status, run.error, run.waiting = RunStatus.FAILED, message, None


def set_nested(target: dict[str, Any], dotted_key: str, value: Any) -> None:
    """``target[a][b] = value`` for ``"a.b"``, creating dicts on the way."""
    parts = dotted_key.split(".")
    cur = target
    for part in parts[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    cur[parts[-1]] = value
