"""A worker's pass: claim runnable runs from the store and advance them, one or N at a time.

:meth:`WorkPass.work_pass` is what ``abstractruntime worker`` runs in a loop. Runnable means a
due ``wait_until`` timer or a run left ``running`` (handed off by ``emit --hand-off``, cut
short by ``max_steps``, or abandoned by a worker that died) — and, on a store that marks them
(:mod:`abstractruntime.core.ahead`), a run whose ledger went past its checkpoint because its
writer stopped between the two: advanced when its ledger says it can go on, else its
checkpoint is stored, so it is never left stuck. Work is claimed in small batches
(as many runs as there are free slots), so the runs of a queue spread evenly over a fleet of
workers; on PostgreSQL a claim is a lease renewed while the worker works on the run (see
:mod:`abstractruntime.scheduler.claims`). With ``concurrency`` above 1 the runs advance on one
event loop with ``atick``: while one awaits an LLM or a tool, the others go on.

A pass first delivers the events ``emit --keep`` kept to the first runs now waiting on their keys
(when the scheduler has the store's event log), then advances them with the rest.

A stop (``stop_event`` set, e.g. by SIGTERM) ends the pass: nothing more is claimed, and each
run in hand stops at its next step. A one-at-a-time pass lets the step in hand end; a
concurrent pass cancels its in-flight ticks: an async handler is cancelled (recorded as a failed
attempt, performed again later), a synchronous handler — a thread, which nothing can interrupt
— is waited for and its result recorded. A run's lock and claim are given up only once nothing
runs for it any more (:meth:`WorkPass.in_hand` names the runs still in hand meanwhile).

:meth:`WorkPass.serve` is the worker's loop: passes, and waits for work in between. A store
that becomes unavailable (:class:`~abstractruntime.core.errors.DatabaseUnavailableError`: a
restart, a cut connection) ends the pass, not the worker: it waits with backoff, then gives
up the claims it held, listens again and goes on (:mod:`abstractruntime.scheduler.outage`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TypeVar

from ..core.clock import to_iso
from ..core.blocks import skip_blocked
from ..core.timers import run_is_due
from ..core.errors import (
    AbstractRuntimeError,
    AlreadyAnsweredError,
    DatabaseUnavailableError,
    InvalidInputError,
    RunLockedError,
    RunNotFoundError,
    RunNotWaitingError,
)
from ..core.models import RunState, RunStatus, WaitReason
from ..core.drive import run_blocking, stop_when
from .claims import WorkClaims, claims_for, new_worker_id
from .outage import Outage

if TYPE_CHECKING:
    from ..core.ports import Checkpoint
    from ..core.runtime import Runtime

logger = logging.getLogger("abstractruntime.scheduler")
_T = TypeVar("_T")

# PostgreSQL's SQLSTATE for a session it closed after idle_session_timeout.
IDLE_SESSION_CLOSED = "57P05"


class _Heartbeat:
    """Renews the leases of the runs in hand every third of the lease time, in a thread."""

    def __init__(self, claims: WorkClaims, lease_s: float) -> None:
        self._claims, self._every = claims, max(lease_s / 3.0, 0.05)
        self._held: set[str] = set()
        self._finished: list[str] = []
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if getattr(claims, "leases", True):
            self._thread = threading.Thread(target=self._loop, name="abstractruntime-leases", daemon=True)
            self._thread.start()

    def add(self, run_ids: list[str]) -> None:
        with self._guard:
            self._held.update(run_ids)

    def held(self) -> list[str]:
        """The runs in hand now."""
        with self._guard:
            return sorted(self._held)

    def done(self, run_ids: list[str]) -> None:
        """Stop renewing ``run_ids``; their claims go with the next claim (or at :meth:`close`)."""
        with self._guard:
            self._held.difference_update(run_ids)
            self._finished.extend(run_ids)

    def finished(self) -> list[str]:
        """The runs done since the last call: to release with the next claim."""
        with self._guard:
            done, self._finished = self._finished, []
        return done

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            with self._guard:
                held = sorted(self._held)
            try:
                self._claims.renew(held)
            except Exception:  # a blip: the next beat tries again; the lease has margin
                logger.warning("could not renew the leases of %d run(s)", len(held), exc_info=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._guard:
            left = sorted({*self._held, *self._finished})
            self._finished = []
        with contextlib.suppress(Exception):
            self._claims.release(left)


class WorkPass:
    """Scheduler methods for workers: :meth:`work_pass`, :meth:`wait_for_work`."""

    _runtime: "Runtime"
    _run_store: Any
    _allow_drift: bool
    _lease_s: float
    _worker_id: Optional[str]
    _claims: Optional[WorkClaims]
    _events: Optional[Any]
    _schedules: Optional[Any] = None
    _resolve_schedule: Optional[Callable[[Any], Any]] = None
    _on_schedule_failed: Optional[Callable[[str, str], None]] = None
    _schedule_errors: dict[str, str]
    _beat: Optional[_Heartbeat] = None

    def _advance_due(self, run: RunState, now: datetime, *, checkpoint: Optional["Checkpoint"] = None,
                     take_running: bool = False) -> Optional[RunState]:
        raise NotImplementedError  # provided by Scheduler

    def _fail(self, run_id: str, exc: BaseException) -> None:
        raise NotImplementedError  # provided by Scheduler

    def _locked(self, run_id: str) -> None:
        raise NotImplementedError  # provided by Scheduler

    def _workflow_for(self, checkpoint: "Checkpoint") -> Any:
        raise NotImplementedError  # provided by Scheduler

    def _resumed(self, state: RunState) -> None:
        raise NotImplementedError  # provided by Scheduler

    def _record_error(self, message: str) -> None:
        raise NotImplementedError  # provided by Scheduler

    def release_kept_secrets(self) -> list[str]:
        raise NotImplementedError  # provided by Scheduler

    def _side_job(self, what: str, job: Callable[[], _T], nothing: _T) -> _T:
        """``job()``, one of the chores a pass does before it claims runs (deliver kept events,
        hand children over, release kept secrets, fire schedules). The store's outage
        (:class:`DatabaseUnavailableError`) ends the pass, as it does for every run (see
        :meth:`serve`); any other failure is logged and recorded in ``stats`` and gives
        ``nothing``, so one chore that fails never stops the runs of the pass."""
        try:
            return job()
        except DatabaseUnavailableError:
            raise
        except Exception as exc:
            logger.exception("%s failed", what)
            self._record_error(f"{what} failed: {exc}")
            return nothing

    @property
    def worker_id(self) -> str:
        """This scheduler's name in the store's leases (host:pid:random unless given)."""
        if self._worker_id is None:
            self._worker_id = new_worker_id()
        return self._worker_id

    def work_claims(self) -> WorkClaims:
        """The claims this scheduler takes work with (the store's own, or listing)."""
        if self._claims is None:
            self._claims = claims_for(self._run_store, owner=self.worker_id, lease_s=self._lease_s)
        return self._claims

    def listen_for_work(self) -> None:
        """Start receiving the store's wake-ups now, so none sent before the next wait is missed."""
        self.work_claims().listen()

    def wait_for_work(self, timeout: float, stop_event: Optional[threading.Event] = None) -> bool:
        """Block until the store wakes this worker (``True``), the next timer is due, ``timeout``
        seconds pass or ``stop_event`` is set."""
        claims = self.work_claims()
        due = claims.next_due()
        if due is not None:
            until_due = (due - self._runtime.now()) / timedelta(seconds=1)
            # A timer already due that the last pass did not take is another worker's (leased)
            # or cannot advance yet: waiting for it would spin, so only future timers shorten.
            if until_due > 0:
                timeout = min(timeout, until_due)
        return claims.wait_for_work(timeout, stop_event)

    def in_hand(self) -> list[str]:
        """The runs a pass is advancing right now (e.g. still in a handler after a stop)."""
        beat = self._beat
        return beat.held() if beat is not None else []

    def close_claims(self) -> None:
        """Close what the claims hold open (a ``LISTEN`` connection)."""
        if self._claims is not None:
            self._claims.close()

    def serve(self, *, limit: int = 100, concurrency: int = 1, interval: float = 1.0, once: bool = False,
              stop_event: Optional[threading.Event] = None, outage: Optional[Outage] = None,
              on_pass: Optional[Callable[[list[RunState]], None]] = None) -> None:
        """Work until ``stop_event`` is set (one pass with ``once``): a :meth:`work_pass`, then,
        when it advanced nothing, :meth:`wait_for_work` (a wake-up, a due timer, ``interval``).
        ``on_pass(advanced)`` is called after each pass.

        An unavailable store (:class:`DatabaseUnavailableError`) does not end it: it waits as
        ``outage`` says (backoff with jitter; one ``on_start``/``on_end`` call per outage),
        then gives up the claims it held, listens again and goes on. It raises what retrying
        cannot fix, and :class:`DatabaseUnavailableError` once an outage outlasted
        ``outage.max_outage``.
        """
        stop = stop_event if stop_event is not None else threading.Event()
        outage = outage if outage is not None else Outage()
        retried = False
        while not stop.is_set():
            try:
                if outage.active:
                    self.work_claims().reset()  # the passes that held claims were cut short
                self.listen_for_work()
                outage.ended()  # the store answered
                advanced = self.work_pass(limit=limit, concurrency=concurrency, stop_event=stop)
                retried = False
                if on_pass is not None:
                    on_pass(advanced)
                if once:
                    return
                if not advanced:
                    self.wait_for_work(interval, stop)
            except DatabaseUnavailableError as exc:
                if not outage.active and not retried and exc.details.get("sqlstate") == IDLE_SESSION_CLOSED:
                    # The server closed a session just as it was taken for a statement it did
                    # not run (it was idle): not an outage; a new session, at once.
                    retried = True
                    continue
                stop.wait(outage.failed(exc))

    def work_pass(self, *, limit: int = 100, concurrency: int = 1,
                  stop_event: Optional[threading.Event] = None) -> list[RunState]:
        """Claim and advance runnable runs (due timers, runs left ``running``), at most ``limit``
        of them, ``concurrency`` at a time; returns the new states of the runs advanced.

        A run another writer holds is skipped; a run whose tick raises is recorded in
        ``stats`` (and ``on_run_failed``) and the others go on.
        """
        if limit < 1:
            raise InvalidInputError(f"limit must be >= 1, got {limit!r}")
        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be >= 1, got {concurrency!r}")
        self.deliver_kept_events()
        self.hand_over_children(limit=limit)
        self.release_kept_secrets()
        self.fire_schedules()
        if concurrency > 1:
            import asyncio  # only for concurrent passes: emit and one-at-a-time workers never load it

            return asyncio.run(self._awork_pass(limit, concurrency, stop_event))
        claims = self.work_claims()
        advanced: list[RunState] = []
        tried: set[str] = set()
        with self._beating(claims) as beat:
            while len(tried) < limit and not _stopped(stop_event):
                now = self._runtime.now()
                ids = claims.claim(now_iso=to_iso(now), limit=1, exclude=tried, release=beat.finished())
                if not ids:
                    break
                tried.update(ids)
                beat.add(ids)
                try:
                    # A stop ends the tick at its next step: the step in hand ends and is recorded.
                    with stop_when(stop_event):
                        state = self._advance_claimed(ids[0], now)
                finally:
                    beat.done(ids)
                if state is not None:
                    advanced.append(state)
        return advanced

    def fire_schedules(self) -> list[str]:
        """Start the runs of the schedules' due ticks, each once across every worker
        (:meth:`Schedules.fire_due <abstractruntime.scheduler.schedules.Schedules.fire_due>`); the
        runs are left ``running``, for this pass to advance. Returns their ids. Without schedules
        (``Scheduler(schedules=..., resolve_schedule=...)``) there is nothing to fire. A schedule
        that cannot be served is reported (``on_schedule_failed``) once per failure, not every pass."""
        schedules, resolve = self._schedules, self._resolve_schedule
        if schedules is None or resolve is None:
            return []
        result = self._side_job("firing schedules",
                                lambda: schedules.fire_due(self._runtime, resolve, worker=self.worker_id), None)
        if result is None:
            return []
        told = self._schedule_errors
        for name in [n for n in told if n not in result.errors]:
            del told[name]  # served again: a new failure is news
        for name, message in sorted(result.errors.items()):
            if told.get(name) == message:
                continue  # said once; the tick stays due and the next passes try again quietly
            told[name] = message
            logger.error("%s", message)
            self._record_error(message)
            if self._on_schedule_failed is not None:
                try:
                    self._on_schedule_failed(name, message)
                except Exception as cb_exc:
                    logger.exception("on_schedule_failed callback failed")
                    self._record_error(f"on_schedule_failed callback failed for schedule {name}: {cb_exc}")
        started: list[str] = result.started
        return started

    def deliver_kept_events(self) -> list[RunState]:
        """Give each event ``emit --keep`` kept to the first run now waiting on its key (and drop
        the expired ones); the runs are left ``running``, for this pass to advance. Returns them.
        Without the store's event log (``Scheduler(events=...)``) there is nothing to deliver."""
        events = self._events
        if events is None:
            return []
        from .events import deliver_kept_events

        def resolve(run: RunState) -> Any:
            return self._workflow_for(self._runtime.get_checkpoint(run.run_id))

        result = self._side_job("delivering kept events",
                                lambda: deliver_kept_events(events, self._run_store, resolve=resolve,
                                                            now=self._runtime.now(), allow_drift=self._allow_drift),
                                None)
        if result is None:
            return []
        for run_id, message in result.errors.items():
            self._fail(run_id, RuntimeError(message))
        return result.states

    def hand_over_children(self, *, limit: int = 100) -> list[RunState]:
        """Answer each parent waiting on a subworkflow whose child has completed since.

        A child that waited (an answer, a timer, an event) ends in some later tick, by any
        process; its parent waits on it (reason ``subworkflow``). Here the parent gets the
        child's output as :meth:`resume_subworkflow_parent` gives it — ``{"sub_run_id",
        "output"}`` at its wait's ``result_key`` — read from the child's proven state, and is left
        ``running`` for this pass to advance. Its wait takes one answer: two workers handing over
        the same child resume the parent once. A child that failed or was cancelled is not handed
        over (its parent waits until an operator cancels or answers it). Returns the parents.
        """
        parents: list[RunState] = self._side_job(
            "listing parents of subworkflows",
            lambda: self._run_store.list_runs(status=RunStatus.WAITING, wait_reason=WaitReason.SUBWORKFLOW,
                                              limit=limit), [])
        handed: list[RunState] = []
        for parent in parents:
            wait = parent.waiting
            details = wait.details if wait is not None and isinstance(wait.details, dict) else {}
            child_id = details.get("sub_run_id")
            if wait is None or not isinstance(child_id, str):
                continue
            try:
                child = self._runtime.run_store.load(child_id)  # the cheap look first: most are still going
                if child is None or child.status is not RunStatus.COMPLETED:
                    continue
                proven = self._runtime.get_state(child_id)  # a checkpoint is a cache: the ledger decides
                if proven.status is not RunStatus.COMPLETED:
                    continue
                output = proven.output
                workflow, runtime = self._workflow_for(self._runtime.get_checkpoint(parent.run_id))
                state = runtime.resume(workflow=workflow, run_id=parent.run_id, wait_key=wait.wait_key,
                                       wait_id=wait.wait_id, payload={"sub_run_id": child_id, "output": output},
                                       max_steps=0, allow_drift=self._allow_drift)
            except (AlreadyAnsweredError, RunNotWaitingError, RunLockedError, RunNotFoundError):
                continue  # another worker got there first, or the parent moved on
            except DatabaseUnavailableError:
                raise  # an outage, not the parent's failure
            except AbstractRuntimeError as exc:
                self._fail(parent.run_id, exc)
                continue
            handed.append(state)
        return handed

    @contextlib.contextmanager
    def _beating(self, claims: WorkClaims) -> Iterator[_Heartbeat]:
        beat = self._beat = _Heartbeat(claims, self._lease_s)
        try:
            yield beat
        finally:
            self._beat = None
            beat.close()

    def _checkpoint(self, run_id: str) -> "Checkpoint":
        """The run's checkpoint for choosing its workflow: the one its claim read, else the current one."""
        claimed: Optional["Checkpoint"] = self.work_claims().take_checkpoint(run_id)
        return claimed if claimed is not None else self._runtime.get_checkpoint(run_id)

    def _advance_claimed(self, run_id: str, now: datetime) -> Optional[RunState]:
        try:
            checkpoint = self._checkpoint(run_id)
            if self._settled(run_id, checkpoint.run, now):
                return None
        except RunNotFoundError:
            return None
        except RunLockedError:
            self._locked(run_id)
            return None
        except DatabaseUnavailableError:
            raise  # the store's outage, not the run's failure: the pass ends (see serve)
        except Exception as exc:
            self._fail(run_id, exc)
            return None
        return self._advance_due(checkpoint.run, now, checkpoint=checkpoint, take_running=True)

    def _settled(self, run_id: str, current: RunState, now: datetime) -> bool:
        """A run claimed because its ledger may be past its checkpoint, which its ledger says cannot
        go on (waiting, or ended): its checkpoint is stored (the mark goes with it); ``True`` then."""
        if not self.work_claims().was_ahead(run_id) or runnable(current, now, take_running=True):
            return False
        self._runtime.checkpoint(run_id)
        return True

    async def _awork_pass(self, limit: int, concurrency: int,
                          stop_event: Optional[threading.Event]) -> list[RunState]:
        import asyncio

        claims = self.work_claims()
        advanced: list[RunState] = []
        tried: set[str] = set()
        tasks: set[asyncio.Task[None]] = set()
        unavailable: list[DatabaseUnavailableError] = []

        async def one(run_id: str, beat: _Heartbeat) -> None:
            try:
                state = await self._aadvance(run_id)
                if state is not None:
                    advanced.append(state)
            except DatabaseUnavailableError as exc:
                unavailable.append(exc)  # ends the pass: the other ticks are cancelled below
            finally:
                beat.done([run_id])

        with self._beating(claims) as beat:
            try:
                while not _stopped(stop_event):
                    if unavailable:
                        raise unavailable[0]
                    free = concurrency - len(tasks)
                    if free > 0 and len(tried) < limit:
                        ids = await asyncio.to_thread(claims.claim, now_iso=to_iso(self._runtime.now()),
                                                      limit=min(free, limit - len(tried)), exclude=set(tried),
                                                      release=beat.finished())
                        tried.update(ids)
                        beat.add(ids)
                        tasks.update(asyncio.create_task(one(run_id, beat)) for run_id in ids)
                        if ids:
                            continue
                    if not tasks:
                        break
                    done, _ = await asyncio.wait(tasks, timeout=0.1, return_when=asyncio.FIRST_COMPLETED)
                    tasks.difference_update(done)
                if unavailable:
                    raise unavailable[0]
            finally:
                for task in tasks:
                    # A stop: every in-flight tick stops at its next step. An async handler is
                    # cancelled; a synchronous one (a thread) ends first and its result is recorded.
                    # Each run's lock and claim go only once nothing runs for it.
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return advanced

    async def _aadvance(self, run_id: str) -> Optional[RunState]:
        import asyncio

        """One claimed run on the event loop (``atick``); ``None`` when skipped or not advanced."""
        try:
            checkpoint = await asyncio.to_thread(self._checkpoint, run_id)
            current = checkpoint.run
            before = current.waiting.wait_id if current.status is RunStatus.WAITING and current.waiting else None
            if await run_blocking(self._settled, run_id, current, self._runtime.now()):
                return None
            if not runnable(current, self._runtime.now(), take_running=True):
                return None
            workflow, runtime = self._workflow_for(checkpoint)
            if skip_blocked(runtime.run_store, checkpoint, workflow):
                return None  # its code diverged from its history: not again with the same code
            state: RunState = await runtime.atick(workflow=workflow, run_id=run_id, allow_drift=self._allow_drift)
        except RunLockedError:
            self._locked(run_id)
            return None
        except RunNotFoundError:
            return None
        except DatabaseUnavailableError:
            raise
        except Exception as exc:
            self._fail(run_id, exc)
            return None
        if before is not None and state.waiting is not None and state.waiting.wait_id == before:
            return None  # another worker fired the timer first, or it is not due under the lock
        self._resumed(state)
        return state


def _stopped(stop_event: Optional[threading.Event]) -> bool:
    return stop_event is not None and stop_event.is_set()


def runnable(run: RunState, now: datetime, *, take_running: bool) -> bool:
    """Whether a pass advances ``run``: its timer is due (or malformed), or, when ``take_running``,
    it was left running."""
    return (take_running and run.status is RunStatus.RUNNING) or is_due_or_malformed(run, now)


def is_due_or_malformed(run: RunState, now: datetime) -> bool:
    """Whether a run's timer is due; a malformed timestamp counts as due, so that the tick
    records it as the run's failure instead of the run waiting forever."""
    try:
        return run_is_due(run, now)
    except ValueError:
        return True  # ticked, so the runtime records the malformed timestamp as the run's failure


__all__ = ["WorkPass", "is_due_or_malformed", "runnable"]
