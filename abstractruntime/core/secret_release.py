"""When a run's secret values go, and the snapshots' pins that keep some of them.

A run's values are needed while it can still continue. When it has finished (completed,
cancelled, or failed with no effect left to retry) they are dropped — except those a live
snapshot pins (``{"pin": snapshot_id, "commitments": [...], "at"}`` entries written when the
snapshot is taken, and ``{"unpin": snapshot_id}`` when it is deleted; :func:`~.ports.retained`).
The check runs when a run finishes, whenever it is opened again, and on every worker pass over
the runs whose secrets store still holds entries — so a process killed right after a run's last
record leaves nothing behind for long.

Every rewrite of a run's secrets store happens under the run's lock, so an entry appended by
another process (a pin, a restored run's values) is never lost to a concurrent rewrite.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Collection, Optional

from .clock import Clock, parse_iso, to_iso
from .errors import AbstractRuntimeError, RunLockedError, RunNotFoundError, SecretMissingError, StorageError
from .ports import Capability, LedgerStore, RunStore, has_capability, live_pins, retained
from .secret_values import SecretKeeper

if TYPE_CHECKING:
    from .snapshot import SnapshotStore

# A pin whose snapshot cannot be found is dropped only once it is this old: the snapshot of a
# pin written a moment ago may not be saved yet (a pin is written first, then the snapshot).
PIN_GRACE = timedelta(minutes=10)


class SecretRelease:
    """The release rules of one runtime's stores (see the module docstring)."""

    def __init__(self, runs: RunStore, ledger: LedgerStore, clock: Clock,
                 snapshots: Optional["SnapshotStore"] = None) -> None:
        self.runs, self.ledger, self.clock, self.snapshots = runs, ledger, clock, snapshots

    @property
    def keeps_secrets(self) -> bool:
        """False for a store that keeps no secret values (nothing to release)."""
        return has_capability(self.ledger, Capability.SECRETS)

    # -- releasing ----------------------------------------------------------------------

    def release_locked(self, run_id: str) -> None:
        """Drop the values of ``run_id`` nothing needs any more; the caller holds the run's lock and
        knows it has finished. Orphaned pins (their snapshot gone, past :data:`PIN_GRACE`) go too."""
        entries = self.ledger.get_secrets(run_id)
        if not entries:
            return
        orphans = self._orphans(entries)
        if orphans:
            unpins = [{"unpin": snapshot_id} for snapshot_id in orphans]
            self.ledger.put_secrets(run_id, unpins)
            entries = [*entries, *unpins]
        if len(retained(entries, ())) != len(entries):
            self.ledger.retain_secrets(run_id, ())

    def release_unlocked(self, run_id: str) -> bool:
        """:meth:`release_locked` if the run's lock can be had at once (else nothing: whoever holds
        it releases them); ``True`` when it was released. A read-only store is left alone."""
        try:
            with self.runs.lock(run_id, wait=0.0):
                self.release_locked(run_id)
            return True
        except (RunLockedError, RunNotFoundError, StorageError):
            return False

    def _orphans(self, entries: list[dict[str, Any]]) -> list[str]:
        if self.snapshots is None:
            return []
        now = self.clock()
        found = []
        for pin in live_pins(entries):
            try:
                old = now - parse_iso(pin["at"]) > PIN_GRACE if isinstance(pin.get("at"), str) else True
            except (TypeError, ValueError):
                old = True
            try:
                if old and self.snapshots.load(pin["pin"]) is None:
                    found.append(pin["pin"])
            except AbstractRuntimeError:
                continue  # an unreadable snapshot is still a snapshot: keep what it needs
        return found

    def needs_release(self, run_id: str) -> bool:
        """True when the run's secrets store holds entries a finished run would drop."""
        entries = self.ledger.get_secrets(run_id)
        return bool(entries) and (len(retained(entries, ())) != len(entries) or bool(self._orphans(entries)))

    # -- pins ---------------------------------------------------------------------------

    def pin(self, run_id: str, snapshot_id: str, commitments: Collection[str], *, lock_wait: float = 0.0) -> None:
        """Keep the values ``commitments`` name for snapshot ``snapshot_id`` (durably, now).

        Raises :class:`SecretMissingError` (nothing written) when some are no longer there: a
        snapshot of them could never be restored.
        """
        with self.runs.lock(run_id, wait=lock_wait):
            keeper = SecretKeeper.from_entries(self.ledger.get_secrets(run_id))
            missing = sorted(c for c in commitments if not keeper.knows(c))
            if missing:
                raise SecretMissingError(
                    f"run {run_id}: {len(missing)} secret value(s) of its state are no longer in its secrets store "
                    "(released when the run finished, or deleted); a snapshot of it could not be restored, so none "
                    "was taken", run_id=run_id, missing=len(missing))
            self.ledger.put_secrets(run_id, [{"pin": snapshot_id, "commitments": sorted(commitments),
                                              "at": to_iso(self.clock())}])

    def unpin(self, run_id: str, snapshot_id: str, *, finished: bool, lock_wait: float = 0.0) -> bool:
        """Let go of the values snapshot ``snapshot_id`` pinned (dropped now when the run has
        ``finished``). ``False`` when the run's lock could not be had (a later release drops the
        pin, its snapshot being gone)."""
        if not any(p["pin"] == snapshot_id for p in live_pins(self.ledger.get_secrets(run_id))):
            return True
        try:
            with self.runs.lock(run_id, wait=lock_wait):
                self.ledger.put_secrets(run_id, [{"unpin": snapshot_id}])
                if finished:
                    self.release_locked(run_id)
        except (RunLockedError, StorageError):
            return False
        return True


__all__ = ["PIN_GRACE", "SecretRelease"]
