"""Snapshots of runs: take one, restore a run to it in place, or fork a new run from it.

Restoring never rewrites history: the checkpoint is replaced by the snapshot's state and a
``restore`` record is appended to the ledger, which keeps verifying. Forking starts a new
run whose checkpoint (``origin``) and first ledger record name the source run and snapshot.
Both refuse a workflow whose source sha256 differs from the snapshot's unless
``allow_drift=True``.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

from ..storage.base import Checkpoint, LedgerHead
from .canonical import canonical_json, sha256_hex
from .errors import InvalidInputError, WorkflowDriftError
from .models import RecordKind, RunState, StepRecord
from .runtime import Runtime
from .session import RunSession
from .spec import WorkflowSpec


def take_snapshot(
    runtime: Runtime,
    run_id: str,
    *,
    name: str,
    description: Optional[str] = None,
    tags: Optional[list[str]] = None,
) -> Any:
    """A :class:`~abstractruntime.storage.snapshots.Snapshot` of the run as checkpointed now."""
    from ..storage.snapshots import Snapshot

    checkpoint = runtime.get_checkpoint(run_id)
    return Snapshot.from_run(
        run=checkpoint.run, name=name, description=description, tags=tags,
        workflow=copy.deepcopy(checkpoint.workflow), ledger=checkpoint.ledger.to_dict(), clock=runtime.now,
    )


def _check_drift(snapshot: Any, current: Optional[dict[str, Any]], workflow: Optional[WorkflowSpec],
                 allow_drift: bool) -> Optional[dict[str, Any]]:
    """The workflow record to keep; raises when the source changed and drift is not allowed."""
    recorded = (snapshot.workflow or {}).get("sha256")
    now_sha = workflow.source.sha256 if workflow is not None and workflow.source else (current or {}).get("sha256")
    if recorded and now_sha and recorded != now_sha and not allow_drift:
        raise WorkflowDriftError(
            f"Workflow source changed since snapshot {snapshot.snapshot_id} was taken "
            f"(snapshot sha256 {recorded}, now {now_sha}); pass allow_drift=True (CLI: --allow-drift)",
            recorded=recorded, current=now_sha)
    if workflow is not None and workflow.source is not None:
        return workflow.source.to_dict(workflow.workflow_id)
    return current if current is not None else snapshot.workflow


def restore_snapshot(
    runtime: Runtime,
    snapshot: Any,
    *,
    workflow: Optional[WorkflowSpec] = None,
    allow_drift: bool = False,
    lock_wait: float = 0.0,
) -> RunState:
    """Put the snapshot's state back into its run; appends a ``restore`` ledger record."""
    state = RunState.from_dict(copy.deepcopy(snapshot.run_state))
    with runtime.run_store.lock(snapshot.run_id, wait=lock_wait):
        current = runtime.get_checkpoint(snapshot.run_id)
        keep_workflow = _check_drift(snapshot, current.workflow, workflow, allow_drift)
        session = RunSession(runtime, Checkpoint(run=state, ledger=current.ledger, workflow=keep_workflow,
                                               origin=current.origin))
        rec = StepRecord.start(run=state, node_id=state.current_node, effect=None)
        rec.kind = RecordKind.RESTORE.value
        rec.finish_success({
            "snapshot_id": snapshot.snapshot_id,
            "snapshot_name": snapshot.name,
            "snapshot_ledger": snapshot.ledger,
            "previous_status": current.run.status.value,
            "previous_node": current.run.current_node,
            "state_sha256": sha256_hex(canonical_json(snapshot.run_state)),
        })
        session.record(rec)
        session.commit()
        return state


def fork_snapshot(
    runtime: Runtime,
    snapshot: Any,
    *,
    workflow: Optional[WorkflowSpec] = None,
    allow_drift: bool = False,
    run_id: Optional[str] = None,
) -> str:
    """Start a new run from the snapshot's state; returns the new run id."""
    source_ckpt = runtime.run_store.load_checkpoint(snapshot.run_id)
    keep_workflow = _check_drift(snapshot, source_ckpt.workflow if source_ckpt else None, workflow, allow_drift)
    base = RunState.from_dict(copy.deepcopy(snapshot.run_state))
    fresh = RunState.new(workflow_id=base.workflow_id, entry_node=base.current_node, actor_id=base.actor_id,
                         vars=base.vars, parent_run_id=base.parent_run_id, run_id=run_id)
    if run_id is not None and runtime.run_store.load(run_id) is not None:
        raise InvalidInputError(f"Run {run_id} already exists")
    fresh.status, fresh.waiting, fresh.output, fresh.error = base.status, base.waiting, base.output, base.error
    fresh.created_at = fresh.updated_at = runtime.now().isoformat()
    origin = {"run_id": snapshot.run_id, "snapshot_id": snapshot.snapshot_id, "ledger": snapshot.ledger}
    session = RunSession(runtime, Checkpoint(run=fresh, ledger=LedgerHead(), workflow=keep_workflow, origin=origin))
    rec = StepRecord.start(run=fresh, node_id=fresh.current_node, effect=None)
    rec.kind = RecordKind.START.value
    rec.finish_success({"workflow_id": fresh.workflow_id, "vars": fresh.vars, "forked_from": origin,
                        "status": fresh.status.value})
    session.record(rec)
    session.commit()
    return fresh.run_id
