"""``snapshot`` and ``bookmark`` commands."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
from typing import Optional

import typer

from . import workflows
from .app import app, describe_state, settings, shown_state
from .cmd_exec import JSON_HELP, WaitOpt
from .handles import run_id_of

snapshot_app = typer.Typer(help="Save a run's state; restore it in place or fork a new run from it.",
                           no_args_is_help=True)
bookmark_app = typer.Typer(help="Name positions in a run's ledger (checked by verify).", no_args_is_help=True)
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(bookmark_app, name="bookmark")


@snapshot_app.command("create")
def snapshot_create(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN"),
    name: str = typer.Option(..., "--name", metavar="NAME", help="A name for the snapshot."),
    description: Optional[str] = typer.Option(None, "--description", metavar="TEXT"),
    tag: list[str] = typer.Option([], "--tag", metavar="TAG", help="A tag; repeatable."),
    at: Optional[str] = typer.Option(None, "--at", metavar="SEQ|BOOKMARK",
                                     help="Snapshot the run as it was right after this ledger record (or bookmark)."),
    wait: float = WaitOpt,
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Snapshot a run as it is now (or at a past position); prints the snapshot id.

    Restore or fork the snapshot to go back to, or branch from, that step. The snapshot holds no
    real secret: the run keeps the values it needs while the snapshot exists (exit 3 when they
    are gone already: a finished run's values are dropped)."""
    from abstractruntime.core.restore import take_snapshot

    from .cmd_inspect import position_of

    s = settings(ctx, json_out)
    run_id = run_id_of(run_id)
    store = s.open_store()
    seq = position_of(store, run_id, at) if at is not None else None
    snapshot = take_snapshot(store.runtime(), run_id, name=name, description=description, tags=list(tag), at=seq,
                             lock_wait=wait)
    store.snapshots.save(snapshot)
    if s.json:
        s.emit_json(snapshot.to_dict())
    else:
        s.emit_lines([snapshot.snapshot_id])
        s.info(f"snapshot {snapshot.snapshot_id} of run {run_id} ({snapshot.run_state.get('status')})")


@snapshot_app.command("list")
def snapshot_list(
    ctx: typer.Context,
    run_id: Optional[str] = typer.Option(None, "--run", metavar="RUN", help="Only snapshots of this run."),
    tag: Optional[str] = typer.Option(None, "--tag", metavar="TAG", help="Only snapshots with this tag."),
    query: Optional[str] = typer.Option(None, "--query", metavar="TEXT", help="Text in the name or description."),
    limit: int = typer.Option(100, "--limit", min=0),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List snapshots, newest first (piped: snapshot_id, run_id, name, run status, created_at, tags)."""
    s = settings(ctx, json_out)
    run_id = run_id_of(run_id) if run_id else None
    store = s.open_store()
    snaps = store.snapshots.list(run_id=run_id, tag=tag, query=query, limit=limit)
    for path in getattr(store.snapshots, "last_skipped", ()):
        s.info(f"warning: skipped unreadable snapshot file {path}")
    if s.json:
        s.emit_json([x.to_dict() for x in snaps])
        return
    s.emit_table(["snapshot_id", "run_id", "name", "status", "created_at", "tags"],
                 [[x.snapshot_id, x.run_id, x.name, x.run_state.get("status"), x.created_at, ",".join(x.tags)]
                  for x in snaps])


@snapshot_app.command("show")
def snapshot_show(
    ctx: typer.Context,
    snapshot_id: str = typer.Argument(..., metavar="SNAPSHOT"),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one snapshot."""
    from abstractruntime.storage.snapshots import require_snapshot

    s = settings(ctx, json_out)
    snap = require_snapshot(s.open_store().snapshots, snapshot_id)
    if s.json:
        s.emit_json(snap.to_dict())
        return
    state = snap.run_state
    s.emit_fields([
        ("snapshot_id", snap.snapshot_id), ("run_id", snap.run_id), ("name", snap.name),
        ("description", snap.description), ("tags", ", ".join(snap.tags)), ("created_at", snap.created_at),
        ("status", state.get("status")), ("current_node", state.get("current_node")),
        ("ledger_seq", (snap.ledger or {}).get("seq")), ("ledger_head", (snap.ledger or {}).get("head_hash")),
        ("workflow_sha256", (snap.workflow or {}).get("sha256")), ("vars", state.get("vars")),
    ])


@snapshot_app.command("restore")
def snapshot_restore(
    ctx: typer.Context,
    snapshot_id: str = typer.Argument(..., metavar="SNAPSHOT"),
    fork: bool = typer.Option(False, "--fork", help="Start a new run from the snapshot instead of rewinding its run."),
    new_run_id: Optional[str] = typer.Option(None, "--run-id", metavar="ID", help="With --fork: the new run's id."),
    workflow_file: Optional[str] = typer.Option(
        None, "--workflow", metavar="FILE",
        help="The workflow file to check drift against and record [default with --fork: the registered file "
             "for the snapshot's workflow id and sha256; see --workflows]."),
    attr: Optional[str] = typer.Option(None, "--attr", metavar="NAME", hidden=True,
                                       help="Accepted for compatibility; the file is hashed, not imported."),
    allow_drift: bool = typer.Option(False, "--allow-drift", help="Accept a workflow that changed since the snapshot."),
    wait: float = WaitOpt,
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Put a run back to a snapshot (a `restore` record is appended; history is kept), or --fork it.

    Prints the run id (the new one with --fork). A fork records the workflow id and sha256 of
    the file the operator's registry (or --workflow) holds for the snapshot's workflow, never a
    file the snapshot names; no workflow code is imported.
    """
    from abstractruntime.core.restore import fork_snapshot, restore_snapshot
    from abstractruntime.storage.snapshots import require_snapshot

    s = settings(ctx, json_out)
    store = s.open_store()
    snap = require_snapshot(store.snapshots, snapshot_id)
    source = None
    if fork or workflow_file:
        source = workflows.source_for_snapshot(s, store, snap, workflow_file=workflow_file, allow_drift=allow_drift)
    runtime = store.runtime()
    if fork:
        rid = fork_snapshot(runtime, snap, source=source, allow_drift=allow_drift, run_id=new_run_id)
        state = runtime.shown_checkpoint(rid).run
    else:
        state = shown_state(s, restore_snapshot(runtime, snap, source=source, allow_drift=allow_drift,
                                                lock_wait=wait))
    if s.json:
        s.emit_json(state.to_dict())
    else:
        s.emit_lines([state.run_id])
        s.info(("forked" if fork else "restored") + f" from snapshot {snapshot_id}:")
        describe_state(s, state)


@snapshot_app.command("delete")
def snapshot_delete(
    ctx: typer.Context,
    snapshot_id: str = typer.Argument(..., metavar="SNAPSHOT"),
    wait: float = WaitOpt,
) -> None:
    """Delete a snapshot (exit 4 if there is none with this id).

    The secret values it kept in its run's secrets store go too, once the run has finished."""
    from abstractruntime.core.errors import SnapshotNotFoundError
    from abstractruntime.core.restore import delete_snapshot

    s = settings(ctx)
    store = s.open_store()
    if not delete_snapshot(store.runtime(), store.snapshots, snapshot_id, lock_wait=wait):
        raise SnapshotNotFoundError(snapshot_id)
    s.info(f"deleted snapshot {snapshot_id}")


@bookmark_app.command("add")
def bookmark_add(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN"),
    name: str = typer.Argument(..., metavar="NAME"),
    seq: Optional[int] = typer.Option(None, "--seq", min=1, help="Ledger position [default: the current head]."),
    note: Optional[str] = typer.Option(None, "--note", metavar="TEXT"),
    replace: bool = typer.Option(False, "--replace", help="Move an existing bookmark of this name."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Bookmark a ledger position (it records the record hash there; verify checks it)."""
    s = settings(ctx, json_out)
    run_id = run_id_of(run_id)
    store = s.open_store()
    doc = store.bookmarks.add(run_id, name, seq=seq, note=note, replace=replace).to_dict()
    if s.json:
        s.emit_json(doc)
    else:
        s.emit_lines([name])
        s.info(f"bookmark {name!r} on run {run_id} at seq {doc.get('seq')}")


@bookmark_app.command("list")
def bookmark_list(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN"),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List a run's bookmarks (piped: name, seq, record_hash, created_at, note)."""
    s = settings(ctx, json_out)
    run_id = run_id_of(run_id)
    store = s.open_store()
    store.runtime().get_checkpoint(run_id)
    docs = [m.to_dict() for m in store.bookmarks.list(run_id)]
    if s.json:
        s.emit_json(docs)
        return
    s.emit_table(["name", "seq", "record_hash", "created_at", "note"],
                 [[d.get("name"), d.get("seq"), d.get("record_hash"), d.get("created_at"), d.get("note")] for d in docs])


@bookmark_app.command("remove")
def bookmark_remove(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., metavar="RUN"),
    name: str = typer.Argument(..., metavar="NAME"),
) -> None:
    """Remove a bookmark (exit 4 if the run has none with this name)."""
    s = settings(ctx)
    run_id = run_id_of(run_id)
    store = s.open_store()
    store.runtime().get_checkpoint(run_id)
    store.bookmarks.remove(run_id, name)
    s.info(f"removed bookmark {name!r} from run {run_id}")
