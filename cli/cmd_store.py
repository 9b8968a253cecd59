"""``store copy|export|import``: move runs between stores, or through an archive file."""

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


@store_app.command("export")
def store_export(
    ctx: typer.Context,
    runs: Optional[list[str]] = typer.Argument(None, metavar="[RUN]...",
                                               help="The runs to export (default: --finished-before, else all)."),
    output: str = typer.Option(..., "-o", "--output", metavar="FILE.tar.gz", help="The archive to write."),
    finished_before: Optional[str] = typer.Option(None, "--finished-before", metavar="AGE",
                                                  help="Export the runs that finished more than AGE ago (30d, 12h)."),
    secrets: bool = typer.Option(False, "--secrets", help="Also export the secret values runs still keep."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Write runs into one self-verifying archive (a .tar.gz): their ledgers byte for byte,
    checkpoints, bookmarks, snapshots, artifacts and event ids, led by manifest.json (each
    run's head and record count, every file's size and SHA-256). Secret values only with
    --secrets. Each run is read at one moment and verified first (a run that does not verify:
    exit 3, no archive written). Check it with `verify --archive FILE`, restore it with
    `store import FILE`.

    Prints the runs exported, one per line (--json: {"path", "runs": {run_id: {"head_seq",
    "head_hash", "count", "status", "workflow_id"}}, "count", "files", "snapshots", "artifacts",
    "secrets"}).
    """
    from abstractruntime.core.errors import InvalidInputError
    from abstractruntime.storage.archive import check_output_path, export_archive
    from abstractruntime.storage.prune import parse_age

    s = settings(ctx, json_out)
    if runs and finished_before:
        raise InvalidInputError("give RUN... or --finished-before, not both")
    target = check_output_path(output)
    age = parse_age(finished_before) if finished_before else None
    store = s.open_store()
    report = export_archive(store, target, runs=[run_id_of(r) for r in runs] if runs else None,
                            finished_before=age, secrets=secrets)
    if s.json:
        s.emit_json(report.to_dict())
    else:
        s.emit_lines(report.runs)
        s.info(f"exported {len(report.runs)} run(s) to {report.path}")


@store_app.command("import")
def store_import(
    ctx: typer.Context,
    archive: str = typer.Argument(..., metavar="FILE.tar.gz", help="An archive written by `store export`."),
    public_key: list[str] = typer.Option([], "--public-key", metavar="PEM_FILE|DIR",
                                         help="Require every run's head signed by this key (as for verify)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Restore an archive into the store (--store: a folder or postgresql://...), with
    identical head hashes, by the same transfer path as `store copy`. The archive is verified
    first, offline (exit 3 and nothing written when it does not verify). Runs the store already
    holds identically are skipped; a different run under an archived id is refused (exit 1).

    Prints the runs imported, one per line (--json: as `store export`, with "copied" and
    "already").
    """
    from abstractruntime.storage.archive import import_archive

    s = settings(ctx, json_out)
    keys = None
    if public_key:
        from abstractruntime.storage.signing import load_keyring

        keys = list(load_keyring(public_key).values())
    store = s.open_store(create=True)
    report = import_archive(archive, store, public_key=keys)
    if s.json:
        s.emit_json(report.to_dict())
    else:
        s.emit_lines(report.copied)
        s.info(f"imported {len(report.copied)} run(s); {len(report.already)} already there")
