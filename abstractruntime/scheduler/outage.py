"""When the store goes away: how long a worker waits before trying again, and when it gives up.

A database restarts, a network is cut, a server closes idle sessions. None of that is a
worker's failure, and none of it loses work: every committed batch stays, and a run cut
short is claimed again. So a worker waits and retries — with capped exponential backoff and
jitter (:class:`Backoff`), so a fleet does not reconnect in lockstep — and says so once per
outage: one line when it begins, one when it ends (:class:`Outage`). It gives up only when
the operator set a limit (``max_outage`` seconds) and the outage outlasted it.

What counts as an outage is the store's call: PostgreSQL raises
:class:`~abstractruntime.core.errors.DatabaseUnavailableError` for a refused or lost
connection, and a plain error for what retrying cannot fix (a refused password, an unknown
database or schema), which stops the worker.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Optional

from ..core.errors import DatabaseUnavailableError

OnStart = Callable[[BaseException], None]
OnEnd = Callable[[float], None]


class Backoff:
    """Delays that double from ``first`` up to ``cap`` seconds, each drawn in its upper half
    (``rng`` is injectable, for tests): ``0.1-0.2``, ``0.2-0.4`` ... ``cap/2-cap``."""

    def __init__(self, *, first: float = 0.2, cap: float = 5.0, rng: Callable[[], float] = random.random) -> None:
        self.first, self.cap, self._rng = first, cap, rng
        self._attempt = 0

    def next(self) -> float:
        """The next delay, in seconds."""
        ceiling = min(self.cap, self.first * 2.0 ** self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        """Start again from the first delay."""
        self._attempt = 0


class Outage:
    """The outage a worker is in, if any.

    :meth:`failed` for every attempt that met an unavailable store (the first one calls
    ``on_start``; it returns the delay before the next attempt, and raises once the outage
    has lasted more than ``max_outage`` seconds); :meth:`ended` after an attempt that
    reached it (calls ``on_end`` with the outage's length, if there was one).
    """

    def __init__(self, *, max_outage: Optional[float] = None, on_start: Optional[OnStart] = None,
                 on_end: Optional[OnEnd] = None, backoff: Optional[Backoff] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_outage is not None and not max_outage > 0:
            raise ValueError(f"max_outage must be > 0 seconds, got {max_outage!r}")
        self.max_outage = max_outage
        self._on_start, self._on_end = on_start, on_end
        self._backoff = backoff or Backoff()
        self._clock = clock
        self.since: Optional[float] = None

    @property
    def active(self) -> bool:
        """Whether the store is unavailable as far as this worker knows."""
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        """Record an attempt that met an unavailable store; the seconds to wait before the next.

        Raises :class:`DatabaseUnavailableError` when the outage outlasted ``max_outage``.
        """
        now = self._clock()
        if self.since is None:
            self.since = now
            if self._on_start is not None:
                self._on_start(exc)
        lasted = now - self.since
        if self.max_outage is not None and lasted > self.max_outage:
            raise DatabaseUnavailableError(
                f"the store has been unavailable for {lasted:.1f} s, longer than the {self.max_outage:g} s "
                f"allowed: {exc}", outage_seconds=round(lasted, 3)) from None
        delay = self._backoff.next()
        if self.max_outage is not None:
            delay = min(delay, max(0.0, self.max_outage - lasted) + 0.05)
        return delay

    def ended(self) -> None:
        """Record an attempt that reached the store."""
        if self.since is None:
            return
        lasted = self._clock() - self.since
        self.since = None
        self._backoff.reset()
        if self._on_end is not None:
            self._on_end(lasted)


__all__ = ["Backoff", "Outage"]
