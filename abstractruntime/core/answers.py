"""Answering a wait, and preparing a retry: the checks that come before anything is written.

:func:`record_answer` checks that an answer fits the wait it names (its ``wait_id``, the
``wait_key``, the choices, the size; a timer takes no answer, only an explicit firing) and
records it; :func:`prepare_retry` checks that a run
failed on a retryable effect error and records the ``retry``. Both raise before writing.
"""

from __future__ import annotations

from typing import Any, Optional

from . import budget as budgets
from . import usage_totals
from .canonical import check_size
from .child_usage import child_usage_of
from .errors import (
    InvalidAnswerError,
    InvalidInputError,
    RunNotRetryableError,
    RunNotWaitingError,
    TimerWaitError,
    WaitKeyMismatchError,
)
from .models import Effect, RecordKind, RunStatus, StepPlan, WaitReason, WaitState
from .ports import Checkpoint, LedgerHead, LedgerStore, Pending
from .approvals import check_calls_hash, decision_in_progress
from .session import RunSession, leave_wait, new_record
from .session import fire_timer as fire_timer_now
from .wait_checks import refuse_other_wait
from .waits import match_choice


def record_answer(session: RunSession, *, wait_id: Optional[str], wait_key: Optional[str], payload: Any,
                  encoded: bytes, event_id: Optional[str] = None, fire_timer: bool = False,
                  require_calls_hash: bool = False) -> None:
    """Check the answer against the wait it names, then record it (nothing written on refusal).

    ``event_id`` (an event delivered by :func:`~abstractruntime.scheduler.events.emit_event`)
    is recorded in the resume's result. A timer takes no answer: only ``fire_timer=True``
    (an operator's explicit action, recorded as ``fired_by: "operator"``) resumes it before
    its time, and only a timer can be fired. An answer to a wait on tool calls is checked by
    :func:`~abstractruntime.core.approvals.check_calls_hash` (``require_calls_hash``: it must
    name the calls' hash); one whose decision is recorded is finished by that decision only.
    """
    run, run_id = session.run, session.run_id
    wait = run.waiting
    if wait_id is not None:
        check_wait_id(session, wait_id)
    if run.status is not RunStatus.WAITING or wait is None:
        raise RunNotWaitingError(f"Run {run_id} is not waiting (status: {run.status.value})",
                                 run_id=run_id, status=run.status.value)
    if wait_key is not None and wait.wait_key is not None and wait_key != wait.wait_key:
        raise WaitKeyMismatchError(
            f"wait_key mismatch: run {run_id} waits on '{wait.wait_key}', got '{wait_key}'",
            run_id=run_id, expected=wait.wait_key, got=wait_key)
    if check_timer_rule(run_id, wait, payload, fire_timer):
        fire_timer_now(session, wait, fired_by="operator")
        session.answered = True
        return
    if WaitReason(wait.reason) is WaitReason.BUDGET:
        check_size(encoded, what="Resume payload")
        budgets.answer(session, wait, payload)  # raise the budget and go on, or stop the run
        return
    payload = _check_answer(wait.choices, wait.allow_free_text, payload)
    check_calls_hash(wait, payload, run_id, required=require_calls_hash)
    decided = decision_in_progress(session.checkpoint)
    if decided is not None:
        raise InvalidInputError(
            f"run {run_id}: a decision on the calls it waits on is recorded ({decided.get('decision')}) and was cut "
            "short; it is finished by deciding the same again (tools approve|deny), which performs only the calls "
            "without a result; nothing was written", run_id=run_id)
    check_size(encoded, what="Resume payload")
    leave_wait(run, wait, payload)
    rec = new_record(run, RecordKind.RESUME)
    result = {"reason": WaitReason(wait.reason).value, "wait_key": wait.wait_key, "wait_id": wait.wait_id,
              "payload": payload}
    if event_id is not None:
        result["event_id"] = event_id
    rec.finish_success(result)
    # A child's spend counts toward its parent: collected with the child's result.
    report = child_usage_of(session, wait) if WaitReason(wait.reason) is WaitReason.SUBWORKFLOW else None
    recorded = usage_totals.account(session, {"child_usage": report}) if report else None
    session.record(rec, result=payload, result_path=["payload"], ext=recorded)
    session.answered = True
    if report:
        budgets.pause_if_crossed(session, node_id=rec.node_id, effect_id=None)


def check_timer_rule(run_id: str, wait: WaitState, payload: Any, fire_timer: bool) -> bool:
    """Whether this resume fires a timer; raises when it answers one, or fires something else.

    A ``wait_until`` timer is resumed by the clock (a tick once it is due) or by an operator
    who says so (``fire_timer``); an answer or an event never reaches it.
    """
    is_timer = WaitReason(wait.reason) is WaitReason.UNTIL
    if fire_timer:
        if not is_timer:
            raise InvalidInputError(f"Run {run_id} waits on {WaitReason(wait.reason).value} ({wait.wait_id}), "
                                    "not a timer: only a wait_until timer can be fired", run_id=run_id)
        if payload is not None:
            raise InvalidInputError("firing a timer takes no payload: the run gets what the clock would give it",
                                    run_id=run_id)
        return True
    if is_timer:
        handle = f"{run_id}@{wait.wait_id}" if wait.wait_id else run_id
        raise TimerWaitError(
            f"Run {run_id} waits on a timer until {wait.until}: a timer takes no answer. It resumes when it is "
            f"due (tick --due, a worker); to fire it now, say so: resume(..., fire_timer=True) "
            f"(CLI: abstractruntime resume {handle} --fire-timer). Nothing was written",
            run_id=run_id, until=wait.until, wait_id=wait.wait_id)
    return False


def check_wait_id(session: RunSession, wait_id: str) -> None:
    """Refuse an answer naming a wait that is not the one the run waits on (nothing written)."""
    refuse_other_wait(session.run, session.checkpoint.effects, wait_id,
                      lambda: session.ports.ledger.list(session.run_id))


def failed_retryably(ledger: LedgerStore, checkpoint: Checkpoint) -> bool:
    """True when the run failed on a retryable effect error: what ``retry`` continues."""
    run = checkpoint.run
    return (run.status is RunStatus.FAILED and checkpoint.pending is not None
            and bool(_last_failure(ledger, run.run_id).get("retryable")))


def prepare_retry(ledger: LedgerStore, session: RunSession) -> tuple[StepPlan, Pending]:
    """Check that the run failed on a retryable effect error and record the ``retry`` (raises before writing)."""
    run, pending, run_id = session.run, session.checkpoint.pending, session.run_id
    if pending is None or not failed_retryably(ledger, session.checkpoint):
        why = "it did not fail" if run.status is not RunStatus.FAILED else \
            "its failure is not a retryable effect error"
        raise RunNotRetryableError(f"Run {run_id} cannot be retried: {why}", run_id=run_id)
    previous = run.error
    run.status, run.error, run.current_node = RunStatus.RUNNING, None, pending.node_id
    rec = new_record(run, RecordKind.RETRY)
    rec.finish_success({"effect_id": pending.effect_id, "previous_error": previous})
    session.record(rec)
    plan = StepPlan(node_id=pending.node_id, effect=Effect.from_dict(pending.effect), next_node=pending.next_node)
    return plan, pending

def _last_failure(ledger: LedgerStore, run_id: str) -> dict[str, Any]:
    head, records = ledger.read_after(run_id, LedgerHead())
    for doc in reversed(records):
        if doc.get("kind") == RecordKind.FAIL.value:
            result = doc.get("result")
            return result if isinstance(result, dict) else {}
    return {}


def _check_answer(choices: Optional[list[str]], allow_free_text: bool, payload: Any) -> Any:
    """The payload with its answer as the choice it picks (:func:`~.waits.match_choice`: ``Y``
    is ``yes``); an answer outside ``choices`` is refused when free text is not allowed."""
    answer = payload.get("answer") if isinstance(payload, dict) else None
    if choices and isinstance(answer, str):
        picked = match_choice(choices, allow_free_text, answer)
        if picked != answer:
            payload, answer = {**payload, "answer": picked}, picked
    if not choices or allow_free_text:
        return payload
    if answer not in choices:
        shown = repr(answer)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidAnswerError(
            f"Answer {shown} is not one of the choices: {', '.join(choices)}", choices=list(choices))
    return payload
