"""Delivering an event to every run waiting on its key: :func:`emit_event`.

The runs are found with the store's indexed query on the wait key (not a scan of all waiting
runs), oldest first. Each one is answered with exactly the wait seen in the listing: another
emitter that got there first makes it "already answered", never an answer to the run's next
wait. By default each run is then advanced at once by the emitter; with ``hand_off=True`` the
answer is recorded and the run left ``running`` for a worker (``abstractruntime worker``) to
advance, and the store's workers are woken (``NOTIFY`` on PostgreSQL) so one claims it now.

**Event ids.** With ``event_id=`` (and the store's event log, ``events=store.events``) an event
is delivered at most once per store. Under the id's lock, the event is recorded — with the
waits it goes to — before any run is resumed; each resume names its wait and carries the id
(``result.event_id`` of the ``resume`` record). So:

- a second emit of a delivered id does nothing (``outcome == "already_delivered"``), even when
  a run started waiting on the key since;
- an id the event log has no record of (its record deleted) is first looked for in the ledgers
  of the runs waiting on the key (with ``ledger=store.ledger``): a run that was given the event and waits on the key again is
  not given it twice (a recipient no longer waiting on the key is not consulted);
- an emit killed after recording the id leaves it open: the next emit of the id resumes the
  waits it recorded that are still unanswered (a wait takes one answer, so none twice);
- two emits of one id at once: one delivers, the other finds it delivered (or, if the first is
  still at it after ``lock_wait``, reports ``being_delivered``).

**Kept events.** With ``keep=`` (a duration) and no run waiting on the key, the event is kept:
the first run that waits on the key before the time runs out gets it, when a worker pass runs
(:func:`deliver_kept_events`, called by :meth:`Scheduler.work_pass
<abstractruntime.scheduler.scheduler.Scheduler.work_pass>`) or when the same id is emitted
again. An event no run took in time is dropped (``expired``).
"""

from __future__ import annotations

import re
from dataclasses import field
from ..core.fastclass import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ..core.clock import parse_iso, to_iso, utc_now
from ..core.errors import AbstractRuntimeError, AlreadyAnsweredError, InvalidInputError, NotFoundError
from ..core.models import RunState
from ..storage.event_ids import (
    DELIVERED,
    EXPIRED,
    OPEN,
    EventLog,
    EventRecord,
    check_event_id,
    payload_digest,
)
from ..storage.query import waiting_on

if TYPE_CHECKING:
    from ..core.ports import LedgerStore
    from ..core.runtime import Runtime
    from ..core.spec import WorkflowSpec

# Seconds an emit waits for a run another process holds (most likely another emitter resuming it).
EMIT_LOCK_WAIT = 10.0

Resolver = Callable[[RunState], "tuple[WorkflowSpec, Runtime]"]
Check = Callable[[RunState, Any], None]
Duration = Union[timedelta, float, int, str]


@dataclass
class EmitResult:
    """What :func:`emit_event` did: new states, runs already answered, errors by run.

    ``outcome`` says what became of the event: ``"delivered"`` (this call resumed runs with it),
    ``"already_delivered"`` (its id was delivered before: nothing done), ``"being_delivered"``
    (another process holds the id), ``"kept"`` (no run waits on the key yet; ``kept_until``
    says until when) or ``"expired"`` (a kept event no run took in time).
    """

    states: list[RunState] = field(default_factory=list)
    already_answered: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    event_id: Optional[str] = None
    outcome: str = "delivered"
    kept_until: Optional[str] = None

    def merge(self, other: "EmitResult") -> None:
        """Add ``other``'s runs and errors to these (a worker pass delivering several events)."""
        self.states.extend(other.states)
        self.already_answered.extend(other.already_answered)
        self.errors.update(other.errors)


def parse_duration(value: Duration) -> timedelta:
    """A positive duration: a :class:`timedelta`, seconds, or text such as ``90s``, ``10m``, ``2h``,
    ``1d``, ``1h30m``."""
    if isinstance(value, timedelta):
        delta = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        delta = timedelta(seconds=float(value))
    elif isinstance(value, str) and re.fullmatch(r"(?:\d+(?:\.\d+)?[smhd])+", value.strip().lower()):
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        delta = timedelta(seconds=sum(float(n) * units[u] for n, u in
                                      re.findall(r"(\d+(?:\.\d+)?)([smhd])", value.strip().lower())))
    else:
        raise InvalidInputError(f"{value!r} is not a duration: use e.g. 90s, 10m, 2h, 1d or 1h30m")
    if delta <= timedelta(0):
        raise InvalidInputError(f"a duration must be positive, not {value!r}")
    return delta


def emit_event(
    run_store: Any,
    event_key: str,
    payload: Any,
    *,
    resolve: Resolver,
    hand_off: bool = False,
    allow_drift: bool = False,
    lock_wait: float = EMIT_LOCK_WAIT,
    limit: int = 100_000,
    check: Optional[Check] = None,
    event_id: Optional[str] = None,
    events: Optional[EventLog] = None,
    keep: Optional[Duration] = None,
    now: Optional[datetime] = None,
    ledger: Optional["LedgerStore"] = None,
    require_calls_hash: bool = False,
) -> EmitResult:
    """Answer every run waiting on ``event_key`` with ``payload``.

    ``resolve(run) -> (workflow, runtime)`` gives what each run is resumed with; ``check(run,
    payload)`` may refuse a run's answer before anything is written (raise a project error).
    :class:`NotFoundError` when no run waits on the key (and the event is not kept). A failing
    run is reported in ``errors`` and the others go on.

    ``event_id`` (with ``events``, the store's event log) delivers the event at most once per
    store; ``keep`` (with an id) keeps it for the first run that waits on the key within that
    duration. ``ledger`` (the store's, ``store.ledger``) lets the first emit of an id the event
    log has no record of find it in the ledgers of the runs waiting on the key.
    ``require_calls_hash``: a run waiting on tool calls takes the event only if it names their
    ``calls_sha256`` (see :meth:`Runtime.resume`). See the module docstring.
    """
    delivery = _Delivery(run_store=run_store, resolve=resolve, hand_off=hand_off, allow_drift=allow_drift,
                         lock_wait=lock_wait, check=check, limit=limit, require_calls_hash=require_calls_hash)
    if event_id is None:
        if keep is not None:
            raise InvalidInputError("keeping an event needs an event id (emit KEY --id ID --keep DURATION): "
                                    "a retried emit must find the event it kept")
        runs = waiting_on(run_store, event_key, limit=limit)
        if not runs:
            raise NotFoundError(f"no run is waiting on {event_key!r}", event_key=event_key)
        result = EmitResult()
        for run in runs:
            delivery.resume(run, run.waiting.wait_id if run.waiting else None, event_key, payload, None, result)
        delivery.wake(result)
        return result
    if events is None:
        raise InvalidInputError("an event id needs the store's event log: emit_event(..., events=store.events)")
    check_event_id(event_id)
    keep_for = parse_duration(keep) if keep is not None else None
    moment = now or utc_now()
    known = events.get(event_id)
    if known is not None and known.state != OPEN:
        return _closed(known)
    with events.lock(event_id, wait=lock_wait) as held:
        if not held:
            return EmitResult(event_id=event_id, outcome="being_delivered")
        record = events.get(event_id)
        if record is None:
            runs = waiting_on(run_store, event_key, limit=limit)
            if ledger is not None and any(_given(ledger, run.run_id, event_id) for run in runs):
                # The event log lost the id (deleted, or a store copied without it), but a waiting
                # run's ledger shows the event delivered: record that, deliver nothing again.
                events.create(EventRecord(event_id=event_id, event_key=event_key,
                                          payload_sha256=payload_digest(payload), created_at=to_iso(moment)))
                events.finish(event_id, DELIVERED)
                return EmitResult(event_id=event_id, outcome="already_delivered")
            if not runs and keep_for is None:
                raise NotFoundError(f"no run is waiting on {event_key!r}", event_key=event_key)
            record = EventRecord(
                event_id=event_id, event_key=event_key, payload_sha256=payload_digest(payload),
                created_at=to_iso(moment), keep_until=to_iso(moment + keep_for) if not runs and keep_for else None,
                payload=payload if not runs else None,
                targets=[{"run_id": run.run_id, "wait_id": run.waiting.wait_id if run.waiting else None}
                         for run in runs])
            events.create(record)  # durable before any run is resumed
            if record.kept:
                return EmitResult(event_id=event_id, outcome="kept", kept_until=record.keep_until)
            result = delivery.to_targets(events, record, payload, listed={run.run_id: run for run in runs})
        elif record.state != OPEN:
            return _closed(record)
        else:
            if record.event_key != event_key or record.payload_sha256 != payload_digest(payload):
                raise InvalidInputError(f"event {event_id!r} was recorded with another key or payload: an event id "
                                        "names one event; use a new id for a new event", event_id=event_id)
            if record.kept:
                result = delivery.kept(events, record, moment)
            else:
                result = delivery.to_targets(events, record, payload, listed={})
    delivery.wake(result)
    return result


def deliver_kept_events(
    events: EventLog,
    run_store: Any,
    *,
    resolve: Resolver,
    now: Optional[datetime] = None,
    hand_off: bool = True,
    allow_drift: bool = False,
    lock_wait: float = 0.0,
    check: Optional[Check] = None,
    limit: int = 1000,
) -> EmitResult:
    """Deliver every kept event to the first run now waiting on its key; drop the expired ones.

    What a worker pass does first. An event another process holds is skipped. With
    ``hand_off`` (the default) each run is answered and left ``running`` for the pass to advance.
    """
    moment = now or utc_now()
    delivery = _Delivery(run_store=run_store, resolve=resolve, hand_off=hand_off, allow_drift=allow_drift,
                         lock_wait=lock_wait, check=check, limit=limit)
    total = EmitResult()
    for listed in events.open_kept(limit=limit):
        with events.lock(listed.event_id, wait=0.0) as held:
            if not held:
                continue  # another worker or an emit is delivering it
            record = events.get(listed.event_id)
            if record is None or record.state != OPEN:
                continue
            total.merge(delivery.kept(events, record, moment))
    delivery.wake(total)
    return total


def _given(ledger: "LedgerStore", run_id: str, event_id: str) -> bool:
    """Whether the run's ledger shows any of its waits answered with this event.

    Read on the first emit of an id (the event log has no record of it), once per waiting run;
    an emit of a recorded id reads no ledger. A run's ledger is its own proof of what it was given.
    """
    try:
        records = ledger.list(run_id)
    except AbstractRuntimeError:
        return False  # the resume that follows reports what is wrong with the run
    for doc in records:
        result = doc.get("result")
        if doc.get("kind") == "resume" and isinstance(result, dict) and result.get("event_id") == event_id:
            return True
    return False


def _closed(record: EventRecord) -> EmitResult:
    outcome = "already_delivered" if record.state == DELIVERED else "expired"
    return EmitResult(event_id=record.event_id, outcome=outcome, kept_until=record.keep_until)


@dataclass
class _Delivery:
    """Resuming runs with one event (the caller holds the event's lock when it has an id)."""

    run_store: Any
    resolve: Resolver
    hand_off: bool
    allow_drift: bool
    lock_wait: float
    check: Optional[Check]
    limit: int
    require_calls_hash: bool = False

    def resume(self, run: RunState, wait_id: Optional[str], key: str, payload: Any, event_id: Optional[str],
               result: EmitResult) -> bool:
        """Answer ``run``'s wait ``wait_id``; ``True`` when answered, else the reason is in ``result``."""
        try:
            if self.check is not None:
                self.check(run, payload)
            workflow, runtime = self.resolve(run)
            # A short lock wait lets a concurrent emitter finish with the run first.
            strict = {"require_calls_hash": True} if self.require_calls_hash else {}
            state = runtime.resume(workflow=workflow, run_id=run.run_id, wait_key=key, wait_id=wait_id,
                                   payload=payload, allow_drift=self.allow_drift, lock_wait=self.lock_wait,
                                   max_steps=0 if self.hand_off else 100, event_id=event_id, **strict)
        except AlreadyAnsweredError:
            result.already_answered.append(run.run_id)
            return False
        except AbstractRuntimeError as exc:
            result.errors[run.run_id] = str(exc)
            return False
        result.states.append(state)
        return True

    def to_targets(self, events: EventLog, record: EventRecord, payload: Any,
                   listed: dict[str, RunState]) -> EmitResult:
        """Resume every wait the event names; close it when none is left to answer."""
        result = EmitResult(event_id=record.event_id)
        for target in record.targets:
            run = listed.get(target["run_id"]) or self._load(target["run_id"], result)
            if run is not None:
                self.resume(run, target.get("wait_id"), record.event_key, payload, record.event_id, result)
        if not result.errors:  # every wait answered, by this event or (a wait that moved on) otherwise
            events.finish(record.event_id, DELIVERED)
        if listed == {} and not result.states:
            result.outcome = "already_delivered"
        return result

    def kept(self, events: EventLog, record: EventRecord, now: datetime) -> EmitResult:
        """Deliver a kept event to the first run waiting on its key (or drop it once expired)."""
        result = EmitResult(event_id=record.event_id, outcome="kept", kept_until=record.keep_until)
        tried = {t["run_id"] for t in record.targets}
        if record.targets:
            # A run chosen before: an emitter or worker was stopped between choosing it and resuming it.
            target = record.targets[-1]
            run = self._load(target["run_id"], result)
            if run is not None:
                if self.resume(run, target.get("wait_id"), record.event_key, record.payload, record.event_id,
                               result) or self._got_it(run, target.get("wait_id"), record.event_id):
                    events.finish(record.event_id, DELIVERED)
                    result.outcome = "delivered" if result.states else "already_delivered"
                    result.already_answered.clear()  # answered with this very event, before
                    return result
                if result.errors:
                    return result  # not answered, and not by anyone else: try again later
                result.already_answered.clear()  # answered otherwise: the event goes to another run
        if record.keep_until is not None and now >= parse_iso(record.keep_until):
            events.finish(record.event_id, EXPIRED)
            result.outcome = "expired"
            return result
        for run in waiting_on(self.run_store, record.event_key, limit=self.limit):
            if run.run_id in tried:
                continue
            target = {"run_id": run.run_id, "wait_id": run.waiting.wait_id if run.waiting else None}
            events.add_target(record.event_id, target)  # durable before the run is resumed
            if self.resume(run, target["wait_id"], record.event_key, record.payload, record.event_id, result):
                events.finish(record.event_id, DELIVERED)
                result.outcome = "delivered"
                return result
            if result.errors:
                return result
            result.already_answered.clear()  # another emitter answered it first: try the next run
        return result

    def _load(self, run_id: str, result: EmitResult) -> Optional[RunState]:
        try:
            run: Optional[RunState] = self.run_store.load(run_id)
        except AbstractRuntimeError as exc:
            result.errors[run_id] = str(exc)
            return None
        if run is None:
            result.errors[run_id] = f"run {run_id} is gone"
        return run

    def _got_it(self, run: RunState, wait_id: Optional[str], event_id: str) -> bool:
        """Whether the run's ledger shows its wait ``wait_id`` answered with this event."""
        _, runtime = self.resolve(run)
        for doc in reversed(runtime.get_ledger(run.run_id)):
            result = doc.get("result")
            if doc.get("kind") == "resume" and isinstance(result, dict) and result.get("wait_id") == wait_id:
                return bool(result.get("event_id") == event_id)
        return False

    def wake(self, result: EmitResult) -> None:
        wake = getattr(self.run_store, "wake", None)
        if self.hand_off and result.states and callable(wake):
            wake([state.run_id for state in result.states])


__all__ = ["EMIT_LOCK_WAIT", "EmitResult", "deliver_kept_events", "emit_event", "parse_duration"]
