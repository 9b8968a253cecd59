"""What a code-first operation asks its driver to do, and how each driver does it.

Every ``ctx`` operation is written once, as a generator (:mod:`.ops`); it yields a request
when it needs time — running a step's function, backing off, driving the kernel through an
effect — and the driver of a plain ``def`` workflow (this thread) or of an ``async def`` one
(the event loop) performs it. Also here: the two exceptions that unwind a workflow's code and
that it cannot swallow as ``Exception``.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..core.drive import drive_async, drive_sync, run_blocking, run_coroutine
from ..core.effect_context import CURRENT_EFFECT, EffectIdentity
from ..core.errors import AsyncRequiredError
from ..core.jcs import jcs
from ..core.markers import has_marker_key

if TYPE_CHECKING:
    from ..core.drive import Step

# True while a step's function runs: ctx may not be used inside a step (its calls would be
# recorded inside the step's, and skipped with it on replay).
_IN_STEP: contextvars.ContextVar[bool] = contextvars.ContextVar("abstractruntime_in_step", default=False)


class _Stop(BaseException):
    """The function stops here: the run waits (or failed on an effect), or a replay check reached
    live work. A ``BaseException``, so ``except Exception`` in workflow code does not swallow it."""


class _Abort(BaseException):
    """A kernel error (a store refusing a write, a value that cannot be stored) raised through
    the workflow's code, which must not swallow it; the engine raises the original."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Call:
    """Run a step's function (the session is free meanwhile)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    identity: EffectIdentity


@dataclass
class _Pause:
    """Back off between two attempts of a step."""

    seconds: float


@dataclass
class _Kernel:
    """Drive the kernel's stepping code for one effect (the session is held throughout)."""

    steps: "Step"


_CONTAINERS = (dict, list)


def is_plain(value: Any) -> bool:
    """True when a stored value holds no marker (nothing to resolve: a copy is its value)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item.__class__ is dict:
            if has_marker_key(item):
                return False
            stack.extend(v for v in item.values() if v.__class__ in _CONTAINERS)
        elif item.__class__ is list:
            stack.extend(v for v in item if v.__class__ in _CONTAINERS)
    return True


def round_trip(value: Any) -> Any:
    """``value`` as a record holds it: its JSON round trip (``InvalidInputError`` if JSON cannot hold it)."""
    return json.loads(jcs(value, root="result"))


def perform_sync(request: Any) -> Any:
    if isinstance(request, _Call):
        return _call_sync(request)
    if isinstance(request, _Pause):
        time.sleep(request.seconds)  # looked up at call time, as the kernel's backoff
        return None
    if isinstance(request, _Kernel):
        try:
            return drive_sync(request.steps)
        except Exception as exc:
            raise _Abort(exc) from exc
    raise TypeError(f"unknown request {request!r}")


async def perform_async(request: Any) -> Any:
    if isinstance(request, _Call):
        return await _call_async(request)
    if isinstance(request, _Pause):
        import asyncio  # loaded already: this runs on an event loop

        await asyncio.sleep(request.seconds)
        return None
    if isinstance(request, _Kernel):
        try:
            return await drive_async(request.steps)
        except Exception as exc:
            raise _Abort(exc) from exc
    raise TypeError(f"unknown request {request!r}")


def _call_sync(call: _Call) -> tuple[bool, Any]:
    current, inside = CURRENT_EFFECT.set(call.identity), _IN_STEP.set(True)
    try:
        result = call.fn(*call.args, **call.kwargs)
        if inspect.isawaitable(result):
            result = run_coroutine(result)
        return True, result
    except AsyncRequiredError as exc:
        raise _Abort(exc) from exc
    except (Exception, SystemExit) as exc:  # the step's failure: an attempt that failed
        return False, exc
    finally:
        _IN_STEP.reset(inside)
        CURRENT_EFFECT.reset(current)


async def _call_async(call: _Call) -> tuple[bool, Any]:
    if inspect.iscoroutinefunction(call.fn) or inspect.iscoroutinefunction(
            inspect.getattr_static(type(call.fn), "__call__", None)):
        current, inside = CURRENT_EFFECT.set(call.identity), _IN_STEP.set(True)
        try:
            return True, await call.fn(*call.args, **call.kwargs)
        except (Exception, SystemExit) as exc:
            return False, exc
        finally:
            _IN_STEP.reset(inside)
            CURRENT_EFFECT.reset(current)
    # A blocking function runs in a worker thread, so other steps (and runs) go on; a
    # cancellation waits for it to end, then propagates (nothing of it is left writing).
    result: tuple[bool, Any] = await run_blocking(_call_sync, call)
    return result


__all__ = ["_Abort", "_Call", "_IN_STEP", "_Kernel", "_Pause", "_Stop", "is_plain", "perform_async", "perform_sync",
           "round_trip"]
