"""What a conformance test is handed: a run store and a ledger store, and what they claim to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..core.canonical import canonical_json
from ..core.ports import Capability, LedgerStore, RunStore, has_capability
from ..core.runtime import Runtime


@dataclass
class StoreBackend:
    """One run store + ledger store pair, with the capabilities the suite checks where they apply.

    ``queryable``: the run store implements :class:`~abstractruntime.core.ports.QueryableRunStore`.
    ``locking``: ``lock(run_id)`` refuses a second holder. ``chained``: the ledger keeps the
    hash chain (``seq``, ``prev_hash``, ``record_hash``). ``checkpoints``: the run store keeps
    full checkpoints, not only the run (the port's default). Left out, each is what the stores
    declare (``QUERIES``, ``LOCKS``, ``CHAINED``, ``CHECKPOINTS``). ``root``: the directory of a file
    backend (the suite then also compares the files). ``reopen``: builds a second backend over
    the same storage, to prove what survives a new process. ``closers`` run at teardown.
    """

    name: str
    runs: RunStore
    ledger: LedgerStore
    root: Optional[Path] = None
    queryable: Optional[bool] = None
    locking: Optional[bool] = None
    chained: Optional[bool] = None
    checkpoints: Optional[bool] = None
    reopen: Optional[Callable[[], "StoreBackend"]] = field(default=None, repr=False)
    closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        declared = {"queryable": (self.runs, Capability.QUERIES), "locking": (self.runs, Capability.LOCKS),
                    "chained": (self.ledger, Capability.CHAINED), "checkpoints": (self.runs, Capability.CHECKPOINTS)}
        for name, (store, capability) in declared.items():
            if getattr(self, name) is None:
                setattr(self, name, has_capability(store, capability))

    @property
    def files(self) -> bool:
        """True for the file backends."""
        return self.root is not None

    def runtime(self, **kwargs: Any) -> Runtime:
        """A Runtime over this backend."""
        return Runtime(run_store=self.runs, ledger_store=self.ledger, **kwargs)

    def fingerprint(self, run_id: str) -> Any:
        """Everything stored for ``run_id``, to prove that a refused call wrote nothing."""
        if self.root is not None:
            run_dir = self.root / "runs" / run_id
            return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.name != ".lock"}
        checkpoint = self.runs.load_checkpoint(run_id)
        # The canonical form, not a lossy str() of odd values: two different states never compare equal.
        return (
            canonical_json(checkpoint.to_dict() if checkpoint else None),
            canonical_json(self.ledger.list(run_id)),
        )

    def close(self) -> None:
        """Run the closers (database connections, file store handles)."""
        for close in self.closers:
            close()


__all__ = ["StoreBackend"]
