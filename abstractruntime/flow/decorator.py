"""``@workflow``: a plain function made a durable workflow the kernel runs by position."""

from __future__ import annotations

from typing import Any, Callable, Optional, overload

from ..core.errors import InvalidInputError
from ..core.ids import validate_id
from ..core.spec import WorkflowSpec
from .engine import flow_steps
from .spec import Workflow, not_a_node, wrap


@overload
def workflow(workflow_id: Callable[..., Any]) -> Workflow: ...


@overload
def workflow(workflow_id: Optional[str] = None, *, node: Optional[str] = None) -> Callable[[Callable[..., Any]], Workflow]: ...


def workflow(workflow_id: Any = None, *, node: Optional[str] = None) -> Any:
    """Make a plain (sync or ``async def``) function a durable workflow: ``@workflow("deploy")``.

    The function takes ``ctx`` (a :class:`~abstractruntime.flow.context.Context`, or an
    :class:`~abstractruntime.flow.context.AsyncContext` for ``async def``) and the run's inputs
    as keyword arguments; its return value is the run's output. ``@workflow`` without an id
    uses the function's name. ``node`` names the run's one node (default: the function's name).
    """
    if callable(workflow_id) and not isinstance(workflow_id, str):
        return _make(workflow_id, None, node)
    if workflow_id is not None:
        validate_id(workflow_id, "workflow id")

    def decorate(fn: Callable[..., Any]) -> Workflow:
        return _make(fn, workflow_id, node)

    return decorate


def _make(fn: Callable[..., Any], workflow_id: Optional[str], node: Optional[str]) -> Workflow:
    if not callable(fn) or isinstance(fn, WorkflowSpec):
        raise InvalidInputError(f"@workflow applies to a function, not {type(fn).__name__}")
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidInputError("@workflow needs a named function (or give the id: @workflow(\"id\"))")
    wid = workflow_id or name
    validate_id(wid, "workflow id")
    node_id = node or name
    return wrap(Workflow(workflow_id=wid, entry_node=node_id, nodes={node_id: not_a_node}, fn=fn, runner=flow_steps), fn)


__all__ = ["workflow"]
