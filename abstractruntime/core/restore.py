"""Snapshots of runs: take one, restore a run to it in place, or fork a new run from it.

Restoring never rewrites history: a ``restore`` record carrying the snapshot's whole state is
appended to the ledger (which keeps verifying), and the checkpoint follows it. Forking starts a new
run whose checkpoint (``origin``) and first ledger record name the source run and snapshot, and
which continues the source's effect numbering (so its wait handles never repeat one it was
forked on).
Both refuse a workflow whose source sha256 differs from the snapshot's unless
``allow_drift=True``. A fork records the workflow id and sha256 of the ``source`` the caller
located (the CLI: through the operator's registry), never a path from the snapshot file.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

from .canonical import canonical_json, sha256_hex
from .errors import AbstractRuntimeError, WorkflowDriftError
from .ids import validate_id
from .models import RecordKind, RunState
from .ports import Checkpoint, LedgerHead
from .runtime import Runtime
from .session import new_record
from .snapshot import Snapshot
from .spec import WorkflowSource, WorkflowSpec


def take_snapshot(
    runtime: Runtime,
    run_id: str,
    *,
    name: str,
    description: Optional[str] = None,
    tags: Optional[list[str]] = None,
    at: Optional[int] = None,
) -> Snapshot:
    """A :class:`~abstractruntime.core.snapshot.Snapshot` of the run now, or as it was right
    after ledger record ``at`` (rebuilt from the ledger), so any past step can be restored or forked."""
    checkpoint = runtime.get_checkpoint(run_id) if at is None else runtime.state_at(run_id, at)
    return Snapshot.from_run(
        run=checkpoint.run, name=name, description=description, tags=tags,
        workflow=copy.deepcopy(checkpoint.workflow), ledger=checkpoint.ledger.to_dict(), clock=runtime.now,
    )


def _check_drift(snapshot: Any, current: Optional[dict[str, Any]], source: Optional[WorkflowSource],
                 workflow_id: str, allow_drift: bool) -> Optional[dict[str, Any]]:
    """The workflow record to keep; raises when the source changed and drift is not allowed."""
    recorded = (snapshot.workflow or {}).get("sha256")
    now_sha = source.sha256 if source is not None else (current or {}).get("sha256")
    if recorded and now_sha and recorded != now_sha and not allow_drift:
        raise WorkflowDriftError(
            f"Workflow source changed since snapshot {snapshot.snapshot_id} was taken "
            f"(snapshot sha256 {recorded}, now {now_sha}); pass allow_drift=True (CLI: --allow-drift)",
            recorded=recorded, current=now_sha)
    if source is not None:
        return source.to_dict(workflow_id)
    kept = current if current is not None else snapshot.workflow
    # An id and a hash only: a path (recorded by older runs, or written into a file) is never carried on.
    return {k: v for k, v in kept.items() if k in ("sha256", "workflow_id")} if isinstance(kept, dict) else kept


def _source_of(workflow: Optional[WorkflowSpec], source: Optional[WorkflowSource]) -> Optional[WorkflowSource]:
    return source if source is not None else (workflow.source if workflow is not None else None)


def restore_snapshot(
    runtime: Runtime,
    snapshot: Any,
    *,
    workflow: Optional[WorkflowSpec] = None,
    allow_drift: bool = False,
    lock_wait: float = 0.0,
    source: Optional[WorkflowSource] = None,
) -> RunState:
    """Put the snapshot's state back into its run; appends a ``restore`` ledger record.

    The record carries the whole restored state, so replaying the ledger gives it back.
    ``source`` (or ``workflow.source``) is the workflow file to check drift against and record.
    """
    state = RunState.from_dict(copy.deepcopy(snapshot.run_state))
    with runtime.run_store.lock(snapshot.run_id, wait=lock_wait):
        session = runtime.open_session(snapshot.run_id)
        current = session.checkpoint
        previous_status, previous_node = current.run.status.value, current.run.current_node
        current.workflow = _check_drift(snapshot, current.workflow, _source_of(workflow, source),
                                        current.run.workflow_id, allow_drift)
        current.run, current.pending = state, None
        rec = new_record(state, RecordKind.RESTORE)
        rec.finish_success({
            "snapshot_id": snapshot.snapshot_id,
            "snapshot_name": snapshot.name,
            "snapshot_ledger": snapshot.ledger,
            "previous_status": previous_status,
            "previous_node": previous_node,
            "state_sha256": sha256_hex(canonical_json(snapshot.run_state)),
        })
        session.record(rec, full=True)
        session.save_checkpoint()
        return state


def _effects_begun(runtime: Runtime, snapshot: Any, state: RunState) -> int:
    """How many effects the source run had begun at the snapshot: where the fork's numbering goes on.

    A wait is numbered by the effect that created it (``w3``), so a fork that counted from zero
    would give its next question the handle of the one it was forked on, and a retried answer
    would reach it. The count comes from the source's ledger at the snapshot's position; a
    snapshot whose source is gone still never goes below the wait it holds.
    """
    counted = 0
    seq = (snapshot.ledger or {}).get("seq") if isinstance(snapshot.ledger, dict) else None
    if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
        try:
            counted = runtime.state_at(snapshot.run_id, seq).effects
        except AbstractRuntimeError:  # the source run is gone or unreadable: the snapshot decides
            counted = 0
    wait_id = state.waiting.wait_id if state.waiting is not None else None
    waited = int(wait_id[1:]) if isinstance(wait_id, str) and wait_id[1:].isdigit() else 0
    return max(counted, waited)


def fork_snapshot(
    runtime: Runtime,
    snapshot: Any,
    *,
    workflow: Optional[WorkflowSpec] = None,
    allow_drift: bool = False,
    run_id: Optional[str] = None,
    source: Optional[WorkflowSource] = None,
) -> str:
    """Start a new run from the snapshot's state; returns the new run id.

    ``source`` (or ``workflow.source``) is the workflow file the new run records (its id and
    sha256); without one the fork records the id and sha256 of the source run or snapshot.
    """
    try:
        source_ckpt = runtime.run_store.load_checkpoint(snapshot.run_id)
    except Exception:  # a damaged source checkpoint does not stop a fork from the snapshot
        source_ckpt = None
    base = RunState.from_dict(copy.deepcopy(snapshot.run_state))
    keep_workflow = _check_drift(snapshot, source_ckpt.workflow if source_ckpt else None,
                                 _source_of(workflow, source), base.workflow_id, allow_drift)
    if run_id is not None:
        validate_id(run_id, "run id")
    fresh = RunState.new(workflow_id=base.workflow_id, entry_node=base.current_node, actor_id=base.actor_id,
                         vars=base.vars, parent_run_id=base.parent_run_id, run_id=run_id)
    fresh.status, fresh.waiting, fresh.output, fresh.error = base.status, base.waiting, base.output, base.error
    fresh.created_at = fresh.updated_at = runtime.now().isoformat()
    origin = {"run_id": snapshot.run_id, "snapshot_id": snapshot.snapshot_id, "ledger": snapshot.ledger}
    checkpoint = Checkpoint(run=fresh, ledger=LedgerHead(), workflow=keep_workflow, origin=origin,
                            effects=_effects_begun(runtime, snapshot, base))
    with runtime.create_lock(fresh.run_id):
        session = runtime.new_session(checkpoint)
        rec = new_record(fresh, RecordKind.START)
        rec.finish_success({"workflow_id": fresh.workflow_id, "forked_from": origin, "status": fresh.status.value,
                            **runtime.signing_declaration()})
        session.record(rec, full=True)
        session.save_checkpoint()
    return fresh.run_id
