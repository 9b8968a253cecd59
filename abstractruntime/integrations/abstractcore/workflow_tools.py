"""The tool executor a workflow file asks for: its ``tools``, behind its ``require_approval`` gate.

A workflow file may expose ``tools`` (``{name: callable}`` or a list of callables): its
``tool_calls`` effects then run those tools in-process. ``require_approval`` (a list of tool
names) makes a batch of calls that names one of them wait for an operator's decision instead
of running; ``tool_threads = N`` runs its plain tools in a pool of N threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ...core.errors import WorkflowLoadError
from .effect_handlers import make_tool_calls_handler
from .factory import make_tool_executor
from .tool_executor import LocalToolExecutor

if TYPE_CHECKING:
    from ...loader import LoadedWorkflow

APPROVAL_ATTR = "require_approval"


class ApprovalGate:
    """A tool executor that runs calls locally unless a batch names a tool needing approval.

    Such a batch is passed through whole (nothing runs), so the run waits until an operator
    approves (all or some of) the calls or refuses them.
    """

    def __init__(self, inner: Any, require_approval: frozenset[str]) -> None:
        self.inner = inner
        self.require_approval = require_approval

    def execute(self, *, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
        """Run the batch with the inner executor, or hand it back for approval."""
        names = {c.get("name") for c in tool_calls if isinstance(c, dict)}
        if names & self.require_approval:
            return {"mode": "passthrough", "tool_calls": tool_calls}
        result: dict[str, Any] = self.inner.execute(tool_calls=tool_calls)
        return result


def tool_calls_handler(tools: Any) -> Callable[..., Any]:
    """A ``tool_calls`` effect handler that runs ``tools`` locally (``tools`` may be an executor)."""
    executor = tools if callable(getattr(tools, "execute", None)) else LocalToolExecutor(tools)
    return make_tool_calls_handler(tools=executor)


def approval_required(loaded: "LoadedWorkflow") -> frozenset[str]:
    """The tool names the workflow file lists in ``require_approval`` (checked)."""
    value = getattr(loaded.module, APPROVAL_ATTR, None)
    if value is None:
        return frozenset()
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise WorkflowLoadError(f"{loaded.path}: {APPROVAL_ATTR} must be a list of tool names",
                                path=str(loaded.path))
    return frozenset(value)


def local_executor(loaded: "LoadedWorkflow") -> Any:
    """An executor over the workflow file's ``tools`` (``None`` when it exposes none)."""
    if not loaded.tools:
        return None
    return make_tool_executor(loaded.tools, max_threads=int(getattr(loaded.module, "tool_threads", 0) or 0))


def gated_executor(loaded: "LoadedWorkflow") -> Any:
    """:func:`local_executor` behind the file's approval gate (``None`` when it has no tools)."""
    executor = local_executor(loaded)
    gate = approval_required(loaded)
    return ApprovalGate(executor, gate) if gate and executor is not None else executor


def workflow_tools_handler(loaded: "LoadedWorkflow") -> Callable[..., Any]:
    """The ``tool_calls`` handler for a workflow file's ``tools`` without an LLM mode.

    The tools run through the pure-Python :class:`LocalToolExecutor`, gated like
    :func:`gated_executor`.
    """
    gate = approval_required(loaded)
    return tool_calls_handler(ApprovalGate(LocalToolExecutor(loaded.tools), gate) if gate else loaded.tools)


__all__ = ["ApprovalGate", "APPROVAL_ATTR", "approval_required", "local_executor", "gated_executor",
           "tool_calls_handler", "workflow_tools_handler"]
