"""What a runtime tells the world besides its ledger: observers, transient progress, in-flight slots.

Three small hooks, all optional and all outside the ledger:

- **Observers** (``runtime.observers``): objects told when a tick begins and ends, when an
  effect attempt begins and ends, when a batch of records became durable, and when a handler
  published progress. Tracing (``abstractruntime.otel``) and live watching
  (:mod:`abstractruntime.storage.live`) are observers. An observer has any subset of the
  methods of :class:`RunObserver`; one that raises is logged and ignored — it can never change
  what a run does.
- **Progress** (``current_effect().progress(data)``): a handler publishes transient data (an
  LLM reply streaming token by token). It is redacted with the runtime's redactor and handed
  to the observers; it is never recorded (only the effect's result is).
- **In-flight slots** (``runtime.in_flight``, ``current_effect().slot(key)``): per-key limits on
  how many effects run at once across every process that shares a store (e.g. at most 4
  calls in flight for ``llm:openai``). The slots themselves are a store's (lock files in a
  folder store, advisory locks in PostgreSQL); :class:`InFlightLimits` waits for a free one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Optional, Protocol

from .errors import InvalidInputError
from .logs import get_logger

logger = get_logger("abstractruntime.observe")

# Polling a busy slot: first wait, growth factor and cap (seconds); jittered so a fleet spreads out.
SLOT_POLL_FIRST, SLOT_POLL_GROWTH, SLOT_POLL_MAX = 0.02, 1.5, 0.5



def _jitter() -> float:
    """A factor in [0.5, 1.5) that spreads the polls of the processes waiting for one slot."""
    import random  # only a process that waits for a slot needs it (some 1 ms to import)

    return 0.5 + random.random()

class RunObserver(Protocol):
    """What an observer may implement (every method is optional; the runtime calls those it has).

    ``*_started`` return a token that is passed back to the matching ``*_ended`` call.
    """

    def tick_started(self, run_id: str, workflow_id: str, status: str) -> Any:
        """A tick (or resume, retry) of ``run_id`` begins; ``status`` is the run's status then."""

    def tick_ended(self, token: Any, state: Any, error: Optional[BaseException]) -> None:
        """It ended with ``state`` (a ``RunState``), or raised ``error``."""

    def effect_started(self, run_id: str, effect_id: int, effect_type: str, attempt: int, node_id: str) -> Any:
        """An attempt of an effect's handler begins."""

    def effect_ended(self, token: Any, status: str, ext: Optional[Mapping[str, Any]], error: Optional[str]) -> None:
        """It ended: ``status`` is the outcome's, ``ext`` what it reported (``ext["usage"]``)."""

    def progress(self, run_id: str, effect_id: int, attempt: int, data: Mapping[str, Any]) -> None:
        """A handler published transient ``data`` (already redacted)."""

    def durable(self, run_id: str, seq: int) -> None:
        """The run's records up to ``seq`` are durable."""


def notify(observers: Any, method: str, *args: Any) -> list[Any]:
    """Call ``method`` on every observer that has it; returns their results (``None`` for the others).

    An observer's failure is logged, never raised: observing must not change a run.
    """
    results: list[Any] = []
    for observer in observers or ():
        fn = getattr(observer, method, None)
        if fn is None:
            results.append(None)
            continue
        try:
            results.append(fn(*args))
        except Exception as exc:  # an observer's bug is not the run's failure
            logger.warning("observer %r failed in %s: %s: %s", observer, method, type(exc).__name__, exc)
            results.append(None)
    return results


def end_all(observers: Any, method: str, tokens: list[Any], *args: Any) -> None:
    """Call ``method(token, *args)`` on each observer that returned a token from the matching start."""
    for observer, token in zip(observers or (), tokens):
        fn = getattr(observer, method, None)
        if fn is None or token is None:
            continue
        try:
            fn(token, *args)
        except Exception as exc:
            logger.warning("observer %r failed in %s: %s: %s", observer, method, type(exc).__name__, exc)


class Tick:
    """What :func:`observed_tick` reports when the tick ends: the state it left (set by the caller)."""

    state: Any = None


@contextlib.contextmanager
def observed_tick(observers: Any, session: Any) -> Iterator[Tick]:
    """Tell the observers a tick of ``session``'s run begins, and how it ended (state, or the error)."""
    tick = Tick()
    tokens = notify(observers, "tick_started", session.run_id, session.run.workflow_id,
                    session.run.status.value) if observers else None
    error: Optional[BaseException] = None
    try:
        yield tick
    except BaseException as exc:
        error = exc
        raise
    finally:
        if tokens:
            end_all(observers, "tick_ended", tokens, tick.state, error)


def publisher(observers: Any, redactor: Any, run_id: str, effect_id: int,
              attempt: int) -> Optional[Callable[[Mapping[str, Any]], None]]:
    """What a handler's ``progress(data)`` calls (``None`` when nobody observes): ``data`` redacted,
    then handed to every observer's ``progress``."""
    if not observers:
        return None

    def publish(data: Mapping[str, Any]) -> None:
        notify(observers, "progress", run_id, effect_id, attempt, redactor.redact(dict(data)))

    return publish


class SlotBackend(Protocol):
    """Where in-flight slots live: a slot is taken with ``try_acquire`` and given back with ``release``.

    A slot held by a process that dies must be freed by the backend itself (a ``flock`` on a
    file, a session-level advisory lock), so a killed worker never leaks a slot.
    """

    def try_acquire(self, key: str, limit: int) -> Optional[Any]:
        """One of ``key``'s ``limit`` slots (a handle), or ``None`` when all are taken."""

    def release(self, handle: Any) -> None:
        """Give the slot back."""


class LocalSlots:
    """Slots shared by the threads of one process (the in-memory store's backend)."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._guard = threading.Lock()

    def try_acquire(self, key: str, limit: int) -> Optional[Any]:
        """A slot of ``key`` when fewer than ``limit`` are held in this process."""
        with self._guard:
            if self._held.get(key, 0) >= limit:
                return None
            self._held[key] = self._held.get(key, 0) + 1
            return key

    def release(self, handle: Any) -> None:
        """Give the slot back."""
        with self._guard:
            self._held[handle] = max(self._held.get(handle, 1) - 1, 0)


def check_limits(limits: Mapping[str, Any]) -> dict[str, int]:
    """``{key: n}`` with each key non-empty text and each ``n`` a positive integer (else :class:`InvalidInputError`)."""
    checked: dict[str, int] = {}
    for key, value in dict(limits).items():
        if not isinstance(key, str) or not key.strip() or len(key) > 200:
            raise InvalidInputError(f"an in-flight limit needs a key of 1-200 characters, got {key!r}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInputError(f"in-flight limit {key}={value!r}: the limit must be a positive integer")
        checked[key.strip()] = value
    return checked


class InFlightLimits:
    """Per-key limits on effects in flight, over a :class:`SlotBackend` shared by every process of a store.

    ``limits`` maps a key (``"llm:openai"``) to the most effects that may hold it at once; a
    key without a limit is never waited for. Every process must be given the same limits.
    """

    def __init__(self, limits: Mapping[str, int], backend: Optional[SlotBackend] = None) -> None:
        self.limits = check_limits(limits)
        self.backend: SlotBackend = backend if backend is not None else LocalSlots()

    def limit_for(self, key: str) -> Optional[int]:
        """The limit of ``key`` (``None``: unlimited)."""
        return self.limits.get(key)

    @contextlib.contextmanager
    def slot(self, key: str) -> Iterator[None]:
        """Hold one of ``key``'s slots for the ``with`` block, waiting (polling) until one is free."""
        limit = self.limit_for(key)
        if limit is None:
            yield
            return
        delay = SLOT_POLL_FIRST
        handle = self.backend.try_acquire(key, limit)
        while handle is None:
            time.sleep(delay * _jitter())
            delay = min(delay * SLOT_POLL_GROWTH, SLOT_POLL_MAX)
            handle = self.backend.try_acquire(key, limit)
        try:
            yield
        finally:
            self.backend.release(handle)

    @contextlib.asynccontextmanager
    async def aslot(self, key: str) -> AsyncIterator[None]:
        """:meth:`slot` for an event loop (the wait does not block the loop)."""
        import asyncio  # loaded already: this runs on an event loop

        limit = self.limit_for(key)
        if limit is None:
            yield
            return
        delay = SLOT_POLL_FIRST
        handle = await asyncio.to_thread(self.backend.try_acquire, key, limit)
        while handle is None:
            await asyncio.sleep(delay * _jitter())
            delay = min(delay * SLOT_POLL_GROWTH, SLOT_POLL_MAX)
            handle = await asyncio.to_thread(self.backend.try_acquire, key, limit)
        try:
            yield
        finally:
            await asyncio.to_thread(self.backend.release, handle)


__all__ = ["InFlightLimits", "LocalSlots", "RunObserver", "SlotBackend", "Tick", "check_limits", "end_all", "notify",
           "observed_tick", "publisher"]
