"""The kernel's ports: what the runtime needs from a run store and a ledger store.

``RunStore`` and ``LedgerStore`` are small ABCs (upstream-compatible: ``save``/``load`` and
``append``/``list``). The extra methods have working defaults, so a store written for
upstream AbstractRuntime 0.0.1 still plugs in. What a store does beyond that it **declares**:
its class lists its :class:`Capability` members in ``capabilities``, the runtime asks
:func:`has_capability` (never probes for methods), and the conformance kit
(:mod:`abstractruntime.testing`) tests each capability a store claims — and only those.

The ledger is the write-ahead log (docs/durability.md): every record carries the state
change it made. A :class:`StoredCheckpoint` is what a run store keeps: the run's *state
document* at one ledger position (secrets as markers, large values as references), proven
against the ledger before it is used; a :class:`Checkpoint` is the live run the runtime
advances, with its real values.
"""

from __future__ import annotations

import builtins
import contextlib
from abc import ABC, abstractmethod
from dataclasses import field
from .fastclass import dataclass
from enum import Enum
from typing import Any, Callable, Collection, ContextManager, Optional, Protocol, Sequence, runtime_checkable

from .models import RunState, RunStatus, StepRecord, StepStatus, WaitReason

# run.json format 3: the state document, proven by the ledger's state digest; 2 and 1 stay readable.
CHECKPOINT_FORMAT = 3
READABLE_CHECKPOINT_FORMATS = (1, 2, 3)


class Capability(str, Enum):
    """What a store does beyond the 0.0.1 port, declared in its class's ``capabilities``.

    Ledger stores: ``CHAINED`` keeps the hash chain (``seq``, ``prev_hash``, ``record_hash``);
    ``SEALED_LINES`` appends sealed records conditionally (``append_lines``) and hands them back
    exactly as stored (``read_after``), so format-3 records with stored values can live in it;
    ``POSITION_TOKENS`` tells when anyone appended (``position_token(run_id)``, and
    ``position_token_at(run_id, head)`` for a head the caller just wrote, or ``None``);
    ``ANCHORS`` keeps point-in-time checkpoints (``put_anchor``/``find_anchor``); ``SECRETS``
    keeps the values the ledger redacted durably (``put_secrets``/``get_secrets``/``drop_secrets``);
    ``PEEK_HEAD`` reads the head without a chain check (``peek_head``); ``SEGMENTS`` seals a long
    ledger into segments (``segment_due(run_id)`` tells when, ``seal_segment(run_id)`` renames the
    file once the ``segment`` record closing it is durable).

    Run stores: ``CHECKPOINTS`` keeps whole checkpoint documents (``save_checkpoint`` /
    ``load_checkpoint``); ``LOCKS`` gives exclusive access (``lock``); ``CHECKPOINT_TOKENS``
    tells when anyone replaced a checkpoint (``checkpoint_token(run_id)``, and ``written_token(run_id)``
    for the checkpoint it just wrote, or ``None``);
    ``QUERIES`` answers :class:`QueryableRunStore`; ``WAITING_ON`` finds runs waiting on a key
    from an index (``list_waiting_on``); ``WORK_CLAIMS`` hands a worker fleet leases
    (``work_claims``); ``WAKE`` wakes idle workers (``wake``); ``EDITS`` records a state saved
    with ``save(run)`` in the ledger itself, before anything acts on it; ``LEDGER_MARKS`` marks a
    run whose ledger may be ahead of its checkpoint (``mark_ahead(run_id)``, called before the
    first append after a checkpoint — a store may make the mark part of the append itself — and
    cleared by ``save_checkpoint`` at the ledger's head), lists the marked runs from an index
    (``list_ahead(limit=)``) and answers queries about them as their ledgers say.
    """

    CHAINED = "chained"
    SEALED_LINES = "sealed_lines"
    POSITION_TOKENS = "position_tokens"
    ANCHORS = "anchors"
    SECRETS = "secrets"
    SEGMENTS = "segments"
    PEEK_HEAD = "peek_head"
    CHECKPOINTS = "checkpoints"
    LOCKS = "locks"
    CHECKPOINT_TOKENS = "checkpoint_tokens"
    QUERIES = "queries"
    WAITING_ON = "waiting_on"
    WORK_CLAIMS = "work_claims"
    WAKE = "wake"
    EDITS = "edits"
    LEDGER_MARKS = "ledger_marks"


def has_capability(store: Any, capability: Capability) -> bool:
    """True when ``store`` declares ``capability`` (a store written for 0.0.1 declares none).

    A class declares with a ``capabilities`` class attribute; a wrapper whose abilities are its
    inner store's (``HashChainedLedgerStore``) sets the attribute on the instance.
    """
    declared = getattr(store, "capabilities", None)
    return isinstance(declared, frozenset) and capability in declared


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


def _int_field(data: dict[str, Any], name: str, default: int, *, minimum: int = 0) -> int:
    value = data.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"pending.{name} must be an integer >= {minimum}")
    return value


@dataclass
class Pending:
    """The effect whose intent is durable and whose outcome is not (docs/file-format.md).

    Recovery performs it again without re-entering the node body. ``parts`` are the partial
    results it recorded (``record_part``); ``failed`` counts its attempts whose failure was
    recorded (an attempt a crash interrupted does not use up the retry budget). Kept after a
    final failure, so ``retry`` can attempt it again.
    """

    effect_id: int
    node_id: str
    effect: dict[str, Any]
    next_node: Optional[str]
    idempotency_key: str
    attempt: int = 1
    explicit: bool = False
    parts: dict[str, Any] = field(default_factory=dict)
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The ``pending`` object of a state document."""
        return {"effect_id": self.effect_id, "node_id": self.node_id, "effect": self.effect,
                "next_node": self.next_node, "idempotency_key": self.idempotency_key, "attempt": self.attempt,
                "explicit": self.explicit, "parts": self.parts, "failed": self.failed}

    @classmethod
    def from_dict(cls, data: Any) -> "Pending":
        """Inverse of :meth:`to_dict`; also reads format-2 pending objects (``ValueError`` names a bad field)."""
        if not isinstance(data, dict):
            raise ValueError("pending must be an object")
        node_id, key, effect = data.get("node_id"), data.get("idempotency_key"), data.get("effect")
        if not isinstance(node_id, str):
            raise ValueError("pending.node_id must be a string")
        if not isinstance(key, str):
            raise ValueError("pending.idempotency_key must be a string")
        if not isinstance(effect, dict) or not isinstance(effect.get("type"), str):
            raise ValueError("pending.effect must be an effect object")
        next_node = data.get("next_node")
        if next_node is not None and not isinstance(next_node, str):
            raise ValueError("pending.next_node must be a string or null")
        parts = data.get("parts") or {}
        if not isinstance(parts, dict):
            raise ValueError("pending.parts must be an object")
        return cls(effect_id=_int_field(data, "effect_id", 0, minimum=1), node_id=node_id, effect=effect,
                   next_node=next_node, idempotency_key=key, attempt=_int_field(data, "attempt", 1),
                   explicit=bool(data.get("explicit", False)), parts=dict(parts),
                   failed=_int_field(data, "failed", 0))


@dataclass
class Checkpoint:
    """A live run: its state as of ledger position ``ledger``, with real values, plus the kernel's fields.

    ``effects`` counts the effects the run has begun (an effect's id is its ordinal);
    ``pending`` is the effect whose intent is durable but whose outcome is not yet recorded;
    ``metadata`` is run-level configuration recorded in the ledger (e.g. the LLM settings the
    CLI reuses); ``workflow`` the workflow's id and sha256; ``origin`` links a fork to its
    source; ``signature`` the signed head.
    """

    run: RunState
    ledger: LedgerHead
    workflow: Optional[dict[str, Any]] = None
    signature: Optional[dict[str, Any]] = None
    origin: Optional[dict[str, Any]] = None
    pending: Optional[Pending] = None
    effects: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The run and the kernel's fields as one JSON-ready object (real values: never stored as is)."""
        return {
            "run": self.run.to_dict(),
            "ledger": self.ledger.to_dict(),
            "workflow": self.workflow,
            "signature": self.signature,
            "origin": self.origin,
            "pending": self.pending.to_dict() if self.pending is not None else None,
            "effects": self.effects,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Checkpoint":
        """A format-1 or format-2 ``run.json`` document; every field is type-checked (``ValueError`` names it)."""
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
        pending = data.get("pending")
        return cls(
            run=RunState.from_dict(run),
            ledger=LedgerHead.from_dict(data.get("ledger")),
            workflow=data.get("workflow"),
            signature=data.get("signature"),
            origin=data.get("origin"),
            pending=Pending.from_dict(pending) if pending is not None else None,
            effects=effects,
            metadata=metadata,
        )


@dataclass
class StoredCheckpoint:
    """What a run store keeps for a run: its state document at a ledger position (docs/file-format.md).

    ``state`` is the state document — ``{"run": {...}, "kernel": {...}}`` with secrets as markers
    and large values as references; it is *proven* against the ledger's state digest before the
    runtime uses it. ``values`` are hints ``[seq, offset]`` of ledger lines defining stored values
    it refers to. ``legacy`` is a format-1/2 checkpoint as it was read (its run holds real values).
    ``view`` (never stored) is the run as readers see it — secrets shown redacted, stored values
    resolved — when the writer had it at hand. ``external`` marks a state saved with
    :meth:`RunStore.save` by a store that cannot record edits itself (in memory only).
    """

    state: dict[str, Any]
    ledger: LedgerHead
    signature: Optional[dict[str, Any]] = None
    values: list[list[int]] = field(default_factory=list)
    legacy: Optional[Checkpoint] = None
    view: Optional[Callable[[], RunState]] = field(default=None, repr=False, compare=False)
    external: bool = False
    # The shown run from_dict built to check the document, handed to the first shown_run() call
    # (index rebuilds read each checkpoint for exactly that) and then dropped: never shared.
    _first_shown: Optional[tuple[dict[str, Any], RunState]] = field(default=None, repr=False, compare=False)

    @property
    def run_doc(self) -> dict[str, Any]:
        """The ``run`` part of the state document."""
        run: dict[str, Any] = self.state["run"]
        return run

    @property
    def run_id(self) -> str:
        """The run's id."""
        return str(self.run_doc["run_id"])

    def run_view(self) -> RunState:
        """The run as readers see it: secrets shown redacted, stored values resolved when the writer
        gave them (else left as ``{"$v": id}`` references)."""
        if self.view is not None and self.legacy is None:
            return self.view()
        return self.shown_run()

    @property
    def workflow(self) -> Optional[dict[str, Any]]:
        """The workflow record (id and sha256) the checkpoint names (a cache: never used to load code)."""
        if self.legacy is not None:
            return self.legacy.workflow
        found = self.state["kernel"].get("workflow")
        return found if isinstance(found, dict) else None

    def shown_run(self) -> RunState:
        """The run with secrets shown redacted and stored values left as ``{"$v": id}`` references
        (enough for an index row: status, wait, times)."""
        if self.legacy is not None:
            return self.legacy.run
        first, self._first_shown = self._first_shown, None
        if first is not None and first[0] is self.run_doc:
            return first[1]
        return RunState.from_dict(_shown(self.run_doc))

    def shown_checkpoint(self) -> Checkpoint:
        """The checkpoint as readers see it (secrets shown redacted, stored values as references): for
        choosing a run's workflow or showing it, never for advancing it (the runtime proves and
        rebuilds the run from its ledger)."""
        if self.legacy is not None:
            return self.legacy
        kernel = _shown(self.state["kernel"])
        pending = kernel.get("pending")
        try:
            typed = Pending.from_dict(pending) if pending is not None else None
        except ValueError:
            typed = None
        return Checkpoint(run=self.shown_run(), ledger=self.ledger, workflow=self.workflow,
                          signature=self.signature, origin=kernel.get("origin"), pending=typed,
                          effects=int(kernel.get("effects") or 0), metadata=kernel.get("metadata") or {})

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``run.json`` (format 3)."""
        doc: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "state": self.state, "ledger": self.ledger.to_dict()}
        if self.signature is not None:
            doc["signature"] = self.signature
        if self.values:
            doc["values"] = self.values
        return doc

    @classmethod
    def from_dict(cls, data: Any) -> "StoredCheckpoint":
        """A ``run.json`` document of any readable format (``ValueError`` names a bad field)."""
        if not isinstance(data, dict):
            raise ValueError("checkpoint is not a JSON object")
        if data.get("format", 1) in (1, 2):
            legacy = Checkpoint.from_dict(data)
            return cls(state={"run": legacy.run.to_dict(), "kernel": {}}, ledger=legacy.ledger,
                       signature=legacy.signature, legacy=legacy)
        state = data.get("state")
        if not isinstance(state, dict) or not isinstance(state.get("run"), dict) \
                or not isinstance(state.get("kernel"), dict):
            raise ValueError("checkpoint.state must be an object with run and kernel objects")
        shown = RunState.from_dict(_shown(state["run"]))  # the run part must at least read as a run
        signature = data.get("signature")
        if signature is not None and not isinstance(signature, dict):
            raise ValueError("checkpoint.signature must be an object or null")
        values = data.get("values") or []
        if not isinstance(values, list) or not all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(n, int) and not isinstance(n, bool)
                                                            for n in v if n is not None) for v in values):
            raise ValueError("checkpoint.values must be a list of [seq, offset] pairs")
        return cls(state=state, ledger=LedgerHead.from_dict(data.get("ledger")), signature=signature,
                   values=values, _first_shown=(state["run"], shown))


def _shown(run: dict[str, Any]) -> dict[str, Any]:
    from .markers import run_value, show

    shown: dict[str, Any] = show(run_value(run))
    return shown


class RunStore(ABC):
    """Where run checkpoints live.

    A store written for upstream 0.0.1 implements ``save``/``load`` and declares nothing: the
    runtime then rebuilds every run from its ledger. Ours declare :class:`Capability` members in
    ``capabilities`` and keep whole :class:`StoredCheckpoint` documents.
    """

    capabilities: frozenset[Capability] = frozenset()

    @abstractmethod
    def save(self, run: RunState) -> None:
        """Persist ``run`` (keeping any checkpoint metadata already stored for it)."""

    @abstractmethod
    def load(self, run_id: str) -> Optional[RunState]:
        """The run, or ``None`` if unknown."""

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Persist a checkpoint; a store without ``CHECKPOINTS`` keeps just the run as readers see it."""
        self.save(checkpoint.run_view())

    def load_checkpoint(self, run_id: str) -> Optional[StoredCheckpoint]:
        """The checkpoint, or ``None``; a store without ``CHECKPOINTS`` reports an untracked head."""
        run = self.load(run_id)
        if run is None:
            return None
        return StoredCheckpoint(state={"run": run.to_dict(), "kernel": {}}, ledger=LedgerHead(),
                                legacy=Checkpoint(run=run, ledger=LedgerHead()))

    def lock(self, run_id: str, *, wait: float = 0.0, create: bool = False) -> ContextManager[Any]:
        """Exclusive access to one run for tick/resume/cancel (default: no locking).

        ``create=True`` is used by ``start``: the run need not exist yet, and the lock makes
        creating it exclusive.
        """
        return contextlib.nullcontext()

    def pruned(self, run_id: str) -> bool:
        """Whether ``run_id`` was pruned: a tombstone keeps its id, so ``start`` refuses it
        (:class:`~abstractruntime.core.errors.RunPrunedError`). Default: a store that cannot prune."""
        return False

    # Block marks (core/blocks.py): a code-first run whose code diverged from its history. A
    # hint beside the ledger, never evidence; the default keeps them in this process only.

    def put_block(self, run_id: str, mark: dict[str, Any]) -> None:
        """Note that ``run_id`` is blocked (``mark``: see :func:`abstractruntime.core.blocks.block_mark`)."""
        self.__dict__.setdefault("_blocks_in_memory", {})[run_id] = dict(mark)

    def get_block(self, run_id: str) -> Optional[dict[str, Any]]:
        """The run's block mark, or ``None`` (stale or not: :func:`~abstractruntime.core.blocks.is_fresh`)."""
        found: Optional[dict[str, Any]] = self.__dict__.get("_blocks_in_memory", {}).get(run_id)
        return dict(found) if found is not None else None

    def list_blocks(self) -> dict[str, dict[str, Any]]:
        """Every block mark kept, by run id."""
        return {k: dict(v) for k, v in self.__dict__.get("_blocks_in_memory", {}).items()}

    def drop_block(self, run_id: str) -> None:
        """Forget the run's block mark (if any)."""
        self.__dict__.get("_blocks_in_memory", {}).pop(run_id, None)


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
    """An append-only journal of step records, per run.

    A store written for upstream 0.0.1 implements ``append``/``list``; ours declare
    :class:`Capability` members in ``capabilities`` (``SEALED_LINES``: records are kept exactly as
    sealed, so format-3 records with stored values and implied fields can live in them).
    """

    capabilities: frozenset[Capability] = frozenset()

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

    def stored(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """The run's records exactly as stored (default: :meth:`list`, for a store that keeps dicts)."""
        return self.list(run_id)

    def record_at(self, run_id: str, position: LedgerHead) -> Optional[dict[str, Any]]:
        """The stored record at ``position`` (its ``seq``), or ``None`` (default: a read up to it)."""
        _, records = self.read_after(run_id, LedgerHead(), until_seq=position.seq)
        return records[-1] if records and records[-1].get("seq") == position.seq else None

    def records_at(self, run_id: str, positions: Sequence[tuple[int, Optional[int]]]) -> builtins.list[dict[str, Any]]:
        """The stored records at ``(seq, offset)`` positions (offsets are hints; default: by seq)."""
        wanted = {seq for seq, _ in positions}
        if not wanted:
            return []
        _, records = self.read_after(run_id, LedgerHead(), until_seq=max(wanted))
        return [r for r in records if r.get("seq") in wanted]

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
        """Keep the run's commitment key and the real values its records' markers commit to
        (never hashed; docs/file-format.md): entries ``{"key"}`` and ``{"commitment", "value"}``.

        The default keeps them in this process only; stores declaring ``SECRETS`` keep them
        durably before the records that commit to them (files: ``runs/<id>/secrets.jsonl``, 0600).
        A snapshot's pin (``{"pin": snapshot_id, "commitments", "at"}``) and its removal
        (``{"unpin": snapshot_id}``) are kept at once, not with a batch of records.
        """
        kept: dict[str, list[dict[str, Any]]] = self.__dict__.setdefault("_secrets_in_memory", {})
        kept.setdefault(run_id, []).extend(dict(e) for e in entries)

    def get_secrets(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """The entries :meth:`put_secrets` kept for the run (oldest first)."""
        kept: dict[str, list[dict[str, Any]]] = self.__dict__.get("_secrets_in_memory", {})
        return list(kept.get(run_id, []))

    def retain_secrets(self, run_id: str, commitments: Collection[str]) -> None:
        """Keep only the values committed to by ``commitments`` and by live snapshot pins (and the
        key while any is kept; :func:`retained`); an empty collection removes every value no
        snapshot pins. The runtime calls it holding the run's lock."""
        kept: dict[str, list[dict[str, Any]]] = self.__dict__.get("_secrets_in_memory", {})
        if run_id in kept:
            kept[run_id] = retained(kept[run_id], commitments)
            if not kept[run_id]:
                del kept[run_id]

    def runs_keeping_secrets(self) -> builtins.list[str]:
        """The runs whose secrets store holds entries (a worker drops those of finished runs)."""
        kept: dict[str, list[dict[str, Any]]] = self.__dict__.get("_secrets_in_memory", {})
        return sorted(run_id for run_id, entries in kept.items() if entries)


def retained(entries: Sequence[dict[str, Any]], commitments: Collection[str]) -> list[dict[str, Any]]:
    """The secret entries to keep when only ``commitments`` are still needed — and those a live
    snapshot pins (``{"pin": snapshot_id, "commitments": [...]}`` entries, kept with them; a pin
    whose snapshot was deleted is followed by ``{"unpin": snapshot_id}``, and both go)."""
    unpinned = {e["unpin"] for e in entries if isinstance(e.get("unpin"), str)}
    pins = [e for e in entries if isinstance(e.get("pin"), str) and isinstance(e.get("commitments"), list)
            and e["pin"] not in unpinned]
    wanted = set(commitments) | {c for pin in pins for c in pin["commitments"]}
    values = [e for e in entries if e.get("commitment") in wanted]
    if not values and not pins:
        return []
    keys = [e for e in entries if "key" in e][:1]
    return [*keys, *values, *pins]


def live_pins(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pin entries among a run's secret entries whose snapshot was not deleted."""
    unpinned = {e["unpin"] for e in entries if isinstance(e.get("unpin"), str)}
    return [e for e in entries if isinstance(e.get("pin"), str) and isinstance(e.get("commitments"), list)
            and e["pin"] not in unpinned]
