"""Schedules: start a run of a workflow at each tick of a cron expression, once across a fleet.

    from abstractruntime.scheduler.schedules import Schedules

    book = Schedules(store.schedules)                     # FileStore or PostgresStore
    book.add("daily-report", cron="0 9 * * MON-FRI", tz="Europe/Paris",
             workflow_id="report", sha256=FILE_SHA256, vars={"team": "ops"})
    book.pause("daily-report"); book.resume("daily-report"); book.remove("daily-report")
    book.fire_due(runtime, resolve)                       # what every worker pass does

**What a schedule records.** Its name, the cron expression and time zone, the workflow's id
and the sha256 of its source, the run's input variables and its two policies. Never a path:
when a tick is due, ``resolve(schedule) -> (workflow, runtime)`` finds the code the way every
command continuing a run does, through the operator's registry by id and sha256
(:func:`abstractruntime.workflow_files.schedule_resolver`). A schedule whose id or hash was
edited is located by the registry or refused by it, and nothing is started.

**One run per tick across a fleet.** Each tick gets one *decision* — start, skip or queue —
stored under the key ``(schedule, tick)`` by whichever worker gets there first (a row under a
primary key on PostgreSQL, a file published with ``link(2)`` in a folder store); the others
read it and follow it. A started run's id is derived from the schedule and the tick
(``NAME.YYYYMMDDTHHMMSSZ``, UTC), and creating a run is exclusive, so a worker that died
between the decision and the run's creation is made good by the next pass, never twice.
The run's first ledger record names the schedule and the tick (``metadata["schedule"]``).

**Missed ticks** (no worker ran, the store was down, the schedule was just resumed) follow
``catch_up``: ``skip`` starts only ticks at most ``grace_s`` late, ``one`` starts the latest
due tick whatever its lateness, ``all`` starts every due tick in order. Ticks not started are
recorded as one ``skip`` decision per run of consecutive ticks. **A tick that finds the
previous run of the schedule still going** (running or waiting) follows ``overlap``: ``skip``
records the tick as skipped, ``allow`` starts it anyway, ``queue`` records it as queued and
starts it once the runs before it have finished (at most :data:`QUEUE_LIMIT` queued; past
that the tick is skipped). Ticks while paused are not decided; ``resume`` records the window.

Daylight-saving changes: :mod:`abstractruntime.scheduler.cron`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, List, Optional, Protocol

from ..core.clock import Clock, parse_iso, to_iso, utc_now
from ..core.errors import (CorruptRecordError, DatabaseUnavailableError, InvalidInputError, RunExistsError, RunNotFoundError,
                           ScheduleExistsError, ScheduleNotFoundError)
from ..core.models import RunStatus
from .cron import MAX_TICKS, check_cron, next_tick, ticks_between, zone

SCHEDULE_FORMAT = 1
"""The ``format`` of a schedule's log records and tick decisions."""

CATCH_UP = ("skip", "one", "all")
OVERLAP = ("skip", "allow", "queue")
QUEUE_LIMIT = 10
"""The most ticks one schedule keeps queued behind a run still going."""
RECENT = 64
"""How many of its latest decisions a pass reads for a schedule (queued ticks, the previous run)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_TICK_KEY = "%Y%m%dT%H%M%SZ"


def check_schedule_name(name: str) -> str:
    """``name`` if it matches ``[A-Za-z0-9][A-Za-z0-9_-]{0,63}`` (no dot: run ids are ``NAME.TICK``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(f"bad schedule name {name!r}: use letters, digits, '-' and '_' (at most 64, "
                                "starting with a letter or digit)")
    return name


def tick_key(tick: datetime) -> str:
    """The tick as its key: UTC, ``YYYYMMDDTHHMMSSZ``."""
    return tick.astimezone(timezone.utc).strftime(_TICK_KEY)


def tick_of_key(key: str) -> datetime:
    """The UTC instant a tick key names (``InvalidInputError`` for anything else)."""
    try:
        return datetime.strptime(key, _TICK_KEY).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        raise InvalidInputError(f"bad tick key {key!r}: expected YYYYMMDDTHHMMSSZ") from None


def run_id_for(name: str, tick: datetime) -> str:
    """The id of the run a schedule starts for a tick: derived, so every worker names the same run."""
    return f"{check_schedule_name(name)}.{tick_key(tick)}"


class ScheduleStore(Protocol):
    """Where schedules live: an append-only log per schedule and one decision per ``(schedule, tick)``.

    Implemented by :class:`~abstractruntime.storage.schedule_files.FileScheduleStore` (a folder
    store's ``schedules/``) and :class:`~abstractruntime.storage.postgres.schedules.PostgresScheduleStore`.
    """

    def names(self) -> list[str]:
        """Every schedule name that has a log, sorted."""
        ...

    def records(self, name: str) -> list[dict[str, Any]]:
        """The schedule's log records, oldest first (``[]`` when it has none)."""
        ...

    def append(self, name: str, record: dict[str, Any],
               check: Optional[Callable[[list[dict[str, Any]]], None]] = None) -> None:
        """Append ``record`` to the log; ``check(records)`` runs first, under the log's lock, and may raise."""
        ...

    def decide(self, name: str, key: str, decision: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store ``decision`` for tick ``key`` unless one is there: ``(the decision that holds, stored here)``."""
        ...

    def recent(self, name: str, limit: int) -> list[dict[str, Any]]:
        """The schedule's latest ``limit`` decisions, latest tick first."""
        ...


@dataclass(frozen=True)
class Schedule:
    """A schedule as its log says it is now (:meth:`Schedules.get`)."""

    name: str
    cron: str
    tz: str
    workflow_id: str
    sha256: str
    vars: dict[str, Any] = field(default_factory=dict)
    catch_up: str = "skip"
    overlap: str = "skip"
    grace_s: float = 60.0
    created_at: str = ""
    paused: bool = False
    since: str = ""
    """When ticks began to count: the time the schedule was added or last resumed."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy (what ``schedule list --json`` prints, with ``next_tick``)."""
        return {"name": self.name, "cron": self.cron, "tz": self.tz, "workflow_id": self.workflow_id,
                "sha256": self.sha256, "vars": dict(self.vars), "catch_up": self.catch_up, "overlap": self.overlap,
                "grace_s": self.grace_s, "created_at": self.created_at, "paused": self.paused, "since": self.since}


@dataclass(frozen=True)
class TickDecision:
    """What was decided for one tick: ``start``, ``skip`` or ``queue`` (with why, when and by whom)."""

    schedule: str
    tick: str
    action: str
    reason: str = ""
    decided_at: str = ""
    worker: str = ""
    first_tick: Optional[str] = None
    """For a ``skip`` standing for several consecutive missed ticks: the first of them."""
    ticks: Optional[int] = 1
    """How many ticks the decision stands for (``None``: more than a pass counts, after a long outage)."""

    @property
    def run_id(self) -> Optional[str]:
        """The run a ``start`` or ``queue`` decision names (derived, never read from storage)."""
        return run_id_for(self.schedule, parse_iso(self.tick)) if self.action in ("start", "queue") else None

    def to_dict(self) -> dict[str, Any]:
        """The stored form."""
        doc: dict[str, Any] = {"format": SCHEDULE_FORMAT, "schedule": self.schedule, "tick": self.tick,
                               "action": self.action, "reason": self.reason, "decided_at": self.decided_at,
                               "worker": self.worker, "run_id": self.run_id}
        if self.first_tick is not None:
            doc.update(first_tick=self.first_tick, ticks=self.ticks)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, name: str) -> "TickDecision":
        """Read a stored decision, refusing one that names another schedule or an unknown action."""
        if not isinstance(doc, dict) or doc.get("schedule") != name or doc.get("action") not in ("start", "skip",
                                                                                                  "queue"):
            raise CorruptRecordError(f"schedule {name!r}: a tick decision is not one of its own ({doc!r:.200})")
        try:
            tick = to_iso(parse_iso(str(doc["tick"])))
        except (KeyError, ValueError):
            raise CorruptRecordError(f"schedule {name!r}: a tick decision has no valid tick") from None
        first = doc.get("first_tick")
        return cls(schedule=name, tick=tick, action=str(doc["action"]), reason=str(doc.get("reason", "")),
                   decided_at=str(doc.get("decided_at", "")), worker=str(doc.get("worker", "")),
                   first_tick=str(first) if first is not None else None, ticks=_count(doc))


def _count(doc: dict[str, Any]) -> Optional[int]:
    """The ``ticks`` of a stored decision: 1 when absent, ``None`` for "more than a pass counts"."""
    value = doc.get("ticks", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


@dataclass
class FireResult:
    """What :meth:`Schedules.fire_due` did: the runs it started, the decisions it made, the errors."""

    started: list[str] = field(default_factory=list)
    decisions: list[TickDecision] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


Resolver = Callable[[Schedule], "tuple[Any, Any]"]
"""``resolve(schedule) -> (workflow, runtime)``: the code a tick starts, located by id and sha256."""


def _fold(name: str, records: list[dict[str, Any]]) -> Optional[Schedule]:
    """The schedule a log describes now (``None``: never added, or removed)."""
    current: Optional[Schedule] = None
    for record in records:
        event = record.get("event") if isinstance(record, dict) else None
        at = str(record.get("at", "")) if isinstance(record, dict) else ""
        if event == "added":
            spec = record.get("schedule")
            if not isinstance(spec, dict):
                raise CorruptRecordError(f"schedule {name!r}: an 'added' record has no schedule")
            try:
                current = Schedule(name=name, cron=str(spec["cron"]), tz=str(spec.get("tz", "UTC")),
                                   workflow_id=str(spec["workflow_id"]), sha256=str(spec["sha256"]),
                                   vars=dict(spec.get("vars") or {}), catch_up=str(spec.get("catch_up", "skip")),
                                   overlap=str(spec.get("overlap", "skip")),
                                   grace_s=float(spec.get("grace_s", 60.0)), created_at=at, paused=False, since=at)
            except (KeyError, TypeError, ValueError):
                raise CorruptRecordError(f"schedule {name!r}: an 'added' record is incomplete") from None
        elif current is None:
            continue
        elif event == "paused":
            current = _replace(current, paused=True)
        elif event == "resumed":
            current = _replace(current, paused=False, since=at)
        elif event == "removed":
            current = None
    return current


def _replace(schedule: Schedule, **changes: Any) -> Schedule:
    from dataclasses import replace

    return replace(schedule, **changes)


class Schedules:  # typing.List below: the method ``list`` hides the builtin in the class body
    """The schedules of one store (``store.schedules``), and the pass that starts their due ticks.

    ``clock`` stamps the log records (default: the system clock, UTC); :meth:`fire_due` takes
    the time from the runtime it is given, so a test moves one clock for both.
    """

    def __init__(self, store: ScheduleStore, *, clock: Optional[Clock] = None) -> None:
        self.store = store
        self._clock: Clock = clock or utc_now

    # -- the operator's side -------------------------------------------------------------

    def add(self, name: str, *, cron: str, workflow_id: str, sha256: str, tz: str = "UTC",
            vars: Optional[dict[str, Any]] = None, catch_up: str = "skip", overlap: str = "skip",
            grace_s: float = 60.0) -> Schedule:
        """Add a schedule (:class:`ScheduleExistsError` when the name is taken); ticks count from now."""
        check_schedule_name(name)
        spec = {"cron": check_cron(cron), "tz": _check_tz(tz), "workflow_id": _check_text(workflow_id, "workflow id"),
                "sha256": _check_sha256(sha256), "vars": _check_vars(vars), "catch_up": _check_choice(
                    catch_up, CATCH_UP, "catch-up"), "overlap": _check_choice(overlap, OVERLAP, "overlap"),
                "grace_s": _check_grace(grace_s)}

        def free(records: list[dict[str, Any]]) -> None:
            if _fold(name, records) is not None:
                raise ScheduleExistsError(f"schedule {name!r} exists already (remove it first)", name=name)

        self.store.append(name, self._record("added", schedule=spec), free)
        return self.get(name)

    def get(self, name: str) -> Schedule:
        """The schedule named ``name`` (:class:`ScheduleNotFoundError` when there is none)."""
        found = _fold(check_schedule_name(name), self.store.records(name))
        if found is None:
            raise ScheduleNotFoundError(f"no schedule {name!r} in this store", name=name)
        return found

    def list(self) -> list[Schedule]:
        """Every schedule of the store (removed ones aside), by name."""
        out = []
        for name in self.store.names():
            found = _fold(name, self.store.records(name))
            if found is not None:
                out.append(found)
        return out

    def pause(self, name: str) -> Schedule:
        """Stop starting runs (pausing a paused schedule changes nothing)."""
        if not self.get(name).paused:
            self.store.append(name, self._record("paused"), self._exists(name))
        return self.get(name)

    def resume(self, name: str) -> Schedule:
        """Start runs again from now: ticks that fell while paused are not run (the record names the window)."""
        current = self.get(name)
        if current.paused:
            paused_at = next((r.get("at") for r in reversed(self.store.records(name)) if r.get("event") == "paused"),
                             None)
            self.store.append(name, self._record("resumed", not_run_from=paused_at), self._exists(name))
        return self.get(name)

    def remove(self, name: str) -> None:
        """Remove a schedule: no more ticks; its runs and decisions stay (the name may be added again)."""
        self.get(name)
        self.store.append(name, self._record("removed"), self._exists(name))

    def decisions(self, name: str, *, limit: int = 20) -> List[TickDecision]:
        """The schedule's latest decisions, latest tick first."""
        check_schedule_name(name)
        return [TickDecision.from_dict(d, name=name) for d in self.store.recent(name, limit)]

    def next_tick(self, name: str, *, after: Optional[datetime] = None) -> Optional[datetime]:
        """When the schedule fires next after ``after`` (default: now)."""
        schedule = self.get(name)
        return next_tick(schedule.cron, schedule.tz, after or self._clock())

    def _record(self, event: str, **fields: Any) -> dict[str, Any]:
        return {"format": SCHEDULE_FORMAT, "event": event, "at": to_iso(self._clock()), **fields}

    def _exists(self, name: str) -> Callable[[List[dict[str, Any]]], None]:
        def check(records: List[dict[str, Any]]) -> None:
            if _fold(name, records) is None:
                raise ScheduleNotFoundError(f"no schedule {name!r} in this store", name=name)
        return check

    # -- the workers' side ---------------------------------------------------------------

    def fire_due(self, runtime: Any, resolve: Resolver, *, worker: str = "") -> FireResult:
        """Decide every due tick of every active schedule and start the runs decided, at ``runtime.now()``.

        ``runtime`` is any runtime over the store (it reads the previous runs' states);
        ``resolve(schedule)`` gives the workflow and the runtime a tick's run starts with. A
        schedule whose workflow cannot be resolved gets no decision (its error is in
        ``errors``): its ticks stay due, and its catch-up policy applies once it resolves.
        """
        result = FireResult()
        now = runtime.now()
        for name in self.store.names():
            try:
                schedule = _fold(name, self.store.records(name))
                if schedule is None or schedule.paused:
                    continue
                self._fire(schedule, now, runtime, resolve, worker, result)
            except DatabaseUnavailableError:
                raise  # the store's outage, not the schedule's: the pass ends
            except Exception as exc:  # one schedule's trouble must not stop the others
                result.errors[name] = f"schedule {name}: {exc}"
        return result

    def _fire(self, schedule: Schedule, now: datetime, runtime: Any, resolve: Resolver, worker: str,
              result: FireResult) -> None:
        name = schedule.name
        added = parse_iso(schedule.created_at)
        # Decisions of this schedule since it was (last) added: a removed one's queue never starts.
        recent = [d for d in (TickDecision.from_dict(d, name=name) for d in self.store.recent(name, RECENT))
                  if parse_iso(d.tick) > added]
        since = parse_iso(schedule.since)
        latest = parse_iso(recent[0].tick) if recent else None
        after = max(since, latest) if latest is not None else since
        due = ticks_between(schedule.cron, schedule.tz, after, now, limit=MAX_TICKS)
        plan = _plan(due, now, schedule)
        if len(due) == MAX_TICKS and schedule.catch_up != "all":
            # More ticks were missed than one pass lists (a long outage): they are skipped as one
            # range, and the policy is applied to the latest ticks only.
            tail = _tail(schedule, due[-1], now)
            skipped = (due[-1], False, f"missed ({schedule.catch_up}): {MAX_TICKS} or more ticks before "
                       f"{to_iso(tail[0]) if tail else to_iso(now)}", due[0], None)
            plan = [skipped, *_plan(tail, now, schedule)]
        resolved: List[tuple[Any, Any]] = []

        def code() -> tuple[Any, Any]:
            if not resolved:
                resolved.append(resolve(schedule))  # before any start decision: an error decides nothing
            return resolved[0]

        for tick, fire, reason, first, count in plan:
            action = "start" if fire else "skip"
            if fire:
                going = _going(recent, runtime)
                queued = sum(1 for d in recent if d.action == "queue" and not _exists(runtime, d.run_id))
                if going is not None and schedule.overlap == "skip":
                    action, reason = "skip", f"overlap: run {going} is still going"
                elif going is not None and schedule.overlap == "queue":
                    action, reason = (("queue", f"overlap: queued behind run {going}") if queued < QUEUE_LIMIT
                                      else ("skip", f"overlap: {QUEUE_LIMIT} ticks queued already"))
            if action in ("start", "queue"):
                code()
            decision = TickDecision(schedule=name, tick=to_iso(tick), action=action, reason=reason,
                                    decided_at=to_iso(now), worker=worker,
                                    first_tick=to_iso(first) if first is not None else None, ticks=count)
            held, won = self.store.decide(name, tick_key(tick), decision.to_dict())
            taken = TickDecision.from_dict(held, name=name)
            recent.insert(0, taken)
            if won:
                result.decisions.append(taken)
            if taken.action == "start":
                self._start(schedule, taken, code, result)
        self._start_pending(schedule, recent, runtime, code, result)

    def _start_pending(self, schedule: Schedule, recent: List[TickDecision], runtime: Any,
                       code: Callable[[], tuple[Any, Any]], result: FireResult) -> None:
        """Start what was decided but has no run yet: a ``start`` whose worker died before creating
        the run, or the first ``queue`` once every run before it has finished."""
        waiting: List[TickDecision] = []
        for decision in recent:  # latest first, down to the latest run that exists
            if decision.action == "skip":
                continue
            if _exists(runtime, decision.run_id):
                break
            waiting.append(decision)
        if not waiting:
            return
        first = waiting[-1]
        if first.action == "queue" and _going(recent[recent.index(first) + 1:], runtime) is not None:
            return  # the run before it is still going
        self._start(schedule, first, code, result)

    def _start(self, schedule: Schedule, decision: TickDecision, code: Callable[[], tuple[Any, Any]],
               result: FireResult) -> None:
        run_id = decision.run_id
        assert run_id is not None
        workflow, runtime = code()
        metadata = {"schedule": {"name": schedule.name, "tick": decision.tick, "action": decision.action,
                                 "decided_at": decision.decided_at, "cron": schedule.cron, "tz": schedule.tz}}
        try:
            runtime.start(workflow=workflow, vars=dict(schedule.vars), run_id=run_id, metadata=metadata)
        except RunExistsError:
            return  # another worker created it: creating a run is exclusive
        result.started.append(run_id)


Plan = list[tuple[datetime, bool, str, Optional[datetime], Optional[int]]]
"""``(tick, to fire, reason, first tick, how many ticks)`` for each decision a pass makes."""


def _plan(due: list[datetime], now: datetime, schedule: Schedule) -> "Plan":
    """``(tick, to fire, reason, first tick, count)`` for the due ticks, by the catch-up policy;
    missed ticks in a row become one ``skip`` (keyed by the last, naming the first and the count)."""
    if not due:
        return []
    grace = timedelta(seconds=schedule.grace_s)
    if schedule.catch_up == "all":
        fire = [True] * len(due)
    elif schedule.catch_up == "one":
        fire = [False] * (len(due) - 1) + [True]
    else:
        fire = [now - tick <= grace for tick in due]
    plan: Plan = []
    run: list[datetime] = []
    for tick, go in zip(due, fire):
        if not go:
            run.append(tick)
            continue
        if run:
            plan.append(_missed(run, schedule))
            run = []
        plan.append((tick, True, "", None, 1))
    if run:
        plan.append(_missed(run, schedule))
    return plan


def _tail(schedule: Schedule, after: datetime, now: datetime) -> list[datetime]:
    """The latest ticks in ``(after, now]``: those of the shortest window back from ``now`` that
    holds two (an hour holds at most 60 ticks of a five-field expression)."""
    found: list[datetime] = []
    for hours in (1, 24, 24 * 32, 24 * 367, 24 * 3700):
        start = max(after, now - timedelta(hours=hours))
        found = ticks_between(schedule.cron, schedule.tz, start, now, limit=MAX_TICKS)
        if len(found) >= 2 or start == after:
            break
    return found


def _missed(run: list[datetime], schedule: Schedule) -> tuple[datetime, bool, str, Optional[datetime], int]:
    why = ("catch-up one: a later tick runs instead" if schedule.catch_up == "one"
           else f"catch-up skip: more than {schedule.grace_s:g} s late")
    return (run[-1], False, f"missed ({why})", run[0] if len(run) > 1 else None, len(run))


def _exists(runtime: Any, run_id: Optional[str]) -> bool:
    if run_id is None:
        return False
    try:
        runtime.get_state(run_id)
    except RunNotFoundError:
        return False
    return True


def _going(recent: list[TickDecision], runtime: Any) -> Optional[str]:
    """The run of the latest ``start``/``queue`` decision when it is not finished (or not created yet)."""
    for decision in recent:
        if decision.action == "skip":
            continue
        run_id = decision.run_id
        assert run_id is not None
        try:
            state = runtime.get_state(run_id)
        except RunNotFoundError:
            return run_id  # decided, about to be created (or queued)
        return run_id if state.status in (RunStatus.RUNNING, RunStatus.WAITING) else None
    return None


def _check_tz(tz: str) -> str:
    zone(tz)
    return tz.strip()


def _check_text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"a schedule needs a {what}")
    return value


def _check_sha256(value: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise InvalidInputError(f"a schedule needs the workflow source's sha256 (64 hex digits), got {value!r}")
    return value


def _check_vars(value: Optional[dict[str, Any]]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError("a schedule's vars must be a JSON object")
    from ..core.canonical import canonical_json

    canonical_json(value, root="vars")  # refuses what the log could not hold
    return dict(value)


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise InvalidInputError(f"bad {what} policy {value!r}: choose {', '.join(choices)}")
    return value


def _check_grace(value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 86400 * 366:
        raise InvalidInputError(f"bad grace {value!r}: seconds, 0 or more")
    return float(value)


__all__ = ["CATCH_UP", "FireResult", "OVERLAP", "QUEUE_LIMIT", "SCHEDULE_FORMAT", "Schedule",
           "ScheduleExistsError", "ScheduleNotFoundError", "ScheduleStore", "Schedules", "TickDecision",
           "check_schedule_name", "run_id_for", "tick_key", "tick_of_key"]
