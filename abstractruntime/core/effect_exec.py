"""Performing one effect: its identity by position, bracketed attempts, retries with backoff.

An effect is identified by its ordinal in the run (``effect_id``: the run's first effect is 1,
the next 2, ...), never by its payload: a loop that performs the same effect twice runs it
twice. Its intent record is durable before a handler with side effects runs (the one fsync of
the step); its outcome is queued and becomes durable with the next batch (the next intent, a
wait or the end of the tick). A crash inside a handler leaves the intent without an outcome:
the next tick performs the effect again (at least once, documented). An explicit key in the
payload (``"idempotency_key"``) — or an effect policy with its own ``idempotency_key`` —
deduplicates across the run: a completed effect with that key is reused.
"""

from __future__ import annotations

import threading
from .fastclass import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional, Union

from . import budget as budgets
from . import usage_totals
from .canonical import MAX_RECORD_BYTES, canonical_json, check_size
from .effects import EffectOutcome
from .errors import InvalidInputError, PayloadTooLargeError, SessionClosedError
from .models import Effect, EffectType, RecordKind, RunState, RunStatus, StepPlan, StepRecord, WaitReason, WaitState
from .observe import end_all, notify
from .policy import DefaultEffectPolicy, compute_idempotency_key
from .drive import EffectCall, Io, Sleep, Step, drive_sync
from .effect_context import CURRENT_EFFECT, EffectIdentity
from .ports import Pending
from .session import RunSession, fail_run, new_record, set_nested
from .wal import explicit_key, positional_key

if TYPE_CHECKING:
    from .host import EffectHost
    from .policy import EffectPolicy
    from .ports import LedgerStore
    from .redaction import Redactor

# A handler returns an outcome, or (``async def``) an awaitable of one.
EffectHandler = Callable[..., Union[EffectOutcome, Awaitable[EffectOutcome]]]


@dataclass(frozen=True)
class RegisteredHandler:
    """An effect handler and whether it takes ``default_next_node`` (decided at registration)."""

    fn: EffectHandler
    takes_next_node: bool
    # Built-in waits only build a WaitState: their intent need not be durable first.
    pure: bool = False

    def __call__(self, run: RunState, effect: Effect, next_node: Optional[str]) -> Any:
        return self.fn(run, effect, next_node) if self.takes_next_node else self.fn(run, effect)


def wait_id_of(effect_id: int) -> str:
    """The wait id of a wait created by the run's ``effect_id``-th effect: ``w<effect_id>``."""
    return f"w{effect_id}"


def _key_for(policy: "EffectPolicy", run: RunState, node_id: str, effect: Effect, effect_id: int) -> tuple[str, bool]:
    """``(key, explicit)``: the workflow's own key when it names one, else the position."""
    named = effect.payload.get("idempotency_key") if isinstance(effect.payload, dict) else None
    if isinstance(named, str) and named:
        return explicit_key(run.run_id, named), True
    if type(policy).idempotency_key is not DefaultEffectPolicy.idempotency_key and hasattr(policy, "idempotency_key"):
        return str(policy.idempotency_key(run=run, node_id=node_id, effect=effect)), True
    return positional_key(run.run_id, effect_id), False


def run_effect(rt: "EffectHost", session: RunSession, plan: StepPlan, *, pending: Optional[Pending] = None,
               extra_attempts: Optional[int] = None) -> None:
    """Perform ``plan.effect`` in this thread (see :func:`effect_steps`)."""
    drive_sync(effect_steps(rt, session, plan, pending=pending, extra_attempts=extra_attempts))


def effect_steps(rt: "EffectHost", session: RunSession, plan: StepPlan, *, pending: Optional[Pending] = None,
                 extra_attempts: Optional[int] = None) -> Step:
    """Perform ``plan.effect`` (or resume the ``pending`` one after a crash or a retry).

    Stepping code (:mod:`abstractruntime.core.drive`): it yields the handler call, the flush
    that makes the intent durable first, and the backoff sleeps.
    """
    run, ckpt = session.run, session.checkpoint
    effect = plan.effect
    assert effect is not None
    # ``failed`` counts the attempts whose failure was recorded: an attempt a crash interrupted
    # (an intent with no outcome) is performed again but does not use up the retry budget.
    if pending is not None:
        effect_id, key = pending.effect_id, pending.idempotency_key
        first_attempt = pending.attempt + 1
        explicit = pending.explicit
        parts: dict[str, Any] = dict(pending.parts)
        failed = pending.failed if extra_attempts is None else 0
    else:
        ckpt.effects += 1
        effect_id, first_attempt, parts, failed = ckpt.effects, 1, {}, 0
        key, explicit = _key_for(rt.effect_policy, run, plan.node_id, effect, effect_id)
    prior = _prior_result(rt.ledger_store, rt.redactor, session, plan, key, explicit)
    if prior is not None:
        _complete(session, plan, effect_id, key, prior, attempt=first_attempt, reused=True)
        return
    budget = extra_attempts if extra_attempts is not None else rt.effect_policy.max_attempts(effect) - failed
    last_attempt = first_attempt + max(budget, 1) - 1
    last_error, retryable, attempt = "unknown error", True, first_attempt - 1
    timeout = _timeout_of(effect)
    kind = EffectType(effect.type).value
    # Only a metered effect can be held back by a budget (the gate answers False for any other).
    metered = kind in budgets.METERED_EFFECTS
    while attempt < last_attempt:
        if metered and budgets.gate(session, kind,
                                    Pending(effect_id=effect_id, node_id=plan.node_id, effect=effect.to_dict(),
                                            next_node=plan.next_node, idempotency_key=key, attempt=attempt,
                                            explicit=explicit, parts=dict(parts), failed=failed)):
            return  # the budget is reached: no attempt is started (a retry neither), the run pauses
        attempt += 1
        rec = StepRecord.start(run=run, node_id=plan.node_id, effect=effect, attempt=attempt, idempotency_key=key)
        rec.effect_id, rec.next_node = effect_id, plan.next_node
        ckpt.pending = Pending(effect_id=effect_id, node_id=plan.node_id, effect=effect.to_dict(),
                               next_node=plan.next_node, idempotency_key=key, attempt=attempt, explicit=explicit,
                               parts=dict(parts), failed=failed)
        handler = rt.handler_for(effect.type)
        session.record(rec)
        if handler is None:
            if rt.missing_handler == "wait":
                _wait_for_handler(session, plan, effect, effect_id, rec)
                return
            last_error, retryable = f"No effect handler registered for {kind}", False
            break
        if not handler.pure:
            yield Io(session.flush_before_effect)  # the intent (and every step before it) is durable first
        # Parts may be recorded from several threads at once, and a cancellation may come at the
        # same moment: one guard orders them, and nothing is written after the cancellation.
        guard = threading.Lock()
        recorder = _part_recorder(session, plan, effect_id, key, attempt, parts, guard)
        # What remains of the budget is a child's allotment: only a subworkflow needs it.
        left = budgets.remaining(session) if effect.type is EffectType.START_SUBWORKFLOW else None
        identity = EffectIdentity(run.run_id, effect_id, key, attempt, dict(parts), recorder, budget_left=left,
                                  publisher=rt.publisher_for(run.run_id, effect_id, attempt), limits=rt.in_flight)
        observers = rt.observers
        watched = notify(observers, "effect_started", run.run_id, effect_id, kind, attempt,
                         plan.node_id) if observers else None
        outcome = yield EffectCall(handler, run, effect, plan.next_node, identity, CURRENT_EFFECT, timeout,
                                   _cancel_recorder(session, plan, effect_id, key, attempt, guard))
        if watched:
            end_all(observers, "effect_ended", watched, outcome.status, outcome.ext, outcome.error)
        if outcome.status == "completed":
            try:
                encoded = canonical_json(outcome.result)
                if len(encoded) > MAX_RECORD_BYTES:
                    check_size(encoded, what=f"Result of {kind} effect")
            except (InvalidInputError, PayloadTooLargeError) as exc:
                outcome = EffectOutcome.failed(str(exc), retryable=False, ext=outcome.ext)
            else:
                recorded, problem = _accounted(session, outcome.ext)
                if problem is None:
                    _complete(session, plan, effect_id, key, outcome.result, attempt=attempt, ext=recorded,
                              metered=outcome.ext is not None)
                    return
                outcome = EffectOutcome.failed(problem, retryable=False)
        if outcome.status == "delayed":
            _delay(rt.now(), session, plan, effect_id, attempt, outcome)
            return
        if outcome.status == "waiting" and outcome.wait is not None:
            wait = outcome.wait
            wait.wait_id = wait_id_of(effect_id)
            ckpt.pending = None
            run.status, run.waiting = RunStatus.WAITING, wait
            usage_totals.stamp(session)  # a waiting run's state carries its usage totals
            done = StepRecord.start(run=run, node_id=plan.node_id, effect=effect, attempt=attempt, idempotency_key=key)
            done.effect_id = effect_id
            session.record(done.finish_waiting(wait))
            return
        last_error, retryable = outcome.error or "unknown error", outcome.retryable
        failed += 1
        if ckpt.pending is not None:
            ckpt.pending.failed = failed
        recorded, _ = _accounted(session, outcome.ext)  # an unusable report of a failure is left out
        _record_failure(session, plan, effect_id, key, attempt, last_error, ext=recorded)
        if not retryable:
            break
        if attempt < last_attempt:
            backoff = rt.effect_policy.backoff_seconds(effect=effect, attempt=attempt)
            if backoff > 0:
                yield Sleep(backoff)
    count = failed if extra_attempts is None else attempt - first_attempt + 1
    count = max(count, 1)
    plural = "attempt" if count == 1 else "attempts"
    # The pending effect stays in the state, so `retry` can attempt it again.
    fail_run(session, plan.node_id, f"Effect {effect.type.value} failed after {count} {plural}: {last_error}",
             details={"effect_id": effect_id, "retryable": retryable, "attempts": attempt})


def _timeout_of(effect: Effect) -> Optional[float]:
    """The effect's ``timeout_s`` (seconds an awaitable handler may take), if it names one."""
    value = effect.payload.get("timeout_s") if isinstance(effect.payload, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _record_failure(session: RunSession, plan: StepPlan, effect_id: int, key: str, attempt: int, error: str,
                    ext: Optional[dict[str, Any]] = None) -> None:
    failed = StepRecord.start(run=session.run, node_id=plan.node_id, effect=plan.effect, attempt=attempt,
                              idempotency_key=key)
    failed.effect_id = effect_id
    session.record(failed.finish_failure(error), ext=ext)


def _accounted(session: RunSession, ext: Any) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """``(ext to record, None)`` with its usage added to the run's totals, or ``(None, why)`` when
    the handler's ``ext`` cannot be recorded (the attempt then fails, not retried)."""
    if ext is None:
        return None, None
    try:
        return usage_totals.account(session, ext) or None, None
    except InvalidInputError as exc:
        return None, f"the handler reported an unusable ext: {exc}"


def _delay(now: datetime, session: RunSession, plan: StepPlan, effect_id: int, attempt: int,
           outcome: EffectOutcome) -> None:
    """The service asked to try again later: wait on a durable timer, keeping the effect pending.

    Not a failed attempt: the pending effect's failure count is unchanged, so the wait does not
    use up its retry budget; when the timer is due the same effect is performed again.
    """
    seconds = float(outcome.delay_s or 0.0)
    until = (now + timedelta(seconds=seconds)).isoformat()
    recorded, _ = _accounted(session, outcome.ext)
    budgets.pause(session, why="retry_after", reason=WaitReason.UNTIL, node_id=plan.node_id,
                  resume_to_node=plan.node_id, effect_id=effect_id, until=until, ext=recorded,
                  details={"retry_after": {"seconds": seconds, "reason": outcome.error, "attempt": attempt,
                                           "effect_id": effect_id}})


def _cancel_recorder(session: RunSession, plan: StepPlan, effect_id: int, key: str,
                     attempt: int, guard: threading.Lock) -> Callable[[str], None]:
    """Record a cancelled attempt and make it durable (the intent stays pending: the next tick
    retries), then close the session: a thread the handler left behind cannot write any more."""

    def record(message: str) -> None:
        with guard:
            try:
                _record_failure(session, plan, effect_id, key, attempt, message)
                session.flush()
            finally:
                session.close("its effect was cancelled")

    return record


def _part_recorder(session: RunSession, plan: StepPlan, effect_id: int, key: str, attempt: int,
                   parts: dict[str, Any], guard: threading.Lock) -> Callable[[str, Any], None]:
    """``record_part`` for one attempt: each part is its own record, durable before it returns
    (:class:`SessionClosedError`, nothing written, once the session was given up)."""

    def record(name: str, value: Any) -> None:
        with guard:
            if session.closed is not None:
                raise SessionClosedError(f"run {session.run_id}: {session.closed}; the part {name!r} was not recorded")
            parts[str(name)] = value
            ckpt = session.checkpoint
            if ckpt.pending is not None:
                ckpt.pending.parts = dict(parts)
            rec = new_record(session.run, RecordKind.PART, plan.node_id)
            rec.effect_id, rec.attempt, rec.idempotency_key = effect_id, attempt, key
            session.record(rec.finish_success({"part": str(name), "value": value}))
            session.flush()

    return record


def _complete(session: RunSession, plan: StepPlan, effect_id: int, key: str, result: Any, *, attempt: int,
              reused: bool = False, ext: Optional[dict[str, Any]] = None, metered: bool = False) -> None:
    run, effect = session.run, plan.effect
    assert effect is not None
    session.checkpoint.pending = None
    if not plan.next_node:
        fail_run(session, plan.node_id, f"Node '{plan.node_id}' executed an effect but set no next_node")
        return
    if effect.result_key and result is not None:
        set_nested(run.vars, effect.result_key, result)
    if effect.type is EffectType.START_SUBWORKFLOW and type(result) is dict and result.get("async") is True \
            and isinstance(result.get("sub_run_id"), str):
        budgets.note_async_child(session, result["sub_run_id"])  # its spend counts toward this run's budget
    run.current_node = plan.next_node
    rec = StepRecord.start(run=run, node_id=plan.node_id, effect=effect, attempt=attempt, idempotency_key=key)
    rec.effect_id = effect_id
    rec.finish_success(result)
    if reused:
        rec.kind = RecordKind.EFFECT.value
    session.record(rec, result=result, ext=ext)
    if metered:  # usage was added to the totals (``ext`` is what was accounted and recorded)
        budgets.pause_if_crossed(session, node_id=plan.node_id, effect_id=effect_id)


def _prior_result(ledger: "LedgerStore", redactor: "Redactor", session: RunSession, plan: StepPlan, key: str,
                  explicit: bool) -> Optional[Any]:
    """A completed result to reuse: by explicit key, or by node and payload after an outside edit."""
    run_id = session.run_id
    found: Optional[dict[str, Any]] = None
    if explicit:
        found = session.queued_completed(key) or ledger.find_completed(run_id, key)
    elif session.legacy_reuse and plan.effect is not None:
        wanted = redactor.redact(plan.effect.to_dict())
        legacy = compute_idempotency_key(run_id=run_id, node_id=plan.node_id, effect=plan.effect)
        for doc in ledger.list(run_id):
            if doc.get("status") != "completed" or doc.get("node_id") != plan.node_id or doc.get("kind") != "effect":
                continue
            if doc.get("effect") == wanted or doc.get("idempotency_key") == legacy:
                found = doc.get("stored", doc)
                break
    if found is None:
        return None
    return session.stored_result(found)


def _wait_for_handler(session: RunSession, plan: StepPlan, effect: Effect, effect_id: int, rec: StepRecord) -> None:
    """No handler is registered: wait (the intent stays pending) until a tick brings one."""
    run = session.run
    kind = EffectType(effect.type).value
    wait = WaitState(reason=WaitReason.EVENT, wait_key=f"handler:{kind}:{run.run_id}:{wait_id_of(effect_id)}",
                     details={"needs_handler": kind}, wait_id=wait_id_of(effect_id))
    run.status, run.waiting = RunStatus.WAITING, wait
    note = new_record(run, RecordKind.EFFECT, plan.node_id)
    note.effect_id, note.attempt, note.idempotency_key = effect_id, rec.attempt, rec.idempotency_key
    note.finish_waiting(wait)
    session.record(note)
