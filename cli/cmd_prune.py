"""``prune``: remove finished runs, keeping a sealed tombstone of each."""

from typing import Optional

import typer

from .app import app, settings
from .cmd_exec import JSON_HELP

STATUSES = ("completed", "failed", "cancelled")


@app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    finished_before: str = typer.Option(..., "--finished-before", metavar="AGE",
                                        help="Prune runs that finished more than AGE ago (30d, 12h, 2w, 1d12h)."),
    status: Optional[list[str]] = typer.Option(None, "--status", metavar="completed|failed|cancelled",
                                               help="Only runs that ended so (repeatable; default: all three)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be pruned; change nothing."),
    include_snapshotted: bool = typer.Option(False, "--include-snapshotted",
                                             help="Also prune runs a snapshot names, with their snapshots."),
    include_bookmarked: bool = typer.Option(False, "--include-bookmarked",
                                            help="Also prune runs that have bookmarks."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Remove finished runs, each after a sealed tombstone of it (run id, workflow id, final
    status, head seq and hash, record count, head signature, when pruned) is appended to the
    store's tombstone log. `verify --all` then reports each pruned run with its head, and a
    pruned run id can never be started again.

    Never pruned: waiting or running runs, subworkflow runs whose parent is still going, runs
    a snapshot names or with bookmarks (unless told), runs being advanced, and runs that do not
    verify. A run's ledger, checkpoint,
    secret values, bookmarks and the closed event records that went only to pruned runs go
    with it; artifacts stay. A prune killed at any point leaves each run or its tombstone; the
    next prune finishes what it began.

    Prints the pruned run ids, one per line, and each kept run with why on stderr (--json:
    {"pruned": [tombstone, ...], "kept": [{"run_id", "reason"}], "finished", "count", "dry_run"}).
    """
    from abstractruntime.core.errors import InvalidInputError
    from abstractruntime.storage.prune import parse_age, prune_store

    s = settings(ctx, json_out)
    age = parse_age(finished_before)
    for value in status or []:
        if value not in STATUSES:
            raise InvalidInputError(f"--status must be one of {', '.join(STATUSES)}, not {value!r}")
    store = s.open_store()
    report = prune_store(store, finished_before=age, statuses=status or STATUSES, dry_run=dry_run,
                         include_snapshotted=include_snapshotted, include_bookmarked=include_bookmarked)
    if s.json:
        s.emit_json(report.to_dict())
        return
    s.emit_lines(str(t["run_id"]) for t in report.pruned)
    for kept in report.kept:
        s.info(f"kept {kept['run_id']}: {kept['reason']}")
    if report.finished:
        s.info(f"finished {len(report.finished)} interrupted prune(s): {', '.join(report.finished)}")
    verb = "would prune" if dry_run else "pruned"
    s.info(f"{verb} {len(report.pruned)} run(s); kept {len(report.kept)}")
