"""Moving runs between a folder store and PostgreSQL, byte for byte.

:func:`export_run` writes a run of a PostgreSQL store into a folder store (``runs/<id>/``:
``ledger.jsonl`` with the exact lines, ``run.json``, ``bookmarks.json`` and ``secrets.jsonl``
when there are any), where ``abstractruntime verify`` checks it with no database. :func:`import_run` does
the reverse. The lines are never re-serialised, so every ``record_hash`` is the same on both
sides.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...core.canonical import canonical_json
from ...core.errors import RunExistsError, RunNotFoundError
from ...core.ids import validate_id
from ...core.ports import LedgerHead
from ..bookmarks import BOOKMARKS_FILE, read_bookmarks
from ..fsio import atomic_write_bytes, dumps_compact, ensure_dir, read_bytes
from ..json_files import CHECKPOINT_FILE, LEDGER_FILE, RUNS_DIR, SECRETS_FILE, read_checkpoint
from ..ledger_file import parse_ledger


def export_run(store: Any, run_id: str, root: str | os.PathLike[str], *, durable: bool = True) -> Path:
    """Write run ``run_id`` of PostgreSQL ``store`` into the folder store at ``root``; returns its directory.

    Refuses (:class:`RunExistsError`) when the folder already holds the run. ``durable=False``
    skips the fsyncs (a throwaway copy).
    """
    validate_id(run_id, "run id")
    lines = store.ledger.lines(run_id)
    checkpoint = store.runs.load_checkpoint(run_id)
    if not lines and checkpoint is None:
        raise RunNotFoundError(run_id)
    ensure_dir(Path(root), durable=durable)
    ensure_dir(Path(root) / RUNS_DIR, durable=durable)
    run_dir = Path(root) / RUNS_DIR / run_id
    if run_dir.exists():
        raise RunExistsError(f"Run {run_id} already exists in {root}", run_id=run_id)
    ensure_dir(run_dir, durable=durable)
    atomic_write_bytes(run_dir / LEDGER_FILE, b"".join(line + b"\n" for line in lines), durable=durable)
    secrets = store.ledger.get_secrets(run_id)
    if secrets:
        atomic_write_bytes(run_dir / SECRETS_FILE, b"".join(canonical_json(e) + b"\n" for e in secrets),
                           durable=durable)
    if checkpoint is not None and store.bookmarks.list(run_id):
        atomic_write_bytes(run_dir / BOOKMARKS_FILE, dumps_compact(store.bookmarks.to_file_document(run_id)) + b"\n",
                           durable=durable)
    if checkpoint is not None:
        # Last: a folder run without run.json is rebuilt from its ledger, never the reverse.
        atomic_write_bytes(run_dir / CHECKPOINT_FILE, canonical_json(checkpoint.to_dict()) + b"\n",
                           durable=durable)
    return run_dir


def import_run(store: Any, run_id: str, root: str | os.PathLike[str]) -> LedgerHead:
    """Copy run ``run_id`` of the folder store at ``root`` into PostgreSQL ``store``; returns its head.

    The folder's ledger must verify (its chain is checked as it is read). Everything goes in
    with one transaction, the lines with a conditional append on an empty ledger: a run
    already in the database is :class:`RunExistsError`, and any failure writes nothing.
    """
    validate_id(run_id, "run id")
    run_dir = Path(root) / RUNS_DIR / run_id
    try:
        data = read_bytes(run_dir / LEDGER_FILE)
    except FileNotFoundError:
        raise RunNotFoundError(run_id) from None
    parsed = parse_ledger(data, path=str(run_dir / LEDGER_FILE), run_id=run_id)
    lines = [raw for raw in data[:parsed.valid_end].split(b"\n")[:-1]]
    checkpoint_path = run_dir / CHECKPOINT_FILE
    checkpoint = read_checkpoint(checkpoint_path) if checkpoint_path.exists() else None
    bookmarks = read_bookmarks(run_dir / BOOKMARKS_FILE)
    secrets: list[dict[str, Any]] = []
    if (run_dir / SECRETS_FILE).exists():
        from ..json_files import JsonlLedgerStore

        secrets = JsonlLedgerStore(root, durability="none").get_secrets(run_id)
    head = LedgerHead()
    # One transaction (the stores' own become savepoints in it): all of the run, or nothing.
    with store.db.connection() as conn, conn.transaction():
        if store.runs.exists(run_id):
            raise RunExistsError(f"Run {run_id} already exists in {store.describe()}", run_id=run_id)
        store.ledger.put_secrets(run_id, secrets)
        if lines:
            head = store.ledger.append_lines(run_id, parsed.records, lines, expect=LedgerHead())
        if checkpoint is not None:
            store.runs.save_checkpoint(checkpoint)
            if bookmarks:
                store.bookmarks.put(run_id, list(bookmarks.values()))
    return head


__all__ = ["export_run", "import_run"]
