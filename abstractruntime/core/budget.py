"""A run's budget and the pauses it causes — numbers only, no providers.

What a run spent is :mod:`.usage_totals`' (the totals of its ``ext.usage`` reports).
A run's budget (``metadata["budget"]``: ``tokens`` = input + output tokens, ``cost``, ``calls``)
is checked at two points:

- before an ``llm_call`` is started: once a total has reached its limit the call is not
  started; its intent is kept and the run **pauses** (waiting, reason ``budget``);
- after an effect whose outcome reported usage: a call that went over a limit is recorded,
  and the run pauses right after it (a call that lands exactly on a limit does not pause the
  run: it may still finish; its next call is not started).

A pause is a ``pause`` record whose wait has its own id (``RUN@wN``, the run's next effect
ordinal), so an answer names the pause it answers and a retried answer is refused. The
operator's decision is recorded: raising the budget (``{"raise": {"tokens": 50000}}`` or
``{"set": {...}}``: a ``resume`` record whose delta carries the new budget) continues the run
— the paused call, if any, is then performed once — and ``{"answer": "stop"}`` ends it (a
``cancel`` record). A raise that leaves a total at or over its limit is refused before
anything is written.

A child run started by ``start_subworkflow`` gets what remains of its parent's budget as its
own (with the child workflow's own budget, whichever is lower), and a synchronous child's
totals are added to the parent's when the parent collects its result (``ext.child_usage``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Optional

from .errors import InvalidInputError
from .models import RecordKind, RunStatus, WaitReason, WaitState
from .usage_totals import MAX_EXACT, live_totals, number, shown_totals, stamp

if TYPE_CHECKING:
    from .ports import Checkpoint, Pending
    from .session import RunSession

BUDGET_KEY = "budget"
LIMITS = ("tokens", "cost", "calls")
_LIMIT_SET = frozenset(LIMITS)
METERED_EFFECTS = frozenset({"llm_call"})


# -- budgets --------------------------------------------------------------------------------


def _plain_budget(budget: Any) -> bool:
    """Whether ``budget`` is already a budget as stored (the check of every call: no copy)."""
    if type(budget) is not dict or not budget:
        return False
    for name, value in budget.items():
        kind = type(value)
        if name not in _LIMIT_SET or not (kind is int or (kind is float and name == "cost" and math.isfinite(value))) \
                or not 0 <= value <= MAX_EXACT:
            return False
    return True


def check_budget(budget: Any) -> Optional[dict[str, Any]]:
    """A budget as stored: ``{"tokens"?: int, "cost"?: float, "calls"?: int}`` (``None`` when empty).

    Raises :class:`InvalidInputError` for anything else (an unknown limit, a negative number).
    """
    if budget is None:
        return None
    if _plain_budget(budget):
        return dict(budget)
    if not isinstance(budget, Mapping):
        raise InvalidInputError(f"a budget is an object like {{\"tokens\": 100000}}, not {type(budget).__name__}")
    checked: dict[str, Any] = {}
    for name, value in budget.items():
        if name not in LIMITS:
            raise InvalidInputError(f"unknown budget limit {name!r}: use {', '.join(LIMITS)}")
        checked[name] = number(value, f"budget {name}", integer=name != "cost")
    return checked or None


def budget_of(checkpoint: "Checkpoint") -> Optional[dict[str, Any]]:
    """The run's budget (``None``: unlimited). A malformed recorded budget counts as none."""
    metadata = checkpoint.metadata
    raw = metadata.get(BUDGET_KEY) if isinstance(metadata, dict) else None
    if raw is None:  # the common case, on every call: no budget
        return None
    if _plain_budget(raw):
        return raw  # type: ignore[no-any-return]  # read only by the callers
    try:
        return check_budget(raw)
    except InvalidInputError:
        return None


def spent(totals: Mapping[str, Any], limit: str) -> float:
    """What the totals spent of one limit (``tokens`` is input plus output tokens)."""
    if limit == "tokens":
        return int(totals.get("input_tokens") or 0) + int(totals.get("output_tokens") or 0)
    return totals.get(limit) or 0


def reached(totals: Mapping[str, Any], budget: Optional[Mapping[str, Any]]) -> list[str]:
    """The limits of ``budget`` the totals have reached (spent >= limit), in ``LIMITS`` order."""
    if not budget:
        return []
    return [name for name in LIMITS if name in budget and spent(totals, name) >= budget[name]]


def exceeded(totals: Mapping[str, Any], budget: Optional[Mapping[str, Any]]) -> list[str]:
    """The limits of ``budget`` the totals went over (spent > limit), in ``LIMITS`` order."""
    if not budget:
        return []
    return [name for name in LIMITS if name in budget and spent(totals, name) > budget[name]]


def remaining(session: "RunSession") -> Optional[dict[str, Any]]:
    """What is left of the run's budget per limit (``None`` without a budget): a child's allotment."""
    budget = budget_of(session.checkpoint)
    if budget is None:
        return None
    totals = live_totals(session)
    left: dict[str, Any] = {}
    for name, limit in budget.items():
        value = limit - spent(totals, name)
        left[name] = max(round(value, 10) if name == "cost" else int(value), 0)
    return left


def combine(*budgets: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """The tightest of several budgets, limit by limit (``None`` when all are ``None``)."""
    out: dict[str, Any] = {}
    for budget in budgets:
        for name, value in (check_budget(budget) or {}).items():
            out[name] = min(out[name], value) if name in out else value
    return out or None


# -- pauses ---------------------------------------------------------------------------------


def describe(totals: Mapping[str, Any], budget: Mapping[str, Any]) -> str:
    """``tokens 10,234 of 10,000, calls 3 of 5`` — what was spent of each limit."""
    parts = []
    for name in LIMITS:
        if name in budget:
            used, limit = spent(totals, name), budget[name]
            shown = f"{used:.4f}".rstrip("0").rstrip(".") if name == "cost" else f"{int(used):,}"
            limit_shown = f"{limit:g}" if name == "cost" else f"{int(limit):,}"
            parts.append(f"{name} {shown} of {limit_shown}")
    return ", ".join(parts)


def pause(session: "RunSession", *, why: str, reason: WaitReason, node_id: str, resume_to_node: str,
          effect_id: Optional[int], details: dict[str, Any], until: Optional[str] = None,
          prompt: Optional[str] = None, choices: Optional[list[str]] = None,
          ext: Optional[dict[str, Any]] = None) -> WaitState:
    """Make the run wait on a kernel wait (a ``pause`` record): a budget reached, a delay to wait out.

    The wait gets the run's next effect ordinal as its id, so every pause is answered once.
    """
    from .session import new_record

    ckpt, run = session.checkpoint, session.run
    ckpt.effects += 1
    wait_id = f"w{ckpt.effects}"
    wait = WaitState(reason=reason, wait_key=f"{why}:{run.run_id}:{wait_id}", until=until,
                     resume_to_node=resume_to_node, prompt=prompt, choices=choices,
                     allow_free_text=choices is None, details=details, wait_id=wait_id)
    run.status, run.waiting = RunStatus.WAITING, wait
    stamp(session)  # a paused run's state carries its totals
    rec = new_record(run, RecordKind.PAUSE, node_id)
    rec.effect_id = effect_id
    rec.finish_waiting(wait)
    assert rec.result is not None
    rec.result["pause"] = why
    session.record(rec, ext=ext or None)
    return wait


def _pause_for_budget(session: "RunSession", budget: Mapping[str, Any], hit: list[str], *, node_id: str,
                      resume_to_node: str, effect_id: Optional[int], before_call: bool) -> WaitState:
    run, totals = session.run, live_totals(session)
    shown = shown_totals(totals)
    spend = describe(totals, budget)
    when = "before starting an llm_call" if before_call else "after an llm_call crossed it"
    details = {"budget": dict(budget), "spent": shown, "reached": hit, "effect_id": effect_id,
               "before_call": before_call}
    prompt = (f"Run {run.run_id} reached its budget ({spend}), {when}: raise it "
              f"(--raise-budget {hit[0]}=+N) or stop the run (--answer stop)")
    return pause(session, why="budget", reason=WaitReason.BUDGET, node_id=node_id, resume_to_node=resume_to_node,
                 effect_id=effect_id, details=details, prompt=prompt, choices=["stop"])


def gate(session: "RunSession", effect_type: str, pending: "Pending") -> bool:
    """Before a metered effect starts: pause instead when the run's budget is reached.

    ``pending`` is the effect about to start; it is kept (attempt 0) so the run performs it,
    without re-entering its node, once the budget is raised. True when the run paused.
    """
    if effect_type not in METERED_EFFECTS:
        return False
    budget = budget_of(session.checkpoint)
    if budget is None:
        return False
    hit = reached(live_totals(session), budget)
    if not hit:
        return False
    pending.attempt = 0
    session.checkpoint.pending = pending
    _pause_for_budget(session, budget, hit, node_id=pending.node_id, resume_to_node=pending.node_id,
                      effect_id=pending.effect_id, before_call=True)
    return True


def pause_if_crossed(session: "RunSession", *, node_id: str, effect_id: Optional[int]) -> bool:
    """After an outcome that reported usage: pause right after it when it went over a limit.

    A call that brings a total exactly to its limit does not pause the run (it may finish
    without another call); the next call is not started (:func:`gate`).
    """
    run = session.run
    budget = budget_of(session.checkpoint)
    if budget is None or run.status is not RunStatus.RUNNING:
        return False
    hit = exceeded(live_totals(session), budget)
    if not hit:
        return False
    _pause_for_budget(session, budget, hit, node_id=node_id, resume_to_node=run.current_node, effect_id=effect_id,
                      before_call=False)
    return True


def _adjusted(current: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    budget = dict(current)
    for verb in ("raise", "set"):
        changes = payload.get(verb)
        if changes is None:
            continue
        if not isinstance(changes, Mapping) or not changes:
            raise InvalidInputError(f"budget {verb!r} must be an object like {{\"tokens\": 50000}}")
        for name, value in changes.items():
            if name not in LIMITS:
                raise InvalidInputError(f"unknown budget limit {name!r}: use {', '.join(LIMITS)}")
            amount = number(value, f"budget {verb} {name}", integer=name != "cost")
            budget[name] = (budget.get(name, 0) + amount) if verb == "raise" else amount
            if name == "cost":
                budget[name] = round(budget[name], 10)
    return budget


def decision_of(payload: Any) -> str:
    """``"stop"`` or ``"raise"`` for an answer to a budget wait (:class:`InvalidInputError` otherwise)."""
    if isinstance(payload, Mapping):
        answer = payload.get("answer", payload.get("decision"))
        if isinstance(answer, str) and answer.strip().lower() == "stop" and not (
                "raise" in payload or "set" in payload):
            return "stop"
        if ("raise" in payload or "set" in payload) and answer is None:
            return "raise"
    raise InvalidInputError('a budget wait takes {"raise": {"tokens": N}} or {"set": {...}} (CLI: --raise-budget '
                            'tokens=+N), or {"answer": "stop"} to end the run')


def answer(session: "RunSession", wait: WaitState, payload: Any) -> None:
    """Record the operator's decision on a budget wait (checked first: nothing written on refusal)."""
    from .session import new_record

    run, ckpt = session.run, session.checkpoint
    decision = decision_of(payload)
    budget = budget_of(ckpt) or {}
    totals = live_totals(session)
    details = {"wait_id": wait.wait_id, "budget": budget, "spent": shown_totals(totals)}
    if decision == "stop":
        stamp(session)
        previous = run.status.value
        run.status, run.error, run.waiting = RunStatus.CANCELLED, f"stopped at its budget ({describe(totals, budget)})", \
            None
        ckpt.pending = None
        rec = new_record(run, RecordKind.CANCEL)
        rec.finish_success({"reason": run.error, "previous_status": previous, "decision": "stop", **details})
        session.record(rec)
        session.answered = True
        return
    new = _adjusted(budget, payload)
    still = reached(totals, new)
    if still:
        name = still[0]
        raise InvalidInputError(f"the new budget is still reached ({describe(totals, new)}): raise {name} above "
                                f"{spent(totals, name):g}; nothing was written", run_id=run.run_id)
    stamp(session)
    ckpt.metadata = {**ckpt.metadata, BUDGET_KEY: new}
    run.status, run.waiting = RunStatus.RUNNING, None
    if wait.resume_to_node:
        run.current_node = wait.resume_to_node
    rec = new_record(run, RecordKind.RESUME)
    rec.finish_success({"reason": WaitReason.BUDGET.value, "wait_key": wait.wait_key, "wait_id": wait.wait_id,
                        "payload": dict(payload), "decision": "raise", "budget": new, "previous_budget": budget})
    session.record(rec)
    session.answered = True


__all__ = ["BUDGET_KEY", "LIMITS", "METERED_EFFECTS", "answer", "budget_of", "check_budget", "combine",
           "decision_of", "describe", "exceeded", "gate", "pause", "pause_if_crossed", "reached", "remaining", "spent"]
