"""Snapshots of runs: take one, restore a run to it in place, or fork a new run from it.

A snapshot taken here holds the run's state document as the ledger holds it — secrets as
markers committing to their values, large values as references — and the same state as readers
see it; no real secret. The values its markers need stay in the run's secrets store while the
snapshot exists (a pin, written before the snapshot is returned; :func:`delete_snapshot` lets
go of it).

Restoring never rewrites history: a ``restore`` record carrying the snapshot's whole state is
appended to the ledger (which keeps verifying), and the checkpoint follows it. Forking starts a new
run whose checkpoint (``origin``) and first ledger record name the source run and snapshot, and
which continues the source's effect numbering (so its wait handles never repeat one it was
forked on). Both rebuild the snapshot's state from the run's ledger at the snapshot's position
and use it only when it is the one the snapshot holds (a snapshot file is a cache: an edited one
is refused, exit 3); its secrets are filled from the run's secrets store by commitment — a fork
commits them again under its own key — and a secret whose value is gone is
:class:`SecretMissingError`, never a placeholder. A secret is sealed again where it was, whatever
rules the restoring process knows (a workflow's own ``redact_keys`` included).
Both refuse a workflow whose source sha256 differs from the snapshot's unless
``allow_drift=True``. A fork records the workflow id and sha256 of the ``source`` the caller
located (the CLI: through the operator's registry), never a path from the snapshot file.
"""

from __future__ import annotations

import copy
from .fastclass import dataclass
from typing import Any, Optional, cast

from .canonical import canonical_json, sha256_hex
from .errors import AbstractRuntimeError, InvalidInputError, RunNotFoundError, SecretMissingError, \
    VerificationFailedError, WorkflowDriftError
from .ids import validate_id
from .markers import document_value, run_value
from .models import RecordKind, RunState
from .ports import Checkpoint, LedgerHead
from .redaction import Redactor
from .runtime import Runtime
from .secret_values import KeepingRedactor, KnownSecret, SecretKeeper, commitments_in, fill_secrets
from .session import new_record
from .snapshot import Snapshot, SnapshotStore, require_snapshot
from .spec import WorkflowSource, WorkflowSpec
from .state import RUN_FIELDS, digest_of
from .values import UndefinedValueError, ValueTable


def take_snapshot(
    runtime: Runtime,
    run_id: str,
    *,
    name: str,
    description: Optional[str] = None,
    tags: Optional[list[str]] = None,
    at: Optional[int] = None,
    lock_wait: float = 0.0,
) -> Snapshot:
    """A :class:`~abstractruntime.core.snapshot.Snapshot` of the run now, or as it was right
    after ledger record ``at`` (rebuilt from the ledger), so any past step can be restored or forked.

    The snapshot holds no real secret; the values it needs are pinned in the run's secrets store
    (under the run's lock, waiting up to ``lock_wait`` seconds for it) before it is returned:
    :class:`SecretMissingError` when some are gone already (a finished run's values are dropped),
    since such a snapshot could never be restored. Save it in a snapshot store; delete it with
    :func:`delete_snapshot` to let go of the values.
    """
    found = runtime.state_document(run_id, at)
    if found is None:
        # Records of an older format hold no state document: the live state, as format 1 kept it.
        checkpoint = runtime.get_checkpoint(run_id) if at is None else runtime.state_at(run_id, at)
        return Snapshot.from_run(
            run=checkpoint.run, name=name, description=description, tags=tags,
            workflow=copy.deepcopy(checkpoint.workflow), ledger=checkpoint.ledger.to_dict(), clock=runtime.now)
    shown = found.shown()
    snapshot = Snapshot.from_state(state=found.document, run=shown.run, name=name, description=description,
                                   tags=tags, workflow=copy.deepcopy(shown.workflow), ledger=found.ledger.to_dict(),
                                   clock=runtime.now)
    commitments = commitments_in(document_value(found.document), found.table)  # (vars: names, literally)
    if commitments:
        runtime.pin_secrets(run_id, snapshot.snapshot_id, commitments, lock_wait=lock_wait)
    return snapshot


def delete_snapshot(runtime: Runtime, snapshots: SnapshotStore, snapshot_id: str, *, lock_wait: float = 0.0) -> bool:
    """Delete a snapshot and let go of the secret values it pinned (dropped at once when its run
    has finished); ``False`` when there was none. The pin goes after the snapshot: a crash in
    between leaves a pin whose snapshot is gone, which the run's next release drops."""
    snapshot = snapshots.load(snapshot_id)
    if snapshot is None:
        return False
    snapshots.delete(snapshot_id)
    if snapshot.state is not None:
        runtime.unpin_secrets(snapshot.run_id, snapshot_id, lock_wait=lock_wait)
    return True


@dataclass
class _SnapshotState:
    """A snapshot's state as the restore uses it: the document, the values it refers to, the
    secrets of its run, and whether the run's ledger proved it."""

    snapshot: Any
    document: dict[str, Any]
    table: ValueTable
    keeper: SecretKeeper
    proven: bool

    @property
    def digest(self) -> str:
        return digest_of(self.document)

    def live_run(self) -> tuple[RunState, list[KnownSecret]]:
        """The run part with its real values, and where its secrets sit (paths as records name them)."""
        run_doc = self.document["run"]
        snap_id, run_id = self.snapshot.snapshot_id, self.snapshot.run_id
        gone = (f"snapshot {snap_id}: run {run_id} is gone, and with it values its state needs (kept in the run's "
                "secrets store and ledger) — they are missing; nothing was written")
        try:
            live, known = fill_secrets(run_value(run_doc), self.table, self.keeper)
        except SecretMissingError as exc:
            if not self.proven:
                raise SecretMissingError(gone, snapshot_id=snap_id) from None
            raise SecretMissingError(
                f"snapshot {snap_id}: {exc.message.rstrip('.')} (run {run_id}'s secret values were deleted, or dropped "
                "before the snapshot pinned them); nothing was written", snapshot_id=snap_id) from None
        except (UndefinedValueError, AbstractRuntimeError) as exc:  # a value the ledger does not define
            if not self.proven:
                raise VerificationFailedError(gone, snapshot_id=snap_id) from None
            raise VerificationFailedError(
                f"snapshot {snap_id}: its state refers to stored values run {run_id}'s ledger does not hold ({exc}); "
                "nothing was written", snapshot_id=snap_id) from None
        run = RunState.from_dict({field: live.get(field) for field in RUN_FIELDS})
        paths: list[KnownSecret] = []
        for path, real, shown in known:
            # Records name a variable by its name, and every other field by its own name.
            where = path[1:] if path and path[0] == "vars" else path
            if where:
                paths.append((where, real, shown))
        return run, paths


def _snapshot_state(runtime: Runtime, snapshot: Any, *, run_may_be_gone: bool) -> _SnapshotState:
    """The snapshot's state proven against its run's ledger (refused when it is not the state the
    ledger holds at the snapshot's position); when the run is gone, a fork may take the file's."""
    where = f"snapshot {snapshot.snapshot_id}"
    position = snapshot.ledger if isinstance(snapshot.ledger, dict) else {}
    seq = position.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise VerificationFailedError(f"{where} names no ledger position of run {snapshot.run_id}, so its state "
                                      "cannot be proven; nothing was written", snapshot_id=snapshot.snapshot_id)
    try:
        found = runtime.state_document(snapshot.run_id, seq)
    except RunNotFoundError:
        if not run_may_be_gone:
            raise
        return _SnapshotState(snapshot, copy.deepcopy(snapshot.state), ValueTable(), SecretKeeper(), proven=False)
    except InvalidInputError:
        raise VerificationFailedError(
            f"{where} names ledger seq {seq} of run {snapshot.run_id}, which its ledger does not have (truncated, "
            "or the snapshot was edited); nothing was written", snapshot_id=snapshot.snapshot_id) from None
    try:
        same = found is not None and found.ledger.head_hash == position.get("head_hash") \
            and found.digest() == digest_of(snapshot.state)
    except (TypeError, ValueError):
        same = False
    if not same:
        raise VerificationFailedError(
            f"{where}: its state is not the state run {snapshot.run_id}'s ledger holds at seq {seq} (the snapshot "
            "file was edited, or names another position); nothing was written", snapshot_id=snapshot.snapshot_id)
    assert found is not None
    keeper = SecretKeeper.from_entries(runtime.ledger_store.get_secrets(snapshot.run_id))
    return _SnapshotState(snapshot, found.document, found.table, keeper, proven=True)


def _keeping(runtime: Runtime, known: list[KnownSecret]) -> Optional[Redactor]:
    return cast(Redactor, KeepingRedactor(runtime.redactor, known)) if known else None


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
    Raises :class:`VerificationFailedError` when the snapshot's state is not the one its run's
    ledger holds at its position, :class:`SecretMissingError` when a value it needs is gone;
    nothing is written then. Returns the run's state (real values).
    """
    with runtime.run_store.lock(snapshot.run_id, wait=lock_wait):
        known: list[KnownSecret] = []
        if snapshot.state is None:  # format 1: the state as it was kept
            state, digest = RunState.from_dict(copy.deepcopy(snapshot.run_state)), \
                sha256_hex(canonical_json(snapshot.run_state))
        else:
            proven = _snapshot_state(runtime, snapshot, run_may_be_gone=False)
            (state, known), digest = proven.live_run(), proven.digest
        session = runtime.open_session(snapshot.run_id, redactor=_keeping(runtime, known))
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
            "state_sha256": digest,
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
    The state is proven against the source run's ledger, and its secrets are filled from the
    source run's secrets store and committed again under the fork's own key; when the source
    run is gone, the snapshot's state is taken as it is (its secrets are gone with the run:
    :class:`SecretMissingError` if it has any). The start record says whether it was proven.
    """
    try:
        source_ckpt = runtime.run_store.load_checkpoint(snapshot.run_id)
    except Exception:  # a damaged source checkpoint does not stop a fork from the snapshot
        source_ckpt = None
    known: list[KnownSecret] = []
    proven: Optional[_SnapshotState] = None
    if snapshot.state is None:
        base = RunState.from_dict(copy.deepcopy(snapshot.run_state))
    else:
        proven = _snapshot_state(runtime, snapshot, run_may_be_gone=True)
        base, known = proven.live_run()
    keep_workflow = _check_drift(snapshot, source_ckpt.workflow if source_ckpt else None,
                                 _source_of(workflow, source), base.workflow_id, allow_drift)
    if run_id is not None:
        validate_id(run_id, "run id")
    fresh = RunState.new(workflow_id=base.workflow_id, entry_node=base.current_node, actor_id=base.actor_id,
                         vars=base.vars, parent_run_id=base.parent_run_id, run_id=run_id)
    fresh.status, fresh.waiting, fresh.output, fresh.error = base.status, base.waiting, base.output, base.error
    fresh.created_at = fresh.updated_at = runtime.now().isoformat()
    origin = {"run_id": snapshot.run_id, "snapshot_id": snapshot.snapshot_id, "ledger": snapshot.ledger}
    effects = _effects_begun(runtime, snapshot, base) if proven is None or not proven.proven \
        else max(int(proven.document["kernel"].get("effects") or 0), _waited(base))
    checkpoint = Checkpoint(run=fresh, ledger=LedgerHead(), workflow=keep_workflow, origin=origin, effects=effects)
    with runtime.create_lock(fresh.run_id):
        session = runtime.new_session(checkpoint, redactor=_keeping(runtime, known))
        rec = new_record(fresh, RecordKind.START)
        result: dict[str, Any] = {"workflow_id": fresh.workflow_id, "forked_from": origin,
                                  "status": fresh.status.value, **runtime.signing_declaration()}
        if proven is not None:
            result["state_proven"] = proven.proven
        rec.finish_success(result)
        session.record(rec, full=True)
        session.save_checkpoint()
    return fresh.run_id


def _waited(state: RunState) -> int:
    """The position of the wait a state holds (``w3`` → 3), 0 when none."""
    wait_id = state.waiting.wait_id if state.waiting is not None else None
    return int(wait_id[1:]) if isinstance(wait_id, str) and wait_id[1:].isdigit() else 0


__all__ = ["delete_snapshot", "fork_snapshot", "require_snapshot", "restore_snapshot", "take_snapshot"]
