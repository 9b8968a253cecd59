"""Give a runtime what LLM runs need beside their handlers: the live channel, in-flight limits, tracing.

::

    from abstractruntime.equip import equip
    runtime = equip(store.runtime(effect_handlers=...), store, limits={"llm:openai": 4}, tracing=True)

- ``live`` (default on): the store's live side channel observes the runtime, so what
  handlers stream can be followed (``abstractruntime watch``; :mod:`.storage.live`);
- ``limits``: per-key limits on effects in flight across every process of the store (lock
  files in a folder store, advisory locks in PostgreSQL); every process must get the same;
- ``tracing``: OpenTelemetry spans (:mod:`abstractruntime.otel`, the ``[otel]`` extra).

The CLI equips every runtime it builds this way (``--max-in-flight``, ``$ABSTRACTRUNTIME_OTEL``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from .core.errors import InvalidInputError
from .core.observe import InFlightLimits, LocalSlots, check_limits

LIMITS_ENV = "ABSTRACTRUNTIME_MAX_IN_FLIGHT"


def parse_limits(items: Iterable[str]) -> dict[str, int]:
    """``{"llm:openai": 4}`` from ``KEY=N`` items (each item may also be a comma-separated list)."""
    limits: dict[str, int] = {}
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.rpartition("=")
            if not sep or not key.strip():
                raise InvalidInputError(f"an in-flight limit is KEY=N (e.g. llm:openai=4), got {part!r}")
            try:
                number = int(value)
            except ValueError:
                raise InvalidInputError(f"in-flight limit {part!r}: N must be a whole number") from None
            limits[key.strip()] = number
    return check_limits(limits)


def equip(runtime: Any, store: Any, *, limits: Optional[Mapping[str, int]] = None, live: bool = True,
          tracing: bool = False) -> Any:
    """Add the live channel, in-flight limits and tracing to ``runtime`` (over ``store``); returns it."""
    if live:
        from .storage.live import live_channel_for

        channel = live_channel_for(store)
        if channel is not None:
            runtime.observers.append(channel)
    if limits:
        from .storage.slots import slots_for

        backend = slots_for(store)
        runtime.in_flight = InFlightLimits(limits, backend if backend is not None else LocalSlots())
    if tracing:
        from .otel import instrument

        instrument(runtime)
    return runtime


__all__ = ["LIMITS_ENV", "equip", "parse_limits"]
