"""What a scheduler does besides firing timers: explicit resumes and operations on run trees.

Resume a run waiting on an event or an answer, find waiting runs, resume the parent of a
finished subworkflow, cancel a run with all its descendants, each with the workflow the
scheduler's registry holds for the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..core.errors import RunNotFoundError, RunNotWaitingError
from ..core.models import RunState, RunStatus, WaitReason
from ..storage.base import QueryableRunStore
from .registry import WorkflowRegistry

if TYPE_CHECKING:
    from ..core.runtime import Runtime

_ACTIVE = (RunStatus.RUNNING, RunStatus.WAITING)


class RunTreeOperations:
    """Mixed into :class:`~abstractruntime.scheduler.scheduler.Scheduler`, which sets these three."""

    _runtime: "Runtime"
    _registry: WorkflowRegistry
    _run_store: QueryableRunStore

    def resume_event(self, *, run_id: str, wait_key: str, payload: dict[str, Any]) -> RunState:
        """Resume a run waiting on an event or a user answer, with its registered workflow.

        Raises :class:`~abstractruntime.core.errors.RunNotWaitingError` ("not waiting"),
        :class:`~abstractruntime.core.errors.WaitKeyMismatchError` ("wait_key mismatch"),
        both ``ValueError``; ``KeyError`` for an unknown run or unregistered workflow.
        """
        state = self._runtime.get_state(run_id)
        if state.status != RunStatus.WAITING or state.waiting is None:
            raise RunNotWaitingError(
                f"Run {run_id} is not waiting (status={state.status.value})",
                run_id=run_id,
                status=state.status.value,
            )
        workflow = self._registry.get_or_raise(state.workflow_id)
        # The runtime re-checks status and wait_key under the run's lock.
        return self._runtime.resume(workflow=workflow, run_id=run_id, wait_key=wait_key, payload=payload)

    def find_waiting_runs(
        self,
        *,
        wait_reason: Optional[WaitReason] = None,
        workflow_id: Optional[str] = None,
        limit: int = 100,
    ) -> list[RunState]:
        """Waiting runs, most recently updated first (e.g. pending questions for a UI)."""
        return self._run_store.list_runs(
            status=RunStatus.WAITING, wait_reason=wait_reason, workflow_id=workflow_id, limit=limit
        )

    def resume_subworkflow_parent(
        self, *, child_run_id: str, child_output: Optional[dict[str, Any]]
    ) -> Optional[RunState]:
        """Resume the parent that waits (reason ``subworkflow``) on ``child_run_id``.

        The parent receives ``{"sub_run_id": child_run_id, "output": child_output}`` at
        its wait's ``result_key``. Returns the parent's new state, or ``None`` if no run
        waits on that child. Only one level: a grandparent is not resumed.
        """
        parent = self._find_subworkflow_parent(child_run_id)
        if parent is None or parent.waiting is None:
            return None
        workflow = self._registry.get_or_raise(parent.workflow_id)
        return self._runtime.resume(
            workflow=workflow,
            run_id=parent.run_id,
            wait_key=parent.waiting.wait_key,
            payload={"sub_run_id": child_run_id, "output": child_output},
        )

    def _find_subworkflow_parent(self, child_run_id: str) -> Optional[RunState]:
        try:
            child = self._runtime.get_state(child_run_id)
        except KeyError:
            child = None
        if child is not None and child.parent_run_id:
            try:
                candidates = [self._runtime.get_state(child.parent_run_id)]
            except KeyError:
                candidates = []
        else:
            # Child unknown here (or parent link missing): look among waiting parents.
            candidates = self._run_store.list_runs(
                status=RunStatus.WAITING, wait_reason=WaitReason.SUBWORKFLOW, limit=10_000
            )
        for run in candidates:
            waiting = run.waiting
            if (
                run.status == RunStatus.WAITING
                and waiting is not None
                and waiting.reason == WaitReason.SUBWORKFLOW
                and (waiting.details or {}).get("sub_run_id") == child_run_id
            ):
                return run
        return None

    def cancel_with_children(self, run_id: str, *, reason: Optional[str] = None) -> list[RunState]:
        """Cancel ``run_id`` and every descendant run, parent first.

        Parents are cancelled before their children, so a parent cannot start new
        children while the tree is being cancelled. The whole tree is visited (a
        completed child may still have running children of its own); runs already
        finished are left as they are. Returns, root first then breadth-first, the
        state of every run of the tree that is cancelled afterwards.
        ``RunNotFoundError`` if ``run_id`` is unknown; ``RunLockedError`` if a run is
        being advanced by another writer — calling again is safe.
        """
        cancelled: list[RunState] = []
        queue = [run_id]
        visited: set[str] = set()
        while queue:
            current_id = queue.pop(0)
            if current_id in visited:
                continue
            visited.add(current_id)
            try:
                state = self._runtime.get_state(current_id)
                if state.status in _ACTIVE:
                    state = self._runtime.cancel_run(current_id, reason=reason)
            except RunNotFoundError:
                if current_id == run_id:
                    raise
                continue  # a child deleted meanwhile
            if state.status == RunStatus.CANCELLED:
                cancelled.append(state)
            for child in self._run_store.list_children(parent_run_id=current_id):
                queue.append(child.run_id)
        return cancelled


__all__ = ["RunTreeOperations"]
