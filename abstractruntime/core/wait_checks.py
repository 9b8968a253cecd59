"""Whether an answer may still go to a wait: the one rule ``resume``, ``emit`` and decisions on
tool calls share (a wait takes one answer; "already answered" only when the ledger shows it)."""

from __future__ import annotations

from typing import Any, Callable

from .errors import AlreadyAnsweredError, InvalidInputError, RunNotWaitingError, WaitKeyMismatchError
from .models import RecordKind, RunState, RunStatus


def refuse_other_wait(run: RunState, effects: int, wait_id: str,
                      records: Callable[[], list[dict[str, Any]]]) -> None:
    """Refuse an answer to wait ``wait_id`` unless the run waits on it now (raises; returns if it does).

    "Already answered" (:class:`AlreadyAnsweredError`) only when a resume of that wait (or a
    decision on its tool calls) is recorded, or the wait belongs to the history a restored or
    edited run took over. A wait
    the run had and left otherwise (cancelled, restored away) is :class:`RunNotWaitingError`;
    so is one whose record never became durable (a torn tail): the run is at the step that makes
    it wait, and ``tick`` makes it wait again. A wait the run never had is
    :class:`WaitKeyMismatchError`. ``records()`` gives the run's ledger (read only here).
    """
    text = str(wait_id)
    number = text[1:] if text[:1] == "w" else text
    if not number.isdigit():
        raise InvalidInputError(f"{wait_id!r} is not a wait id (expected w<number>, e.g. w3)")
    wanted = f"w{int(number)}"
    current = run.waiting.wait_id if run.status is RunStatus.WAITING and run.waiting else None
    if current == wanted:
        return
    run_id = run.run_id
    if int(number) > effects:
        raise WaitKeyMismatchError(f"Run {run_id} has no wait {wanted} (it has begun {effects} effects)",
                                   run_id=run_id, expected=current, got=wanted)
    now = f"it now waits on {current}" if current else f"it is now {run.status.value}"
    answered, had, inherited = _wait_history(records(), wanted)
    if answered or (inherited and not had):
        raise AlreadyAnsweredError(f"Wait {run_id}@{wanted} was already answered ({now}); nothing was written",
                                   run_id=run_id, wait_id=wanted, current_wait_id=current)
    if had:
        raise RunNotWaitingError(f"Run {run_id} is not waiting on {wanted} any more: it left that wait unanswered "
                                 f"({now}); nothing was written", run_id=run_id, status=run.status.value,
                                 wait_id=wanted, current_wait_id=current)
    if run.status is RunStatus.RUNNING:
        raise RunNotWaitingError(
            f"Run {run_id} is not waiting on {wanted}: the step that records that wait was cut short before it "
            f"was durable (the run is running at node {run.current_node}); nothing was written. Continue the run "
            f"and it waits again: tick it (CLI: abstractruntime tick {run_id})", run_id=run_id,
            status=run.status.value, wait_id=wanted, current_wait_id=current)
    raise WaitKeyMismatchError(f"Run {run_id} has no wait {wanted} (its effect {int(number)} did not wait; {now})",
                               run_id=run_id, expected=current, got=wanted)


def _wait_history(records: list[dict[str, Any]], wait_id: str) -> tuple[bool, bool, bool]:
    """``(answered, had, inherited)``: a resume of ``wait_id`` is recorded; the run recorded that
    wait; the run took over a history from elsewhere (a restore or an edit carries a whole state)."""
    answered = had = inherited = False
    for doc in records:
        kind, result = doc.get("kind"), doc.get("result")
        if kind in (RecordKind.RESUME.value, RecordKind.DECISION.value) and isinstance(result, dict) \
                and result.get("wait_id") == wait_id:
            answered = True
        elif doc.get("status") == "waiting" and isinstance(result, dict) and isinstance(result.get("wait"), dict) \
                and result["wait"].get("wait_id") == wait_id:
            had = True
        elif kind in (RecordKind.RESTORE.value, RecordKind.EDIT.value):
            inherited = True
    return answered, had, inherited


__all__ = ["refuse_other_wait"]
