"""``store copy``: move runs between a folder store and a PostgreSQL store."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
from typing import Optional

import typer

from .app import app, settings
from .cmd_exec import JSON_HELP
from .handles import run_id_of

store_app = typer.Typer(help="Work on a whole store.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("copy")
def store_copy(
    ctx: typer.Context,
    runs: Optional[list[str]] = typer.Argument(None, metavar="RUN", help="The runs to copy (default: all)."),
    to: str = typer.Option(..., "--to", metavar="FOLDER|postgresql://...",
                           help="The destination store (created if missing)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Copy runs with their ledgers (byte for byte), snapshots, bookmarks and artifacts, and the
    store's event ids (what `emit --id` delivered or `--keep` keeps: all for a whole store, those
    of the named runs otherwise), so a retried emit stays a no-op there.

    One side is the current store (--store), the other --to: one is a folder and the other a
    PostgreSQL database. Each run is read at one moment, verified, and written whole or not at
    all. Run it again after a failure: what the destination already holds identically is
    skipped. A different run under an existing id is refused (exit 1), a run that does not
    verify too (exit 3); the others are copied either way.

    Prints the runs copied, one per line (--json: {"copied", "already", "count", "snapshots",
    "artifacts", "events"}).
    """
    from abstractruntime.core.errors import InvalidInputError
    from abstractruntime.storage.dsn import is_connection_string
    from abstractruntime.storage.postgres.copy import copy_store
    from abstractruntime.storage.postgres.store import PostgresStore
    from abstractruntime.storage.store import open_store

    s = settings(ctx, json_out)
    source = s.open_store()
    if is_connection_string(to) == isinstance(source, PostgresStore):  # refused before --to is created
        raise InvalidInputError("store copy moves runs between a folder store and a PostgreSQL store")
    destination = open_store(to, create=True)
    try:
        wanted = [run_id_of(r) for r in runs] if runs else None
        report = copy_store(source, destination, runs=wanted)
    finally:
        destination.close()
    if s.json:
        s.emit_json(report.to_dict())
    else:
        s.emit_lines(report.copied)
        s.info(f"copied {len(report.copied)} run(s); {len(report.already)} already there")
