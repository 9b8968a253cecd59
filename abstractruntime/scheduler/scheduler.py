"""The scheduler: resumes runs whose ``wait_until`` time has come.

A run waiting on a timer is just a checkpoint with ``waiting.reason == "until"``;
nothing wakes it up by itself. :meth:`Scheduler.tick_due` asks the run store which
timers are due *according to the runtime's clock* (``runtime.now()``, injectable,
so tests move a :class:`~abstractruntime.core.clock.FixedClock` instead of sleeping)
and ticks each of those runs with its registered workflow. :meth:`Scheduler.start`
does that in a background thread every ``poll_interval_s`` seconds.

Several schedulers (threads or processes) may share one file store: a run another
writer holds locked is skipped for this round, not counted as an error — that
writer is already advancing it.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..core.clock import to_iso
from ..core.blocks import skip_blocked
from ..core.errors import DatabaseUnavailableError, InvalidInputError, RunLockedError, RunNotFoundError
from ..core.models import RunState
from ..storage.base import QueryableRunStore
from .registry import WorkflowNotRegisteredError, WorkflowRegistry
from .run_tree import RunTreeOperations
from .claims import WorkClaims
from .work_pass import WorkPass, runnable

if TYPE_CHECKING:  # the runtime is only needed for type hints here
    from ..core.ports import Checkpoint
    from ..core.runtime import Runtime
    from ..core.spec import WorkflowSpec

logger = logging.getLogger(__name__)

OnRunResumed = Callable[[RunState], None]
OnRunFailed = Callable[[str, BaseException], None]
OnRunLocked = Callable[[str], None]
WorkflowResolver = Callable[[RunState], "tuple[WorkflowSpec, Runtime]"]
"""``resolve(run) -> (workflow, runtime)``: what a due run is ticked with, when runs differ."""
CheckpointResolver = Callable[["Checkpoint"], "tuple[WorkflowSpec, Runtime]"]
"""``resolve_checkpoint(checkpoint) -> (workflow, runtime)``: the same, from the run's checkpoint."""


# How often a worker looks for finished runs whose secret values a kill left behind.
RELEASE_EVERY_S = 60.0


@dataclass
class SchedulerStats:
    """Counters of a :class:`Scheduler`, updated as it works.

    ``errors`` holds the most recent error lines (``"<iso time>: <message>"``), at most
    ``max_errors_kept`` of them. ``runs_skipped_locked`` counts due runs left to the
    writer that held their lock.
    """

    runs_resumed: int = 0
    runs_failed: int = 0
    poll_cycles: int = 0
    last_poll_at: Optional[str] = None
    errors: list[str] = field(default_factory=list)
    runs_skipped_locked: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy."""
        return asdict(self)


class Scheduler(RunTreeOperations, WorkPass):
    """Resumes due ``wait_until`` runs, on demand or from a background thread.

    ``runtime.run_store`` must be a
    :class:`~abstractruntime.storage.base.QueryableRunStore` (``TypeError`` otherwise).
    ``on_run_resumed(state)`` is called after each run the scheduler advances;
    ``on_run_failed(run_id, error)`` when advancing one raised; ``on_run_locked(run_id)``
    when one was skipped because another writer holds it. Exceptions raised by the first two
    callbacks are logged and recorded in ``stats.errors``, never propagated.

    Each due run is ticked with the workflow ``registry`` holds for its workflow id, by
    ``runtime``; ``resolve(run) -> (workflow, runtime)`` replaces both when runs need their
    own (the CLI loads each run's workflow file, with that file's tools and handlers). An
    error raised by ``resolve`` fails that run only, like an error of its tick.
    ``resolve_checkpoint(checkpoint)`` does the same from the run's current checkpoint (the
    workflow file and metadata it recorded) and is used instead of ``resolve`` when given: the
    scheduler has just read the checkpoint, so the resolver need not read it again.
    ``allow_drift`` accepts workflow source that changed since a run started.
    ``events`` (the store's event log, ``store.events``) makes each :meth:`work_pass` first
    deliver the events ``emit --keep`` kept to the first runs now waiting on their keys.
    ``schedules`` (a :class:`~abstractruntime.scheduler.schedules.Schedules`) with
    ``resolve_schedule(schedule) -> (workflow, runtime)`` makes each :meth:`work_pass` first
    start the runs of the schedules' due ticks (:meth:`fire_schedules`);
    ``on_schedule_failed(name, message)`` hears of a schedule that could not be served.
    """

    def __init__(
        self,
        *,
        runtime: "Runtime",
        registry: WorkflowRegistry,
        poll_interval_s: float = 1.0,
        max_errors_kept: int = 100,
        on_run_resumed: Optional[OnRunResumed] = None,
        on_run_failed: Optional[OnRunFailed] = None,
        batch_size: int = 100,
        resolve: Optional[WorkflowResolver] = None,
        resolve_checkpoint: Optional[CheckpointResolver] = None,
        on_run_locked: Optional[OnRunLocked] = None,
        allow_drift: bool = False,
        lease_s: float = 30.0,
        worker_id: Optional[str] = None,
        events: Optional[Any] = None,
        schedules: Optional[Any] = None,
        resolve_schedule: Optional[Callable[[Any], "tuple[WorkflowSpec, Runtime]"]] = None,
        on_schedule_failed: Optional[Callable[[str, str], None]] = None,
    ) -> None:
        run_store = runtime.run_store
        if not isinstance(run_store, QueryableRunStore):
            raise TypeError(
                f"Scheduler needs a run store that implements QueryableRunStore "
                f"(list_runs, list_due_wait_until, list_children); got {type(run_store).__name__}"
            )
        if not poll_interval_s > 0:
            raise InvalidInputError(f"poll_interval_s must be > 0, got {poll_interval_s!r}")
        if max_errors_kept < 0:
            raise InvalidInputError(f"max_errors_kept must be >= 0, got {max_errors_kept!r}")
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size!r}")
        self._runtime = runtime
        self._registry = registry
        self._run_store: QueryableRunStore = run_store
        self._poll_interval = float(poll_interval_s)
        self._max_errors = int(max_errors_kept)
        self._batch_size = int(batch_size)
        self._on_run_resumed = on_run_resumed
        self._on_run_failed = on_run_failed
        self._resolve = resolve
        self._resolve_checkpoint = resolve_checkpoint
        self._on_run_locked = on_run_locked
        self._allow_drift = allow_drift
        if not lease_s > 0:
            raise InvalidInputError(f"lease_s must be > 0, got {lease_s!r}")
        self._lease_s = float(lease_s)
        self._worker_id = worker_id
        self._claims: Optional[WorkClaims] = None
        self._events = events
        self._schedules = schedules
        self._resolve_schedule = resolve_schedule
        self._on_schedule_failed = on_schedule_failed
        self._schedule_errors: dict[str, str] = {}
        self._next_release = 0.0  # monotonic time of the next sweep of kept secret values

        self._stats = SchedulerStats()
        self._stats_lock = threading.Lock()
        # _state_lock guards start/stop; _stop_event wakes the poll loop early.
        self._state_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._running = False

    # ------------------------------------------------------------------ properties

    @property
    def runtime(self) -> "Runtime":
        """The runtime this scheduler advances runs with."""
        return self._runtime

    @property
    def registry(self) -> WorkflowRegistry:
        """Where run workflow ids are looked up."""
        return self._registry

    @property
    def poll_interval_s(self) -> float:
        """Seconds the background thread sleeps between passes."""
        return self._poll_interval

    @property
    def is_running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._running

    @property
    def stats(self) -> SchedulerStats:
        """The live counters (use :meth:`stats_snapshot` for a consistent copy)."""
        return self._stats

    def stats_snapshot(self) -> SchedulerStats:
        """A copy of the counters taken atomically with respect to the poll thread."""
        with self._stats_lock:
            return copy.deepcopy(self._stats)

    # ------------------------------------------------------------------ background thread

    def start(self) -> None:
        """Start polling in a daemon thread; ``RuntimeError`` if already running."""
        with self._state_lock:
            if self._running:
                raise RuntimeError("Scheduler is already running")
            if self._thread is not None and self._thread.is_alive():
                # A previous stop() timed out while a tick was still in progress.
                raise RuntimeError("Scheduler is still stopping; call stop() again before start()")
            self._stop_event.clear()
            self._thread = threading.Thread(
                target=self._poll_loop, name="abstractruntime-scheduler", daemon=True
            )
            self._running = True
            self._thread.start()
        logger.info("scheduler started (poll every %.3gs)", self._poll_interval)

    def stop(self, timeout: Optional[float] = 5.0) -> bool:
        """Stop polling and join the thread; safe to call any number of times.

        The thread finishes the run it is ticking, then exits. Returns ``True`` once the
        thread is gone, ``False`` if it is still busy after ``timeout`` seconds (``None``
        waits as long as it takes); call ``stop()`` again to keep waiting.
        """
        with self._state_lock:
            self._running = False
            self._stop_event.set()
            thread = self._thread
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(timeout)
        if thread.is_alive():
            logger.warning("scheduler thread still busy after %ss", timeout)
            return False
        with self._state_lock:
            if self._thread is thread:
                self._thread = None
        logger.info("scheduler stopped")
        return True

    def __enter__(self) -> "Scheduler":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _poll_loop(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._poll(stop_event=self._stop_event)
            except Exception as exc:  # the loop must outlive a failing store
                logger.exception("scheduler poll failed")
                self._record_error(f"poll failed: {exc}")
            self._stop_event.wait(self._poll_interval)

    # ------------------------------------------------------------------ one pass

    def poll_once(self) -> int:
        """One poll cycle: tick every due run (up to ``batch_size``); return how many."""
        return self._poll(stop_event=None)

    def _poll(self, *, stop_event: Optional[threading.Event]) -> int:
        now = self._runtime.now()
        with self._stats_lock:
            self._stats.poll_cycles += 1
            self._stats.last_poll_at = to_iso(now)
        return len(self._tick_due(now=now, limit=self._batch_size, stop_event=stop_event))

    def tick_due(self, *, limit: int = 100) -> list[RunState]:
        """Tick every run whose ``wait_until`` is due now (``runtime.now()``), once.

        Runs are taken in ``until`` order; at most ``limit`` are advanced. A run locked
        by another writer is skipped; a run whose workflow is not registered, or whose
        tick raises, is recorded in ``stats`` and skipped. Returns the new states of the
        runs advanced.
        """
        if limit < 1:
            raise InvalidInputError(f"limit must be >= 1, got {limit!r}")
        return self._tick_due(now=self._runtime.now(), limit=limit, stop_event=None)

    def _tick_due(
        self, *, now: datetime, limit: int, stop_event: Optional[threading.Event]
    ) -> list[RunState]:
        now_iso = to_iso(now)
        advanced: list[RunState] = []
        seen: set[str] = set()
        skipped = 0
        fetch = limit
        while True:
            due = self._run_store.list_due_wait_until(now_iso=now_iso, limit=fetch)
            fresh = [run for run in due if run.run_id not in seen]
            for run in fresh:
                if len(advanced) >= limit or (stop_event is not None and stop_event.is_set()):
                    return advanced
                seen.add(run.run_id)
                state = self._advance_due(run, now)
                if state is None:
                    skipped += 1
                else:
                    advanced.append(state)
            # Skipped runs stay due and would fill every page: fetch past them.
            if len(due) < fetch or not fresh or len(advanced) >= limit:
                return advanced
            fetch = skipped + (limit - len(advanced))

    def _advance_due(self, run: RunState, now: datetime, *, checkpoint: Optional["Checkpoint"] = None,
                     take_running: bool = False) -> Optional[RunState]:
        """Tick one due run; ``None`` if it was skipped (locked, unregistered, failed, not due).

        ``checkpoint``: the run's checkpoint, just read (else it is read here: the listing may
        be stale). ``take_running``: a run left ``running`` is advanced too (a worker's pass).
        """
        if self._resolve is None and self._resolve_checkpoint is None and self._registry.get(run.workflow_id) is None:
            self._fail(run.run_id, WorkflowNotRegisteredError(run.workflow_id))
            return None
        try:
            # The listing may be stale: another worker may have resumed it meanwhile.
            checkpoint = checkpoint or self._runtime.get_checkpoint(run.run_id)
            current = checkpoint.run
            if not runnable(current, now, take_running=take_running):
                return None
            workflow, runtime = self._workflow_for(checkpoint)
            if skip_blocked(runtime.run_store, checkpoint, workflow):
                return None  # its code diverged from its history: not again with the same code
            # Re-checked under the run's lock, on the run as its ledger has it (the checkpoint
            # read here may be behind): a worker that lost the race gets None. Another process
            # advancing it holds its lock: RunLockedError, skipped below.
            state = runtime.tick_if_due(workflow=workflow, run_id=run.run_id, allow_drift=self._allow_drift,
                                        running=take_running)
            if state is None:
                return None
        except RunLockedError:
            self._locked(run.run_id)
            return None
        except RunNotFoundError:
            return None  # deleted since it was listed
        except DatabaseUnavailableError:
            raise  # not this run's failure: the worker's loop waits for the store (work_pass.serve)
        except Exception as exc:
            self._fail(run.run_id, exc)
            return None
        self._resumed(state)
        return state

    def _workflow_for(self, checkpoint: "Checkpoint") -> "tuple[WorkflowSpec, Runtime]":
        """The workflow and runtime a run is ticked with: the resolvers', else the registry's."""
        if self._resolve_checkpoint is not None:
            return self._resolve_checkpoint(checkpoint)
        if self._resolve is not None:
            return self._resolve(checkpoint.run)
        return self._registry.get_or_raise(checkpoint.run.workflow_id), self._runtime

    def _locked(self, run_id: str) -> None:
        with self._stats_lock:
            self._stats.runs_skipped_locked += 1
        logger.debug("run %s is locked by another writer; skipped", run_id)
        if self._on_run_locked is not None:
            self._on_run_locked(run_id)

    def _resumed(self, state: RunState) -> None:
        with self._stats_lock:
            self._stats.runs_resumed += 1
        logger.debug("resumed run %s -> %s", state.run_id, state.status.value)
        if self._on_run_resumed is not None:
            try:
                self._on_run_resumed(state)
            except Exception as exc:
                logger.exception("on_run_resumed callback failed")
                self._record_error(f"on_run_resumed callback failed for run {state.run_id}: {exc}")

    def _fail(self, run_id: str, exc: BaseException) -> None:
        logger.error("could not resume run %s: %s", run_id, exc)
        with self._stats_lock:
            self._stats.runs_failed += 1
        self._record_error(f"run {run_id}: {exc}")
        if self._on_run_failed is not None:
            try:
                self._on_run_failed(run_id, exc)
            except Exception as cb_exc:
                logger.exception("on_run_failed callback failed")
                self._record_error(f"on_run_failed callback failed for run {run_id}: {cb_exc}")

    def release_kept_secrets(self) -> list[str]:
        """Drop the secret values finished runs still keep (a process killed right after a run's
        last record leaves them): on a worker's first pass, then at most every
        ``RELEASE_EVERY_S`` seconds. Returns the runs released."""
        now = time.monotonic()
        if now < self._next_release:
            return []
        self._next_release = now + RELEASE_EVERY_S
        return self._side_job("releasing the secret values of finished runs",
                              self._runtime.release_finished_secrets, [])

    def _record_error(self, message: str) -> None:
        line = f"{to_iso(self._runtime.now())}: {message}"
        with self._stats_lock:
            errors = self._stats.errors
            errors.append(line)
            if len(errors) > self._max_errors:
                del errors[: len(errors) - self._max_errors]

