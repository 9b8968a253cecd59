"""Shared filtering and ordering for run queries (used by the in-memory store and the index)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable, Optional

from ..core.clock import parse_iso
from ..core.models import RunState, RunStatus, WaitReason

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def timestamp(value: Optional[str]) -> Optional[float]:
    """ISO text → seconds since the epoch (``None`` when absent or unparsable)."""
    if not value:
        return None
    try:
        return (parse_iso(value) - _EPOCH).total_seconds()
    except ValueError:
        return None


def status_value(status: RunStatus | str | None) -> Optional[str]:
    """Normalise a status filter to its string value."""
    return None if status is None else RunStatus(status).value


def reason_value(reason: WaitReason | str | None) -> Optional[str]:
    """Normalise a wait-reason filter to its string value."""
    return None if reason is None else WaitReason(reason).value


def matches(
    run: RunState,
    *,
    status: Optional[str] = None,
    wait_reason: Optional[str] = None,
    workflow_id: Optional[str] = None,
    parent_run_id: Optional[str] = None,
) -> bool:
    """True when ``run`` passes every given filter (``None`` = no filter)."""
    if status is not None and RunStatus(run.status).value != status:
        return False
    if wait_reason is not None:
        if run.waiting is None or WaitReason(run.waiting.reason).value != wait_reason:
            return False
    if workflow_id is not None and run.workflow_id != workflow_id:
        return False
    if parent_run_id is not None and run.parent_run_id != parent_run_id:
        return False
    return True


def is_due(run: RunState, now_ts: float) -> bool:
    """A WAITING/UNTIL run whose ``until`` is at or before ``now_ts`` (seconds since the epoch).

    This is the run index's query (``until_ts <= now``, over the same float timestamps) for
    stores without an index, so every backend lists the same runs; a malformed ``until`` has
    no timestamp and is never listed. Whether one wait is due is
    :func:`abstractruntime.core.timers.is_due`.
    """
    if RunStatus(run.status) is not RunStatus.WAITING or run.waiting is None:
        return False
    if WaitReason(run.waiting.reason) is not WaitReason.UNTIL:
        return False
    until = timestamp(run.waiting.until)
    return until is not None and until <= now_ts


def newest_first(runs: Iterable[RunState]) -> list[RunState]:
    """Sort by ``updated_at`` descending (then run id, for a stable order)."""
    return sorted(runs, key=lambda r: (-(timestamp(r.updated_at) or 0.0), r.run_id))


def earliest_until_first(runs: Iterable[RunState]) -> list[RunState]:
    """Sort waiting-until runs by ``until`` ascending."""
    return sorted(runs, key=lambda r: (timestamp(r.waiting.until if r.waiting else None) or 0.0, r.run_id))
