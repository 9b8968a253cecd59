"""One execution of a code-first workflow's function over its run's history.

:class:`FlowRun` hands out positions (each ``ctx`` call takes the next), compares each with
what the run's history recorded there (a different kind or name is a divergence), returns
recorded values, and drives the operations of :mod:`.ops` — in this thread for a plain
``def`` workflow, on the event loop for an ``async def`` one (the session held while an
operation records, released while a step's function runs, so steps overlap). A replay of a
finished position takes a fast path: no generator, no lock, one lookup and a copy.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..core.drive import run_coroutine
from ..core.errors import AsyncRequiredError, InvalidInputError, NondeterminismError
from ..core.values import json_copy
from .context import AsyncContext, Context
from .history import DONE, PATCH, Entry, History, describe
from .live import Live
from .ops import Op, Operations
from .requests import _IN_STEP, _Abort, _Call, _Pause, _Stop, is_plain, perform_async, perform_sync
from .spec import StepOptions, Workflow, step_name, step_options
from .typed import Convert, TypeMismatch, build_inputs, return_converter

if TYPE_CHECKING:
    import asyncio

_CONTAINERS = (dict, list)


@dataclass
class FlowRun(Operations):
    """One execution of a code-first workflow's function over its run's history."""

    flow: Workflow
    history: History
    run_id: str
    fill: Callable[[dict[str, Any]], Any]
    live: Optional[Live] = None
    inputs: dict[str, Any] = field(default_factory=dict)
    next_position: int = 1
    diverged: Optional[NondeterminismError] = None
    stopped: bool = False
    closed: bool = False
    patches: dict[str, bool] = field(default_factory=dict)
    # How the divergence message says where the code came from (an upgrade names both hashes).
    code_note: str = ""
    # A replay check of a run that ended ("completed", "failed"): the code must end there too.
    ended: Optional[str] = None
    _thread: Optional[int] = None
    _lock: Optional[asyncio.Lock] = None
    _waiting: int = 0  # operations waiting for the lock (async)
    _inflight: set[Any] = field(default_factory=set)
    _names: dict[Any, tuple[str, StepOptions, Optional[Convert]]] = field(default_factory=dict)

    @property
    def is_replaying(self) -> bool:
        """True while the next position is one the history holds."""
        return self.next_position <= self.history.last

    # -- positions ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if _IN_STEP.get():
            raise InvalidInputError("ctx cannot be used inside a step's function: call the step's work directly, "
                                    "or make it two steps")
        if self.diverged is not None:
            raise self.diverged
        if self.stopped:
            raise _Stop()
        if self.closed:
            raise InvalidInputError(f"run {self.run_id}: this ctx belongs to an execution that has ended")

    def claim(self, kind: str, name: str) -> tuple[int, Optional[Entry]]:
        """The next position for a call of ``kind``/``name``, and what the history recorded there;
        a different kind or name there is a divergence (raised, remembered)."""
        self._check_open()
        position = self.next_position
        entry = self.history.get(position)
        while entry is not None and entry.kind == PATCH:
            position += 1  # a patch the code no longer asks about: its new path is the code now
            entry = self.history.get(position)
        self.next_position = position + 1
        if entry is not None and (entry.kind != kind or entry.name != name):
            raise self.diverge(position, entry.describe(), describe(kind, name))
        return position, entry

    def diverge(self, position: int, recorded: str, code: str) -> NondeterminismError:
        """Remember and return the divergence at ``position`` (every later call raises it too)."""
        if self.diverged is None:
            fix = ("Nothing was written; the run is blocked until code that replays its history is deployed "
                   "(guard new code with ctx.patched(...); check with `abstractruntime replay --workflow FILE "
                   f"{self.run_id}`), or it is forked or cancelled")
            self.diverged = NondeterminismError(
                f"Run {self.run_id} diverges from its history at position {position}: recorded {recorded}, "
                f"code {code}{self.code_note}. {fix}",
                run_id=self.run_id, position=position, recorded=recorded, code=code,
                workflow_id=self.flow.workflow_id)
        return self.diverged

    def unreached(self) -> Optional[Entry]:
        """The first recorded position the code never reached (patch markers aside), if any."""
        position = self.next_position
        while position <= self.history.last:
            entry = self.history.get(position)
            if entry is not None and entry.kind != PATCH:
                return entry
            position += 1
        return None

    def need_live(self, position: int, kind: str, name: str) -> Live:
        """The live side for work past the history; a replay check stops here (of a run that ended
        there, the code asking for more is a divergence)."""
        if self.live is None:
            if self.ended is not None:
                raise self.diverge(position, f"the run's end ({self.ended})", describe(kind, name))
            self.stopped = True
            raise _Stop()
        self.live.begin()
        return self.live

    def value_of(self, entry: Entry) -> Any:
        """The value a position recorded (fresh containers, secrets filled in)."""
        value = entry.value
        if value.__class__ not in _CONTAINERS:
            return value
        plain = entry.plain
        if plain is None:
            plain = entry.plain = is_plain(value)
        if plain:
            return json_copy(value)  # nothing to resolve: a fresh copy (the function may change it)
        return self.history.resolve(value, self.fill)

    # -- the replay fast path ----------------------------------------------------------------

    def replayed(self, kind: str, name: str) -> Optional[Entry]:
        """The entry of the next position when it finished as a ``kind``/``name`` call (the common
        case of a replay), taking the position; ``None`` sends the call the full way."""
        if self.diverged is not None or self.stopped or self.closed or self._waiting or _IN_STEP.get():
            return None
        lock = self._lock
        if lock is not None:
            if lock.locked():
                return None  # an operation holds the session: positions are taken in turn
        elif self._thread is not None and threading.get_ident() != self._thread:
            return None
        entry = self.history.entries.get(self.next_position)
        if entry is None or entry.state != DONE or entry.kind != kind or entry.name != name:
            return None
        self.next_position += 1
        return entry

    def step_identity(self, fn: Any) -> tuple[str, StepOptions, Optional[Convert]]:
        """A step function's recorded name, options and the converter of its declared return type
        (looked up once per function)."""
        try:
            return self._names[fn]
        except KeyError:
            found = self._names[fn] = (step_name(fn), step_options(fn), return_converter(fn))
            return found
        except TypeError:  # an unhashable callable
            return step_name(fn), step_options(fn), return_converter(fn)

    def step_value(self, entry: Entry, convert: Optional[Convert]) -> Any:
        """A recorded step's value as its function declares it (``-> Build``): a recorded value
        that no longer fits the declared type is a divergence (the code changed under the run)."""
        value = self.value_of(entry)
        if convert is None:
            return value
        try:
            return convert(value)
        except TypeMismatch as exc:
            raise self.diverge(entry.position, f"{entry.describe()} returning {_shown(value)}",
                               f"{entry.describe()} declared to return another type ({exc})") from None

    def stop(self) -> _Stop:
        """The run now waits (or failed): the function stops."""
        self.stopped = True
        return _Stop()

    # -- the drivers of the operations (written once as generators: .ops) ---------------------------

    def run_op(self, op: Op) -> Any:
        """Run an operation in this thread (a plain ``def`` workflow)."""
        if self._thread is not None and threading.get_ident() != self._thread:
            op.close()
            raise InvalidInputError("ctx of a plain def workflow was used from another thread; write the workflow "
                                    "as async def to run steps concurrently")
        value: Any = None
        try:
            request = op.send(None)
            while True:
                value = perform_sync(request)
                request = op.send(value)
        except StopIteration as stop:
            return stop.value

    async def _acquire(self, lock: "asyncio.Lock") -> None:
        """Take the session's lock, counted in ``_waiting`` while it is awaited."""
        self._waiting += 1
        try:
            await lock.acquire()
        finally:
            self._waiting -= 1

    async def arun_op(self, op: Op) -> Any:
        """Run an operation on the event loop (an ``async def`` workflow): the session is held while
        it is recorded, released while a step's function runs, so steps overlap."""
        import asyncio  # loaded already: this runs on an event loop

        lock = self._lock
        assert lock is not None
        marker = asyncio.get_running_loop().create_future()
        self._inflight.add(marker)
        held = False
        try:
            await self._acquire(lock)
            held = True
            request = op.send(None)
            while True:
                if isinstance(request, (_Call, _Pause)):
                    lock.release()
                    held = False
                    value = await perform_async(request)
                    await self._acquire(lock)
                    held = True
                else:
                    value = await perform_async(request)
                request = op.send(value)
        except StopIteration as stop:
            return stop.value
        finally:
            if held:
                lock.release()
            self._inflight.discard(marker)
            if not marker.done():
                marker.set_result(None)

    # -- the function --------------------------------------------------------------------------

    def arguments(self) -> dict[str, Any]:
        """The function's keyword arguments: the run's variables, typed by its parameters' hints."""
        return build_inputs(self.flow.fn, json_copy(self.inputs), self.flow.workflow_id, strict=False)

    def execute(self) -> tuple[str, Any]:
        """Run the function from the top in this thread; ``(how it ended, value)`` (see :func:`flow_steps`)."""
        if self.flow.is_async:
            try:
                return run_coroutine(self.aexecute())  # type: ignore[no-any-return]
            except AsyncRequiredError as exc:
                return "abort", exc
        self._thread = threading.get_ident()
        try:
            value = self.flow.fn(Context(self), **self.arguments())
        except BaseException as exc:  # noqa: BLE001 - sorted below: every way out is an outcome
            return self._ended(exc)
        finally:
            self.closed = True
        return self._returned(value)

    async def aexecute(self) -> tuple[str, Any]:
        """:meth:`execute` for an ``async def`` workflow, on the running event loop."""
        import asyncio  # loaded already: this runs on an event loop

        self._lock = asyncio.Lock()
        try:
            value = await self.flow.fn(AsyncContext(self), **self.arguments())
        except BaseException as exc:  # noqa: BLE001
            outcome = self._ended(exc)
        else:
            outcome = self._returned(value)
        # Steps still running (started and not awaited, or left behind by a wait) record their
        # outcome before the run goes on: their side effects happened.
        while self._inflight:
            await asyncio.wait(list(self._inflight))
        self.closed = True
        if outcome[0] == "returned" and (self.stopped or self.diverged is not None):
            outcome = self._ended(_Stop())
        return outcome

    def _returned(self, value: Any) -> tuple[str, Any]:
        if self.diverged is not None:
            return "diverged", self.diverged
        if self.stopped:
            return "stopped", None
        left = self.unreached()
        if left is not None:
            return "diverged", self.diverge(left.position, left.describe(), "returned")
        return "returned", value

    def _ended(self, exc: BaseException) -> tuple[str, Any]:
        if isinstance(exc, _Abort):
            return "abort", exc.error
        if self.diverged is not None:
            return "diverged", self.diverged
        if isinstance(exc, _Stop) or self.stopped:
            return "stopped", None
        aio = sys.modules.get("asyncio")  # a cancellation exists only where asyncio runs
        if isinstance(exc, KeyboardInterrupt) or (aio is not None and isinstance(exc, aio.CancelledError)):
            raise exc
        left = self.unreached()
        if left is not None:
            return "diverged", self.diverge(left.position, left.describe(), f"raised {type(exc).__name__}")
        return "raised", exc


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["FlowRun"]
