"""What a run spent: the totals of its usage reports, kept in memory during a tick and settled in its state.

An effect handler reports what an attempt spent in ``EffectOutcome.ext["usage"]``
(``input_tokens``, ``output_tokens``, ``cost``, and anything else it wants recorded: provider,
model, latency). The runtime records it on the outcome's ledger record (``ext.usage``, see
docs/file-format.md) and adds the numbers to the run's totals (:func:`account`).

The totals are kept in the run's metadata under ``"usage"`` — part of the state the ledger
proves — and *settled* there once per tick (and before every pause, wait, completion and stored
checkpoint: :func:`stamp`, :func:`settle`), with ``"through"``: the seq of the record that wrote
them. Within a tick the session keeps them in memory, so a call costs one ``ext`` on its record,
not a state change. A writer that dies mid-tick leaves records with ``ext.usage`` after the last
settlement; opening the run notes them while it replays the ledger's tail (the records after the
stored checkpoint: :func:`unsettled_reports`), and the next session counts them and settles them
before anything else stores a checkpoint, so the totals are never short.

The kernel knows numbers, not providers; budgets over these totals are :mod:`.budget`'s.
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Any, Mapping, Optional

from .canonical import canonical_json, sha256_hex
from .errors import InvalidInputError
from .models import RecordKind, new_record

if TYPE_CHECKING:
    from .ports import Checkpoint
    from .session import RunSession

USAGE_KEY = "usage"
_COUNTS = ("calls", "input_tokens", "output_tokens")


# The largest whole number a record can carry exactly (RFC 8785: an IEEE-754 double).
MAX_EXACT = 2**53 - 1


def number(value: Any, what: str, *, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{what} must be a finite number >= 0, got {value!r}")
    if value > MAX_EXACT:
        raise InvalidInputError(f"{what} is too large ({value!r}; at most {MAX_EXACT})")
    if integer and value != int(value):
        raise InvalidInputError(f"{what} must be a whole number, got {value!r}")
    return int(value) if integer else float(value)


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
                and 0 <= calls <= MAX_EXACT and 0 <= tokens_in <= MAX_EXACT and 0 <= tokens_out <= MAX_EXACT \
                and (cost is None or (type(cost) in (float, int) and 0 <= cost <= MAX_EXACT)):
            fast: dict[str, Any] = {"calls": calls, "input_tokens": tokens_in, "output_tokens": tokens_out}
            if cost is not None:
                fast["cost"] = float(cost)
            return fast
    if not isinstance(usage, Mapping):
        raise InvalidInputError(f"usage must be an object, not {type(usage).__name__}")
    numbers: dict[str, Any] = {
        "calls": number(usage.get("calls", 0 if child else 1), "usage.calls", integer=True),
        "input_tokens": number(usage.get("input_tokens") or 0, "usage.input_tokens", integer=True),
        "output_tokens": number(usage.get("output_tokens") or 0, "usage.output_tokens", integer=True),
    }
    if usage.get("cost") is not None:
        numbers["cost"] = number(usage["cost"], "usage.cost", integer=False)
    if child:
        numbers["unpriced"] = number(usage.get("unpriced") or 0, "usage.unpriced", integer=True)
    return numbers


class _Live:
    """A session's totals, settled and not (see the module docstring)."""

    __slots__ = ("totals", "dirty")

    def __init__(self, totals: dict[str, Any]) -> None:
        self.totals = totals
        self.dirty = False


# One entry per live session: the sessions are the runtime's, this module only keeps its numbers.
_LIVE: "weakref.WeakKeyDictionary[Any, _Live]" = weakref.WeakKeyDictionary()
_REPORTS = ("usage", "child_usage", "prices")


def unsettled_reports(metadata: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``ext`` of the ``records`` (a ledger tail, replayed into ``metadata``) whose usage the
    state does not count yet: after the seq its totals were settled through (a writer killed mid-tick)."""
    if not records:
        return []
    raw = metadata.get(USAGE_KEY) if type(metadata) is dict else None
    through = raw.get("through") if type(raw) is dict else None
    after = through if type(through) is int else 0
    found = []
    for doc in records:
        ext, seq = doc.get("ext"), doc.get("seq")
        if type(ext) is dict and type(seq) is int and seq > after and any(ext.get(k) is not None for k in _REPORTS):
            found.append(ext)
    return found


def _live(session: "RunSession") -> _Live:
    live = _LIVE.get(session)
    if live is None:
        live = _LIVE[session] = _Live(totals_of(session.checkpoint.metadata))
        if session.unsettled:
            _recover(live, session)
    return live


def _recover(live: _Live, session: "RunSession") -> None:
    """Add the usage of the records a writer left unsettled (a crash) to the session's totals: they
    are settled in the state by the end of this session's tick, or before its stored checkpoint."""
    count_reports(live.totals, session.unsettled)
    session.unsettled = []
    live.dirty = True


def count_reports(totals: dict[str, Any], exts: list[dict[str, Any]]) -> None:
    """Add to ``totals`` the usage (and children's usage) the records' ``ext`` report."""
    for ext in exts:
        for name, is_child in (("usage", False), ("child_usage", True)):
            if ext.get(name) is not None:
                try:
                    _add(totals, usage_numbers(ext[name], child=is_child), is_child)
                except InvalidInputError:
                    pass  # a record the writer would have refused: nothing to count
        if ext.get("prices") is not None:
            totals["prices"] = _prices_digest(ext["prices"])


def add_report(totals: dict[str, Any], report: Mapping[str, Any]) -> None:
    """Add another run's totals (a :func:`child_report`) to ``totals`` in place (an unusable one adds nothing)."""
    try:
        _add(totals, usage_numbers(report, child=True), True)
    except InvalidInputError:
        pass


def live_totals(session: "RunSession") -> dict[str, Any]:
    """The run's totals now: what its state settled, plus what was spent since (by this session,
    or by a writer killed before it settled them)."""
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


def _redacted(session: "RunSession", ext: dict[str, Any]) -> dict[str, Any]:
    redact = getattr(session.ports.redactor, "redact", None)
    return redact(ext) if redact is not None else ext


def account(session: "RunSession", ext: Mapping[str, Any]) -> dict[str, Any]:
    """Add an outcome's ``ext`` usage to the run's totals; returns the ``ext`` to record.

    ``ext["prices"]`` (the price table the handler used) is kept only when it differs from the
    one the run recorded last, so the table in force is on the record where it changes. What is
    recorded is redacted like every other part of a record (a model name is the server's text).
    Raises :class:`InvalidInputError` (and changes nothing) for a report that is not usable.
    """
    if type(ext) is not dict or not all(type(k) is str for k in ext):
        raise InvalidInputError(f"ext must be an object with named members, not {type(ext).__name__}")
    recorded = dict(ext)
    usage, child = ext.get("usage"), ext.get("child_usage")
    prices = ext.get("prices")
    if usage is None and child is None and prices is None:
        return _redacted(session, recorded)
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
    return _redacted(session, recorded)


def stamp(session: "RunSession") -> None:
    """Put the session's totals in the state, to be carried by the next record (``through`` is its seq)."""
    live = _LIVE.get(session) if not session.unsettled else _live(session)
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
    if session.closed is not None:
        return
    live = _LIVE.get(session) if not session.unsettled else _live(session)
    if live is None or not live.dirty:
        return
    stamp(session)
    rec = new_record(session.run, RecordKind.METADATA)
    session.record(rec.finish_success({"updated": [USAGE_KEY]}))


def shown_totals(totals: Mapping[str, Any]) -> dict[str, Any]:
    """The totals as they are shown (without the bookkeeping: ``prices`` digest, ``through``)."""
    return {k: v for k, v in totals.items() if k not in ("prices", "through")}


def child_report(checkpoint: "Checkpoint", run_id: str) -> Optional[dict[str, Any]]:
    """A finished child's totals as its parent records them (``ext.child_usage``), or ``None``."""
    return report_of(totals_of(checkpoint.metadata), run_id)


def report_of(totals: Mapping[str, Any], run_id: str) -> Optional[dict[str, Any]]:
    """A run's totals as another run records them (``ext.child_usage``), or ``None`` when it spent nothing."""
    if not totals.get("calls"):
        return None
    return {"run_id": run_id, **shown_totals(totals)}


__all__ = ["MAX_EXACT", "USAGE_KEY", "account", "add_report", "child_report", "count_reports", "live_totals", "number",
           "report_of", "settle", "shown_totals", "stamp", "totals_of", "unsettled_reports", "usage_numbers"]
