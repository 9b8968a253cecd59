"""The ``ctx`` node handlers receive when the runtime is given none."""

from __future__ import annotations

from .clock import Clock, utc_now
from .fastclass import dataclass

__all__ = ["DefaultRunContext"]


@dataclass
class DefaultRunContext:
    """The ``ctx`` node handlers receive: the runtime's clock as ISO text."""

    clock: Clock = utc_now

    def now_iso(self) -> str:
        """Current UTC time, ISO-8601."""
        return self.clock().isoformat()
