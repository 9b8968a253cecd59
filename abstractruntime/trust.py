"""Which workflow code a run may load: named by the operator or by the hash chain, never by a data file.

A run records the workflow file it was started from (path and sha256) in its **first ledger
record**, which is hashed and chained; ``allow_drift`` records a later change in the chain
too. ``run.json`` holds a copy, but it is a cache anyone with write access can edit, so code
is never imported on its say-so. :func:`trusted_workflow_path` decides what a command that
continues a run (``tick``, ``resume``, ``worker``, ``tools``, ``retry``) may import:

- a file the operator names on the command line (``--workflow FILE``), or
- the file the hash chain recorded, if it lies in the directory the run was started from (as
  recorded in the chain) or in a directory the operator configured with
  ``ABSTRACTRUNTIME_WORKFLOWS`` (``os.pathsep``-separated),

and in every case only if its sha256 is the one the chain recorded (unless drift is allowed).
A checkpoint that names another file than the chain is tampering: refused, nothing imported.
docs/security.md describes the whole trust model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .core.errors import VerificationFailedError, WorkflowLoadError
from .core.ports import LedgerHead

WORKFLOWS_ENV = "ABSTRACTRUNTIME_WORKFLOWS"


@dataclass(frozen=True)
class ChainWorkflow:
    """The workflow record of a run as its hash chain holds it."""

    source: str
    sha256: Optional[str]
    started_from: str
    # A run written before records carried the workflow (format 1): only run.json names it.
    legacy: bool = False

    @property
    def directory(self) -> Path:
        """The directory the run was started from (its first record's file's directory)."""
        return Path(self.started_from).parent


def chain_workflow(runtime: Any, run_id: str, checkpoint: Any) -> Optional[ChainWorkflow]:
    """The workflow the run's ledger recorded (``None`` for a run started without a file).

    Reads the first record, and the whole ledger only when the checkpoint names another file
    than it (a drift recorded later, or tampering).
    """
    ledger = runtime.ledger_store
    first = _first_record(ledger, run_id)
    if first is None:
        return None
    stored = getattr(checkpoint, "workflow", None) or {}
    if first.get("delta") is None and stored.get("source"):
        source = str(stored["source"])
        return ChainWorkflow(source, stored.get("sha256"), source, legacy=True)
    recorded = _workflow_of(first)
    if recorded is None:
        return None
    started_from = str(recorded.get("source"))
    if stored.get("source") == recorded.get("source") and stored.get("sha256") == recorded.get("sha256"):
        return ChainWorkflow(started_from, recorded.get("sha256"), started_from)
    _, records = ledger.read_after(run_id, LedgerHead())
    latest = recorded
    for doc in records:
        found = _workflow_of(doc)
        if found is not None:
            latest = found
    return ChainWorkflow(str(latest.get("source")), latest.get("sha256"), started_from)


def _first_record(ledger: Any, run_id: str) -> Optional[dict[str, Any]]:
    _, records = ledger.read_after(run_id, LedgerHead(), until_seq=1)
    return records[0] if records else None


def _workflow_of(doc: dict[str, Any]) -> Optional[dict[str, Any]]:
    delta = doc.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("workflow"), dict):
        return delta["workflow"]
    return None


def configured_dirs() -> list[Path]:
    """Directories the operator trusts for workflow code (``$ABSTRACTRUNTIME_WORKFLOWS``)."""
    value = os.environ.get(WORKFLOWS_ENV, "")
    return [Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p.strip()]


def trusted_workflow_path(run_id: str, checkpoint: Any, chain: Optional[ChainWorkflow],
                          explicit: Optional[str]) -> str:
    """The workflow file a command continuing ``run_id`` may import, or raise.

    ``explicit`` is a file the operator named for this command. Otherwise the file is the
    chain's, and it must lie under the run's start directory or a configured directory.
    Raises :class:`VerificationFailedError` when ``run.json`` names another file than the
    chain, and :class:`WorkflowLoadError` when the chain's file is outside every trusted place.
    """
    if explicit:
        return explicit
    stored = (getattr(checkpoint, "workflow", None) or {}).get("source")
    if chain is None:
        if stored:
            raise VerificationFailedError(
                f"run {run_id}: run.json names workflow {stored} but the ledger recorded none; refusing to "
                "import it (pass --workflow FILE to name the code yourself)")
        raise WorkflowLoadError(f"Run {run_id} recorded no workflow file; pass --workflow FILE")
    stored_sha = (getattr(checkpoint, "workflow", None) or {}).get("sha256")
    if (stored and stored != chain.source) or (stored_sha and chain.sha256 and stored_sha != chain.sha256):
        raise VerificationFailedError(
            f"run {run_id}: run.json names workflow {stored} ({stored_sha}) but the ledger recorded "
            f"{chain.source} ({chain.sha256}); refusing to import code a data file names — run "
            "`abstractruntime verify`, or pass --workflow FILE")
    path = Path(chain.source).expanduser()
    resolved = path.resolve()
    roots = [chain.directory.resolve(), *configured_dirs()]
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise WorkflowLoadError(
            f"{chain.source}: outside the directory run {run_id} was started from ({chain.directory}) and "
            f"the directories in ${WORKFLOWS_ENV}; pass --workflow FILE or add its directory there",
            path=chain.source)
    return str(path)


__all__ = ["ChainWorkflow", "WORKFLOWS_ENV", "chain_workflow", "configured_dirs", "trusted_workflow_path"]
