"""When a ``wait_until`` timer is due: the one rule every timer driver and store listing uses.

A timer is due when its ``until`` instant is at or before ``now``; instants are compared as
timezone-aware datetimes, never as text, so ``10:00+02:00`` is due at ``08:00Z``. A timer
whose ``until`` is not an ISO-8601 timestamp raises ``ValueError``: what that means is the
caller's to say (a store listing leaves it out, a driver ticks it so the run fails with the
bad timestamp on record instead of waiting forever).
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from .clock import parse_iso
from .models import RunState, RunStatus, WaitReason, WaitState


def is_due(wait: Optional[WaitState], now: datetime) -> bool:
    """True when ``wait`` is a ``wait_until`` timer whose time has come (``ValueError`` if malformed)."""
    if wait is None or WaitReason(wait.reason) is not WaitReason.UNTIL or not wait.until:
        return False
    return parse_iso(wait.until) <= now


def run_is_due(run: RunState, now: datetime) -> bool:
    """True when ``run`` is WAITING on a timer that :func:`is_due` (``ValueError`` if malformed)."""
    return RunStatus(run.status) is RunStatus.WAITING and is_due(run.waiting, now)


__all__ = ["is_due", "run_is_due"]
