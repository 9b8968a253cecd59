"""What a run spent, its budget, and the pauses they cause — numbers only, no providers.

An effect handler reports what an attempt spent in ``EffectOutcome.ext["usage"]``
(``input_tokens``, ``output_tokens``, ``cost``, and anything else it wants recorded: provider,
model, latency). The runtime records it on the outcome's ledger record (``ext.usage``, see
docs/file-format.md) and adds the numbers to the run's totals.

The totals are kept in the run's metadata under ``"usage"`` — part of the state the ledger
proves — and *settled* there once per tick (and before every pause and every stored
checkpoint), with ``"through"``: the seq of the record that wrote them. Within a tick the
session keeps them in memory, so a call costs one ``ext`` on its record, not a state change.
A writer that dies mid-tick leaves records with ``ext.usage`` after the last settlement; the
next session adds those from the ledger's tail (the records after the stored checkpoint, which
recovery reads anyway), so the totals are never short.

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
import weakref
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
_LIMIT_SET = frozenset(LIMITS)
METERED_EFFECTS = frozenset({"llm_call"})
_COUNTS = ("calls", "input_tokens", "output_tokens")


# -- budgets --------------------------------------------------------------------------------


# The largest whole number a record can carry exactly (RFC 8785: an IEEE-754 double).
_MAX_EXACT = 2**53 - 1


def _number(value: Any, what: str, *, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{what} must be a finite number >= 0, got {value!r}")
    if value > _MAX_EXACT:
        raise InvalidInputError(f"{what} is too large ({value!r}; at most {_MAX_EXACT})")
    if integer and value != int(value):
        raise InvalidInputError(f"{what} must be a whole number, got {value!r}")
    return int(value) if integer else float(value)


def _plain_budget(budget: Any) -> bool:
    """Whether ``budget`` is already a budget as stored (the check of every call: no copy)."""
    if type(budget) is not dict or not budget:
        return False
    for name, value in budget.items():
        kind = type(value)
        if name not in _LIMIT_SET or not (kind is int or (kind is float and name == "cost" and math.isfinite(value))) \
                or not 0 <= value <= _MAX_EXACT:
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
        checked[name] = _number(value, f"budget {name}", integer=name != "cost")
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


# -- totals ---------------------------------------------------------------------------------


def totals_of(metadata: Any) -> dict[str, Any]:
    """The run's totals from its metadata (zeros when it spent nothing yet); a copy."""
    raw = metadata.get(USAGE_KEY) if type(metadata) is dict else None
    if type(raw) is dict and _plain_totals(raw):
        return dict(raw)  # what account() wrote (the state is proven): the check of every call
    totals: dict[str, Any] = {"calls": 0, "input_tokens": 0, "output_tokens": 0}
    if isinstance(raw, Mapping):
        for name, value in raw.items():
            if name in _COUNTS or name == "unpriced":
                totals[name] = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
            elif name == "cost" and isinstance(value, (int, float)) and not isinstance(value, bool):
                totals["cost"] = float(value)
            elif name in ("prices", "through") and isinstance(value, int) and not isinstance(value, bool):
                totals[name] = value
    return totals


_TOTAL_INTS = frozenset({"calls", "input_tokens", "output_tokens", "unpriced", "through", "prices"})


def _plain_totals(raw: dict[str, Any]) -> bool:
    if "calls" not in raw or "input_tokens" not in raw or "output_tokens" not in raw:
        return False
    for name, value in raw.items():
        kind = type(value)
        if name in _TOTAL_INTS:
            if kind is not int:
                return False
        elif name != "cost" or (kind is not float and kind is not int):
            return False
    return True


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


def usage_numbers(usage: Any, *, child: bool = False) -> dict[str, Any]:
    """The numbers of one ``ext.usage`` (or ``ext.child_usage``) report, checked.

    Tokens must be whole numbers >= 0; ``cost`` (optional) a finite number >= 0; ``calls``
    defaults to 1 (a child's report gives its count). Anything else is an
    :class:`InvalidInputError` naming the field.
    """
    if type(usage) is dict and not child:
        # The common case, on every call: whole numbers and a float cost, as the handlers report them.
        calls, tokens_in, tokens_out, cost = (usage.get("calls", 1), usage.get("input_tokens") or 0,
                                              usage.get("output_tokens") or 0, usage.get("cost"))
        if type(calls) is int and type(tokens_in) is int and type(tokens_out) is int \
                and 0 <= calls <= _MAX_EXACT and 0 <= tokens_in <= _MAX_EXACT and 0 <= tokens_out <= _MAX_EXACT \
                and (cost is None or (type(cost) in (float, int) and 0 <= cost <= _MAX_EXACT)):
            fast: dict[str, Any] = {"calls": calls, "input_tokens": tokens_in, "output_tokens": tokens_out}
            if cost is not None:
                fast["cost"] = float(cost)
            return fast
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


class _Live:
    """A session's totals, settled and not (see the module docstring)."""

    __slots__ = ("totals", "dirty")

    def __init__(self, totals: dict[str, Any]) -> None:
        self.totals = totals
        self.dirty = False


# One entry per live session: the sessions are the runtime's, this module only keeps its numbers.
_LIVE: "weakref.WeakKeyDictionary[Any, _Live]" = weakref.WeakKeyDictionary()
# The ledger head each session opened at (records after it are the session's own).
_OPENED: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()


def opened(session: "RunSession") -> None:
    """Note where the session's ledger stood when it began advancing the run (no I/O)."""
    if session not in _OPENED:
        _OPENED[session] = session.durable.seq


def _live(session: "RunSession") -> _Live:
    live = _LIVE.get(session)
    if live is None:
        live = _LIVE[session] = _Live(_recovered(session))
    return live


def live_totals(session: "RunSession") -> dict[str, Any]:
    """The run's totals now: what its state settled, plus what this session spent since."""
    return _live(session).totals


def _add(totals: dict[str, Any], numbers: Mapping[str, Any], is_child: bool) -> None:
    for name in _COUNTS:
        totals[name] += numbers[name]
    if "cost" in numbers:
        totals["cost"] = round(float(totals.get("cost") or 0) + numbers["cost"], 10)
    unpriced = numbers.get("unpriced", 0) if is_child else (0 if "cost" in numbers else numbers["calls"])
    if unpriced:
        totals["unpriced"] = int(totals.get("unpriced") or 0) + unpriced


def _prices_digest(prices: Any) -> int:
    # A table names its own digest (the AbstractCore handler's do); else it is computed. 52 bits of
    # it tell one table from another, kept as a number (cheap in the state).
    named = prices.get("sha256") if type(prices) is dict else None
    text = named if isinstance(named, str) and len(named) == 64 else sha256_hex(canonical_json(prices))
    return int(text[:13], 16)


def _recovered(session: "RunSession") -> dict[str, Any]:
    """The state's settled totals, plus the usage of tail records a writer left unsettled (a crash)."""
    totals = totals_of(session.checkpoint.metadata)
    saved = session.saved
    head = _OPENED.get(session, session.durable.seq)
    start = saved if saved is not None and saved.seq else None
    if start is not None and head <= start.seq:
        return totals  # nothing after the stored checkpoint (always settled) but this session's own
    from .ports import LedgerHead

    after = max(int(totals.get("through") or 0), start.seq if start is not None else 0)
    try:
        _, records = session.ports.ledger.read_after(session.run_id, start or LedgerHead())
    except Exception:  # cannot read the tail now: the totals stay as settled
        return totals
    for doc in records:
        seq = doc.get("seq")
        ext = doc.get("ext")
        if not isinstance(seq, int) or seq <= after or not isinstance(ext, dict):
            continue
        for name, is_child in (("usage", False), ("child_usage", True)):
            if ext.get(name) is not None:
                try:
                    _add(totals, usage_numbers(ext[name], child=is_child), is_child)
                except InvalidInputError:
                    pass  # a record the writer would have refused: nothing to count
        if ext.get("prices") is not None:
            totals["prices"] = _prices_digest(ext["prices"])
    return totals


def account(session: "RunSession", ext: Mapping[str, Any]) -> dict[str, Any]:
    """Add an outcome's ``ext`` usage to the run's totals; returns the ``ext`` to record.

    ``ext["prices"]`` (the price table the handler used) is kept only when it differs from the
    one the run recorded last, so the table in force is on the record where it changes.
    Raises :class:`InvalidInputError` (and changes nothing) for a report that is not usable.
    """
    if type(ext) is not dict or not all(type(k) is str for k in ext):
        raise InvalidInputError(f"ext must be an object with named members, not {type(ext).__name__}")
    recorded = dict(ext)
    usage, child = ext.get("usage"), ext.get("child_usage")
    prices = ext.get("prices")
    if usage is None and child is None and prices is None:
        return recorded
    # Every report is checked before anything changes: a bad one changes nothing.
    reports = [(usage_numbers(report, child=is_child), is_child)
               for report, is_child in ((usage, False), (child, True)) if report is not None]
    live = _live(session)
    totals = live.totals
    for numbers, is_child in reports:
        _add(totals, numbers, is_child)
    if prices is not None:
        digest = _prices_digest(prices)
        if totals.get("prices") == digest:
            recorded.pop("prices")
        else:
            totals["prices"] = digest
    live.dirty = True
    return recorded


def stamp(session: "RunSession") -> None:
    """Put the session's totals in the state, to be carried by the next record (``through`` is its seq)."""
    live = _LIVE.get(session)
    if live is None or not live.dirty:
        return
    totals = dict(live.totals)
    totals["through"] = session.head.seq + 1
    # A new dict: the session diffs the metadata object against the previous record's.
    session.checkpoint.metadata = {**session.checkpoint.metadata, USAGE_KEY: totals}
    live.dirty = False


def settle(session: "RunSession") -> None:
    """At the end of a tick (or before a stored checkpoint): record the totals spent since the last
    settlement in the run's state (a ``metadata`` record), if any — a tick that ends with the run
    waiting or complete has them on that record already (:func:`stamp`)."""
    live = _LIVE.get(session)
    if live is None or not live.dirty or session.closed is not None:
        return
    from .session import new_record

    stamp(session)
    rec = new_record(session.run, RecordKind.METADATA)
    session.record(rec.finish_success({"updated": [USAGE_KEY]}))


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


def shown_totals(totals: Mapping[str, Any]) -> dict[str, Any]:
    """The totals as they are shown (without the bookkeeping: ``prices`` digest, ``through``)."""
    return {k: v for k, v in totals.items() if k not in ("prices", "through")}


def child_report(checkpoint: "Checkpoint", run_id: str) -> Optional[dict[str, Any]]:
    """A finished child's totals as its parent records them (``ext.child_usage``), or ``None``."""
    totals = totals_of(checkpoint.metadata)
    if not totals["calls"]:
        return None
    report: dict[str, Any] = {"run_id": run_id, **shown_totals(totals)}
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
           "child_report", "child_usage_of", "combine", "live_totals", "opened", "settle", "shown_totals", "stamp", "decision_of", "describe", "exceeded", "gate", "pause", "pause_if_crossed", "reached",
           "remaining", "spent", "totals_of", "usage_numbers"]
