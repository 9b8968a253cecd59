"""The durable graph runner: start, tick, resume, retry, cancel, and the state at any position.

A run advances node by node. Every step becomes a ledger record carrying the state change
it made, so the ledger is the write-ahead log: opening a run replays the records after its
checkpoint, and no node body is ever entered twice for one step. Records are made durable
in batches, one write and one fsync each: the outcome of effect *k*, the pure steps after it
and the intent of effect *k+1* share a batch, and an intent is durable before a handler with
side effects runs. See docs/concepts.md and docs/durability.md.
"""

from __future__ import annotations

import contextlib
from functools import partial

from .lazy import LazyNames

# typing.TYPE_CHECKING without importing typing (type checkers read any TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import inspect
    import threading
    from dataclasses import replace
    from datetime import datetime
    from typing import Any, AsyncIterator, Iterator, Optional

    from .canonical import canonical_json, check_size
    from .clock import Clock, utc_now
    from .drive import Io, Request, Step, StepsStopped, drive_async, drive_sync, run_blocking, settle_in_thread, \
        store_executor
    from .effect_exec import EffectHandler, RegisteredHandler
    from .effects import (
        EffectOutcome,
        handle_ask_user,
        handle_wait_event,
        handle_wait_job,
        make_start_subworkflow,
        make_wait_until,
    )
    from .errors import (
        AbstractRuntimeError,
        InvalidInputError,
        RunExistsError,
        RunPrunedError,
        RunLockedError,
        RunNotFoundError as RunNotFoundError,  # importable from here, as before the runtime was split
        StorageError,
    )
    from .ids import validate_id
    from .observe import InFlightLimits, notify, observed_tick, publisher
    from .models import DeferredVars, EffectType, RecordKind, RunState, RunStatus, WaitReason
    from .policy import DefaultEffectPolicy, EffectPolicy
    from .ports import Capability, Checkpoint, LedgerHead, LedgerStore, Pending, RunStore, has_capability
    from .recovery import OpenedRun, StateDocument, check_signed_head, open_run, rotation_step, state_at, state_document
    from .redaction import Redactor
    from .secret_release import SecretRelease
    from .session import RunParts, RunSession, StorePorts, fail_run, is_finished, new_record
    from .spec import WorkflowSpec
    from .ahead import session_class
    from .answers import failed_retryably, prepare_retry, record_answer
    from .budget import BUDGET_KEY, check_budget
    from .upgrade import check_source
    from .wait_checks import refuse_other_wait
    from .usage_totals import stamp
    from .state import StateImage
    from .stepping import advance_steps, retry_steps
    from .timers import is_due
    from .tracked import tracked_copy
    from .values import json_copy, public_copy
    from .run_context import DefaultRunContext

# What the runtime's code uses, imported by the first ``Runtime()`` (or the first lookup of one
# of these names here), so that ``from abstractruntime import Runtime`` loads none of it; the
# block above says the same to type checkers (tests/packaging/test_lazy_imports.py checks that
# they agree). The names from ``typing`` serve annotations only, bound too so that
# ``typing.get_type_hints`` can read them once a runtime exists (the modules below load typing).
_USES = LazyNames(globals(), __package__, {
    "inspect": (),
    "threading": (),
    "dataclasses": ("replace",),
    "datetime": ("datetime",),
    "typing": ("Any", "AsyncIterator", "Iterator", "Optional"),
    ".canonical": ("canonical_json", "check_size"),
    ".clock": ("Clock", "utc_now"),
    ".effects": (
        "EffectOutcome", "handle_ask_user", "handle_wait_event", "handle_wait_job", "make_start_subworkflow",
        "make_wait_until",
    ),
    ".errors": (
        "AbstractRuntimeError", "InvalidInputError", "RunExistsError", "RunPrunedError", "RunLockedError",
        "RunNotFoundError", "StorageError",
    ),
    ".ids": ("validate_id",),
    ".observe": ("InFlightLimits", "notify", "observed_tick", "publisher"),
    ".models": ("DeferredVars", "EffectType", "RecordKind", "RunState", "RunStatus", "WaitReason"),
    ".policy": ("DefaultEffectPolicy", "EffectPolicy"),
    ".ports": ("Capability", "Checkpoint", "LedgerHead", "LedgerStore", "Pending", "RunStore", "has_capability"),
    ".recovery": (
        "OpenedRun", "StateDocument", "check_signed_head", "open_run", "rotation_step", "state_at", "state_document",
    ),
    ".redaction": ("Redactor",),
    ".secret_release": ("SecretRelease",),
    ".session": ("RunParts", "RunSession", "StorePorts", "fail_run", "is_finished", "new_record"),
    ".spec": ("WorkflowSpec",),
    ".state": ("StateImage",),
    ".values": ("json_copy", "public_copy"),
    ".run_context": ("DefaultRunContext",),
})

# What only advancing a run uses (ticks, answers, retries, effects, the stepping loop):
# loaded by the first method that advances one, so that opening a store and reading a
# run (``runs show``, ``get_state``) loads none of it.
_ADVANCE = LazyNames(globals(), __package__, {
    ".drive": (
        "Io", "Request", "Step", "StepsStopped", "drive_async", "drive_sync", "run_blocking", "settle_in_thread",
        "store_executor",
    ),
    ".effect_exec": ("EffectHandler", "RegisteredHandler"),
    ".ahead": ("session_class",),
    ".answers": ("failed_retryably", "prepare_retry", "record_answer"),
    ".budget": ("BUDGET_KEY", "check_budget"),
    ".upgrade": ("check_source",),
    ".wait_checks": ("refuse_other_wait",),
    ".usage_totals": ("stamp",),
    ".stepping": ("advance_steps", "retry_steps"),
    ".timers": ("is_due",),
    ".tracked": ("tracked_copy",),
})

__all__ = ["Runtime", "EffectOutcome", "EffectHandler", "DefaultRunContext"]


def __getattr__(name: str) -> Any:
    """The names above, for code that imports them from here (``EffectOutcome``, as in 0.0.1)."""
    return (_ADVANCE if name in _ADVANCE.names else _USES).attribute(name)


def _registered(handler: EffectHandler) -> RegisteredHandler:
    """``handler`` with its arity read (the effect execution module is loaded by then)."""
    return RegisteredHandler(handler, _takes_next_node(handler),
                             pure=handler in (handle_ask_user, handle_wait_event, handle_wait_job))


def _takes_next_node(handler: EffectHandler) -> bool:
    """Handlers may take ``(run, effect)`` or ``(run, effect, default_next_node)``."""
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) >= 3


class Runtime:
    """Runs workflows durably over a run store and a ledger store.

    ``effect_handlers`` (``{EffectType: handler}``) are merged over the built-ins.
    ``clock`` (a callable returning an aware UTC datetime) drives ``wait_until``.
    ``redactor`` scrubs secrets from ledger records; ``signer`` signs the head of every
    durable batch, and refuses to extend a ledger whose head it did not sign unless
    ``adopt_unsigned`` (then the adoption is recorded; docs/provenance.md, "Keys over months").
    ``missing_handler="wait"`` makes an effect without a handler wait (its
    intent kept) until a tick brings one, instead of failing the run (0.0.1 behaviour).
    ``snapshot_store`` is where the store's snapshots live: a snapshot's pin on its run's
    secret values is dropped once the snapshot cannot be found there.
    """

    def __init__(
        self,
        *,
        run_store: RunStore,
        ledger_store: LedgerStore,
        effect_handlers: Optional[dict[Any, EffectHandler]] = None,
        context: Optional[Any] = None,
        workflow_registry: Optional[Any] = None,
        artifact_store: Optional[Any] = None,
        effect_policy: Optional[EffectPolicy] = None,
        clock: Optional[Clock] = None,
        redactor: Optional[Redactor] = None,
        signer: Optional[Any] = None,
        missing_handler: str = "fail",
        adopt_unsigned: bool = False,
        snapshot_store: Optional[Any] = None,
    ) -> None:
        _USES.load()  # the first runtime imports what its methods use
        if missing_handler not in ("fail", "wait"):
            raise ValueError("missing_handler must be 'fail' or 'wait'")
        self._run_store = run_store
        self._ledger_store = ledger_store
        self._clock: Clock = clock or utc_now
        self._ctx = context or DefaultRunContext(self._clock)
        self._workflow_registry = workflow_registry
        self._artifact_store = artifact_store
        self._effect_policy: EffectPolicy = effect_policy or DefaultEffectPolicy()
        self._redactor = redactor or Redactor()
        self.signer = signer
        self.adopt_unsigned = adopt_unsigned
        self.missing_handler = missing_handler
        self._release = SecretRelease(run_store, ledger_store, self._clock, snapshot_store)
        # Told of ticks, effect attempts, durable batches and handler progress (core/observe.py).
        self.observers: list[Any] = []
        # Per-key limits on effects in flight across every process of the store (core/observe.py).
        self.in_flight: Optional[InFlightLimits] = None
        # The effect handlers as given, made into a table (their arity read) by the first use of
        # one: the effect execution module loads then, so a runtime that only reads runs never needs it.
        self._handlers: Optional[dict[EffectType, RegisteredHandler]] = None
        self._given: list[tuple[EffectType, Any, bool]] = [
            (EffectType.WAIT_EVENT, handle_wait_event, False), (EffectType.WAIT_JOB, handle_wait_job, False),
            (EffectType.ASK_USER, handle_ask_user, False), (EffectType.WAIT_UNTIL, make_wait_until(self.now), True),
            (EffectType.START_SUBWORKFLOW, make_start_subworkflow(self), False)]
        # run_id -> (file tokens, state) of runs this runtime advanced last (see _load). One
        # runtime serves several threads (a scheduler's thread beside the caller's, worker
        # threads), each under its own run's lock: the cache they share has a lock of its own.
        self._warm: dict[str, tuple[Any, OpenedRun]] = {}
        self._warm_lock = threading.Lock()
        for key, given in (effect_handlers or {}).items():
            self.register_effect_handler(key, given)

    # -- configuration -----------------------------------------------------------------

    @property
    def run_store(self) -> RunStore:
        """The run (checkpoint) store."""
        return self._run_store

    @property
    def ledger_store(self) -> LedgerStore:
        """The ledger store."""
        return self._ledger_store

    @property
    def workflow_registry(self) -> Optional[Any]:
        """The registry used for subworkflows (or ``None``)."""
        return self._workflow_registry

    def set_workflow_registry(self, registry: Any) -> None:
        """Set the registry used for subworkflows."""
        self._workflow_registry = registry

    @property
    def artifact_store(self) -> Optional[Any]:
        """The artifact store (or ``None``)."""
        return self._artifact_store

    def set_artifact_store(self, store: Any) -> None:
        """Set the artifact store."""
        self._artifact_store = store

    @property
    def effect_policy(self) -> EffectPolicy:
        """The retry/idempotency policy."""
        return self._effect_policy

    def set_effect_policy(self, policy: EffectPolicy) -> None:
        """Set the retry/idempotency policy."""
        self._effect_policy = policy

    @property
    def redactor(self) -> Redactor:
        """The secret redactor applied to ledger records."""
        return self._redactor

    def now(self) -> datetime:
        """The runtime's clock: current time, aware UTC."""
        return self._clock()

    def register_effect_handler(self, effect_type: EffectType | str, handler: EffectHandler) -> None:
        """Add or replace the handler for one effect type (its arity is read once, when the
        runtime first uses a handler, or here after that)."""
        key = EffectType(effect_type)  # an unknown type is refused here, as always
        with self._warm_lock:
            if self._handlers is None:
                self._given.append((key, handler, False))
                return
            self._handlers[key] = _registered(handler)

    def handler_for(self, effect_type: EffectType | str) -> Optional[RegisteredHandler]:
        """The registered handler for ``effect_type`` (or ``None``)."""
        key = EffectType(effect_type)
        table = self._handlers
        if table is None:
            _ADVANCE.load()
            with self._warm_lock:
                if self._handlers is None:
                    made: dict[EffectType, RegisteredHandler] = {}
                    for given_type, handler, timer in self._given:
                        # The built-in timer takes the next node and is pure (its wait is its outcome).
                        made[given_type] = RegisteredHandler(handler, True, True) if timer else _registered(handler)
                    self._handlers, self._given = made, []
                table = self._handlers
        return table.get(key)

    def _ports(self, redactor: Optional[Redactor] = None) -> StorePorts:
        return StorePorts(runs=self._run_store, ledger=self._ledger_store, redactor=redactor or self._redactor,
                          clock=self._clock, signer=self.signer, on_finished=self.release_secrets,
                          on_durable=self._durable if self.observers else None)

    def _durable(self, run_id: str, seq: int) -> None:
        notify(self.observers, "durable", run_id, seq)

    def publisher_for(self, run_id: str, effect_id: int, attempt: int) -> Optional[Any]:
        """What ``current_effect().progress(data)`` calls for this attempt (``None``: nobody observes);
        the data is redacted with the runtime's redactor first."""
        return publisher(self.observers, self._redactor, run_id, effect_id, attempt)

    def release_secrets(self, checkpoint: Checkpoint, *, locked: bool = True) -> None:
        """Drop the secret values of a finished run (``checkpoint``; the caller holds its lock, unless
        ``locked=False``: then only if it can be had at once), and of its finished children.

        Values a live snapshot pins stay. A child run keeps its values until its parent finished too
        (the parent may still read the child's output); so a finished run releases its own values
        when it has no parent or its parent has finished, and those of every child that has
        finished (each under its own lock, when it can be had at once). A store that keeps no
        secrets (``SECRETS`` not declared) is left alone.
        """
        release = self._release
        if not release.keeps_secrets or not is_finished(checkpoint):
            return
        run = checkpoint.run
        if release.needs_release(run.run_id) and (run.parent_run_id is None or self._finished(run.parent_run_id)):
            if locked:
                release.release_locked(run.run_id)
            else:
                release.release_unlocked(run.run_id)
        if has_capability(self._run_store, Capability.QUERIES):
            for child in self._run_store.list_children(parent_run_id=run.run_id):  # type: ignore[attr-defined]
                # Its row may lag behind its ledger (a kill): ask the ledger whether it finished.
                if release.needs_release(child.run_id) and self._finished(child.run_id):
                    release.release_unlocked(child.run_id)

    def release_finished_secrets(self) -> list[str]:
        """Drop the values every finished run still keeps (a process killed right after a run's
        last record leaves them); a worker pass calls it. Returns the runs released."""
        release = self._release
        if not release.keeps_secrets:
            return []
        done = []
        for run_id in self._ledger_store.runs_keeping_secrets():
            try:
                if not release.needs_release(run_id) or self._surely_unfinished(run_id):
                    continue
                opened = open_run(self._run_store, self._ledger_store, run_id, for_writing=False, secrets=False)
            except AbstractRuntimeError:
                continue  # unreadable or gone: `verify` says why
            run = opened.checkpoint.run
            if is_finished(opened.checkpoint) and (run.parent_run_id is None or self._finished(run.parent_run_id)) \
                    and release.release_unlocked(run_id):
                done.append(run_id)
        return done

    def _surely_unfinished(self, run_id: str) -> bool:
        """True when the run's checkpoint is at its ledger's head and says it goes on (a cheap
        check, so a sweep opens only the runs that may have finished)."""
        stored = self._run_store.load_checkpoint(run_id) if has_capability(self._run_store, Capability.CHECKPOINTS) \
            else None
        if stored is None or stored.legacy is not None:
            return False
        ledger = self._ledger_store
        head = ledger.peek_head(run_id) if has_capability(ledger, Capability.PEEK_HEAD) else ledger.head(run_id)  # type: ignore[attr-defined]
        try:
            status = RunStatus(stored.run_doc.get("status"))
        except ValueError:
            return False
        return stored.ledger.seq == head.seq and not status.is_terminal

    def _release_on_open(self, checkpoint: Checkpoint) -> None:
        """A finished run opened by a reader: drop what a kill left, of it and of its finished
        children (each when its lock can be had at once)."""
        try:
            self.release_secrets(checkpoint, locked=False)
        except StorageError:
            pass  # a read-only store: the next writer drops them

    def pin_secrets(self, run_id: str, snapshot_id: str, commitments: Any, *, lock_wait: float = 0.0) -> None:
        """Keep the run's values ``commitments`` name while snapshot ``snapshot_id`` exists
        (:class:`SecretMissingError` when some are gone already; nothing is written then)."""
        self._release.pin(run_id, snapshot_id, commitments, lock_wait=lock_wait)

    def unpin_secrets(self, run_id: str, snapshot_id: str, *, lock_wait: float = 0.0) -> bool:
        """Let go of the values snapshot ``snapshot_id`` pinned: dropped now if the run has finished
        (``False``: the run was locked; they go with its next release, the snapshot being gone)."""
        try:
            finished = is_finished(open_run(self._run_store, self._ledger_store, run_id, for_writing=False,
                                            secrets=False).checkpoint)
        except AbstractRuntimeError:
            finished = True  # the run is gone or unreadable: nothing can continue it
        return self._release.unpin(run_id, snapshot_id, finished=finished, lock_wait=lock_wait)

    def _finished(self, run_id: str) -> bool:
        try:
            return is_finished(open_run(self._run_store, self._ledger_store, run_id, for_writing=False,
                                        secrets=False).checkpoint)
        except AbstractRuntimeError:
            return False

    # -- public API --------------------------------------------------------------------

    def start(
        self,
        *,
        workflow: WorkflowSpec,
        vars: Optional[dict[str, Any]] = None,
        actor_id: Optional[str] = None,
        parent_run_id: Optional[str] = None,
        run_id: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
        budget: Optional[dict[str, Any]] = None,
    ) -> str:
        """Create a RUNNING run at the workflow's entry node; returns its id (nothing runs yet).

        Creating a run is exclusive: a second start of the same ``run_id`` raises
        :class:`RunExistsError` and writes nothing. ``metadata`` (run-level configuration,
        never secrets) is recorded in the first ledger record. ``budget``
        (``{"tokens"?, "cost"?, "calls"?}``; default: the workflow's ``budget`` attribute, if
        any) pauses the run when its LLM calls reach it (:mod:`abstractruntime.core.budget`).
        """
        _ADVANCE.load()
        if vars is not None and not isinstance(vars, dict):
            raise InvalidInputError(f"vars must be a JSON object, not {type(vars).__name__}")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidInputError("metadata must be a JSON object")
        limits = check_budget(budget if budget is not None else getattr(workflow, "budget", None))
        if limits is not None:
            metadata = {**(metadata or {}), BUDGET_KEY: limits}
        if run_id is not None:
            validate_id(run_id, "run id")
        check_start = getattr(workflow, "check_start", None)
        if check_start is not None:  # a code-first workflow: its inputs are its function's parameters
            check_start(self, vars)
        check_size(canonical_json(vars or {}), what="Run vars")
        run = RunState.new(workflow_id=workflow.workflow_id, entry_node=workflow.entry_node, actor_id=actor_id,
                           vars=vars, parent_run_id=parent_run_id, run_id=run_id)
        run.created_at = run.updated_at = self.now().isoformat()
        source = workflow.source.to_dict(workflow.workflow_id) if workflow.source else None
        with self.create_lock(run.run_id):
            checkpoint = Checkpoint(run=run, ledger=LedgerHead(), workflow=source, metadata=dict(metadata or {}))
            session = self.new_session(checkpoint)
            rec = new_record(run, RecordKind.START)
            rec.finish_success({"workflow_id": workflow.workflow_id, "parent_run_id": parent_run_id,
                                **self.signing_declaration()})
            session.record(rec, full=True)
            session.save_checkpoint()
            # The first tick, often the caller's next call, needs no open (from a copy: the
            # variables are the caller's own objects).
            self._keep_warm(session, hand_over=False)
        return run.run_id

    def signing_declaration(self) -> dict[str, Any]:
        """What a run's first record says about its signing key: ``{"signing": key_id}`` with a key
        (hashed and chained, so the run never loses it), else nothing."""
        key_id = getattr(self.signer, "key_id", None)
        return {"signing": key_id} if key_id else {}

    @contextlib.contextmanager
    def create_lock(self, run_id: str) -> Iterator[None]:
        """Exclusive creation: the run's lock, then the check that nothing exists under its id.

        A lock held by another process means the id is being created or advanced: it exists.
        """
        try:
            lock = self._run_store.lock(run_id, create=True)
            lock.__enter__()
        except RunLockedError:
            raise RunExistsError(f"Run {run_id} already exists (another process holds it)", run_id=run_id) from None
        with contextlib.ExitStack() as held:
            held.push(lock)  # entered above: leave it as a ``with`` statement would
            if self._exists(run_id):
                raise RunExistsError(f"Run {run_id} already exists", run_id=run_id)
            self._refuse_pruned(run_id)  # under the lock: a prune holds it while it tombstones the run
            yield

    def _refuse_pruned(self, run_id: str) -> None:
        if self._run_store.pruned(run_id):
            raise RunPrunedError(f"Run {run_id} was pruned: its tombstone keeps the id, which cannot name a new run; "
                                 "choose another run id", run_id=run_id)

    def open_session(self, run_id: str, *, redactor: Optional[Redactor] = None) -> RunSession:
        """A session over the run as rebuilt now (the caller holds the run's lock); ``redactor``
        replaces the runtime's for this session's records."""
        return self._session(self._load(run_id), redactor=redactor)

    def new_session(self, checkpoint: Checkpoint, *, redactor: Optional[Redactor] = None) -> RunSession:
        """A session for a run being created from ``checkpoint`` (the caller holds the create lock);
        its first record must carry every field (``record(..., full=True)``)."""
        _ADVANCE.load()
        return session_class(self._run_store)(self._ports(redactor),
                                              RunParts(checkpoint, StateImage.blank(checkpoint.run.run_id)))

    def run_exists(self, run_id: str) -> bool:
        """True when the run has a ledger or a checkpoint."""
        return self._exists(run_id)

    def _exists(self, run_id: str) -> bool:
        if self._ledger_store.head(run_id).seq:
            return True
        try:
            return self._run_store.load(run_id) is not None
        except Exception:  # an unreadable checkpoint still occupies the id
            return True

    def get_state(self, run_id: str) -> RunState:
        """The run's current state (:class:`RunNotFoundError`, a ``KeyError``, if unknown)."""
        return self.get_checkpoint(run_id).run

    def get_checkpoint(self, run_id: str) -> Checkpoint:
        """The run's current state with its real values: the proven checkpoint with the ledger after it
        replayed (a secret whose value is gone shows redacted). A finished run whose values were
        not dropped yet (a process killed right after its last record) has them dropped now."""
        opened = open_run(self._run_store, self._ledger_store, run_id, for_writing=False)
        self._release_on_open(opened.checkpoint)
        return opened.checkpoint

    def can_retry(self, run_id: str) -> bool:
        """Whether :meth:`retry` would continue the run: it failed on a retryable effect error."""
        _ADVANCE.load()
        return failed_retryably(self._ledger_store, self.get_checkpoint(run_id))

    def shown_checkpoint(self, run_id: str, *, at: Optional[int] = None) -> Checkpoint:
        """The run as readers see it — now, or right after ledger record ``at`` — with every secret
        shown as its redacted text (what ``runs show`` prints); the run's secrets are never read.
        Like :meth:`get_checkpoint`, an open of a finished run drops what a kill left behind."""
        if at is not None:
            return state_at(self._run_store, self._ledger_store, run_id, at, secrets=False)
        opened = open_run(self._run_store, self._ledger_store, run_id, for_writing=False, secrets=False)
        self._release_on_open(opened.checkpoint)
        found = opened.checkpoint
        if opened.legacy:
            # A run written before format 3 may have a format-1 checkpoint holding real values: the
            # rules judge them (past states of such runs show what the ledger redacted as redacted).
            found.run = RunState.from_dict(self._redactor.redact(found.run.to_dict()))
        return found

    def reveal(self, run_id: str, path: str) -> Any:
        """The real value at ``path`` of the run's current state (``"vars.api_key"``,
        ``"vars.headers.0.1"``, ``"output.token"``): what an operator asks for explicitly.

        Raises :class:`InvalidInputError` when the run has no value there and
        :class:`SecretMissingError` when a secret in it is no longer in the run's secrets store
        (released when the run finished, or deleted).
        """
        from .reveal import reveal

        found = state_document(self._run_store, self._ledger_store, run_id)
        if found is None:  # older-format records: the live state is all there is
            return reveal(self.get_checkpoint(run_id).run.to_dict(), path, run_id=run_id)
        return reveal(found.document["run"], path, run_id=run_id, table=found.table,
                      secrets=lambda: self._ledger_store.get_secrets(run_id))

    def state_document(self, run_id: str, seq: Optional[int] = None) -> Optional[StateDocument]:
        """The run's state document as the ledger holds it (secrets as markers, large values as
        references), right after record ``seq`` or at its head; ``None`` for a run whose records
        are of an older format. Reads no secret value."""
        return state_document(self._run_store, self._ledger_store, run_id, seq)

    def state_at(self, run_id: str, seq: int) -> Checkpoint:
        """The run as it was right after ledger record ``seq``, rebuilt from the ledger."""
        return state_at(self._run_store, self._ledger_store, run_id, seq)

    def get_ledger(self, run_id: str) -> list[dict[str, Any]]:
        """The run's ledger records, oldest first."""
        return self._ledger_store.list(run_id)

    def tick(self, *, workflow: WorkflowSpec, run_id: str, max_steps: int = 100, allow_drift: bool = False,
             lock_wait: float = 0.0) -> RunState:
        """Advance the run until it waits, completes, fails or ``max_steps`` nodes ran.

        A run waiting on a due ``wait_until`` continues (so does one waiting for an effect
        handler this runtime now has); other waits are returned unchanged.
        """
        _ADVANCE.load()
        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._open(run_id, workflow, allow_drift)
            return self._finish(session, advance_steps(self, session, workflow, max_steps))

    async def atick(self, *, workflow: WorkflowSpec, run_id: str, max_steps: int = 100, allow_drift: bool = False,
                    lock_wait: float = 0.0) -> RunState:
        """:meth:`tick` for an event loop: ``async def`` nodes and handlers are awaited, blocking
        handlers and file I/O run in worker threads, so many runs advance at once."""
        _ADVANCE.load()
        async with self._aopen(run_id, workflow, allow_drift, lock_wait) as session:
            return await self._afinish(session, advance_steps(self, session, workflow, max_steps))

    @contextlib.asynccontextmanager
    async def _aopen(self, run_id: str, workflow: WorkflowSpec, allow_drift: bool,
                     lock_wait: float) -> AsyncIterator[RunSession]:
        """The run locked and opened (``_open``) in one hop to a store thread: reading the
        checkpoint and the ledger's tail never block the loop. A lock held by another writer is
        waited for on the loop (tried again after short sleeps until ``lock_wait`` has passed),
        never in a store thread: ticks waiting for one run would otherwise fill the store pool
        and starve the writer holding it of the thread its next append needs. A cancellation
        that arrives while the thread runs waits for it, then gives the lock back before it propagates."""
        _ADVANCE.load()
        import asyncio  # loaded already: this runs on an event loop

        def lock_and_open() -> tuple[Any, RunSession]:
            lock = self._run_store.lock(run_id, wait=0.0)
            lock.__enter__()
            try:
                return lock, self._open(run_id, workflow, allow_drift)
            except BaseException:
                lock.__exit__(None, None, None)
                raise

        loop = asyncio.get_running_loop()
        deadline = loop.time() + lock_wait
        pause = 0.002
        while True:
            waiting = Request()
            try:
                lock, session = await settle_in_thread(waiting, lock_and_open, executor=store_executor())
                break
            except RunLockedError:
                left = deadline - loop.time()
                if waiting.interrupted or left <= 0:
                    raise
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
        with contextlib.ExitStack() as held:
            held.push(lock)  # entered in the thread: leave it as a ``with`` statement would
            if waiting.interrupted:
                _abandon(session)
                raise asyncio.CancelledError
            yield session

    def tick_if_due(self, *, workflow: WorkflowSpec, run_id: str, max_steps: int = 100, allow_drift: bool = False,
                    lock_wait: float = 0.0, running: bool = False) -> Optional[RunState]:
        """Advance the run only if, under its lock, it waits on a ``wait_until`` that is due
        (or, with ``running=True``, it is running: left by a writer that stopped).

        Returns ``None`` when it is not due (any more): with several workers, exactly the
        one that resumes the timer gets a state back.
        """
        _ADVANCE.load()
        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._open(run_id, workflow, allow_drift)
            wait = session.run.waiting
            if running and session.run.status is RunStatus.RUNNING:
                return self._finish(session, advance_steps(self, session, workflow, max_steps))
            try:
                due = session.run.status is RunStatus.WAITING and wait is not None and bool(wait.until) \
                    and WaitReason(wait.reason) is WaitReason.UNTIL and is_due(wait, self.now())
            except ValueError:
                due = True  # stepping records the bad timestamp as a failure
            if not due:
                # Nothing to advance, but a checkpoint behind the ledger (a writer stopped between
                # the two) is stored by the end-of-tick rule, so queries and workers see the ledger.
                session.finish()
                return None
            return self._finish(session, advance_steps(self, session, workflow, max_steps))

    def resume(self, *, workflow: WorkflowSpec, run_id: str, wait_key: Optional[str] = None, payload: Any = None,
               allow_drift: bool = False, lock_wait: float = 0.0, max_steps: int = 100,
               wait_id: Optional[str] = None, fire_timer: bool = False,
               event_id: Optional[str] = None, require_calls_hash: bool = False) -> RunState:
        """Deliver ``payload`` to a waiting run and advance it.

        ``wait_id`` (``"w17"``, from a wait handle ``RUN@w17``) names the wait being answered:
        if that wait was already answered, :class:`AlreadyAnsweredError` is raised and nothing
        is written, also when the run now waits on something else. ``wait_key`` is checked
        as in 0.0.1 (:class:`WaitKeyMismatchError`); a run that is not waiting raises
        :class:`RunNotWaitingError`; an answer outside the choices when free text is not
        allowed raises :class:`InvalidAnswerError` — all before anything is written.

        A ``wait_until`` timer takes no answer (:class:`TimerWaitError`): it is resumed by the
        clock, or fired now with ``fire_timer=True`` and no payload (recorded as fired by an
        operator). ``event_id`` is recorded in the resume's result (see ``emit_event``).

        A wait on tool calls is decided with :meth:`approve_tool_calls` / :meth:`deny_tool_calls`;
        a raw answer to it that names a ``calls_sha256`` must name the pending calls' hash, and
        with ``require_calls_hash`` (what the command line asks) it must name one.
        """
        _ADVANCE.load()
        encoded = canonical_json(payload)
        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._open(run_id, workflow, allow_drift)
            record_answer(session, wait_id=wait_id, wait_key=wait_key, payload=payload, encoded=encoded,
                          event_id=event_id, fire_timer=fire_timer, require_calls_hash=require_calls_hash)
            return self._finish(session, advance_steps(self, session, workflow, max_steps))

    def approve_tool_calls(self, *, workflow: WorkflowSpec, run_id: str, executor: Any,
                           only: Optional[list[str]] = None, reason: Optional[str] = None,
                           calls_sha256: Optional[str] = None, by: Optional[str] = None, wait_id: Optional[str] = None,
                           allow_drift: bool = False, lock_wait: float = 0.0, max_steps: int = 100) -> RunState:
        """Approve the tool calls the run waits on, perform them with ``executor`` and go on.

        Under the run's lock: a ``decision`` record bound to the calls' ``calls_sha256`` (and
        ``by``, who decided), durable before any call runs; then each approved call — ``only``
        those call ids, the others refused with ``reason`` — through ``executor.execute(tool_calls=
        [call])``, its result recorded before the next starts; then the results answer the wait
        (``{"mode": "executed", "results", "calls_sha256", "approval"}`` at its ``result_key``) and
        the run advances as :meth:`resume` does. ``calls_sha256`` refuses calls other than the ones
        reviewed; ``wait_id`` names the wait (``RUN@wN``) as for :meth:`resume`.

        A crash inside a call leaves the run waiting with the decision recorded: approving again
        performs the calls without a result only. Two approvals at once run the calls once (the
        second gets :class:`RunLockedError`, or :class:`AlreadyAnsweredError` after ``lock_wait``).
        See :mod:`abstractruntime.core.approvals`.
        """
        from .approvals import APPROVED, decide, decision_steps

        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._open(run_id, workflow, allow_drift)
            made = decide(session, decision=APPROVED, only=only, reason=reason, expected_sha256=calls_sha256, by=by,
                          wait_id=wait_id)  # refusals come before anything is written
            return self._finish(session, decision_steps(self, session, workflow, made, executor, max_steps))

    def deny_tool_calls(self, *, workflow: WorkflowSpec, run_id: str, reason: Optional[str] = None,
                        calls_sha256: Optional[str] = None, by: Optional[str] = None, wait_id: Optional[str] = None,
                        allow_drift: bool = False, lock_wait: float = 0.0, max_steps: int = 100) -> RunState:
        """Refuse every tool call the run waits on (``Tool call refused: <reason>`` for each) and go on:
        a ``decision`` record as in :meth:`approve_tool_calls`, then the refusals answer the wait."""
        from .approvals import DENIED, decide, decision_steps

        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._open(run_id, workflow, allow_drift)
            made = decide(session, decision=DENIED, only=None, reason=reason, expected_sha256=calls_sha256, by=by,
                          wait_id=wait_id)
            return self._finish(session, decision_steps(self, session, workflow, made, None, max_steps))

    async def aresume(self, *, workflow: WorkflowSpec, run_id: str, wait_key: Optional[str] = None,
                      payload: Any = None, allow_drift: bool = False, lock_wait: float = 0.0, max_steps: int = 100,
                      wait_id: Optional[str] = None, fire_timer: bool = False,
                      event_id: Optional[str] = None) -> RunState:
        """:meth:`resume` for an event loop (see :meth:`atick`)."""
        _ADVANCE.load()
        encoded = canonical_json(payload)
        async with self._aopen(run_id, workflow, allow_drift, lock_wait) as session:
            record_answer(session, wait_id=wait_id, wait_key=wait_key, payload=payload, encoded=encoded,
                          event_id=event_id, fire_timer=fire_timer)
            return await self._afinish(session, advance_steps(self, session, workflow, max_steps))

    def check_wait(self, run_id: str, wait_id: str) -> Checkpoint:
        """What :meth:`resume` would say about an answer to wait ``wait_id`` (``RUN@wN``), asked
        before any workflow code is loaded: returns the run when it waits on that wait, else raises
        :class:`AlreadyAnsweredError` (a resume of it is recorded), :class:`RunNotWaitingError` (the
        run left it unanswered, or its record never became durable: ``tick`` the run) or
        :class:`WaitKeyMismatchError` (no such wait). Reads only; ``resume`` asks again under the lock."""
        _ADVANCE.load()
        checkpoint = self.get_checkpoint(run_id)
        refuse_other_wait(checkpoint.run, checkpoint.effects, wait_id, lambda: self._ledger_store.list(run_id))
        return checkpoint

    def retry(self, *, workflow: WorkflowSpec, run_id: str, max_steps: int = 100, allow_drift: bool = False,
              lock_wait: float = 0.0) -> RunState:
        """Attempt again the effect a run failed on, when that failure was retryable.

        Appends a ``retry`` record (the failure stays in the ledger) and gives the effect a
        fresh budget of attempts per the effect policy. Raises :class:`RunNotRetryableError`
        for any other run.
        """
        _ADVANCE.load()
        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._open(run_id, workflow, allow_drift)
            plan, pending = prepare_retry(self._ledger_store, session)
            return self._finish(session, retry_steps(self, session, workflow, plan, pending, max_steps))

    async def aretry(self, *, workflow: WorkflowSpec, run_id: str, max_steps: int = 100, allow_drift: bool = False,
                     lock_wait: float = 0.0) -> RunState:
        """:meth:`retry` for an event loop (see :meth:`atick`)."""
        _ADVANCE.load()
        async with self._aopen(run_id, workflow, allow_drift, lock_wait) as session:
            plan, pending = prepare_retry(self._ledger_store, session)
            return await self._afinish(session, retry_steps(self, session, workflow, plan, pending, max_steps))

    def update_metadata(self, run_id: str, updates: dict[str, Any], *, lock_wait: float = 0.0) -> Checkpoint:
        """Merge ``updates`` into the run's metadata, recorded in the ledger (a ``metadata`` record)."""
        if not isinstance(updates, dict):
            raise InvalidInputError("metadata updates must be a JSON object")
        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._session(self._load(run_id))
            session.checkpoint.metadata = {**session.checkpoint.metadata, **updates}
            rec = new_record(session.run, RecordKind.METADATA)
            rec.finish_success({"updated": sorted(updates)})
            session.record(rec)
            session.save_checkpoint()
            return session.checkpoint

    def checkpoint(self, run_id: str, *, lock_wait: float = 0.0) -> Checkpoint:
        """Store a checkpoint of the run at its ledger head now (proven by a digest the ledger
        carries there: a ``checkpoint`` record is appended when the head record carries none), so
        the next open replays nothing. A run whose ledger went past its checkpoint (a writer
        stopped between its append and its checkpoint) is then seen by queries, workers and
        ``emit`` as its ledger says, and a run store's mark that it may be ahead is cleared: a
        worker does this for a marked run its ledger says it cannot advance. Runs no node, needs
        no workflow."""
        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._session(self._load(run_id))
            session.save_checkpoint()
            self.keep_warm(session)
            return session.checkpoint

    def adopt(self, run_id: str, *, lock_wait: float = 0.0) -> Checkpoint:
        """Take the run over with this runtime's key: when its head is not signed by that key
        (a run begun without a key, stripped, or signed by another key), record a ``signing``
        record ``{"adopt": {"key_id", "from_seq"}}`` signed by it. Nothing is written when the
        key already signs the run."""
        if self.signer is None:
            raise InvalidInputError("adopting a run needs a signing key (Runtime(signer=...))")
        with self._run_store.lock(run_id, wait=lock_wait):
            self._warm.pop(run_id, None)
            opened = open_run(self._run_store, self._ledger_store, run_id)
            opened.adoption = check_signed_head(opened, signer=self.signer, ledger=self._ledger_store, run_id=run_id,
                                                adopt_unsigned=True)
            if opened.adoption is None:
                return opened.checkpoint
            session = self._session(opened)
            session.save_checkpoint()
            return session.checkpoint

    def rotate_key(self, run_id: str, to: Any, *, lock_wait: float = 0.0) -> Checkpoint:
        """Hand the run over from this runtime's key (the key in force) to ``to``, a signer of the new key.

        Appends a ``signing`` record ``{"rotate": {"from", "to", "public_key"}}`` in a batch the old
        key signs, then a ``checkpoint`` record in a batch the new key signs, so a writer holding
        only the new key continues the run. A rotation interrupted between the two is finished by
        calling this again; a run the new key already signs is left as it is.
        """
        _ADVANCE.load()
        old = self.signer
        new_id = getattr(to, "key_id", None)
        if old is None or not hasattr(to, "sign_head") or not hasattr(to, "public_key_pem") or not new_id:
            raise InvalidInputError("rotate_key needs the runtime's signer (the old key) and a signer of the new key")
        if new_id == getattr(old, "key_id", None):
            raise InvalidInputError(f"key {new_id} is already the runtime's key")
        with self._run_store.lock(run_id, wait=lock_wait):
            self._warm.pop(run_id, None)
            opened = open_run(self._run_store, self._ledger_store, run_id)
            step = rotation_step(opened, old=old, new=to, ledger=self._ledger_store, run_id=run_id)
            if step == "done":
                return opened.checkpoint
            session = self._session(opened)
            if step == "rotate":
                rec = new_record(session.run, RecordKind.SIGNING)
                rec.finish_success({"rotate": {"from": old.key_id, "to": new_id,
                                               "public_key": public_pem_text(to)}})
                session.record(rec)
                session.save_checkpoint()  # a batch of its own, signed by the old key
            handed = session_class(self._run_store)(replace(self._ports(), signer=to), session.parts(),
                                                    durable_head=session.durable, saved_head=session.saved)
            handed.saved_status = session.saved_status
            handed.record(new_record(handed.run, RecordKind.CHECKPOINT).finish_success(None))
            handed.save_checkpoint()  # the new key's first batch
            return handed.checkpoint

    def cancel_run(self, run_id: str, *, reason: Optional[str] = None, lock_wait: float = 0.0) -> RunState:
        """RUNNING/WAITING → CANCELLED (``error=reason``); terminal runs are returned unchanged."""
        _ADVANCE.load()
        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._session(self._load(run_id))
            run = session.run
            if run.status.is_terminal:
                return run
            previous = run.status.value
            stamp(session)  # what a killed writer left unsettled is counted on the run's last record
            run.status, run.error, run.waiting = RunStatus.CANCELLED, reason or "Cancelled", None
            session.checkpoint.pending = None
            rec = new_record(run, RecordKind.CANCEL)
            rec.finish_success({"reason": reason, "previous_status": previous})
            session.record(rec)
            session.save_checkpoint()
            return run

    # -- internals ---------------------------------------------------------------------

    def _load(self, run_id: str) -> OpenedRun:
        with self._warm_lock:
            warm = self._warm.pop(run_id, None)
        if warm is not None and warm[0] is not None and warm[0] == self._tokens(run_id):
            # Nothing touched the run's files since this runtime last advanced it (nor, when the
            # last tick's variables were kept as they were, anything else touched those).
            tracker = warm[1].parts.tracker
            variables = warm[1].parts.checkpoint.run.vars
            if tracker is None or tracker.intact(variables):
                return warm[1]
        opened = open_run(self._run_store, self._ledger_store, run_id)
        opened.adoption = check_signed_head(opened, signer=self.signer, ledger=self._ledger_store, run_id=run_id,
                                            adopt_unsigned=self.adopt_unsigned)
        return opened

    def _tokens(self, run_id: str) -> Optional[tuple[Any, Any]]:
        ledger, runs = self._ledger_store, self._run_store
        if not (has_capability(ledger, Capability.POSITION_TOKENS) and has_capability(runs, Capability.CHECKPOINT_TOKENS)):
            return None
        return ledger.position_token(run_id), runs.checkpoint_token(run_id)  # type: ignore[attr-defined]

    @property
    def context(self) -> Any:
        """The ``ctx`` node handlers receive."""
        return self._ctx

    def _tokens_after_write(self, session: RunSession) -> Optional[tuple[Any, Any]]:
        """The run's tokens right after this session wrote it, without asking the stores when
        they can tell (a database store knows the token of what it just wrote)."""
        if not (has_capability(self._ledger_store, Capability.POSITION_TOKENS)
                and has_capability(self._run_store, Capability.CHECKPOINT_TOKENS)):
            return None
        token = self._run_store.written_token(session.run_id)  # type: ignore[attr-defined]
        at = self._ledger_store.position_token_at(session.run_id, session.durable)  # type: ignore[attr-defined]
        if token is not None and at is not None:
            return at, token
        return self._tokens(session.run_id)

    def keep_warm(self, session: RunSession) -> None:
        """Keep the run's state for this runtime's next tick, valid while its files are unchanged
        (a finished run is not kept: nothing continues it)."""
        self._keep_warm(session, hand_over=True)

    def _keep_warm(self, session: RunSession, *, hand_over: bool) -> None:
        """:meth:`keep_warm`; ``hand_over``: the live variables may be kept as they are (the
        runtime's own objects, not a caller's)."""
        if session.queued or session.closed is not None or session.finished:
            return
        tokens = self._tokens_after_write(session)
        if tokens is None:
            return
        parts = session.parts()
        if hand_over and parts.tracker is not None and parts.tracker.hand_over(session.run.vars):
            # The variables, as the last record left them, start the next tick; the caller's run
            # (what the tick returned) is given a copy of them, made from the tracker's own copy
            # (never changed in place) when first read.
            parts.checkpoint = _detached(session.checkpoint, snapshot=parts.tracker.private)
        else:
            made: list[Any] = []
            parts.checkpoint = _detached(session.checkpoint, made)
            if parts.tracker is not None:
                parts.tracker.adopt(session.run.vars, parts.checkpoint.run.vars, made)
        opened = OpenedRun(parts=parts, saved=session.saved, head=session.durable, saved_status=session.saved_status)
        with self._warm_lock:
            if len(self._warm) >= 64:
                self._warm.pop(next(iter(self._warm)))  # the oldest entry
            self._warm[session.run_id] = (tokens, opened)

    def _session(self, opened: OpenedRun, *, redactor: Optional[Redactor] = None) -> RunSession:
        _ADVANCE.load()
        session = session_class(self._run_store)(self._ports(redactor), opened.parts, durable_head=opened.head,
                                                 saved_head=opened.saved)
        session.saved_status = opened.saved_status
        if session.finished and opened.external is None:
            self.release_secrets(session.checkpoint)  # a run that ended before its values were dropped (a kill)
        last = opened.last_record
        if opened.legacy:
            session.full_next = True  # older-format records before: the next record carries every field
        if opened.adoption is not None:
            # The operator adopts a head this key did not sign: said first, in a batch the key signs.
            session.record(new_record(session.run, RecordKind.SIGNING).finish_success(opened.adoption.result()))
        if opened.external is not None:
            # A state saved with RunStore.save by a store that cannot record it itself (in memory):
            # record it, so the ledger stays the log, and reuse completed effects as 0.0.1 did.
            self._record_edit(session, opened.external)
        elif last is not None and last.get("kind") == RecordKind.EDIT.value and (last.get("result") or {}).get(
                "reason") == EDIT_REASON:
            session.legacy_reuse = True
        return session

    def _record_edit(self, session: RunSession, run: RunState) -> None:
        session.checkpoint.run = run
        rec = new_record(run, RecordKind.EDIT)
        rec.finish_success({"reason": EDIT_REASON})
        session.record(rec, full=True)
        session.saved = None
        session.legacy_reuse = True

    def record_edit(self, run: RunState, *, lock_wait: float = 0.0) -> Checkpoint:
        """Adopt a state written outside the runtime (``RunStore.save``), recording it in the ledger
        first (an ``edit`` record carrying the whole state, signed where the runtime signs).

        The run's kernel fields (its pending effect, counters, metadata) are kept; the next tick
        reuses completed effects by node and payload, as upstream 0.0.1 did after such edits.
        """
        with self._run_store.lock(run.run_id, wait=lock_wait):
            session = self._session(self._load(run.run_id))
            self._record_edit(session, RunState.from_dict(json_copy(run.to_dict())))
            session.save_checkpoint()
            return session.checkpoint

    def _open(self, run_id: str, workflow: WorkflowSpec, allow_drift: bool) -> RunSession:
        _ADVANCE.load()
        session = self._session(self._load(run_id))
        run = session.run
        if run.workflow_id != workflow.workflow_id:
            raise InvalidInputError(
                f"Run {run_id} belongs to workflow '{run.workflow_id}', not '{workflow.workflow_id}'")
        check_source(session, workflow, allow_drift)
        return session

    def _finish(self, session: RunSession, steps: Step) -> RunState:
        """Drive ``steps`` in this thread, failing the run on the record if its state cannot be stored.

        A tick that ends by an exception closes its session before its lock is given up: a
        thread a handler left behind cannot write for the run any more.
        """
        _ADVANCE.load()
        with observed_tick(self.observers, session) as tick:
            try:
                state: RunState = drive_sync(_stoppable(session, steps))
            except InvalidInputError as exc:  # includes PayloadTooLargeError
                state = self._fail_unstorable(session, exc)
            except BaseException:
                _abandon(session)
                raise
            tick.state = state
            return state

    async def _afinish(self, session: RunSession, steps: Step) -> RunState:
        """:meth:`_finish` under the async driver. A cancellation is raised only once nothing runs for
        the run: a synchronous handler in a thread ends first and its outcome is recorded."""
        _ADVANCE.load()
        with observed_tick(self.observers, session) as tick:
            try:
                state: RunState = await drive_async(_stoppable(session, steps))
            except InvalidInputError as exc:
                try:
                    state = await run_blocking(self._fail_unstorable, session, exc)
                except BaseException:
                    _abandon(session)
                    raise
            except BaseException:
                _abandon(session)
                raise
            tick.state = state
            return state

    def _fail_unstorable(self, session: RunSession, exc: InvalidInputError) -> RunState:
        """What was recorded stays; the run fails from the last recorded state."""
        nodes = session.uncommitted_nodes
        session.flush()
        fresh = self._session(self._load(session.run_id))
        node = nodes[-1] if nodes else fresh.run.current_node
        ran = ", ".join(dict.fromkeys(nodes)) or node
        fail_run(fresh, node, f"Run state cannot be stored (nodes run since the last record: {ran}): {exc}",
                 exception_type=type(exc).__name__)
        fresh.save_checkpoint()
        return fresh.run


def public_pem_text(signer: Any) -> str:
    """The PEM text of a signer's public key (what a rotation record carries)."""
    pem = signer.public_key_pem()
    return pem.decode("ascii") if isinstance(pem, bytes) else str(pem)


def _stoppable(session: RunSession, steps: Step) -> Step:
    """``steps``, stopped at their next step when the driver says so (a worker's stop, a
    cancellation): what was recorded is made durable, nothing new begins, and the run goes on
    from there at its next tick (an effect whose intent is durable is performed then)."""
    _ADVANCE.load()
    try:
        state: RunState = yield from steps
        return state
    except StepsStopped:
        yield Io(session.finish)
        return session.run


def _abandon(session: RunSession) -> None:
    """Close a session its tick gave up (an exception, a cancellation) before the lock goes."""
    if session.closed is None:
        session.close("its tick was interrupted; the run's lock is given up")


# The reason an ``edit`` record gives for a state saved with ``RunStore.save``.
EDIT_REASON = "state saved outside the runtime"


def _detached(checkpoint: Checkpoint, made: Optional[list[Any]] = None, *,
              snapshot: Optional[dict[str, Any]] = None) -> Checkpoint:
    """A copy of a live checkpoint that shares nothing with it (the caller keeps the original);
    ``made`` receives the tracked lists of its variables. ``snapshot``: a private copy of the
    variables (core/values.py) — the copy takes the live variables themselves, and the original
    a copy of the snapshot, made when first read."""
    _ADVANCE.load()
    data = checkpoint.run.to_dict()
    variables = data.pop("vars")
    run = RunState.from_dict(json_copy(data))
    if snapshot is not None:
        run.vars = variables
        checkpoint.run.vars = DeferredVars(partial(public_copy, snapshot))  # type: ignore[assignment]
    else:
        # Containers that report their changes, so the next tick's records cost what changed (core/tracked.py).
        run.vars = {key: tracked_copy(value, None, made) for key, value in variables.items()}
    pending = Pending.from_dict(json_copy(checkpoint.pending.to_dict())) if checkpoint.pending else None
    return Checkpoint(run=run, ledger=checkpoint.ledger, workflow=json_copy(checkpoint.workflow),
                      signature=json_copy(checkpoint.signature), origin=json_copy(checkpoint.origin),
                      pending=pending, effects=checkpoint.effects, metadata=json_copy(checkpoint.metadata))
