"""The durable graph runner: start, tick, resume, cancel.

A run advances node by node. Pure node steps are *group-committed*: their ledger records
and the checkpoint become durable together before any effect handler runs, before a wait is
reported and at the end of a tick (a crash in between re-runs those pure nodes from the last
checkpoint). An effect is bracketed: its intent record is durable (with the checkpoint)
before the handler runs, and its result record is durable before the run moves on, so after
a crash the re-run node finds the completed result by idempotency key and the handler is not
called again. See docs/concepts.md and docs/durability.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

from ..storage.base import Checkpoint, LedgerStore, RunStore
from .canonical import canonical_json, check_size
from .clock import Clock, parse_iso, utc_now
from .effects import (
    EffectOutcome,
    handle_ask_user,
    handle_wait_event,
    handle_wait_job,
    make_start_subworkflow,
    make_wait_until,
)
from .errors import (
    CorruptRecordError,
    InvalidAnswerError,
    InvalidInputError,
    PayloadTooLargeError,
    RunNotFoundError,
    RunNotWaitingError,
    WaitKeyMismatchError,
    WorkflowDriftError,
)
from .models import (
    Effect,
    EffectType,
    RecordKind,
    RunState,
    RunStatus,
    StepPlan,
    StepRecord,
    WaitReason,
)
from .policy import DefaultEffectPolicy, EffectPolicy
from .redaction import Redactor
from .effect_exec import EffectHandler, run_effect
from .session import RunSession, fail_run, set_nested
from .spec import WorkflowSpec


__all__ = ["Runtime", "EffectOutcome", "EffectHandler", "DefaultRunContext"]



@dataclass
class DefaultRunContext:
    """The ``ctx`` node handlers receive: the runtime's clock as ISO text."""

    clock: Clock = utc_now

    def now_iso(self) -> str:
        """Current UTC time, ISO-8601."""
        return self.clock().isoformat()


class Runtime:
    """Runs workflows durably over a run store and a ledger store.

    ``effect_handlers`` (``{EffectType: handler}``) are merged over the built-ins.
    ``clock`` (a callable returning an aware UTC datetime) drives ``wait_until``.
    ``redactor`` scrubs secrets from ledger records; ``signer`` signs each checkpointed head.
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
    ) -> None:
        self._run_store = run_store
        self._ledger_store = ledger_store
        self._clock: Clock = clock or utc_now
        self._ctx = context or DefaultRunContext(self._clock)
        self._workflow_registry = workflow_registry
        self._artifact_store = artifact_store
        self._effect_policy: EffectPolicy = effect_policy or DefaultEffectPolicy()
        self._redactor = redactor or Redactor()
        self.signer = signer
        self._handlers: dict[EffectType, EffectHandler] = {
            EffectType.WAIT_EVENT: handle_wait_event,
            EffectType.WAIT_JOB: handle_wait_job,
            EffectType.ASK_USER: handle_ask_user,
            EffectType.WAIT_UNTIL: make_wait_until(self),
            EffectType.START_SUBWORKFLOW: make_start_subworkflow(self),
        }
        for key, handler in (effect_handlers or {}).items():
            self._handlers[EffectType(key)] = handler
        self._arity: dict[Any, int] = {}

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
        """Add or replace the handler for one effect type."""
        self._handlers[EffectType(effect_type)] = handler

    # -- public API --------------------------------------------------------------------

    def start(
        self,
        *,
        workflow: WorkflowSpec,
        vars: Optional[dict[str, Any]] = None,
        actor_id: Optional[str] = None,
        parent_run_id: Optional[str] = None,
        run_id: Optional[str] = None,
    ) -> str:
        """Create a RUNNING run at the workflow's entry node; returns its id (nothing runs yet)."""
        if vars is not None and not isinstance(vars, dict):
            raise InvalidInputError(f"vars must be a JSON object, not {type(vars).__name__}")
        check_size(canonical_json(vars or {}), what="Run vars")
        run = RunState.new(workflow_id=workflow.workflow_id, entry_node=workflow.entry_node, actor_id=actor_id,
                           vars=vars, parent_run_id=parent_run_id, run_id=run_id)
        run.created_at = run.updated_at = self.now().isoformat()
        if run_id is not None and self._run_store.load(run_id) is not None:
            raise InvalidInputError(f"Run {run_id} already exists")
        rec = StepRecord.start(run=run, node_id=workflow.entry_node, effect=None)
        rec.kind = RecordKind.START.value
        rec.finish_success({"workflow_id": workflow.workflow_id, "vars": run.vars, "parent_run_id": parent_run_id})
        source = workflow.source.to_dict(workflow.workflow_id) if workflow.source else None
        session = RunSession(self, Checkpoint(run=run, ledger=self._ledger_store.head(run.run_id), workflow=source))
        session.record(rec)
        session.commit()
        return run.run_id

    def get_state(self, run_id: str) -> RunState:
        """The run's current state (:class:`RunNotFoundError`, a ``KeyError``, if unknown)."""
        run = self._run_store.load(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        return run

    def get_checkpoint(self, run_id: str) -> Checkpoint:
        """The run's checkpoint: state, ledger head, workflow source, signature."""
        checkpoint = self._run_store.load_checkpoint(run_id)
        if checkpoint is None:
            raise RunNotFoundError(run_id)
        return checkpoint

    def get_ledger(self, run_id: str) -> list[dict[str, Any]]:
        """The run's ledger records, oldest first."""
        return self._ledger_store.list(run_id)

    def tick(
        self,
        *,
        workflow: WorkflowSpec,
        run_id: str,
        max_steps: int = 100,
        allow_drift: bool = False,
        lock_wait: float = 0.0,
    ) -> RunState:
        """Advance the run until it waits, completes, fails or ``max_steps`` nodes ran.

        A run waiting on a due ``wait_until`` continues; other waits are returned unchanged.
        """
        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._open(run_id, workflow, allow_drift)
            return self._advance_or_fail(session, workflow, max_steps)

    def tick_if_due(
        self,
        *,
        workflow: WorkflowSpec,
        run_id: str,
        max_steps: int = 100,
        allow_drift: bool = False,
        lock_wait: float = 0.0,
    ) -> Optional[RunState]:
        """Advance the run only if, under its lock, it waits on a ``wait_until`` that is due.

        Returns ``None`` when it is not due (any more): with several workers, exactly the
        one that resumes the timer gets a state back.
        """
        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._open(run_id, workflow, allow_drift)
            wait = session.run.waiting
            if session.run.status is not RunStatus.WAITING or wait is None or not wait.until \
                    or WaitReason(wait.reason) is not WaitReason.UNTIL:
                return None
            try:
                if self.now() < parse_iso(wait.until):
                    return None
            except ValueError:
                pass  # _advance records the bad timestamp as a failure
            return self._advance_or_fail(session, workflow, max_steps)

    def resume(
        self,
        *,
        workflow: WorkflowSpec,
        run_id: str,
        wait_key: Optional[str],
        payload: Any,
        allow_drift: bool = False,
        lock_wait: float = 0.0,
        max_steps: int = 100,
    ) -> RunState:
        """Deliver ``payload`` to a waiting run and advance it.

        The payload is stored at the wait's ``result_key`` and the run continues at its
        ``resume_to_node``. Refuses a run that is not waiting (:class:`RunNotWaitingError`,
        also for a repeated resume of one wait), a wrong ``wait_key``
        (:class:`WaitKeyMismatchError`) and an answer outside the choices when free text is
        not allowed (:class:`InvalidAnswerError`) — all before anything is written.
        """
        encoded = canonical_json(payload)
        with self._run_store.lock(run_id, wait=lock_wait):
            session = self._open(run_id, workflow, allow_drift)
            run = session.run
            wait = run.waiting
            if run.status is not RunStatus.WAITING or wait is None:
                raise RunNotWaitingError(f"Run {run_id} is not waiting (status: {run.status.value})",
                                         run_id=run_id, status=run.status.value)
            if wait_key is not None and wait.wait_key is not None and wait_key != wait.wait_key:
                raise WaitKeyMismatchError(
                    f"wait_key mismatch: run {run_id} waits on '{wait.wait_key}', got '{wait_key}'",
                    run_id=run_id, expected=wait.wait_key, got=wait_key)
            _check_answer(wait.choices, wait.allow_free_text, payload)
            check_size(encoded, what="Resume payload")
            rec = StepRecord.start(run=run, node_id=run.current_node, effect=None)
            rec.kind = RecordKind.RESUME.value
            rec.finish_success({"reason": WaitReason(wait.reason).value, "wait_key": wait.wait_key,
                                "payload": payload})
            session.record(rec)
            if wait.result_key:
                set_nested(run.vars, wait.result_key, payload)
            run.status, run.waiting = RunStatus.RUNNING, None
            if wait.resume_to_node:
                run.current_node = wait.resume_to_node
            session.commit()
            return self._advance_or_fail(session, workflow, max_steps)

    def cancel_run(self, run_id: str, *, reason: Optional[str] = None, lock_wait: float = 0.0) -> RunState:
        """RUNNING/WAITING → CANCELLED (``error=reason``); terminal runs are returned unchanged."""
        with self._run_store.lock(run_id, wait=lock_wait):
            checkpoint = self.get_checkpoint(run_id)
            run = checkpoint.run
            if run.status.is_terminal:
                return run
            session = RunSession(self, checkpoint)
            rec = StepRecord.start(run=run, node_id=run.current_node, effect=None)
            rec.kind = RecordKind.CANCEL.value
            rec.finish_success({"reason": reason, "previous_status": run.status.value})
            session.record(rec)
            run.status, run.error, run.waiting = RunStatus.CANCELLED, reason or "Cancelled", None
            session.commit()
            return run

    # -- internals ---------------------------------------------------------------------

    def redact_record(self, rec: StepRecord) -> StepRecord:
        """Scrub secrets from a record's effect and result (before hashing and writing)."""
        if rec.effect is not None:
            rec.effect = self._redactor.redact(rec.effect)
        if rec.result is not None:
            rec.result = self._redactor.redact(rec.result)
        return rec

    def _open(self, run_id: str, workflow: WorkflowSpec, allow_drift: bool) -> RunSession:
        checkpoint = self.get_checkpoint(run_id)
        run = checkpoint.run
        if run.workflow_id != workflow.workflow_id:
            raise InvalidInputError(
                f"Run {run_id} belongs to workflow '{run.workflow_id}', not '{workflow.workflow_id}'")
        recorded_head = checkpoint.ledger
        if recorded_head.seq:
            head = self._ledger_store.head(run_id)
            if head.seq < recorded_head.seq or (head.seq == recorded_head.seq
                                                and head.head_hash != recorded_head.head_hash):
                raise CorruptRecordError(
                    f"run {run_id}: the checkpoint reflects ledger seq {recorded_head.seq} but the ledger "
                    f"ends at seq {head.seq} with another head (truncated or rewritten?); "
                    "run `abstractruntime verify` for details")
        session = RunSession(self, checkpoint)
        recorded = checkpoint.workflow or {}
        source = workflow.source
        if source is not None and recorded.get("sha256") and recorded["sha256"] != source.sha256:
            if not allow_drift:
                raise WorkflowDriftError(
                    f"Workflow {source.path} changed since run {run_id} recorded it "
                    f"(recorded sha256 {recorded['sha256']}, now {source.sha256}); "
                    "pass allow_drift=True (CLI: --allow-drift) to continue with the new code",
                    recorded=recorded["sha256"], current=source.sha256)
            if not run.status.is_terminal:
                rec = StepRecord.start(run=run, node_id=run.current_node, effect=None)
                rec.kind = RecordKind.NODE.value
                rec.finish_success({"workflow_drift": {"from": recorded["sha256"], "to": source.sha256}})
                session.record(rec)
                checkpoint.workflow = source.to_dict(workflow.workflow_id)
        return session

    def _advance_or_fail(self, session: RunSession, workflow: WorkflowSpec, max_steps: int) -> RunState:
        """:meth:`_advance`, failing the run on the record if its state cannot be stored."""
        try:
            return self._advance(session, workflow, max_steps)
        except InvalidInputError as exc:  # includes PayloadTooLargeError
            return self._fail_unstorable(session.run.run_id, session.uncommitted_nodes, exc)

    def _fail_unstorable(self, run_id: str, nodes: list[str], exc: InvalidInputError) -> RunState:
        """Nothing of the failed commit was written: fail the run from its last checkpoint."""
        session = RunSession(self, self.get_checkpoint(run_id))
        session.checkpoint.pending = None
        node = nodes[0] if nodes else session.run.current_node
        ran = ", ".join(dict.fromkeys(nodes)) or node
        fail_run(session, node, f"Run state cannot be stored (nodes run since the last checkpoint: {ran}): {exc}",
                   exception_type=type(exc).__name__)
        session.commit()
        return session.run

    def _advance(self, session: RunSession, workflow: WorkflowSpec, max_steps: int) -> RunState:
        run = session.run
        if run.status is RunStatus.WAITING:
            self._resume_due_timer(session)
        steps = 0
        while run.status is RunStatus.RUNNING and steps < max_steps:
            steps += 1
            self._step(session, workflow)
        if session.dirty:
            session.commit()
        return run

    def _resume_due_timer(self, session: RunSession) -> None:
        run, wait = session.run, session.run.waiting
        if wait is None or WaitReason(wait.reason) is not WaitReason.UNTIL or not wait.until:
            return
        try:
            due = self.now() >= parse_iso(wait.until)
        except ValueError:
            fail_run(session, run.current_node, f"wait_until: {wait.until!r} is not an ISO-8601 timestamp")
            return
        if not due:
            return
        rec = StepRecord.start(run=run, node_id=run.current_node, effect=None)
        rec.kind = RecordKind.RESUME.value
        rec.finish_success({"reason": WaitReason.UNTIL.value, "wait_key": wait.wait_key, "until": wait.until})
        session.record(rec)
        if wait.result_key:
            set_nested(run.vars, wait.result_key, {"until": wait.until, "ready": True})
        run.status, run.waiting = RunStatus.RUNNING, None
        if wait.resume_to_node:
            run.current_node = wait.resume_to_node

    def _step(self, session: RunSession, workflow: WorkflowSpec) -> None:
        run = session.run
        session.uncommitted_nodes.append(run.current_node)
        pending = session.checkpoint.pending
        if pending is not None and pending.get("node_id") == run.current_node:
            # A crash interrupted this effect after its intent was durable: perform (or
            # reuse) it without running the node body, whose var changes already happened.
            run_effect(self, session, StepPlan(node_id=pending["node_id"], effect=Effect.from_dict(pending["effect"]),
                                               next_node=pending.get("next_node")))
            return
        node_id = run.current_node
        handler = workflow.nodes.get(node_id)
        if handler is None:
            fail_run(session, node_id, f"Unknown node_id '{node_id}' in workflow '{workflow.workflow_id}'")
            return
        try:
            plan = handler(run, self._ctx)
        except Exception as exc:  # a node's bug fails the run, on the record, instead of crashing the caller
            fail_run(session, node_id, f"Node '{node_id}' raised {type(exc).__name__}: {exc}",
                       exception_type=type(exc).__name__)
            return
        if not isinstance(plan, StepPlan):
            fail_run(session, node_id, f"Node '{node_id}' returned {type(plan).__name__}, not a StepPlan")
            return
        if plan.complete_output is not None:
            self._complete(session, plan)
        elif plan.effect is None:
            if not plan.next_node:
                fail_run(session, plan.node_id, f"Node '{plan.node_id}' returned no effect and no next_node")
                return
            rec = StepRecord.start(run=run, node_id=plan.node_id, effect=None)
            session.record(rec.finish_success({"next_node": plan.next_node}))
            run.current_node = plan.next_node
        else:
            run_effect(self, session, plan)

    def _complete(self, session: RunSession, plan: StepPlan) -> None:
        run = session.run
        rec = StepRecord.start(run=run, node_id=plan.node_id, effect=None)
        rec.kind = RecordKind.COMPLETE.value
        try:
            check_size(canonical_json(plan.complete_output), what=f"Output of node {plan.node_id!r}")
        except (InvalidInputError, PayloadTooLargeError) as exc:
            fail_run(session, plan.node_id, str(exc))
            return
        session.record(rec.finish_success({"completed": True, "output": plan.complete_output}))
        run.status, run.output, run.waiting = RunStatus.COMPLETED, plan.complete_output, None



def _check_answer(choices: Optional[list[str]], allow_free_text: bool, payload: Any) -> None:
    """Refuse an answer outside ``choices`` when free text is not allowed."""
    if not choices or allow_free_text:
        return
    answer = payload.get("answer") if isinstance(payload, dict) else None
    if answer not in choices:
        raise InvalidAnswerError(
            f"Answer {answer!r} is not one of the choices: {', '.join(choices)}", choices=list(choices))
