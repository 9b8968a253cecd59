"""How a worker finds runnable work: the :class:`WorkClaims` port and its listing form.

A store may offer claims of its own (``run_store.work_claims(owner=, lease_s=)``): the
PostgreSQL store leases runs with ``FOR UPDATE SKIP LOCKED`` and wakes idle workers with
``LISTEN/NOTIFY`` (:mod:`abstractruntime.storage.postgres.claims`). Every other queryable
run store gets :class:`ListingClaims`: it lists due timers, runs left ``running`` and runs
whose ledger may be past their checkpoint (a store with ``LEDGER_MARKS``:
:mod:`abstractruntime.core.ahead`), and the run's lock decides which of several workers
advances each one.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import datetime
from typing import Any, Iterable, Optional, Protocol

from ..core.models import RunStatus
from ..core.ports import Capability, has_capability
from ..storage.base import QueryableRunStore

# Runs one listing asks for (at least): enough for a pass of the default limit.
LISTING_BATCH = 100


class WorkClaims(Protocol):
    """One worker's view of the runnable runs of a store."""

    def claim(self, *, now_iso: str, limit: int, exclude: Iterable[str] = (),
              release: Iterable[str] = ()) -> list[str]:
        """Up to ``limit`` runnable run ids (due timers, runs left running), none in ``exclude``;
        first the claims on ``release`` are given up (this worker is done with them)."""
        ...

    def renew(self, run_ids: Iterable[str]) -> None:
        """Keep this worker's claims on ``run_ids`` alive (it is still working on them)."""
        ...

    def release(self, run_ids: Iterable[str]) -> None:
        """This worker is done with ``run_ids``."""
        ...

    def next_due(self) -> Optional[datetime]:
        """The earliest pending timer, when the store can tell cheaply (else ``None``)."""
        ...

    def take_checkpoint(self, run_id: str) -> Optional[Any]:
        """The checkpoint read with the run's claim, when the claim read it (else ``None``)."""
        ...

    def was_ahead(self, run_id: str) -> bool:
        """Whether the run was claimed because its ledger may be past its checkpoint (a writer
        stopped between the two): read it from its ledger; store its checkpoint if it cannot go on."""
        ...

    def listen(self) -> None:
        """Start receiving wake-ups (a no-op where the store has none)."""
        ...

    def wait_for_work(self, timeout: float, stop: Optional[threading.Event] = None) -> bool:
        """Block up to ``timeout`` seconds for a wake-up (``True``) or until ``stop`` is set."""
        ...

    def reset(self) -> None:
        """After the store was unreachable: drop this worker's claims (nothing is in hand)."""
        ...

    def close(self) -> None:
        """Release what the claims hold open (connections); leases are left to expire."""
        ...


class ListingClaims:
    """Claims by listing: due timers first, then runs left ``running``; no leases, no wake-ups.

    Several workers listing the same runs is harmless: each run is advanced under its lock,
    and a worker that finds a run locked or no longer due skips it.
    """

    leases = False

    def __init__(self, run_store: QueryableRunStore) -> None:
        self._runs = run_store
        # Listed, not handed out yet: one listing serves the one-run claims of a whole pass
        # (a worker claims one run at a time; listing each time would read the runs again).
        self._listed: list[str] = []
        self._ahead: set[str] = set()
        self._marks = has_capability(run_store, Capability.LEDGER_MARKS)

    def claim(self, *, now_iso: str, limit: int, exclude: Iterable[str] = (),
              release: Iterable[str] = ()) -> list[str]:
        """See :class:`WorkClaims` (``release``: nothing is held). Listed runs may have been
        advanced by someone else since: the pass checks each again under its lock."""
        if limit < 1:
            return []
        skip = set(exclude)
        picked = self._take(skip, limit)
        if len(picked) < limit:
            fetch = max(limit, LISTING_BATCH) + len(skip)
            self._listed = [run.run_id for run in self._runs.list_due_wait_until(now_iso=now_iso, limit=fetch)]
            if self._marks:
                # As the rows say: a run whose ledger went past its row is in a writer's hands, or
                # listed below as ahead.
                running = self._runs.list_runs(status=RunStatus.RUNNING, limit=fetch,  # type: ignore[call-arg]
                                               as_stored=True)
            else:
                running = self._runs.list_runs(status=RunStatus.RUNNING, limit=fetch)
            self._listed += [run.run_id for run in running]
            if self._marks:
                ahead = self._runs.list_ahead(limit=fetch)  # type: ignore[attr-defined]
                self._ahead = set(ahead)
                self._listed += ahead  # those listed above too are taken once (see _take)
            picked += self._take(skip, limit - len(picked))
        return picked

    def _take(self, skip: set[str], limit: int) -> list[str]:
        """Up to ``limit`` listed ids not in ``skip`` (which grows with them), in listing order."""
        picked: list[str] = []
        while self._listed and len(picked) < limit:
            run_id = self._listed.pop(0)
            if run_id not in skip:
                skip.add(run_id)
                picked.append(run_id)
        return picked

    def renew(self, run_ids: Iterable[str]) -> None:
        """Nothing to renew: listing claims hold nothing."""

    def release(self, run_ids: Iterable[str]) -> None:
        """Nothing to release."""

    def next_due(self) -> Optional[datetime]:
        """Unknown without a scan: ``None``."""
        return None

    def take_checkpoint(self, run_id: str) -> Optional[Any]:
        """Listing reads no checkpoint: ``None``."""
        return None

    def was_ahead(self, run_id: str) -> bool:
        """See :class:`WorkClaims` (listed by ``list_ahead``, maybe also as due or running)."""
        return run_id in self._ahead

    def listen(self) -> None:
        """No wake-ups on this store."""

    def wait_for_work(self, timeout: float, stop: Optional[threading.Event] = None) -> bool:
        """Sleep ``timeout`` seconds (or until ``stop`` is set); never woken by work."""
        (stop or threading.Event()).wait(max(0.0, timeout))
        return False

    def reset(self) -> None:
        """Forget the listing (it is read again)."""
        self._listed = []
        self._ahead = set()

    def close(self) -> None:
        """Nothing held open."""


def claims_for(run_store: Any, *, owner: str, lease_s: float) -> WorkClaims:
    """The store's own claims when it has them, else :class:`ListingClaims`."""
    make = getattr(run_store, "work_claims", None)
    if callable(make):
        claims: WorkClaims = make(owner=owner, lease_s=lease_s)
        return claims
    return ListingClaims(run_store)


def new_worker_id() -> str:
    """A worker's name in leases: host, process and a random suffix (unique per scheduler)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


__all__ = ["ListingClaims", "WorkClaims", "claims_for", "new_worker_id"]
