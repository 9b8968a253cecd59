"""What a run spent, its budget, and the pauses they cause — numbers only, no providers.

An effect handler reports what an attempt spent in ``EffectOutcome.ext["usage"]``
(``input_tokens``, ``output_tokens``, ``cost``, and anything else it wants recorded: provider,
model, latency). The runtime records it on the outcome's ledger record (``ext.usage``, see
docs/file-format.md) and adds the numbers to the run's totals, kept in the run's metadata
under ``"usage"`` — so the totals are part of the state the ledger proves, rebuilt with it
after any crash, and never recomputed by scanning the ledger.

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

from .canonical import canonical_json, sha256_hex
from .errors import InvalidInputError
from .models import RecordKind, RunStatus, WaitReason, WaitState

if TYPE_CHECKING:
    from .ports import Checkpoint, Pending
    from .session import RunSession

USAGE_KEY = "usage"
BUDGET_KEY = "budget"
LIMITS = ("tokens", "cost", "calls")
METERED_EFFECTS = frozenset({"llm_call"})
_COUNTS = ("calls", "input_tokens", "output_tokens")


# -- budgets --------------------------------------------------------------------------------


def _number(value: Any, what: str, *, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{what} must be a finite number >= 0, got {value!r}")
    if integer and value != int(value):
        raise InvalidInputError(f"{what} must be a whole number, got {value!r}")
    return int(value) if integer else float(value)


def check_budget(budget: Any) -> Optional[dict[str, Any]]:
    """A budget as stored: ``{"tokens"?: int, "cost"?: float, "calls"?: int}`` (``None`` when empty).

    Raises :class:`InvalidInputError` for anything else (an unknown limit, a negative number).
    """
    if budget is None:
        return None
    if not isinstance(budget, Mapping):
        raise InvalidInputError(f"a budget is an object like {{\"tokens\": 100000}}, not {type(budget).__name__}")
    checked: dict[str, Any] = {}
    for name, value in budget.items():
        if name not in LIMITS:
            raise InvalidInputError(f"unknown budget limit {name!r}: use {', '.join(LIMITS)}")
        checked[name] = _number(value, f"budget {name}", integer=name != "cost")
    return checked or None


def budget_of(checkpoint: "Checkpoint") -> Optional[dict[str, Any]]:
    """The run's budget (``None``: unlimited). A malformed recorded budget counts as none."""
    raw = checkpoint.metadata.get(BUDGET_KEY) if isinstance(checkpoint.metadata, dict) else None
    try:
        return check_budget(raw)
    except InvalidInputError:
        return None


# -- totals ---------------------------------------------------------------------------------


def totals_of(metadata: Any) -> dict[str, Any]:
    """The run's totals from its metadata (zeros when it spent nothing yet)."""
    raw = metadata.get(USAGE_KEY) if isinstance(metadata, Mapping) else None
    totals: dict[str, Any] = {"calls": 0, "input_tokens": 0, "output_tokens": 0}
    if isinstance(raw, Mapping):
        for name, value in raw.items():
            if name in _COUNTS or name == "unpriced":
                totals[name] = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
            elif name == "cost" and isinstance(value, (int, float)) and not isinstance(value, bool):
                totals["cost"] = float(value)
            elif name == "prices" and isinstance(value, str):
                totals["prices"] = value
    return totals


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


def remaining(checkpoint: "Checkpoint") -> Optional[dict[str, Any]]:
    """What is left of the run's budget per limit (``None`` without a budget): a child's allotment."""
    budget = budget_of(checkpoint)
    if budget is None:
        return None
    totals = totals_of(checkpoint.metadata)
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


def usage_numbers(usage: Any, *, child: bool = False) -> dict[str, Any]:
    """The numbers of one ``ext.usage`` (or ``ext.child_usage``) report, checked.

    Tokens must be whole numbers >= 0; ``cost`` (optional) a finite number >= 0; ``calls``
    defaults to 1 (a child's report gives its count). Anything else is an
    :class:`InvalidInputError` naming the field.
    """
    if not isinstance(usage, Mapping):
        raise InvalidInputError(f"usage must be an object, not {type(usage).__name__}")
    numbers: dict[str, Any] = {
        "calls": _number(usage.get("calls", 0 if child else 1), "usage.calls", integer=True),
        "input_tokens": _number(usage.get("input_tokens") or 0, "usage.input_tokens", integer=True),
        "output_tokens": _number(usage.get("output_tokens") or 0, "usage.output_tokens", integer=True),
    }
    if usage.get("cost") is not None:
        numbers["cost"] = _number(usage["cost"], "usage.cost", integer=False)
    if child:
        numbers["unpriced"] = _number(usage.get("unpriced") or 0, "usage.unpriced", integer=True)
    return numbers


def account(checkpoint: "Checkpoint", ext: Mapping[str, Any]) -> dict[str, Any]:
    """Add an outcome's ``ext`` usage to the run's totals; returns the ``ext`` to record.

    ``ext["prices"]`` (the price table the handler used) is kept only when it differs from the
    one the run recorded last, so the table in force is on the record where it changes.
    """
    recorded = dict(ext)
    usage, child = ext.get("usage"), ext.get("child_usage")
    prices = ext.get("prices")
    if usage is None and child is None and prices is None:
        return recorded
    totals = totals_of(checkpoint.metadata)
    for report, is_child in ((usage, False), (child, True)):
        if report is None:
            continue
        numbers = usage_numbers(report, child=is_child)
        for name in _COUNTS:
            totals[name] += numbers[name]
        if "cost" in numbers:
            totals["cost"] = round(float(totals.get("cost") or 0) + numbers["cost"], 10)
        unpriced = numbers.get("unpriced", 0) if is_child else (0 if "cost" in numbers else numbers["calls"])
        if unpriced:
            totals["unpriced"] = int(totals.get("unpriced") or 0) + unpriced
    if prices is not None:
        digest = sha256_hex(canonical_json(prices))
        if totals.get("prices") == digest:
            recorded.pop("prices")
        else:
            totals["prices"] = digest
    # A new dict: the session diffs the metadata object against the previous record's.
    checkpoint.metadata = {**checkpoint.metadata, USAGE_KEY: totals}
    return recorded


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
    rec = new_record(run, RecordKind.PAUSE, node_id)
    rec.effect_id = effect_id
    rec.finish_waiting(wait)
    assert rec.result is not None
    rec.result["pause"] = why
    session.record(rec, ext=ext or None)
    return wait


def _pause_for_budget(session: "RunSession", budget: Mapping[str, Any], hit: list[str], *, node_id: str,
                      resume_to_node: str, effect_id: Optional[int], before_call: bool) -> WaitState:
    run, totals = session.run, totals_of(session.checkpoint.metadata)
    shown = {k: v for k, v in totals.items() if k != "prices"}
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
    hit = reached(totals_of(session.checkpoint.metadata), budget)
    if not hit or budget is None:
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
    if run.status is not RunStatus.RUNNING:
        return False
    budget = budget_of(session.checkpoint)
    hit = exceeded(totals_of(session.checkpoint.metadata), budget)
    if not hit or budget is None:
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
            amount = _number(value, f"budget {verb} {name}", integer=name != "cost")
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
    totals = totals_of(ckpt.metadata)
    details = {"wait_id": wait.wait_id, "budget": budget, "spent": {k: v for k, v in totals.items() if k != "prices"}}
    if decision == "stop":
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
    ckpt.metadata = {**ckpt.metadata, BUDGET_KEY: new}
    run.status, run.waiting = RunStatus.RUNNING, None
    if wait.resume_to_node:
        run.current_node = wait.resume_to_node
    rec = new_record(run, RecordKind.RESUME)
    rec.finish_success({"reason": WaitReason.BUDGET.value, "wait_key": wait.wait_key, "wait_id": wait.wait_id,
                        "payload": dict(payload), "decision": "raise", "budget": new, "previous_budget": budget})
    session.record(rec)
    session.answered = True


def child_report(checkpoint: "Checkpoint", run_id: str) -> Optional[dict[str, Any]]:
    """A finished child's totals as its parent records them (``ext.child_usage``), or ``None``."""
    totals = totals_of(checkpoint.metadata)
    if not totals["calls"]:
        return None
    report: dict[str, Any] = {"run_id": run_id, **{k: v for k, v in totals.items() if k != "prices"}}
    return report


def child_usage_of(session: "RunSession", wait: WaitState) -> Optional[dict[str, Any]]:
    """The totals of the finished child a subworkflow wait names (read from its ledger), or ``None``."""
    from .recovery import open_run

    child_id = (wait.details or {}).get("sub_run_id") if isinstance(wait.details, dict) else None
    if not isinstance(child_id, str):
        return None
    try:
        opened = open_run(session.ports.runs, session.ports.ledger, child_id, for_writing=False)
    except Exception:  # a child that cannot be read counts nothing; its own ledger still holds its spend
        return None
    if not opened.checkpoint.run.status.is_terminal:
        return None
    return child_report(opened.checkpoint, child_id)


__all__ = ["BUDGET_KEY", "LIMITS", "METERED_EFFECTS", "USAGE_KEY", "account", "answer", "budget_of", "check_budget",
           "child_report", "child_usage_of", "combine", "decision_of", "describe", "exceeded", "gate", "pause", "pause_if_crossed", "reached",
           "remaining", "spent", "totals_of", "usage_numbers"]
