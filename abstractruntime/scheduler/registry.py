"""The workflow registry: ``workflow_id -> WorkflowSpec``.

A checkpoint records which workflow a run belongs to by id only; code cannot be
stored. Whoever advances a run later (the scheduler, a worker, the runtime starting
a subworkflow) looks the spec up here. The registry is safe to share between
threads: the scheduler's background thread reads it while the caller registers.
"""

from __future__ import annotations

import threading
from typing import Iterator, Optional

from ..core.errors import InvalidInputError, WorkflowNotRegisteredError
from ..core.spec import WorkflowSpec

__all__ = ["WorkflowRegistry", "WorkflowNotRegisteredError"]


class WorkflowRegistry:
    """A thread-safe map from ``workflow_id`` to :class:`WorkflowSpec`.

    >>> from abstractruntime.core.models import StepPlan
    >>> wf = WorkflowSpec("hello", "done", {"done": lambda run, ctx: StepPlan("done", complete_output={})})
    >>> registry = WorkflowRegistry()
    >>> registry.register(wf)
    >>> "hello" in registry, registry.list_ids()
    (True, ['hello'])
    """

    def __init__(self) -> None:
        self._workflows: dict[str, WorkflowSpec] = {}
        self._lock = threading.Lock()

    def register(self, workflow: WorkflowSpec) -> None:
        """Add ``workflow`` under its ``workflow_id``.

        Raises :class:`~abstractruntime.core.errors.InvalidInputError` (a ``ValueError``)
        if the id is already registered: replacing a spec silently would let runs in
        flight continue on different code. ``unregister`` first to replace it.
        """
        workflow_id = getattr(workflow, "workflow_id", None)
        if not isinstance(workflow_id, str) or not workflow_id:
            raise InvalidInputError(
                f"register() needs a WorkflowSpec with a non-empty workflow_id, got {type(workflow).__name__}"
            )
        with self._lock:
            if workflow_id in self._workflows:
                raise InvalidInputError(
                    f"Workflow '{workflow_id}' is already registered; unregister() it first to replace it",
                    workflow_id=workflow_id,
                )
            self._workflows[workflow_id] = workflow

    def unregister(self, workflow_id: str) -> None:
        """Remove a workflow; :class:`WorkflowNotRegisteredError` (a ``KeyError``) if unknown."""
        with self._lock:
            if workflow_id not in self._workflows:
                raise WorkflowNotRegisteredError(workflow_id)
            del self._workflows[workflow_id]

    def get(self, workflow_id: str) -> Optional[WorkflowSpec]:
        """The spec registered under ``workflow_id``, or ``None``."""
        with self._lock:
            return self._workflows.get(workflow_id)

    def get_or_raise(self, workflow_id: str) -> WorkflowSpec:
        """The spec registered under ``workflow_id``; :class:`WorkflowNotRegisteredError` if none."""
        spec = self.get(workflow_id)
        if spec is None:
            raise WorkflowNotRegisteredError(workflow_id)
        return spec

    def list_ids(self) -> list[str]:
        """The registered ids, in registration order."""
        with self._lock:
            return list(self._workflows)

    def __len__(self) -> int:
        """How many workflows are registered."""
        with self._lock:
            return len(self._workflows)

    def __contains__(self, workflow_id: object) -> bool:
        """``workflow_id in registry``."""
        with self._lock:
            return workflow_id in self._workflows

    def __iter__(self) -> Iterator[str]:
        """Iterate over a copy of the registered ids."""
        return iter(self.list_ids())

    def __repr__(self) -> str:
        return f"WorkflowRegistry({self.list_ids()!r})"
