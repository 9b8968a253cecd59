"""Code-first workflows: ``@workflow("id")`` on a plain function, and ``@step`` options.

A decorated function becomes a :class:`Workflow`: a :class:`~abstractruntime.core.spec.WorkflowSpec`
with one node (named after the function) whose body the kernel runs through
:mod:`abstractruntime.flow.engine`. So a code-first workflow goes through the same ``Runtime``
entry points, ledger, wait handles, stores and CLI as a graph of nodes.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

from ..core.errors import InvalidInputError
from ..core.models import RunState, StepPlan
from ..core.spec import WorkflowSource, WorkflowSpec

if TYPE_CHECKING:
    from ..core.drive import Step
    from ..core.runtime import Runtime
    from ..core.session import RunSession

F = TypeVar("F", bound=Callable[..., Any])

# The attribute ``@step`` sets on a function (read by ``ctx.step``).
STEP_OPTIONS = "__abstractruntime_step__"


@dataclass(frozen=True)
class StepOptions:
    """How ``ctx.step`` runs a function: its recorded name and its retry budget.

    ``attempts`` (default: the effect policy's, see docs/workflows.md) counts every attempt;
    ``backoff`` is the first pause between two attempts in seconds (doubled each time, at
    most ``backoff_max``; default: the effect policy's).
    """

    name: Optional[str] = None
    attempts: Optional[int] = None
    backoff: Optional[float] = None
    backoff_max: Optional[float] = None


def step(fn: Optional[F] = None, *, name: Optional[str] = None, attempts: Optional[int] = None,
         backoff: Optional[float] = None, backoff_max: Optional[float] = None) -> Any:
    """Give a step function a stable recorded name and a retry budget (``@step`` or ``@step(...)``).

    The function is returned unchanged (it stays callable as before); ``ctx.step(fn, ...)``
    reads the options. Without ``@step`` a step is named by the function's ``__qualname__``.
    """
    if attempts is not None and (not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1):
        raise InvalidInputError(f"@step attempts must be an integer >= 1, not {attempts!r}")
    for label, value in (("backoff", backoff), ("backoff_max", backoff_max)):
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
            raise InvalidInputError(f"@step {label} must be a number >= 0, not {value!r}")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidInputError("@step name must be a non-empty string")
    options = StepOptions(name=name, attempts=attempts, backoff=backoff, backoff_max=backoff_max)

    def mark(target: F) -> F:
        if not callable(target):
            raise InvalidInputError(f"@step applies to a function, not {type(target).__name__}")
        try:
            setattr(target, STEP_OPTIONS, options)
        except (AttributeError, TypeError):
            raise InvalidInputError(f"@step cannot mark {target!r}: wrap it in a function") from None
        return target

    return mark(fn) if fn is not None else mark


def step_options(fn: Any) -> StepOptions:
    """The options ``@step`` gave ``fn`` (a ``functools.partial`` looks through to its function)."""
    found = getattr(fn, STEP_OPTIONS, None)
    if found is None and isinstance(fn, functools.partial):
        found = getattr(fn.func, STEP_OPTIONS, None)
    return found if isinstance(found, StepOptions) else StepOptions()


def step_name(fn: Any) -> str:
    """The name a step is recorded under: ``@step(name=...)``, else the function's qualified name."""
    options = step_options(fn)
    if options.name:
        return options.name
    target = fn.func if isinstance(fn, functools.partial) else fn
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if not isinstance(name, str):
        name = type(target).__name__
    return name.replace(".<locals>.", ".")


def not_a_node(run: RunState, ctx: Any) -> StepPlan:
    """What the node of a code-first workflow is if something calls it as a graph node."""
    raise InvalidInputError(f"run {run.run_id}: workflow '{run.workflow_id}' is a code-first workflow; "
                            "its function runs through the runtime (tick/resume), not as a graph node")


@dataclass(frozen=True)
class Workflow(WorkflowSpec):
    """A code-first workflow: a function ``fn(ctx, **inputs)`` run durably (see docs/workflows.md).

    It *is* a :class:`WorkflowSpec` — one node, named after the function — so every API that
    takes a spec takes it. Calling it calls the function itself (useful in unit tests with a
    stand-in ``ctx``).
    """

    fn: Callable[..., Any] = field(default=not_a_node, compare=False, repr=False)
    # What runs the function for one tick (flow/engine.py's ``flow_steps``), set by ``@workflow``:
    # kept as a field so this module, which the engine imports, need not import the engine.
    runner: Optional[Callable[..., Any]] = field(default=None, compare=False, repr=False)

    @property
    def is_async(self) -> bool:
        """True for an ``async def`` workflow (its ``ctx`` methods are awaited)."""
        return inspect.iscoroutinefunction(self.fn)

    def with_source(self, source: Optional[WorkflowSource]) -> "Workflow":
        """A copy of this workflow that records ``source``."""
        return wrap(replace(self, source=source), self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def check_start(self, runtime: Any, inputs: Optional[dict[str, Any]]) -> None:
        """Refuse (``InvalidInputError``, before a run is created) inputs the function cannot take,
        and a ledger store that cannot keep a code-first run's records."""
        from ..core.ports import Capability, has_capability

        check_inputs(self, inputs or {})
        if not has_capability(runtime.ledger_store, Capability.SEALED_LINES):
            raise InvalidInputError(
                f"workflow '{self.workflow_id}' is code-first: it needs a ledger store that keeps format-3 records as "
                f"sealed (the SEALED_LINES capability: the file, PostgreSQL and in-memory stores); "
                f"{type(runtime.ledger_store).__name__} does not")

    def flow_steps(self, rt: "Runtime", session: "RunSession") -> "Step":
        """The kernel's hook (``core/stepping.py``): run the function from the top for one tick."""
        if self.runner is None:
            raise InvalidInputError(f"workflow '{self.workflow_id}' was not made with @workflow: nothing runs it")
        steps: "Step" = self.runner(rt, session, self)
        return steps


def check_inputs(flow: Workflow, inputs: dict[str, Any]) -> None:
    """The run's variables must bind to the function's keyword parameters (after ``ctx``)."""
    try:
        signature = inspect.signature(flow.fn)
    except (TypeError, ValueError):
        return
    params = list(signature.parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise InvalidInputError(f"workflow '{flow.workflow_id}': its function must take ctx as its first argument")
    rest = params[1:]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in rest)
    named = {p.name: p for p in rest if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [k for k in inputs if k not in named and not takes_any]
    shown = ", ".join(named) or "none"
    if unknown:
        raise InvalidInputError(f"workflow '{flow.workflow_id}' takes no input {', '.join(map(repr, unknown))} "
                                f"(its inputs: {shown})")
    missing = [n for n, p in named.items() if p.default is p.empty and n not in inputs]
    if missing:
        raise InvalidInputError(f"workflow '{flow.workflow_id}' needs the input {', '.join(map(repr, missing))} "
                                f"(give it with --var {missing[0]}=VALUE)")
    from .typed import build_inputs

    build_inputs(flow.fn, inputs, flow.workflow_id)  # each input fits its parameter's type hint


def text_inputs(workflow: Any) -> frozenset[str]:
    """The inputs of a code-first workflow declared as text (``service: str``): the command line
    takes ``--var service=123`` for them as the text ``"123"`` (empty for a graph workflow)."""
    if not isinstance(workflow, Workflow):
        return frozenset()
    from .typed import text_inputs as declared

    return declared(workflow.fn)


def wrap(flow: Workflow, fn: Callable[..., Any]) -> Workflow:
    """Give ``flow`` the function's name, docstring and module, as ``functools.wraps`` would
    (set past the frozen dataclass: these are not fields)."""
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        value = getattr(fn, name, None)
        if value is not None:
            object.__setattr__(flow, name, value)
    object.__setattr__(flow, "__wrapped__", fn)
    return flow


def is_code_first(workflow: Any) -> bool:
    """True for a code-first workflow (anything the kernel runs through ``flow_steps``)."""
    return callable(getattr(workflow, "flow_steps", None))


__all__ = ["STEP_OPTIONS", "StepOptions", "Workflow", "check_inputs", "is_code_first", "step", "step_name",
           "step_options", "text_inputs"]
