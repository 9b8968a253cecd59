"""Shared filtering and ordering for run queries (used by the in-memory store and the index).

:func:`waiting_on` is the one way to ask any run store for the runs waiting on a key: a store's
own indexed ``list_waiting_on`` when it has one, else ``list_runs`` filtered here.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from ..core.clock import parse_iso
from ..core.effects import check_wait_key
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


def is_waiting_on(run: RunState, wait_key: str) -> bool:
    """A WAITING run whose wait is on ``wait_key`` (the filter of ``list_waiting_on``)."""
    return RunStatus(run.status) is RunStatus.WAITING and run.waiting is not None and run.waiting.wait_key == wait_key


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


def newest_key(run: RunState) -> tuple[float, str]:
    """Sort key: most recently updated first (then run id; no ``updated_at`` counts as the epoch)."""
    return (-(timestamp(run.updated_at) or 0.0), run.run_id)


def oldest_key(run: RunState) -> tuple[float, str]:
    """Sort key: least recently updated first (then run id)."""
    return (timestamp(run.updated_at) or 0.0, run.run_id)


def until_key(run: RunState) -> tuple[float, str]:
    """Sort key: earliest ``until`` first (then run id)."""
    return (timestamp(run.waiting.until if run.waiting else None) or 0.0, run.run_id)


def newest_first(runs: Iterable[RunState]) -> list[RunState]:
    """Sort by ``updated_at`` descending (then run id, for a stable order)."""
    return sorted(runs, key=newest_key)


def oldest_first(runs: Iterable[RunState]) -> list[RunState]:
    """Sort by ``updated_at`` ascending (then run id)."""
    return sorted(runs, key=oldest_key)


def earliest_until_first(runs: Iterable[RunState]) -> list[RunState]:
    """Sort waiting-until runs by ``until`` ascending."""
    return sorted(runs, key=until_key)


def waiting_on(run_store: Any, wait_key: str, limit: int = 1000) -> list[RunState]:
    """WAITING runs whose wait is on ``wait_key``, least recently updated first, at most ``limit``.

    Calls the store's ``list_waiting_on(wait_key, limit=limit)`` when it has one (an indexed
    query on every store abstractruntime ships); a store that only implements
    :class:`~abstractruntime.core.ports.QueryableRunStore` as upstream 0.0.1 defined it is
    asked for every WAITING run (``list_runs``), filtered and ordered here. Raises
    ``TypeError`` for a store that cannot list runs at all, and
    :class:`~abstractruntime.core.errors.InvalidInputError` for a key no wait can have
    (:func:`~abstractruntime.core.effects.check_wait_key`).
    """
    check_wait_key(wait_key)
    own = getattr(run_store, "list_waiting_on", None)
    if callable(own):
        found: list[RunState] = own(wait_key, limit=limit)
        return found
    list_runs = getattr(run_store, "list_runs", None)
    if not callable(list_runs):
        raise TypeError(f"{type(run_store).__name__} cannot list runs: waiting_on needs a run store that "
                        "implements QueryableRunStore")
    waiting = list_runs(status=RunStatus.WAITING, limit=sys.maxsize)
    return oldest_first(r for r in waiting if is_waiting_on(r, wait_key))[: max(limit, 0)]
