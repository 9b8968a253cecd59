"""Which workflow a run recorded: its id and sha256, as the run's hash chain holds them.

A run records its workflow — the id and the sha256 of the source — in its **first ledger
record** (hashed and chained); ``allow_drift`` records a later change in the chain too.
``run.json`` holds a copy, a cache anyone with write access can edit. That pair is all a
command continuing a run takes from data: the *file* comes from the operator
(:mod:`abstractruntime.registry`, or a file named on the command line). A path that runs
recorded before (``source``) is never used to import anything. docs/security.md describes
the whole trust model.
"""

from __future__ import annotations

from .core.fastclass import dataclass
from typing import Any, Optional

from .core.errors import VerificationFailedError
from .core.ports import LedgerHead


@dataclass(frozen=True)
class RecordedWorkflow:
    """The workflow a run recorded: its id and the sha256 of its source (``None``: not recorded)."""

    workflow_id: str
    sha256: Optional[str]
    # A run written before records carried the workflow (format 1, or no ledger): only its
    # checkpoint names it.
    legacy: bool = False


def _pair(doc: Any) -> tuple[Any, Any]:
    doc = doc if isinstance(doc, dict) else {}
    return doc.get("workflow_id"), doc.get("sha256")


def recorded_workflow(runtime: Any, run_id: str, checkpoint: Any) -> RecordedWorkflow:
    """The workflow id and sha256 run ``run_id`` recorded (``runtime`` reads its ledger).

    Reads the first ledger record, and the whole ledger only when the checkpoint names another
    workflow than it (a drift recorded later, or tampering). Raises
    :class:`VerificationFailedError` when ``run.json`` names another workflow id or sha256
    than the chain.
    """
    stored = getattr(checkpoint, "workflow", None) or {}
    run_workflow_id = str(checkpoint.run.workflow_id)
    first = _first_record(runtime.ledger_store, run_id)
    if first is None or first.get("delta") is None:
        # Format 1 (or a run saved by a bare run store): the checkpoint is all there is; it
        # names an id and a hash, never the code.
        workflow_id, sha = _pair(stored)
        return RecordedWorkflow(str(workflow_id or run_workflow_id), sha, legacy=True)
    recorded = _workflow_of(first)
    chain_id = str((first.get("delta") or {}).get("workflow_id") or run_workflow_id)
    if recorded is None:
        if stored:
            raise VerificationFailedError(
                f"run {run_id}: run.json names workflow {_show(stored)} but the ledger recorded none; refusing "
                "to load code for it — run `abstractruntime verify`")
        return RecordedWorkflow(chain_id, None)
    latest = recorded
    if _pair(stored) != _pair(recorded):
        _, records = runtime.ledger_store.read_after(run_id, LedgerHead())
        for doc in records:
            found = _workflow_of(doc)
            if found is not None:
                latest = found
        if _pair(stored) != _pair(latest):
            raise VerificationFailedError(
                f"run {run_id}: run.json names workflow {_show(stored)} but the ledger recorded {_show(latest)}; "
                "refusing to load code for it — run `abstractruntime verify`")
    workflow_id, sha = _pair(latest)
    return RecordedWorkflow(str(workflow_id or chain_id), sha)


def _show(doc: dict[str, Any]) -> str:
    workflow_id, sha = _pair(doc)
    return f"'{workflow_id}' (sha256 {sha})"


def _first_record(ledger: Any, run_id: str) -> Optional[dict[str, Any]]:
    _, records = ledger.read_after(run_id, LedgerHead(), until_seq=1)
    return records[0] if records else None


def _workflow_of(doc: dict[str, Any]) -> Optional[dict[str, Any]]:
    delta = doc.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("workflow"), dict):
        workflow: dict[str, Any] = delta["workflow"]
        return workflow
    return None


__all__ = ["RecordedWorkflow", "recorded_workflow"]
