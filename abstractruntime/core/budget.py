"""A run's budget and the pauses it causes — numbers only, no providers.

What a run spent is :mod:`.usage_totals`' (the totals of its ``ext.usage`` reports).
A run's budget (``metadata["budget"]``: ``tokens`` = input + output tokens, ``cost``, ``calls``)
is checked at two points:

- before an ``llm_call`` is attempted (also a retry): once a total has reached its limit the
  call is not started; its intent is kept and the run **pauses** (waiting, reason ``budget``);
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
An ``async`` child's spend counts toward its parent's budget as it goes (its id is kept in the
parent's ``metadata["budget_children"]`` and its ledger read at the parent's checks), and its
totals are added to the parent's once it has ended (a ``metadata`` record with ``ext.child_usage``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Optional

from .errors import InvalidInputError
from .models import RecordKind, RunStatus, WaitReason, WaitState, new_record
from .session import leave_wait
from .child_usage import run_now
from .usage_totals import MAX_EXACT, account, add_report, live_totals, number, report_of, shown_totals, stamp

if TYPE_CHECKING:
    from .ports import Checkpoint, Pending
    from .session import RunSession

BUDGET_KEY = "budget"
# The ``async`` children of a run with a budget whose spend is not in its totals yet (metadata).
CHILDREN_KEY = "budget_children"
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
    totals = budget_totals(session)
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


# -- async children -------------------------------------------------------------------------


def async_children(checkpoint: "Checkpoint") -> list[str]:
    """The ``async`` children whose spend counts toward the run's budget and is not in its totals yet."""
    metadata = checkpoint.metadata
    raw = metadata.get(CHILDREN_KEY) if isinstance(metadata, dict) else None
    return [child for child in raw if isinstance(child, str)] if isinstance(raw, list) else []


def note_async_child(session: "RunSession", child_id: str) -> None:
    """An ``async`` child was started: its spend counts toward this run's budget from now on (the
    id joins the state, carried by the record of the ``start_subworkflow`` outcome)."""
    ckpt = session.checkpoint
    if budget_of(ckpt) is None:
        return
    children = async_children(ckpt)
    if child_id not in children:
        ckpt.metadata = {**ckpt.metadata, CHILDREN_KEY: [*children, child_id]}


def budget_totals(session: "RunSession") -> dict[str, Any]:
    """What counts against the run's budget: its totals plus what its running ``async`` children
    spent so far (read from their ledgers; a synchronous child's totals are in the run's own)."""
    totals = live_totals(session)
    children = async_children(session.checkpoint)
    if not children:
        return totals
    combined = dict(totals)
    for child_id in children:
        found = run_now(session.ports, child_id)
        report = report_of(found[0], child_id) if found is not None else None
        if report is not None:
            add_report(combined, report)
    return combined


def collect_children(session: "RunSession") -> None:
    """Add the totals of the finished ``async`` children to the run's own, once each: a ``metadata``
    record that carries the child's totals (``ext.child_usage``) and drops it from the list."""
    for child_id in async_children(session.checkpoint):
        found = run_now(session.ports, child_id)
        if found is None or not found[1]:
            continue  # running (or unreadable): counted as it goes, collected once it ends
        report = report_of(found[0], child_id)
        try:
            recorded = account(session, {"child_usage": report}) if report is not None else None
        except InvalidInputError:  # a child's totals this run cannot count (never written so): none
            recorded = None
        ckpt = session.checkpoint
        ckpt.metadata = {**ckpt.metadata, CHILDREN_KEY: [c for c in async_children(ckpt) if c != child_id]}
        stamp(session)
        rec = new_record(session.run, RecordKind.METADATA)
        session.record(rec.finish_success({"updated": [CHILDREN_KEY], "collected": child_id}), ext=recorded)


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
    run, totals = session.run, budget_totals(session)
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
    """Before each attempt of a metered effect (the first, a retry, or one performed again after a
    crash): pause instead when the run's budget is reached.

    ``pending`` is the effect about to be attempted (``attempt``: the attempts made so far); it
    is kept so the run performs it, without re-entering its node, once the budget is raised —
    numbering its attempts on, and with the retries it has left. True when the run paused.
    """
    if effect_type not in METERED_EFFECTS:
        return False
    budget = budget_of(session.checkpoint)
    if budget is None:
        return False
    if CHILDREN_KEY in session.checkpoint.metadata:
        collect_children(session)
    hit = reached(budget_totals(session), budget)
    if not hit:
        return False
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
    hit = exceeded(budget_totals(session), budget)
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
    run, ckpt = session.run, session.checkpoint
    decision = decision_of(payload)
    budget = budget_of(ckpt) or {}
    totals = budget_totals(session)
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
    leave_wait(run, wait)
    rec = new_record(run, RecordKind.RESUME)
    rec.finish_success({"reason": WaitReason.BUDGET.value, "wait_key": wait.wait_key, "wait_id": wait.wait_id,
                        "payload": dict(payload), "decision": "raise", "budget": new, "previous_budget": budget})
    session.record(rec)
    session.answered = True


__all__ = ["BUDGET_KEY", "CHILDREN_KEY", "LIMITS", "METERED_EFFECTS", "answer", "async_children", "budget_of",
           "budget_totals", "check_budget", "collect_children", "combine", "decision_of", "describe", "exceeded", "gate",
           "note_async_child", "pause", "pause_if_crossed", "reached", "remaining", "spent"]
