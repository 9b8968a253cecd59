"""``keys``: signing keys — generate a key pair, hand runs over to a new key, adopt runs for a key."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
from typing import Any, Callable, Optional

import typer

from .app import app, settings
from .cmd_exec import JSON_HELP
from .exit_codes import VERIFY_FAILED
from .handles import run_id_of
from .output import Settings

keys_app = typer.Typer(help="Signing keys: generate a key pair, hand runs over to a new key, adopt runs.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def keys_generate(
    ctx: typer.Context,
    directory: str = typer.Argument(..., metavar="DIR", help="Where to write signing.key and signing.pub."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a key pair already there."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Write an ed25519 key pair: DIR/signing.key (private, mode 0600) and DIR/signing.pub.

    Prints the key id (--json: {"key_id", "private_key", "public_key"}). Give the private key
    to the commands that write (--signing-key), the public key to auditors (verify --public-key).
    An existing pair is refused unless --overwrite.
    """
    from abstractruntime.storage.signing import generate_keypair

    s = settings(ctx, json_out)
    pair = generate_keypair(directory, overwrite=overwrite)
    if s.json:
        s.emit_json({"key_id": pair.key_id, "private_key": str(pair.private_key_path),
                     "public_key": str(pair.public_key_path)})
        return
    s.emit_lines([pair.key_id])
    s.info(f"private key {pair.private_key_path} (keep it off the store's machine if you can); "
           f"public key {pair.public_key_path}")


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    runs: Optional[list[str]] = typer.Argument(None, metavar="[RUN]...", help="The runs to hand over."),
    all_runs: bool = typer.Option(False, "--all", help="Every unfinished run the old key is in force for; others "
                                  "are skipped."),
    old: str = typer.Option(..., "--from", metavar="OLD_KEY", help="The private key in force (PEM file)."),
    new: str = typer.Option(..., "--to", metavar="NEW_KEY", help="The new private key (PEM file)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Hand runs over from the key in force to a new key (both private keys are needed once).

    Each run gets a `signing` record naming the new key and its public key, in a batch the old
    key signs, then a batch the new key signs; from then on only the new key continues it
    (--signing-key NEW_KEY), and `verify --public-key OLD.pub` follows the hand-over. A run the
    old key is not in force for is refused (exit 3; skipped with --all). Running it again
    finishes an interrupted rotation and leaves runs already handed over as they are. --all
    leaves finished runs alone (nothing extends them; `verify` follows the key they ended with).

    Prints RUN<TAB>rotated|already|skipped|finished per run (--json: [{"run_id", "result", "message"}]).
    """
    from abstractruntime.storage.signing import Ed25519Signer

    s = settings(ctx, json_out)
    old_signer, new_signer = Ed25519Signer.from_file(old), Ed25519Signer.from_file(new)
    store = s.open_store()
    runtime = store.runtime(signer=old_signer, adopt_unsigned=False)
    _for_each_run(s, store, runs, all_runs, lambda run_id: runtime.rotate_key(run_id, new_signer), "rotated")


@keys_app.command("adopt")
def keys_adopt(
    ctx: typer.Context,
    runs: Optional[list[str]] = typer.Argument(None, metavar="[RUN]...", help="The runs to adopt."),
    all_runs: bool = typer.Option(False, "--all", help="Every unfinished run of the store the key does not sign "
                                  "yet."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Take runs over for the signing key (--signing-key) without advancing them.

    For a run whose head the key did not sign (begun without a key, signatures removed, or
    signed by another key), writes a `signing` record {"adopt": {"key_id", "from_seq"}} in a
    batch the key signs: the key vouches from then on for the records before it that it never
    signed. Check the runs first (`verify`, `verify --expect-head`): adoption blesses whatever
    the ledger holds. A run the key already signs is left as it is; --all leaves finished runs alone.

    Prints RUN<TAB>adopted|already|finished per run (--json: [{"run_id", "result"}]).
    """
    from abstractruntime.core.errors import InvalidInputError

    s = settings(ctx, json_out)
    signer = s.signer()
    if signer is None:
        raise InvalidInputError("keys adopt needs the key that adopts: give --signing-key PEM_FILE")
    store = s.open_store()
    runtime = store.runtime(signer=signer, adopt_unsigned=True)
    _for_each_run(s, store, runs, all_runs, lambda run_id: runtime.adopt(run_id), "adopted")


def _for_each_run(s: Settings, store: Any, runs: Optional[list[str]], all_runs: bool, act: Callable[[str], Any],
                  done: str) -> None:
    from abstractruntime.core.errors import VerificationFailedError

    if all_runs == bool(runs):
        raise typer.BadParameter("give RUN... or --all", param_hint="RUN / --all")
    ids = _every_run(store) if all_runs else [run_id_of(r) for r in runs or []]
    rows: list[dict[str, Any]] = []
    refused = False
    for run_id in ids:
        if all_runs and _finished(store, run_id):
            rows.append({"run_id": run_id, "result": "finished"})  # no writer extends it: nothing to sign
            continue
        before = store.ledger.head(run_id).seq
        try:
            act(run_id)
        except VerificationFailedError as exc:
            if not all_runs:
                refused = True
                typer.echo(f"error: {s.scrub(exc)}", err=True)
            rows.append({"run_id": run_id, "result": "skipped" if all_runs else "refused", "message": str(exc)})
            continue
        changed = store.ledger.head(run_id).seq != before
        rows.append({"run_id": run_id, "result": done if changed else "already"})
    if s.json:
        s.emit_json(rows)
    else:
        s.emit_table(["run_id", "result"], [[r["run_id"], r["result"]] for r in rows])
    if refused:
        raise typer.Exit(VERIFY_FAILED)


def _finished(store: Any, run_id: str) -> bool:
    from abstractruntime.core.errors import AbstractRuntimeError
    from abstractruntime.core.session import is_finished

    try:
        return is_finished(store.runtime(signer=None).get_checkpoint(run_id))
    except AbstractRuntimeError:
        return False  # let the rotation or adoption say what is wrong with it


def _every_run(store: Any) -> list[str]:
    root = getattr(store, "root", None)
    if root is None:  # a PostgreSQL store
        from abstractruntime.storage.postgres.copy import run_ids

        return run_ids(store)
    from abstractruntime.storage.run_files import CHECKPOINT_FILE, LEDGER_FILE, RUNS_DIR
    from abstractruntime.storage.ledger_scan import scan_runs_dir

    found, _strays = scan_runs_dir(root / RUNS_DIR, CHECKPOINT_FILE, LEDGER_FILE)
    return sorted(found)
