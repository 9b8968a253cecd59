"""A workflow file that changed since a run recorded it: refused, accepted blind, or upgraded.

A run records the sha256 of its workflow's source. When the file that continues it hashes
otherwise, :func:`check_source` decides, before anything runs:

- refused (:class:`~abstractruntime.core.errors.WorkflowDriftError`), unless the operator
  allowed it;
- ``allow_drift``: accepted as it is, and the change recorded (a ``node`` record whose result
  is ``{"workflow_drift": {"from", "to"}}``);
- an *upgrade* (the source's ``upgrade`` flag, set when the operator allows upgrades for the
  workflow): accepted when the run's history still fits the new code. A graph run fits when
  every node it still needs exists; the change is recorded in an ``upgrade`` record
  (``{"from", "to", "checked": "nodes", "nodes"}``). A code-first run fits when its recorded
  positions replay: its engine checks that and records the ``upgrade`` itself
  (``"checked": "replay"``), before its first new record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import WorkflowDriftError
from .models import RecordKind, RunStatus
from .session import new_record

if TYPE_CHECKING:
    from .ports import Checkpoint
    from .session import RunSession


def needed_nodes(checkpoint: "Checkpoint") -> set[str]:
    """The nodes a graph run can still enter: where it is, where its wait resumes, its pending effect's."""
    run, pending = checkpoint.run, checkpoint.pending
    found: set[str] = set()
    if run.status in (RunStatus.RUNNING, RunStatus.WAITING) and run.current_node:
        found.add(run.current_node)
    if run.waiting is not None and run.waiting.resume_to_node:
        found.add(run.waiting.resume_to_node)
    if pending is not None:
        found.update(n for n in (pending.node_id, pending.next_node) if n)
    return found


def check_source(session: "RunSession", workflow: Any, allow_drift: bool) -> None:
    """Refuse, accept or upgrade the run's workflow source (see the module docstring); records
    the accepted change in the session (nothing is written on a refusal)."""
    checkpoint, run = session.checkpoint, session.run
    recorded = checkpoint.workflow or {}
    source = getattr(workflow, "source", None)
    if source is None or not recorded.get("sha256") or recorded["sha256"] == source.sha256:
        return
    before, after = recorded["sha256"], source.sha256
    upgrade = bool(getattr(source, "upgrade", False))
    if not allow_drift and not upgrade:
        raise WorkflowDriftError(
            f"Workflow {source.path} changed since run {run.run_id} recorded it "
            f"(recorded sha256 {before}, now {after}); pass allow_drift=True (CLI: --allow-drift) to continue "
            "with the new code, or allow an upgrade (CLI: --upgrade) to accept it if the run's history fits it",
            recorded=before, current=after)
    if run.status.is_terminal or callable(getattr(workflow, "flow_steps", None)):
        return  # nothing to continue; or code-first: its engine records the upgrade once its history replays
    if allow_drift:
        checkpoint.workflow = source.to_dict(workflow.workflow_id)
        rec = new_record(run, RecordKind.NODE)
        rec.finish_success({"workflow_drift": {"from": before, "to": after}})
        session.record(rec)
        return
    needed = needed_nodes(checkpoint)
    missing = sorted(needed - set(workflow.nodes))
    if missing:
        names = ", ".join(repr(n) for n in missing)
        raise WorkflowDriftError(
            f"Workflow {source.path} changed since run {run.run_id} recorded it (recorded sha256 {before}, now "
            f"{after}) and the upgrade is refused: the run still needs node(s) {names}, which the new code does "
            "not have. Nothing was written. Keep those nodes (they may forward to new ones), or continue with "
            "--allow-drift, or fork or cancel the run",
            recorded=before, current=after, missing=missing)
    checkpoint.workflow = source.to_dict(workflow.workflow_id)
    rec = new_record(run, RecordKind.UPGRADE)
    rec.finish_success({"from": before, "to": after, "checked": "nodes", "nodes": sorted(needed)})
    session.record(rec)


__all__ = ["check_source", "needed_nodes"]
