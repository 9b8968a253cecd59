"""One stepping logic, two drivers: the same run advances under ``tick`` and under ``await atick``.

The runtime's stepping code is written once, as generators that *yield requests* for the
things that may take time — calling a node, calling an effect handler, sleeping between
attempts, making a batch durable — and receive their results. :func:`drive_sync` performs the
requests in the caller's thread (an ``async def`` node or handler runs on this thread's own
event loop); :func:`drive_async` awaits them, so many runs advance concurrently on one event
loop: async handlers are awaited, sync effect handlers and file I/O run in worker threads, and
node bodies run inline (they are meant to be quick and pure).

Durability and identity do not depend on the driver: records, batches and positions are the
same, so a run may be advanced by either, in turn.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import sys
import threading
import time
from dataclasses import field
from .fastclass import dataclass
from typing import Any, Callable, Generator, Iterator, Optional

from .effects import EffectOutcome
from .errors import AsyncRequiredError

# asyncio (with ssl and concurrent.futures, a third of the package's import time) is imported
# only when an async node, handler or driver runs: a synchronous program never loads it.

Step = Generator["Request", Any, Any]

_LOOPS = threading.local()


def run_coroutine(awaitable: Any) -> Any:
    """Run an awaitable to completion from synchronous code (this thread's own event loop).

    Refused inside a running event loop: there, the caller must use the ``a*`` methods.
    """
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        raise AsyncRequiredError("an async node or handler cannot run under tick/resume inside a running event "
                                 "loop: use await runtime.atick(...) / aresume(...)")
    loop = getattr(_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = _LOOPS.loop = asyncio.new_event_loop()
    return loop.run_until_complete(awaitable)


class StepsStopped(Exception):
    """Thrown into stepping code in place of its next step once its driver was told to stop (a
    worker's stop, a cancellation): what was recorded is made durable, nothing new begins."""


class Request:
    """Something the stepping code needs done; each driver performs it its own way."""

    # Whether performing it begins something new for the run (a node, a handler, a backoff):
    # a stopped driver does not (it throws StepsStopped instead); it still finishes store I/O.
    begins_work = True
    # Set when a cancellation arrived while it ran in a thread: it ran to its end regardless.
    interrupted = False

    def run_sync(self) -> Any:  # pragma: no cover - every request overrides it
        raise NotImplementedError

    async def run_async(self) -> Any:  # pragma: no cover - every request overrides it
        raise NotImplementedError


@dataclass
class NodeCall(Request):
    """Call a node handler; the result is ``(True, plan)`` or ``(False, exception)``."""

    fn: Callable[..., Any]
    run: Any
    ctx: Any

    def run_sync(self) -> tuple[bool, Any]:
        try:
            result = self.fn(self.run, self.ctx)
        except (Exception, SystemExit) as exc:  # a node's bug (or sys.exit) fails the run on the record
            return False, exc
        if not inspect.isawaitable(result):
            return True, result
        return _settle(lambda: run_coroutine(result))

    async def run_async(self) -> tuple[bool, Any]:
        try:
            result = self.fn(self.run, self.ctx)
            if inspect.isawaitable(result):
                result = await result
            return True, result
        except (Exception, SystemExit) as exc:
            return False, exc


@dataclass
class EffectCall(Request):
    """Call an effect handler with its identity in context; always returns an :class:`EffectOutcome`.

    ``timeout`` (seconds, from the effect's ``timeout_s``) bounds an awaitable handler: a timeout
    is a failed attempt. ``on_cancel`` records a cancelled attempt before the cancellation
    propagates (async driver), so a cancelled run is never left without a trace.
    """

    handler: Any
    run: Any
    effect: Any
    next_node: Optional[str]
    identity: Any
    context_var: contextvars.ContextVar[Any]
    timeout: Optional[float] = None
    on_cancel: Optional[Callable[[str], None]] = None

    def _call(self) -> Any:
        return self.handler(self.run, self.effect, self.next_node)

    def run_sync(self) -> EffectOutcome:
        token = self.context_var.set(self.identity)
        try:
            result = self._call()
            if inspect.isawaitable(result):
                result = run_coroutine(self._bounded(result))
            return _checked(result, self.effect)
        except AsyncRequiredError:
            raise  # the caller must use the async API; not the handler's failure
        except (Exception, SystemExit) as exc:  # a handler's exception is a failed attempt
            return _failure(exc, self.timeout)
        finally:
            self.context_var.reset(token)

    async def run_async(self) -> EffectOutcome:
        import asyncio

        token = self.context_var.set(self.identity)
        try:
            if getattr(self.handler, "pure", False) or _is_async(self.handler):
                result = self._call()
            else:
                # A blocking handler runs in a worker thread, so other runs keep advancing. A
                # thread cannot be interrupted: a cancellation waits for it, and its outcome is
                # recorded before the run's lock is given up (settle_in_thread).
                result = await settle_in_thread(self, self._call)
            if inspect.isawaitable(result):
                result = await self._bounded(result)
            return _checked(result, self.effect)
        except asyncio.CancelledError:
            if self.on_cancel is not None:
                self.on_cancel("Effect cancelled (the worker was stopped); it runs again when the run is next ticked")
            raise
        except (Exception, SystemExit) as exc:
            return _failure(exc, self.timeout)
        finally:
            self.context_var.reset(token)

    async def _bounded(self, awaitable: Any) -> Any:
        import asyncio

        if self.timeout is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, timeout=self.timeout)


def _settle(call: Callable[[], Any]) -> tuple[bool, Any]:
    """``(True, value)`` or ``(False, exception)``; the async API's own error propagates."""
    try:
        return True, call()
    except AsyncRequiredError:
        raise
    except (Exception, SystemExit) as exc:
        return False, exc


def _is_async(handler: Any) -> bool:
    fn = getattr(handler, "fn", handler)
    # A callable object whose __call__ is ``async def`` counts too.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        inspect.getattr_static(type(fn), "__call__", None))


def _failure(exc: BaseException, timeout: Optional[float]) -> EffectOutcome:
    aio = sys.modules.get("asyncio")  # on 3.10 its TimeoutError is not the builtin one
    timeouts = (TimeoutError, aio.TimeoutError) if aio is not None else (TimeoutError,)
    if isinstance(exc, timeouts) and timeout is not None:
        return EffectOutcome.failed(f"Effect timed out after {timeout:g} s")
    return EffectOutcome.failed(f"Effect handler raised {type(exc).__name__}: {exc}")


def _checked(result: Any, effect: Any) -> EffectOutcome:
    if not isinstance(result, EffectOutcome):
        return EffectOutcome.failed(
            f"Effect handler for {effect.type.value} returned {type(result).__name__}, not an EffectOutcome",
            retryable=False)
    return result


@dataclass
class Sleep(Request):
    """Back off between attempts (``time.sleep`` looked up at call time, so tests can patch it)."""

    seconds: float

    def run_sync(self) -> None:
        time.sleep(self.seconds)

    async def run_async(self) -> None:
        import asyncio

        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.interrupted = True  # nothing left to wait for: the run stops at its next step


@dataclass
class Io(Request):
    """Blocking store I/O (a batch's fsync, a checkpoint): a worker thread under the async driver."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = field(default_factory=tuple)

    begins_work = False  # a batch or a checkpoint: finished even by a stopped driver

    def run_sync(self) -> Any:
        return self.fn(*self.args)

    async def run_async(self) -> Any:
        # Half an append must never be left to a thread after the run's lock is given up.
        return await settle_in_thread(self, self.fn, *self.args, executor=store_executor())


# Store I/O of the async driver (appends and their fsyncs, checkpoints, opening runs) runs in a
# pool of its own, sized for disks rather than CPUs: a worker advancing a hundred runs has dozens
# of fsyncs in flight, which the file system commits together, and the loop's default pool (a few
# threads per CPU) is left to blocking handlers and user code.
STORE_THREADS = 32
_STORE_POOL: Optional[Any] = None
_STORE_POOL_LOCK = threading.Lock()


def store_executor() -> Any:
    """The process-wide thread pool the async driver gives store I/O to (created on first use)."""
    global _STORE_POOL
    if _STORE_POOL is None:
        with _STORE_POOL_LOCK:
            if _STORE_POOL is None:
                from concurrent.futures import ThreadPoolExecutor

                _STORE_POOL = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="abstractruntime-store")
    return _STORE_POOL


def _forget_store_pool() -> None:
    # A forked child has none of its parent's threads: a pool inherited from it would wait forever.
    global _STORE_POOL
    _STORE_POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_store_pool)


async def settle_in_thread(request: Request, fn: Callable[..., Any], *args: Any, executor: Any = None) -> Any:
    """``fn(*args)`` in a worker thread: what it returns (or raises), awaited to its end.

    A thread cannot be interrupted, so a cancellation that arrives meanwhile does not end the
    wait: it sets ``request.interrupted`` and the wait goes on until ``fn`` has ended (the driver
    then stops the run at its next step and raises the cancellation). Whoever cancelled is told
    only once nothing runs for the run any more: its lock is given up after, never before.
    ``executor``: the pool to use (the loop's default one when ``None``).
    """
    import asyncio

    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(executor, functools.partial(contextvars.copy_context().run, fn, *args))
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.cancelled():
                raise  # the executor was shut down before the call began: nothing runs
            request.interrupted = True


async def run_blocking(fn: Callable[..., Any], *args: Any, executor: Any = None) -> Any:
    """``fn(*args)`` in a worker thread, for async code that writes for a run: a cancellation
    waits for ``fn`` to end, then propagates (see :func:`settle_in_thread`)."""
    import asyncio

    holder = Request()
    value = await settle_in_thread(holder, fn, *args, executor=executor)
    if holder.interrupted:
        raise asyncio.CancelledError
    return value


# Set around a synchronous tick that must stop at its next step once the event is set (a worker
# being stopped): see :func:`stop_when`.
_STOP: contextvars.ContextVar[Optional[threading.Event]] = contextvars.ContextVar("abstractruntime_stop",
                                                                                  default=None)


@contextlib.contextmanager
def stop_when(event: Optional[threading.Event]) -> Iterator[None]:
    """Ticks driven synchronously in this block stop at their next step once ``event`` is set:
    the step in hand ends and is recorded, nothing new begins, the run goes on at its next tick."""
    token = _STOP.set(event)
    try:
        yield
    finally:
        _STOP.reset(token)


def drive_sync(step: Step) -> Any:
    """Run stepping code to its end, performing each request in this thread."""
    stop = _STOP.get()
    try:
        request = next(step)
        while True:
            if stop is not None and request.begins_work and stop.is_set():
                request = step.throw(StepsStopped())
                continue
            request = step.send(request.run_sync())
    except StopIteration as stop_iteration:
        return stop_iteration.value


async def drive_async(step: Step) -> Any:
    """Run stepping code to its end, awaiting each request.

    A cancellation that arrives while a request runs in a thread lets it end (its outcome is
    recorded), then stops the stepping at its next step (:class:`StepsStopped`) and is raised.
    """
    import asyncio  # loaded already: this runs on an event loop

    stopping = False
    try:
        request = next(step)
        while True:
            if stopping and request.begins_work:
                request = step.throw(StepsStopped())
                continue
            try:
                value = await request.run_async()
            finally:
                stopping = stopping or request.interrupted
            request = step.send(value)
    except StopIteration as stop_iteration:
        if stopping:
            raise asyncio.CancelledError from None
        return stop_iteration.value
    except StepsStopped:
        raise asyncio.CancelledError from None
