"""Workflow specifications: a graph of node handlers, plus where its code came from.

A node handler is ``handler(run: RunState, ctx) -> StepPlan``. Handlers must keep side
effects in effects: a pure node may be re-run after a crash (docs/durability.md).
"""

from __future__ import annotations

from .fastclass import dataclass
from typing import Any, Callable, Optional, Protocol

from .ids import validate_workflow_id
from .models import RunState, StepPlan


class RunContext(Protocol):
    """What node handlers receive as ``ctx``; small on purpose."""

    def now_iso(self) -> str: ...


NodeHandler = Callable[[RunState, Any], StepPlan]


@dataclass(frozen=True)
class WorkflowSource:
    """Where a workflow's code came from: its file and that file's sha256.

    A run records the workflow id and the sha256 only: the path is for messages, never
    recorded, because code is located by the operator, not by data (docs/security.md).
    When a run records a sha256, ``tick``/``resume`` refuse a workflow whose sha256 differs
    (:class:`~abstractruntime.core.errors.WorkflowDriftError`) unless told ``allow_drift=True``.
    """

    path: str
    sha256: str
    # The operator allows an upgrade from the source a run recorded to this one: accepted when
    # the run's history fits this code (core/upgrade.py). Never recorded.
    upgrade: bool = False

    def to_dict(self, workflow_id: str) -> dict[str, Any]:
        """The ``workflow`` object of a checkpoint and of the run's first ledger record."""
        return {"sha256": self.sha256, "workflow_id": workflow_id}


@dataclass(frozen=True)
class WorkflowSpec:
    """A workflow: an id, an entry node and ``{node_id: handler}``."""

    workflow_id: str
    entry_node: str
    nodes: dict[str, NodeHandler]
    source: Optional[WorkflowSource] = None

    def __post_init__(self) -> None:
        validate_workflow_id(self.workflow_id)  # refused when the spec is made, before any run uses it

    def with_source(self, source: Optional[WorkflowSource]) -> "WorkflowSpec":
        """A copy of this spec that records ``source``."""
        return WorkflowSpec(self.workflow_id, self.entry_node, self.nodes, source)
