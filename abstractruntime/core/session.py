"""One locked run being advanced: its live state, the records not yet durable, and group commit.

:meth:`RunSession.record` turns a step into a sealed format-4 ledger line at once (the state
change it made, redacted with commitments, large values stored once), so later mutations of
the run cannot leak into it, and applies the same line to the run's
:class:`~abstractruntime.core.state.StateImage` — the state as the ledger holds it.
:meth:`RunSession.flush` makes every queued line durable with one write and one fsync — the
result of effect *k*, the pure steps after it and the intent of effect *k+1* share one batch.
A checkpoint is the image at a ledger position, and the record at that position carries the
image's digest, so the checkpoint is proven before anyone uses it (docs/file-format.md).
"""

from __future__ import annotations

from dataclasses import field
from .fastclass import dataclass
from typing import Any, Optional

from .canonical import MAX_RECORD_BYTES, check_size
from .clock import Clock
from .encode import RecordEncoder
from .errors import LedgerConflictError
from .jcs import jcs
from .models import RecordKind, RunState, RunStatus, StepRecord, WaitReason, WaitState, new_record
from .ports import Capability, Checkpoint, LedgerHead, LedgerStore, RunStore, StoredCheckpoint, \
    has_capability
from .records import JCS_FORMATS, RECORD_FORMAT, reseal, seal_pieces, with_signature
from .redaction import Redactor
from .markers import SECRET, document_value, run_value, vars_value
from .secret_values import SecretKeeper, shown_text
from .state import StateImage
from .usage_totals import settle
from .values import ValueTable, ValueWriter
from .wal import (
    DELTA_RUN_FIELDS,
    DeltaTracker,
    ResultOp,
    SetOp,
    apply_record,
    implied_effects,
    implied_node,
    implied_pending,
    positional_key,
    record_parts,
)

# A checkpoint is written at least every CHECKPOINT_EVERY records or CHECKPOINT_BYTES bytes
# of ledger, so recovery replays a bounded tail (docs/performance.md has the measurements).
CHECKPOINT_EVERY = 512
CHECKPOINT_BYTES = 1 << 20
# Every ANCHOR_EVERY records a stored checkpoint is also kept as an anchor, so a past state
# (state_at, --at) is rebuilt from the nearest anchor instead of from the start.
ANCHOR_EVERY = 1024
# A checkpoint names the ledger lines that define the values its state refers to, unless at
# least one record in DENSE_VALUES defines a value: a reader then scans the ledger up to the
# checkpoint, which costs about what reading the hinted lines would.
DENSE_VALUES = 8
_KERNEL_SMALL = ("metadata", "workflow", "origin")
# The record kinds a step compares with, as plain strings (an enum member's ``.value`` is a
# descriptor call, several a record).
_EFFECT_KIND = RecordKind.EFFECT.value
_OF_EFFECT = (RecordKind.EFFECT.value, RecordKind.PART.value)


@dataclass
class StorePorts:
    """What a session writes to, handed over explicitly by the runtime."""

    runs: RunStore
    ledger: LedgerStore
    redactor: Redactor
    clock: Clock
    signer: Optional[Any] = None
    # Called when a checkpoint shows the run finished: drops the secret values nothing needs now.
    on_finished: Optional[Any] = None
    # Called with (run_id, seq) once a batch is durable (observers: live watching, tracing).
    on_durable: Optional[Any] = None


@dataclass
class RunParts:
    """A run as opened for writing: its live state and what the writer keeps beside it."""

    checkpoint: Checkpoint
    image: StateImage
    table: ValueTable = field(default_factory=ValueTable)
    keeper: SecretKeeper = field(default_factory=SecretKeeper)
    # The digest the record at the durable head carries (None: none, or unknown).
    head_digest: Optional[str] = None
    # What the run's writer remembers of the values it stored (None: nothing yet).
    writer: Optional[ValueWriter] = None
    # The variables as of the last record (None: take them from ``checkpoint``).
    tracker: Optional[DeltaTracker] = None
    # The ``ext`` of records a writer left with usage its state does not count yet (a process killed
    # mid-tick): counted and settled before the next stored checkpoint (core/usage_totals.py).
    unsettled: list[dict[str, Any]] = field(default_factory=list)


def _small_fields(checkpoint: Checkpoint) -> dict[str, Any]:
    """The run's and kernel's fields a delta carries when they change, as JSON-ready values."""
    run = checkpoint.run
    fields: dict[str, Any] = {
        "workflow_id": run.workflow_id, "status": RunStatus(run.status)._value_, "current_node": run.current_node,
        "waiting": run.waiting.to_dict() if run.waiting is not None else None, "output": run.output,
        "error": run.error, "created_at": run.created_at, "actor_id": run.actor_id,
        "parent_run_id": run.parent_run_id,
    }
    for name in _KERNEL_SMALL:
        fields[name] = getattr(checkpoint, name)
    return fields


# The JCS bytes of a delta that only places the record's result in the variables (an effect's
# outcome stored at its ``result_key``): the same for every outcome of a node, so encoded once
# (keyed by the operations' paths; bounded).
_RESULT_DELTAS: dict[tuple[Any, ...], bytes] = {}


def _result_delta_bytes(delta: Any, ops: list[Any]) -> Optional[bytes]:
    """The bytes of ``delta`` when it is ``{"vars": ops}`` and every operation is a :class:`ResultOp`."""
    if not ops or delta.__class__ is not dict or len(delta) != 1 or "vars" not in delta:
        return None
    key = []
    for op in ops:
        if op.__class__ is not ResultOp:
            return None
        path, sub = tuple(op.path), tuple(op.subpath) if op.subpath else None
        # A path part that is not exactly a str (a subclass) is left to the encoder.
        if any(part.__class__ is not str for part in path) or (sub and any(p.__class__ is not str for p in sub)):
            return None
        key.append((path, sub))
    found = _RESULT_DELTAS.get(tuple(key))
    if found is None:
        found = jcs(delta, root="delta")
        if len(_RESULT_DELTAS) >= 1024:
            _RESULT_DELTAS.clear()
        _RESULT_DELTAS[tuple(key)] = found
    return found


class RunSession:
    """One locked run being advanced: its live checkpoint, its image, and the records not yet durable."""

    def __init__(self, ports: StorePorts, parts: RunParts, *, durable_head: Optional[LedgerHead] = None,
                 saved_head: Optional[LedgerHead] = None) -> None:
        self.ports = ports
        self.checkpoint = parts.checkpoint
        self.image = parts.image
        self.table = parts.table
        self.keeper = parts.keeper
        ledger = ports.ledger
        self.chained = has_capability(ledger, Capability.CHAINED)
        self.sealed_lines = has_capability(ledger, Capability.SEALED_LINES)
        self.encoder = RecordEncoder(self.run_id, ports.redactor, self.keeper, self.table,
                                     store_values=self.sealed_lines, writer=parts.writer)
        # The ledger head including queued records, and the head that is on disk.
        self.head = durable_head if durable_head is not None else parts.checkpoint.ledger
        self.durable = self.head
        self.head_digest = parts.head_digest
        self.unsettled = parts.unsettled
        # The head the stored checkpoint reflects (None: no checkpoint stored yet).
        self.saved = saved_head
        self.saved_status: Optional[RunStatus] = parts.checkpoint.run.status if saved_head is not None else None
        self.tracker = parts.tracker if parts.tracker is not None else DeltaTracker(parts.checkpoint.run.vars)
        self._last = _small_fields(parts.checkpoint)
        self._last_pending = parts.checkpoint.pending.to_dict() if parts.checkpoint.pending else None
        self._last_effects = parts.checkpoint.effects
        self._now: tuple[dict[str, Any], Optional[dict[str, Any]]] = (self._last, self._last_pending)
        self._fields: list[dict[str, Any]] = []
        self._pieces: list[dict[str, bytes]] = []  # each queued record's encoded members (reseal)
        self._docs: list[dict[str, Any]] = []
        self._lines: list[bytes] = []
        self._secrets: list[dict[str, Any]] = []
        self._batch_defs: list[tuple[str, int]] = []  # (value id, index of its record in the batch)
        self._queued_keys: dict[str, dict[str, Any]] = {}  # idempotency key -> queued completed record
        # Nodes run since the last durable record (named when their state cannot be stored).
        self.uncommitted_nodes: list[str] = []
        # True right after a state saved outside the runtime was recorded (an ``edit``): effects
        # then reuse completed results by node and payload, as 0.0.1 did.
        self.legacy_reuse = False
        # An answer from outside (resume, emit) was recorded in this session.
        self.answered = False
        # The run's history is older-format records: its next record carries every field.
        self.full_next = False
        # Set when the session must write nothing more (cancelled, or its lock was given up).
        self.closed: Optional[str] = None

    @property
    def run(self) -> RunState:
        """The run's live state."""
        return self.checkpoint.run

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.checkpoint.run.run_id

    def parts(self) -> RunParts:
        """The session's state, to continue in another session (the caller stops using this one)."""
        return RunParts(self.checkpoint, self.image, self.table, self.keeper, self.head_digest, self.encoder.writer,
                        self.tracker, self.unsettled)

    # -- recording -----------------------------------------------------------------------

    def record(self, rec: StepRecord, *, result: Any = None, result_path: Optional[list[str]] = None,
               full: bool = False, ext: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Seal ``rec`` with the state change since the previous record and queue its line.

        ``result`` is the object the run stored in its vars from this record's result (so the
        delta refers to it instead of copying it); ``full`` records every field (a run's first
        record, a restore, an edit); ``ext`` holds the record's named extensions (``ext.usage``).
        Raises ``InvalidInputError`` (``PayloadTooLargeError``) before queueing anything when the
        state or the record cannot be stored.
        """
        if self.closed is not None:
            from .errors import SessionClosedError

            raise SessionClosedError(f"run {self.run_id}: {self.closed}; nothing more is written by this writer")
        full = full or self.full_next
        self.encoder.begin()
        try:
            fields, ops, doc = self._encode(rec, result=result, result_path=result_path, full=full)
            if ext:
                fields["ext"] = ext
            known: dict[str, bytes] = {}
            result_bytes = self.encoder.encoded(fields.get("result"))
            if result_bytes is not None:
                known["result"] = result_bytes
            delta_bytes = _result_delta_bytes(fields.get("delta"), ops)
            if delta_bytes is not None:
                known["delta"] = delta_bytes
            doc, line, pieces = seal_pieces(fields, chained=self.chained, encoded=known)
            if len(line) > MAX_RECORD_BYTES:
                check_size(line, what=f"Ledger record for node {rec.node_id!r}")
            apply_record(self.image, doc, self.table, self.run_id)
        except BaseException:
            self.encoder.rollback()
            raise
        self.tracker.commit(ops, result, self.run.vars)
        self.full_next = False
        # The fields as this record left them (_delta took them from the checkpoint, which nothing
        # changed since).
        self._last, self._last_pending = self._now
        self._last_effects = self.checkpoint.effects
        self.run.updated_at = doc["at"]
        index = len(self._docs)
        self._batch_defs.extend((vid, index) for vid in self.encoder.defined())
        self._secrets.extend(self.keeper.take_unsaved())
        if rec.kind == _EFFECT_KIND and doc["status"] == "completed" and rec.idempotency_key:
            self._queued_keys.setdefault(rec.idempotency_key, doc)
        self._fields.append(fields)
        self._pieces.append(pieces)
        self._docs.append(doc)
        self._lines.append(line)
        self.head = LedgerHead(doc["seq"], doc["record_hash"])
        self.head_digest = None
        rec.seq, rec.record_hash, rec.prev_hash = doc["seq"], doc["record_hash"], doc.get("prev_hash")
        return doc

    def _encode(self, rec: StepRecord, *, result: Any, result_path: Optional[list[str]],
                full: bool) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
        """The stored fields of ``rec``, the ``vars`` operations they hold, and the live view used
        to check what the record's kind implies."""
        enc, run = self.encoder, self.run
        seq = self.head.seq + 1
        ops = [SetOp([], run.vars)] if full else self.tracker.diff(run.vars, result=result, result_path=result_path,
                                                                   opaque=enc.is_secret_path)
        enc.expect(ops)
        at = rec.ended_at or rec.started_at
        fields: dict[str, Any] = {"format": RECORD_FORMAT, "seq": seq, "kind": rec.kind,
                                  "status": getattr(rec.status, "value", rec.status), "at": at,
                                  "prev_hash": self.head.head_hash if self.chained else None}
        if seq == 1 or not self.sealed_lines:
            fields["run_id"] = self.run_id
        prev = self._last_pending
        effect_id = rec.effect_id
        of_effect = effect_id is not None and rec.kind in _OF_EFFECT
        intent = rec.kind == _EFFECT_KIND and fields["status"] == "started"
        compact = self.sealed_lines  # a store that keeps lines as sealed; others get every field
        # Node, effect, next node, key and attempt of the pending effect's records come from it.
        implied = compact and of_effect and prev is not None and prev.get("effect_id") == effect_id
        live = dict(fields)  # the record with live values, to check what its kind implies
        if not implied:
            fields["node_id"] = live["node_id"] = rec.node_id
        if effect_id is not None:
            fields["effect_id"] = live["effect_id"] = effect_id
        if rec.effect is not None and not implied:
            live["effect"] = rec.effect
            payload = rec.effect.get("payload") or {}
            fields["effect"] = {**rec.effect, "payload": {k: enc.slot(v, [k], seq, "effect.payload")
                                                              for k, v in payload.items()}}
        if intent and not implied and (rec.next_node is not None or not compact):
            fields["next_node"] = live["next_node"] = rec.next_node
        if of_effect and not implied and rec.idempotency_key and (
                not compact or rec.idempotency_key != positional_key(self.run_id, int(effect_id or 0))):
            fields["idempotency_key"] = live["idempotency_key"] = rec.idempotency_key
        if of_effect and (not compact or (intent and implied) or (not implied and rec.attempt != 1)):
            fields["attempt"] = live["attempt"] = rec.attempt
        secret_result = any(isinstance(op, ResultOp) and enc.is_secret_path(op.path) for op in ops)
        if rec.result is not None:
            live["result"] = rec.result
            path = next(op.path for op in ops if isinstance(op, ResultOp)) if secret_result else []
            fields["result"] = enc.slot(rec.result, path, seq, "result") if not secret_result else \
                enc.sealed(rec.result, path)
        if rec.error is not None:
            fields["error"] = enc.error_text(rec.error)
        if getattr(rec, "ext", None) is not None:
            fields["ext"] = rec.ext  # named extensions (docs/file-format.md): plain data, hashed as it is
        delta = self._delta(ops, live, full, seq)
        if delta:
            fields["delta"] = delta
        if not self.chained:
            fields.pop("prev_hash", None)
        return fields, ops, live

    def _delta(self, ops: list[Any], live: dict[str, Any], full: bool, seq: int) -> dict[str, Any]:
        enc, ckpt = self.encoder, self.checkpoint
        delta: dict[str, Any] = {}
        if ops:
            encoded = []
            for op in ops:
                if isinstance(op, SetOp):
                    # The whole variables are one value: names that use marker keys are wrapped.
                    encoded.append(op.encode(enc.slot(op.value, op.path, seq) if op.path else
                                             vars_value({k: enc.slot(v, [k], seq) for k, v in op.value.items()})))
                else:
                    encoded.append(op.encode())
            delta["vars"] = encoded
        now = _small_fields(ckpt)
        pending = ckpt.pending.to_dict() if ckpt.pending is not None else None
        self._now = (now, pending)
        last = self._last
        # An outcome closing its intent takes the run to the node the intent named (format 4): its
        # delta names the node only when the run went elsewhere. Found from the pending effect as
        # the ledger holds it (the image), exactly as a reader finds it.
        moved = None if full else implied_node(self.image.kernel["pending"], live)
        if moved is not None:
            last = {**last, "current_node": moved}
        # Most records change none of these fields: one comparison of the whole dicts (and of the
        # fields' types, as the loop compares them) settles it. Equal dicts hold the same names in
        # the same order (both made by _small_fields), so their types line up.
        same = not full and now == last and [v.__class__ for v in now.values()] == [
            v.__class__ for v in last.values()]
        for name, value in () if same else now.items():
            if full or value != last.get(name) or type(value) is not type(last.get(name)):
                if name == "output":
                    delta[name] = enc.slot(value, ["output"], seq, "") if value is not None else None
                elif name in DELTA_RUN_FIELDS or name in _KERNEL_SMALL:
                    delta[name] = enc.sealed(value, [name]) if value is not None else None
        implied = implied_pending(self._last_pending, live, self.run_id) if not full else None
        if full or pending != implied:
            delta["pending"] = enc.sealed(pending, ["pending"]) if pending is not None else None
        if full or implied_effects(self._last_effects, live) != ckpt.effects:
            delta["effects"] = ckpt.effects
        return delta

    def queued_completed(self, idempotency_key: str) -> Optional[dict[str, Any]]:
        """A completed effect record with this key among those not yet durable (group commit)."""
        return self._queued_keys.get(idempotency_key)

    def stored_result(self, doc: dict[str, Any]) -> Any:
        """The real result a stored record holds: stored values resolved, secrets filled in."""
        if doc.get("format") not in JCS_FORMATS:
            from .wal_legacy import restore_secrets

            self._load_secrets()
            entries = [e for e in self.keeper.legacy if e.get("record_hash") == doc.get("record_hash")]
            return (restore_secrets(doc, entries) if entries else doc).get("result")
        result = doc.get("result")
        if any(vid not in self.table for vid in self.table.closure(result)):
            _, records = self.ports.ledger.read_after(self.run_id, LedgerHead())
            for stored in records:
                if stored.get("format") in JCS_FORMATS:
                    for part in record_parts(stored):
                        self.table.collect(part, int(stored.get("seq") or 0))
        if ('"' + SECRET + '"').encode() in jcs(result):
            self._load_secrets()
        return self.table.resolve(result, self.keeper.fill)

    def _load_secrets(self) -> None:
        self.keeper.load(self.ports.ledger.get_secrets(self.run_id))

    @property
    def queued(self) -> int:
        """Records sealed but not yet durable."""
        return len(self._lines)

    @property
    def queued_records(self) -> list[dict[str, Any]]:
        """The records sealed but not yet durable, as stored, oldest first (read them, do not change them)."""
        return list(self._docs)

    # -- making it durable ---------------------------------------------------------------

    def _attach_digest(self) -> None:
        """Put the image's digest on the last queued record (a checkpoint will be stored there).

        The record is sealed again — its hash covers the digest — from the members it was encoded
        into, so only the digest is encoded anew."""
        digest = self.image.digest()
        fields, doc, line, pieces = reseal(self._fields[-1], self._pieces[-1], "state", digest, chained=self.chained)
        self._fields[-1], self._pieces[-1], self._docs[-1], self._lines[-1] = fields, pieces, doc, line
        self.head = LedgerHead(doc["seq"], doc["record_hash"])
        self.head_digest = digest

    def flush(self, *, checkpoint: bool = False) -> None:
        """Append every queued record with one write and one fsync (the values they commit to first).

        ``checkpoint``: a checkpoint will be stored at the new head, so its record carries the digest.
        """
        if not self._lines:
            return
        if self.closed is not None:
            from .errors import SessionClosedError

            raise SessionClosedError(f"run {self.run_id}: {self.closed}; nothing more is written by this writer")
        if checkpoint:
            self._attach_digest()
        ports = self.ports
        signer = ports.signer
        if signer is not None and self.chained:
            last = self._docs[-1]
            signature = signer.sign_head(run_id=self.run_id, seq=last["seq"], head_hash=last["record_hash"])
            self._lines[-1] = with_signature(last, signature)
            self.checkpoint.signature = signature
        if self._secrets:
            # Before the records: a crash in between leaves unused values, never a marker whose
            # value is lost.
            ports.ledger.put_secrets(self.run_id, self._secrets)
        start = self.durable.offset
        if self.sealed_lines:
            head = ports.ledger.append_lines(self.run_id, self._docs, self._lines,  # type: ignore[attr-defined]
                                             expect=self.durable)
        else:
            # A store that keeps records as it likes (upstream 0.0.1 style): it (or its chaining
            # wrapper) seals them itself, over what it stores; the head is then its to tell.
            ports.ledger.append_batch([StepRecord.from_dict({**doc, "run_id": self.run_id, "record_hash": None,
                                                             "prev_hash": None}) for doc in self._docs])
            head = ports.ledger.head(self.run_id) if self.chained else LedgerHead(self.head.seq, None)
            self.head = LedgerHead(head.seq, head.head_hash)
        if head.seq != self.head.seq:
            raise LedgerConflictError(f"run {self.run_id}: the ledger ended at seq {head.seq} after an append "
                                      f"that should end at {self.head.seq}")
        if start is not None and head.offset is not None:
            offsets, at = [], start
            for line in self._lines:
                offsets.append(at)
                at += len(line) + 1
            for vid, index in self._batch_defs:
                self.table.locate(vid, self._docs[index]["seq"], offsets[index])
        self.head = self.durable = head
        self.checkpoint.ledger = head
        self._fields, self._pieces, self._docs, self._lines, self._secrets, self._batch_defs = [], [], [], [], [], []
        self._queued_keys = {}
        self.uncommitted_nodes = []
        if ports.on_durable is not None:
            ports.on_durable(self.run_id, head.seq)

    def flush_before_effect(self) -> None:
        """Make everything before an effect durable (its intent included). A run answered in this
        session whose stored checkpoint still says "waiting" also gets its checkpoint: if this
        process dies inside the handler, queries and workers see the run running, not waiting."""
        if self.answered and self.saved_status is RunStatus.WAITING and self.run.status is RunStatus.RUNNING:
            self.save_checkpoint()
            return
        self.flush()

    def save_checkpoint(self) -> None:
        """Make everything durable, then store the checkpoint at the durable head, proven by the
        digest its record carries (no fsync needed: the ledger is the log). The state it stores
        always counts every usage report before it (the checkpoint is where the next writer starts)."""
        settle(self)
        if self._lines:
            self.flush(checkpoint=True)
        elif self.head_digest is None or self.head_digest != self.image.digest():
            # The record at the head carries no digest of this state: add one that does.
            rec = new_record(self.run, RecordKind.CHECKPOINT)
            self.record(rec.finish_success(None))
            self.flush(checkpoint=True)
        self._rotate()
        stored = StoredCheckpoint(state=self._document(), ledger=self.durable, signature=self.checkpoint.signature,
                                  values=self._hints(), view=self.view)
        self.ports.runs.save_checkpoint(stored)
        previous = self.saved.seq if self.saved is not None else 0
        if self.durable.seq // ANCHOR_EVERY > previous // ANCHOR_EVERY and has_capability(
                self.ports.ledger, Capability.ANCHORS):
            self.ports.ledger.put_anchor(self.run_id, {
                "seq": self.durable.seq, "head_hash": self.durable.head_hash, "offset": self.durable.offset,
                "checkpoint": stored.to_dict()})
        self.saved = self.durable
        self.saved_status = self.run.status
        if self.finished and self.ports.on_finished is not None:
            self.ports.on_finished(self.checkpoint)

    def _rotate(self) -> None:
        """Close the ledger's live file with a ``segment`` record and seal it, when the store
        says it is full. The record changes nothing but ``updated_at``; it carries the state
        digest, so the checkpoint stored next is proven by it. A kill after its append leaves a
        live file ending with it, and the store finishes the rename before its next append."""
        ledger = self.ports.ledger
        if not (self.chained and self.sealed_lines and has_capability(ledger, Capability.SEGMENTS)):
            return
        due = ledger.segment_due(self.run_id)  # type: ignore[attr-defined]
        if due is None:
            return
        rec = new_record(self.run, RecordKind.SEGMENT)
        self.record(rec.finish_success(due))
        self.flush(checkpoint=True)
        ledger.seal_segment(self.run_id)  # type: ignore[attr-defined]

    @property
    def finished(self) -> bool:
        """True when nothing can continue the run (see :func:`is_finished`)."""
        return is_finished(self.checkpoint)

    def _document(self) -> dict[str, Any]:
        import json

        copied: dict[str, Any] = json.loads(jcs(self.image.document()))
        return copied

    def _hints(self) -> list[list[int]]:
        """Where the values the state refers to are defined — or nothing when many records define
        values (an agent's conversation refers to most of its ledger: a reader scanning the ledger
        reads little more than the hinted lines, and a checkpoint then costs the same at every
        length)."""
        if len(self.table) * DENSE_VALUES >= self.durable.seq:
            return []
        where = self.table.where
        found = {where[vid] for vid in self.table.closure(document_value(self.image.document())) if vid in where}
        return sorted([seq, offset] for seq, offset in found if offset is not None)

    def view(self) -> RunState:
        """The run as readers see it now: secrets shown redacted, stored values resolved."""
        return RunState.from_dict(self.table.resolve(run_value(self.image.run), shown_text))

    def finish(self) -> None:
        """End of a tick: flush, and store the checkpoint when it pays.

        It pays when the run's status changed (runs list and the scheduler read it), when it
        waits or ended, or when the tail since the last checkpoint grew past
        :data:`CHECKPOINT_EVERY` records / :data:`CHECKPOINT_BYTES` bytes.
        """
        changed = self.saved is None or self.saved_status is not self.run.status
        if changed or self.run.status is not RunStatus.RUNNING:
            if changed or self.saved != self.head:
                self.save_checkpoint()
                return
            self.flush()
            return
        if self.tail_is_long():
            self.save_checkpoint()
            return
        self.flush()

    def tail_is_long(self) -> bool:
        """True when the records since the stored checkpoint passed the checkpoint thresholds."""
        saved = self.saved.seq if self.saved is not None else 0
        if self.head.seq - saved >= CHECKPOINT_EVERY:
            return True
        grown = (self.durable.offset or 0) - ((self.saved.offset or 0) if self.saved is not None else 0)
        return grown >= CHECKPOINT_BYTES

    def close(self, reason: str) -> None:
        """Refuse every later write of this session (its lock is being given up, or it was cancelled)."""
        self.closed = reason


def is_finished(checkpoint: Checkpoint) -> bool:
    """True when nothing can continue the run: completed, cancelled, or failed with no effect left
    to ``retry`` — its secret values are needed no more."""
    status = checkpoint.run.status
    return status.is_terminal and not (status is RunStatus.FAILED and checkpoint.pending is not None)


def fail_run(session: RunSession, node_id: str, message: str, *, exception_type: Optional[str] = None,
             details: Optional[dict[str, Any]] = None) -> None:
    """Fail the run with ``message`` (its secrets redacted) and record the ``fail`` record naming the node."""
    run = session.run
    message = session.encoder.error_text(message) or message
    run.status, run.error, run.waiting = RunStatus.FAILED, message, None
    rec = new_record(run, RecordKind.FAIL, node_id)
    rec.finish_failure(message)
    result = dict(details or {})
    if exception_type:
        result["exception_type"] = exception_type
    rec.result = result or None
    session.record(rec)


_UNSET: Any = object()


def leave_wait(run: RunState, wait: WaitState, value: Any = _UNSET) -> None:
    """The run leaves ``wait``: ``value`` (when given) lands at the wait's ``result_key``, and the
    run runs again at the node the wait resumes to. What every answer, timer and decision does."""
    if value is not _UNSET and wait.result_key:
        set_nested(run.vars, wait.result_key, value)
    run.status, run.waiting = RunStatus.RUNNING, None
    if wait.resume_to_node:
        run.current_node = wait.resume_to_node


def fire_timer(session: RunSession, wait: WaitState, *, fired_by: Optional[str] = None) -> None:
    """Resume a ``wait_until`` timer as the clock does (``fired_by="operator"``: an operator fired
    it before its time, and the record says so)."""
    leave_wait(session.run, wait, {"until": wait.until, "ready": True})
    rec = new_record(session.run, RecordKind.RESUME)
    result: dict[str, Any] = {"reason": WaitReason.UNTIL.value, "wait_key": wait.wait_key, "wait_id": wait.wait_id,
                              "until": wait.until}
    if fired_by is not None:
        result["fired_by"] = fired_by
    rec.finish_success(result)
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


__all__ = ["ANCHOR_EVERY", "CHECKPOINT_BYTES", "CHECKPOINT_EVERY", "DENSE_VALUES", "RunParts",
           "RunSession", "StorePorts", "fail_run", "fire_timer", "is_finished", "leave_wait", "new_record",
           "set_nested"]
