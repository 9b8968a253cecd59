"""Which effect a running handler performs (:class:`EffectIdentity`), told through a context variable.

Kept apart from the code that performs effects (:mod:`.effect_exec`), so a handler, a built-in
effect and the integration can ask :func:`current_effect` without depending on it.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import field
from .fastclass import dataclass
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Optional

from .errors import InvalidInputError


@dataclass(frozen=True)
class EffectIdentity:
    """Which effect a running handler performs: its run, its position and its idempotency key.

    ``key`` is stable across the re-executions of one effect (after a crash, or a retry), and
    different for every other effect of the run: pass it as the idempotency key of the
    external API the handler calls, so the documented at-least-once window becomes
    exactly-once on that side.

    ``parts`` holds the partial results this effect recorded before (e.g. the tool calls of a
    ``tool_calls`` effect that finished before a crash); :meth:`record_part` makes one durable
    at once, each in its own ledger record, so a re-run performs only what has no result.

    ``budget_left`` is what remains of the run's budget (``None``: no budget); :meth:`progress`
    publishes transient data to the runtime's observers (never recorded); :meth:`slot` /
    :meth:`aslot` hold one of a key's in-flight slots (see :mod:`abstractruntime.core.observe`).
    """

    run_id: str
    effect_id: int
    key: str
    attempt: int
    parts: Mapping[str, Any] = field(default_factory=dict)
    recorder: Optional[Callable[[str, Any], None]] = field(default=None, repr=False, compare=False)
    budget_left: Optional[Mapping[str, Any]] = None
    publisher: Optional[Callable[[Mapping[str, Any]], None]] = field(default=None, repr=False, compare=False)
    limits: Optional[Any] = field(default=None, repr=False, compare=False)

    def record_part(self, name: str, value: Any) -> None:
        """Record ``value`` as this effect's part ``name`` (durable when this returns)."""
        if self.recorder is None:
            raise InvalidInputError("this effect cannot record partial results")
        self.recorder(name, value)

    @property
    def publishes(self) -> bool:
        """Whether anyone receives :meth:`progress` (a handler may skip streaming otherwise)."""
        return self.publisher is not None

    def progress(self, data: Mapping[str, Any]) -> None:
        """Publish transient ``data`` (e.g. ``{"text": "next tokens"}``), redacted, to the observers."""
        if self.publisher is not None:
            self.publisher(data)

    @contextlib.contextmanager
    def slot(self, key: str) -> Iterator[None]:
        """Hold one of ``key``'s in-flight slots for the block (no limit configured: no wait)."""
        if self.limits is None:
            yield
            return
        with self.limits.slot(key):
            yield

    @contextlib.asynccontextmanager
    async def aslot(self, key: str) -> AsyncIterator[None]:
        """:meth:`slot` for an event loop."""
        if self.limits is None:
            yield
            return
        async with self.limits.aslot(key):
            yield


CURRENT_EFFECT: contextvars.ContextVar[Optional[EffectIdentity]] = contextvars.ContextVar(
    "abstractruntime_current_effect", default=None)


def current_effect() -> Optional[EffectIdentity]:
    """The effect whose handler is running in this context (``None`` outside a handler)."""
    return CURRENT_EFFECT.get()


__all__ = ["CURRENT_EFFECT", "EffectIdentity", "current_effect"]
