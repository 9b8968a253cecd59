"""Runs whose ledger is ahead of their checkpoint: marked before the append, so they are found.

A writer appends to the ledger and then stores the checkpoint (the index row, the ``runs``
row). A process killed between the two leaves a row that says what the run *was*: a run
answered by ``resume`` or ``emit --hand-off`` still shows ``waiting`` and no worker would claim
it; a run whose worker died after its last record still shows ``running`` forever. So, on a
run store that declares :attr:`~abstractruntime.core.ports.Capability.LEDGER_MARKS`, the
session marks the run *before* the first append after a stored checkpoint; storing the
checkpoint at the ledger's head clears the mark. A marked run is found by an indexed query
(``list_ahead``), shown by queries as its ledger says, and finished by the next worker pass
(advanced when its ledger says it can go on, else its checkpoint stored:
:meth:`Runtime.checkpoint <abstractruntime.core.runtime.Runtime.checkpoint>`).

One mark per checkpoint: a session whose stored checkpoint is at the durable head marks before
it appends; once the ledger is past the checkpoint, the mark is already there. A run being
created (an empty ledger) is not marked: a store finds a run with a ledger and no checkpoint by
itself (the folder store's index notices the new run directory and reads the run's ledger).
"""

from __future__ import annotations

from .ports import Capability, has_capability
from .session import RunSession


class MarkingSession(RunSession):
    """A :class:`RunSession` that marks its run before an append leaves the checkpoint behind."""

    def flush(self, *, checkpoint: bool = False) -> None:
        """Mark the run when this batch takes the ledger past the stored checkpoint, then append."""
        if self.queued and self.closed is None and self.durable.seq and (
                self.saved is None or self.saved.seq == self.durable.seq):
            self.ports.runs.mark_ahead(self.run_id)  # type: ignore[attr-defined]
        super().flush(checkpoint=checkpoint)


def session_class(runs: object) -> type[RunSession]:
    """The session class for a run store: marking when the store keeps marks."""
    return MarkingSession if has_capability(runs, Capability.LEDGER_MARKS) else RunSession


__all__ = ["MarkingSession", "session_class"]
