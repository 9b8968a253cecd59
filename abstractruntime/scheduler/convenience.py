"""One object for the common case: a Runtime, its WorkflowRegistry and a Scheduler.

``create_scheduled_runtime()`` wires them together (in-memory stores by default) so a
script can ``run`` a workflow, ``respond`` to its questions and let timers fire
without handling wait keys or workflow lookups itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Optional

from ..core.errors import RunNotWaitingError, RunStateError
from ..core.models import RunState, RunStatus, WaitReason
from ..core.spec import WorkflowSpec
from .registry import WorkflowRegistry
from .scheduler import OnRunFailed, OnRunResumed, Scheduler, SchedulerStats

if TYPE_CHECKING:  # imported lazily below so the runtime may import this package
    from ..core.runtime import Runtime

logger = logging.getLogger(__name__)


@dataclass
class ScheduledRuntime:
    """A :class:`Runtime` bundled with its :class:`WorkflowRegistry` and :class:`Scheduler`.

    Workflows passed to :meth:`run` or :meth:`start` are registered on first use, so
    later ticks, resumes and timers find them by id. Usable as a context manager:
    leaving the ``with`` block stops the scheduler.
    """

    runtime: "Runtime"
    scheduler: Scheduler
    registry: WorkflowRegistry

    # ------------------------------------------------------------------ runs

    def _ensure_registered(self, workflow: WorkflowSpec) -> None:
        registered = self.registry.get(workflow.workflow_id)
        if registered is None:
            try:
                self.registry.register(workflow)
            except ValueError:
                pass  # registered concurrently by another thread; same id is enough
        elif registered is not workflow:
            # Timers and resumes will use the registered spec, not this one.
            logger.warning(
                "workflow %r is already registered with another spec; the registered one is used later",
                workflow.workflow_id,
            )

    def start(
        self,
        *,
        workflow: WorkflowSpec,
        vars: Optional[dict[str, Any]] = None,
        actor_id: Optional[str] = None,
    ) -> str:
        """Register ``workflow`` if needed and create a run (not ticked); returns its id."""
        self._ensure_registered(workflow)
        return self.runtime.start(workflow=workflow, vars=vars, actor_id=actor_id)

    def run(
        self,
        workflow: WorkflowSpec,
        *,
        vars: Optional[dict[str, Any]] = None,
        actor_id: Optional[str] = None,
        max_steps: int = 100,
    ) -> tuple[str, RunState]:
        """Start ``workflow`` and tick it until it waits, completes or fails: ``(run_id, state)``."""
        run_id = self.start(workflow=workflow, vars=vars, actor_id=actor_id)
        state = self.runtime.tick(workflow=workflow, run_id=run_id, max_steps=max_steps)
        return run_id, state

    def tick(self, run_id: str, *, max_steps: int = 100) -> RunState:
        """Advance a run with its registered workflow (``KeyError`` if not registered)."""
        state = self.runtime.get_state(run_id)
        workflow = self.registry.get_or_raise(state.workflow_id)
        return self.runtime.tick(workflow=workflow, run_id=run_id, max_steps=max_steps)

    def tick_due(self, *, limit: int = 100) -> list[RunState]:
        """Tick every run whose timer is due now; see :meth:`Scheduler.tick_due`."""
        return self.scheduler.tick_due(limit=limit)

    def respond(self, run_id: str, payload: dict[str, Any]) -> RunState:
        """Answer a waiting run without knowing its wait key.

        Raises :class:`~abstractruntime.core.errors.RunNotWaitingError` ("not waiting")
        if the run is not waiting, :class:`~abstractruntime.core.errors.RunStateError` if its
        wait has no key, and :class:`~abstractruntime.core.errors.TimerWaitError` if it waits
        on a timer: a timer resumes by itself (``runtime.resume(..., fire_timer=True)`` fires
        it now, on the record).
        """
        state = self.runtime.get_state(run_id)
        if state.status != RunStatus.WAITING or state.waiting is None:
            raise RunNotWaitingError(
                f"Run {run_id} is not waiting (status={state.status.value})",
                run_id=run_id,
                status=state.status.value,
            )
        wait_key = state.waiting.wait_key
        if wait_key is None:
            raise RunStateError(
                f"Run {run_id} waits ({state.waiting.reason.value}) without a wait_key; nothing to respond to",
                run_id=run_id,
            )
        return self.scheduler.resume_event(run_id=run_id, wait_key=wait_key, payload=payload)

    def resume_event(self, *, run_id: str, wait_key: str, payload: dict[str, Any]) -> RunState:
        """Resume a run waiting on ``wait_key``; see :meth:`Scheduler.resume_event`."""
        return self.scheduler.resume_event(run_id=run_id, wait_key=wait_key, payload=payload)

    def get_state(self, run_id: str) -> RunState:
        """The run's current state (``RunNotFoundError``, a ``KeyError``, if unknown)."""
        return self.runtime.get_state(run_id)

    def get_ledger(self, run_id: str) -> list[dict[str, Any]]:
        """The run's ledger records, oldest first."""
        return self.runtime.get_ledger(run_id)

    def find_waiting_runs(
        self,
        *,
        wait_reason: Optional[WaitReason] = None,
        workflow_id: Optional[str] = None,
        limit: int = 100,
    ) -> list[RunState]:
        """Waiting runs, most recently updated first."""
        return self.scheduler.find_waiting_runs(
            wait_reason=wait_reason, workflow_id=workflow_id, limit=limit
        )

    def resume_subworkflow_parent(
        self, *, child_run_id: str, child_output: Optional[dict[str, Any]]
    ) -> Optional[RunState]:
        """Resume the parent waiting on this child; see :meth:`Scheduler.resume_subworkflow_parent`."""
        return self.scheduler.resume_subworkflow_parent(
            child_run_id=child_run_id, child_output=child_output
        )

    def cancel_run(self, run_id: str, *, reason: Optional[str] = None) -> RunState:
        """Cancel one run (its children are left alone)."""
        return self.runtime.cancel_run(run_id, reason=reason)

    def cancel_with_children(self, run_id: str, *, reason: Optional[str] = None) -> list[RunState]:
        """Cancel a run and all its descendants, parent first; see :meth:`Scheduler.cancel_with_children`."""
        return self.scheduler.cancel_with_children(run_id, reason=reason)

    # ------------------------------------------------------------------ scheduler

    @property
    def stats(self) -> SchedulerStats:
        """The scheduler's counters."""
        return self.scheduler.stats

    @property
    def is_running(self) -> bool:
        """True while the scheduler's background thread is polling."""
        return self.scheduler.is_running

    def start_scheduler(self) -> None:
        """Start the background thread unless it is already running."""
        if not self.scheduler.is_running:
            self.scheduler.start()

    def stop(self, timeout: Optional[float] = 5.0) -> bool:
        """Stop the background thread (safe to call twice); see :meth:`Scheduler.stop`."""
        return self.scheduler.stop(timeout=timeout)

    def __enter__(self) -> "ScheduledRuntime":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def create_scheduled_runtime(
    *,
    run_store: Optional[Any] = None,
    ledger_store: Optional[Any] = None,
    artifact_store: Optional[Any] = None,
    effect_policy: Optional[Any] = None,
    workflows: Optional[Iterable[WorkflowSpec]] = None,
    effect_handlers: Optional[dict[Any, Any]] = None,
    poll_interval_s: float = 1.0,
    auto_start: bool = True,
    on_run_resumed: Optional[OnRunResumed] = None,
    on_run_failed: Optional[OnRunFailed] = None,
    context: Optional[Any] = None,
    clock: Optional[Any] = None,
    max_errors_kept: int = 100,
) -> ScheduledRuntime:
    """Build a Runtime, a WorkflowRegistry and a Scheduler that work together.

    Stores default to in-memory ones. ``workflows`` are registered up front (and the
    registry is also the runtime's, for ``start_subworkflow``). ``clock`` is the
    runtime's clock (a callable returning an aware UTC datetime), which the scheduler
    also uses to decide which timers are due. With ``auto_start`` (the default) the
    background thread starts at once: call ``stop()`` when done.
    """
    if run_store is None or ledger_store is None:
        from ..storage.in_memory import InMemoryLedgerStore, InMemoryRunStore

        run_store = InMemoryRunStore() if run_store is None else run_store
        ledger_store = InMemoryLedgerStore() if ledger_store is None else ledger_store

    registry = WorkflowRegistry()
    for workflow in workflows or ():
        registry.register(workflow)

    from ..core.runtime import Runtime

    runtime_kwargs: dict[str, Any] = {
        "run_store": run_store,
        "ledger_store": ledger_store,
        "effect_handlers": effect_handlers,
        "context": context,
        "workflow_registry": registry,
        "artifact_store": artifact_store,
        "effect_policy": effect_policy,
    }
    if clock is not None:
        runtime_kwargs["clock"] = clock
    runtime = Runtime(**runtime_kwargs)

    scheduler = Scheduler(
        runtime=runtime,
        registry=registry,
        poll_interval_s=poll_interval_s,
        max_errors_kept=max_errors_kept,
        on_run_resumed=on_run_resumed,
        on_run_failed=on_run_failed,
    )
    if auto_start:
        scheduler.start()
    return ScheduledRuntime(runtime=runtime, scheduler=scheduler, registry=registry)
