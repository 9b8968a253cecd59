"""One locked run being advanced: its state, the records not yet durable, and group commit.

:meth:`RunSession.record` turns a step into a sealed ledger line at once (the state change it
made, redacted, hashed), so later mutations of the run cannot leak into it.
:meth:`RunSession.flush` makes every queued line durable with one write and one fsync —
the result of effect *k*, the pure steps after it and the intent of effect *k+1* share one
batch. The checkpoint (``run.json``) is a cache of the state at a ledger position: it is
written when it pays (:meth:`RunSession.finish`), never per effect; a missing or older one
is rebuilt from the ledger. See docs/durability.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .canonical import check_size
from .chain import attach_signature, seal_record_line
from .clock import Clock
from .errors import LedgerConflictError
from .models import RecordKind, RunState, RunStatus, StepRecord
from .ports import Checkpoint, LedgerHead, LedgerStore, RunStore
from .redaction import REDACTED, Redactor
from .wal import DeltaTracker, secret_key

# A checkpoint is written at least every CHECKPOINT_EVERY records or CHECKPOINT_BYTES bytes
# of ledger, so recovery replays a bounded tail (docs/performance.md has the measurements).
CHECKPOINT_EVERY = 512
CHECKPOINT_BYTES = 1 << 20
# Every ANCHOR_EVERY records a redacted copy of the state is kept beside the ledger, so a
# past state (state_at, --at) is rebuilt from the nearest anchor instead of from the start.
ANCHOR_EVERY = 1024


@dataclass
class StorePorts:
    """What a session writes to, handed over explicitly by the runtime."""

    runs: RunStore
    ledger: LedgerStore
    redactor: Redactor
    clock: Clock
    signer: Optional[Any] = None


class RunSession:
    """One locked run being advanced: its checkpoint and the records not yet durable."""

    def __init__(self, ports: StorePorts, checkpoint: Checkpoint, *, durable_head: Optional[LedgerHead] = None,
                 saved_head: Optional[LedgerHead] = None) -> None:
        self.ports = ports
        self.checkpoint = checkpoint
        self.chained = bool(getattr(ports.ledger, "chained", False))
        # The ledger head including queued records, and the head that is on disk.
        self.head = durable_head if durable_head is not None else checkpoint.ledger
        self.durable = self.head
        # The head the stored checkpoint reflects (None: no checkpoint stored yet).
        self.saved = saved_head
        self.saved_status: Optional[RunStatus] = checkpoint.run.status if saved_head is not None else None
        self.tracker = DeltaTracker(checkpoint)
        self._docs: list[dict[str, Any]] = []
        self._lines: list[bytes] = []
        self._secrets: list[dict[str, Any]] = []
        # Nodes run since the last durable record (named when their state cannot be stored).
        self.uncommitted_nodes: list[str] = []
        # True while an edit written outside the runtime (RunStore.save) is being replayed:
        # effects then reuse completed results by node and payload, as 0.0.1 did.
        self.legacy_reuse = False
        # Whether values were kept beside the run since it was opened (pruned at a checkpoint).
        self.kept_secrets = False
        # An answer from outside (resume, emit) was recorded in this session.
        self.answered = False

    @property
    def run(self) -> RunState:
        """The run's live state."""
        return self.checkpoint.run

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.checkpoint.run.run_id

    # -- recording -----------------------------------------------------------------------

    def record(self, rec: StepRecord, *, result: Any = None, result_path: Optional[list[Any]] = None,
               full_delta: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Seal ``rec`` with the state change since the previous record; queue its line.

        ``result`` is the object the run stored in its vars from this record's result (so
        the delta refers to it instead of copying it). Raises ``InvalidInputError`` before
        queueing anything when the state or the record cannot be stored.
        """
        if full_delta is not None:
            delta = full_delta
            self.tracker.reset(self.checkpoint)
        else:
            delta = self.tracker.delta(self.checkpoint, result=result, result_path=result_path)
        pending = delta.get("pending")
        if isinstance(pending, dict) and rec.effect is not None and pending.get("effect") == rec.effect:
            # The intent record already carries the effect; replay takes it from there.
            delta["pending"] = {k: v for k, v in pending.items() if k != "effect"}
        rec.delta = delta
        secrets = self._redact(rec)
        doc, line = seal_record_line(rec, head=self.head, chained=self.chained)
        check_size(line, what=f"Ledger record for node {rec.node_id!r}")
        for entry in secrets:
            entry["record_hash"], entry["seq"] = secret_key(doc), doc["seq"]
        self.kept_secrets = self.kept_secrets or bool(secrets)
        self._docs.append(doc)
        self._lines.append(line)
        self._secrets.extend(secrets)
        self.head = LedgerHead(doc["seq"], doc["record_hash"])
        return doc

    def _redact(self, rec: StepRecord) -> list[dict[str, Any]]:
        """Redact the record's effect, result and delta before hashing; return what was replaced.

        A delta operation names the variable it sets by its path, not by a dict key, so it is
        judged by its path (``vars.password = ...`` is a secret whatever the value); a result
        stored under a secret path is redacted whole.
        """
        redactor = self.ports.redactor
        collect = getattr(redactor, "redact_collect", None)
        if collect is None:  # a redactor without collection: redact, keep nothing beside the run
            for name in ("effect", "result", "delta"):
                if getattr(rec, name) is not None:
                    setattr(rec, name, redactor.redact(getattr(rec, name)))
            return []
        at = getattr(redactor, "redact_at", None)
        secrets: list[dict[str, Any]] = []

        def keep(name: str, found: Any, prefix: tuple[Any, ...] = ()) -> None:
            secrets.extend({"field": name, "path": [*prefix, *path], "value": original} for path, original in found)

        if rec.effect is not None:
            rec.effect, found = collect(rec.effect)
            keep("effect", found)
        secret_result = False
        if rec.delta is not None:
            delta = dict(rec.delta)
            ops = delta.get("vars")
            if isinstance(ops, list):
                judged = []
                for index, op in enumerate(ops):
                    if op[0] == "s" and at is not None:
                        value, found = at(op[1], op[2])
                        keep("delta", found, ("vars", index, 2))
                        judged.append(["s", op[1], value])
                        continue
                    if op[0] == "r" and any(redactor.is_secret_key(part) for part in op[1]):
                        secret_result = True
                    judged.append(op)
                delta["vars"] = judged
            rest = {k: v for k, v in delta.items() if k != "vars"}
            redacted, found = collect(rest)
            keep("delta", found)
            delta.update(redacted)
            rec.delta = delta
        if rec.result is not None:
            if secret_result:
                whole: list[tuple[tuple[Any, ...], Any]] = [((), rec.result)]
                rec.result = REDACTED  # type: ignore[assignment]  # a whole result under a secret path
                keep("result", whole)
            else:
                rec.result, found = collect(rec.result)
                keep("result", found)
        return secrets

    def queued_completed(self, idempotency_key: str) -> Optional[dict[str, Any]]:
        """A completed record with this key among those not yet durable (group commit)."""
        for doc in self._docs:
            if doc.get("idempotency_key") == idempotency_key and doc.get("status") == "completed":
                return doc
        return None

    def pending_secrets(self) -> list[dict[str, Any]]:
        """Kept values of records not yet durable."""
        return list(self._secrets)

    @property
    def queued(self) -> int:
        """Records sealed but not yet durable."""
        return len(self._lines)

    # -- making it durable ---------------------------------------------------------------

    def flush(self) -> None:
        """Append every queued record with one write and one fsync (secrets first, if any)."""
        if not self._lines:
            return
        ports = self.ports
        signer = ports.signer
        if signer is not None and self.chained:
            last = self._docs[-1]
            signature = signer.sign_head(run_id=self.run_id, seq=last["seq"], head_hash=last["record_hash"])
            self._lines[-1] = attach_signature(last, self._lines[-1], signature)
            self.checkpoint.signature = signature
        if self._secrets:
            # Before the records: a crash in between leaves unused values, never a redacted
            # record whose real value is lost.
            ports.ledger.put_secrets(self.run_id, self._secrets)
        append_lines = getattr(ports.ledger, "append_lines", None)
        if append_lines is not None:
            head = append_lines(self.run_id, self._docs, self._lines, expect=self.durable)
        else:
            ports.ledger.append_batch([StepRecord.from_dict(doc) for doc in self._docs])
            head = LedgerHead(self.head.seq, self.head.head_hash)
        if head.seq != self.head.seq:
            raise LedgerConflictError(f"run {self.run_id}: the ledger ended at seq {head.seq} after an append "
                                      f"that should end at {self.head.seq}")
        self.head = self.durable = head
        self.checkpoint.ledger = head
        self._docs, self._lines, self._secrets = [], [], []
        self.uncommitted_nodes = []

    def flush_before_effect(self) -> None:
        """Make everything before an effect durable (its intent included). A run answered in this
        session whose stored checkpoint still says "waiting" also gets its checkpoint: if this
        process dies inside the handler, queries and workers see the run running, not waiting."""
        self.flush()
        if self.answered and self.saved_status is RunStatus.WAITING and self.run.status is RunStatus.RUNNING:
            self.save_checkpoint()

    def save_checkpoint(self) -> None:
        """Flush, then store the checkpoint that reflects the durable head (no fsync needed:
        the ledger is the log; a lost checkpoint is rebuilt from it)."""
        self.flush()
        run = self.run
        run.updated_at = self.ports.clock().isoformat()
        self.checkpoint.ledger = self.durable
        self.checkpoint.external = False
        self.ports.runs.save_checkpoint(self.checkpoint)
        previous = self.saved.seq if self.saved is not None else 0
        if self.durable.seq // ANCHOR_EVERY > previous // ANCHOR_EVERY:
            self._anchor()
        if self.kept_secrets:
            self.ports.ledger.prune_secrets(self.run_id, through_seq=self.durable.seq)
            self.kept_secrets = False
        self.saved = self.durable
        self.saved_status = run.status

    def _anchor(self) -> None:
        put = getattr(self.ports.ledger, "put_anchor", None)
        if put is None:
            return
        head = self.durable
        put(self.run_id, {"seq": head.seq, "head_hash": head.head_hash, "offset": head.offset,
                          "checkpoint": self.ports.redactor.redact(self.checkpoint.to_dict())})

    def finish(self) -> None:
        """End of a tick: flush, and write the checkpoint when it pays.

        It pays when the run's status changed (runs list and the scheduler read it), when it
        waits or ended, or when the tail since the last checkpoint grew past
        :data:`CHECKPOINT_EVERY` records / :data:`CHECKPOINT_BYTES` bytes.
        """
        self.flush()
        if self.saved is None or self.saved_status is not self.run.status or self.run.status is not RunStatus.RUNNING:
            if self.saved != self.durable or self.saved_status is not self.run.status:
                self.save_checkpoint()
            return
        if self.tail_is_long():
            self.save_checkpoint()

    def tail_is_long(self) -> bool:
        """True when the records since the stored checkpoint passed the checkpoint thresholds."""
        saved = self.saved.seq if self.saved is not None else 0
        if self.head.seq - saved >= CHECKPOINT_EVERY:
            return True
        grown = (self.durable.offset or 0) - ((self.saved.offset or 0) if self.saved is not None else 0)
        return grown >= CHECKPOINT_BYTES


def new_record(run: RunState, kind: RecordKind, node_id: Optional[str] = None) -> StepRecord:
    """A record of ``kind`` for the run's current node (or ``node_id``)."""
    rec = StepRecord.start(run=run, node_id=node_id or run.current_node, effect=None)
    rec.kind = kind.value
    return rec


def fail_run(session: RunSession, node_id: str, message: str, *, exception_type: Optional[str] = None,
             details: Optional[dict[str, Any]] = None) -> None:
    """Fail the run with ``message`` and record the ``fail`` record naming the node."""
    run = session.run
    run.status, run.error, run.waiting = RunStatus.FAILED, message, None
    rec = new_record(run, RecordKind.FAIL, node_id)
    rec.finish_failure(message)
    result = dict(details or {})
    if exception_type:
        result["exception_type"] = exception_type
    rec.result = result or None
    session.record(rec)


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


def secrets_by_record(entries: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Group kept secret values by the record they belong to."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        grouped.setdefault(str(entry.get("record_hash")), []).append(entry)
    return grouped
