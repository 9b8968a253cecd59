"""Moving one run between a folder store and PostgreSQL, byte for byte: the one transfer path.

A run moves in three steps, each its own function so other carriers (archives) reuse them:

1. :func:`read_run` takes a :class:`RunCopy` — the ledger lines exactly as sealed, the
   checkpoint, the kept secret values and the bookmarks — *as the store held them at one
   moment*: on PostgreSQL in one ``REPEATABLE READ`` snapshot; in a folder by reading the
   checkpoint before and after the other files and starting again when it changed (a writer
   appends its records, and their secret values, before it writes the checkpoint that
   covers them and prunes those values). So the checkpoint never claims a position the
   copied ledger lacks, and no secret value the copied records need is missing.
2. :func:`write_folder_run` lays it out as a folder store's ``runs/<id>/`` (``ledger.jsonl``
   and sealed ``segments/`` with the exact lines, ``secrets.jsonl``, ``bookmarks.json``, ``run.json`` last), and
   :func:`check_copy` verifies that layout with the offline verifier
   (:mod:`abstractruntime.storage.verify`): a tampered run is refused before it is written
   anywhere.
3. :func:`transfer_run` writes it, all or nothing: into PostgreSQL in one transaction (the
   lines with an append conditional on an empty ledger); into a folder by verifying a
   staging directory and renaming it into ``runs/`` in one step. A run already at the
   destination with the same ledger head is left as it is (``"already"``); a different run
   under the same id is refused (:class:`RunExistsError`), and so is a run under an id the
   destination pruned (:class:`RunPrunedError`: its tombstone keeps the id).

The lines are never re-serialised, so every ``record_hash`` is the same on both sides.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from ...core.canonical import canonical_json
from ...core.errors import (
    CorruptRecordError,
    LedgerConflictError,
    RunExistsError,
    RunNotFoundError,
    RunPrunedError,
    StorageError,
    VerificationFailedError,
)
from ...core.ids import validate_id
from ...core.ports import CHECKPOINT_FORMAT, LedgerHead, StoredCheckpoint
from ..bookmarks import BOOKMARKS_FILE, BOOKMARKS_FORMAT, Bookmark
from ..fsio import atomic_write_bytes, dumps_compact, ensure_dir, fsync_dir, loads_strict, read_bytes, writer_gone
from ..run_files import CHECKPOINT_FILE, LEDGER_FILE, RUNS_DIR, SECRETS_FILE
from ..ledger_parse import parse_ledger
from ..segments import SEGMENT_KIND, SEGMENTS_DIR, has_ledger, list_parts, read_range, segment_name
from ..tombstones import PRUNED_DIR
from .db import parse_document

# A folder run read while a writer keeps checkpointing it is read again, this many times at most.
READ_ATTEMPTS = 50
STAGING_PREFIX = ".copy-"
_STAGING_RE = re.compile(r"\.copy-([0-9]+)-[0-9a-f]{12}")


@dataclass
class RunCopy:
    """One run as a store held it at one moment: everything a copy carries."""

    run_id: str
    lines: list[bytes] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Optional[StoredCheckpoint] = None
    secrets: list[dict[str, Any]] = field(default_factory=list)
    bookmarks: list[Bookmark] = field(default_factory=list)
    source: str = ""
    # Why the lines could not even be parsed (a damaged source); the copy is then refused.
    damaged: Optional[str] = None

    @property
    def head(self) -> LedgerHead:
        """The last record's seq and hash (empty when the run has no records)."""
        if not self.records:
            return LedgerHead()
        last = self.records[-1]
        return LedgerHead(int(last["seq"]), last.get("record_hash"))


def _is_database(store: Any) -> bool:
    return getattr(store, "db", None) is not None


def _folder_root(store: Any) -> Path:
    return Path(store) if isinstance(store, (str, os.PathLike)) else Path(store.root)


def where(store: Any) -> str:
    """A store's name for messages (a database's with its password redacted)."""
    return store.describe() if _is_database(store) else str(_folder_root(store))


# -- 1. reading ----------------------------------------------------------------------------


def read_run(store: Any, run_id: str) -> RunCopy:
    """Run ``run_id`` of ``store`` (a PostgreSQL store, a folder store or its path) at one moment.

    The chain is not checked here (:func:`check_copy` does, with the offline verifier);
    :class:`RunNotFoundError` when the store has no such run.
    """
    validate_id(run_id, "run id")
    copy = _read_database_run(store, run_id) if _is_database(store) else _read_folder_run(_folder_root(store), run_id)
    if not copy.lines and copy.checkpoint is None:
        raise RunNotFoundError(run_id)
    return copy


def _read_database_run(store: Any, run_id: str) -> RunCopy:
    db = store.db
    with db.connection() as conn, conn.transaction():
        # Every read below sees the database as it was at the first one.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        lines = store.ledger.lines(run_id)
        rows = store.ledger.row_problems(run_id)  # keys and columns that are not what their lines say
        checkpoint = store.runs.load_checkpoint(run_id)
        secrets = store.ledger.get_secrets(run_id)
        bookmarks = store.bookmarks.list(run_id)
    label = f"ledger of run {run_id} in {store.describe()}"
    if rows:
        return RunCopy(run_id, lines, [], checkpoint, secrets, bookmarks, source=store.describe(),
                       damaged=f"ledger_row_mismatch: {rows[0]}")
    try:
        records = parse_ledger(b"".join(line + b"\n" for line in lines), path=label, verify_chain=False).records
    except CorruptRecordError as exc:  # laid out as it is all the same: verify reports it
        return RunCopy(run_id, lines, [], checkpoint, secrets, bookmarks, source=store.describe(), damaged=str(exc))
    return RunCopy(run_id, lines, records, checkpoint, secrets, bookmarks, source=store.describe())


def _read_optional(path: Path) -> Optional[bytes]:
    try:
        return read_bytes(path)
    except FileNotFoundError:
        return None


def _read_folder_run(root: Path, run_id: str) -> RunCopy:
    run_dir = root / RUNS_DIR / run_id
    for _ in range(READ_ATTEMPTS):
        before = _read_optional(run_dir / CHECKPOINT_FILE)
        marks = _read_optional(run_dir / BOOKMARKS_FILE)
        ledger = read_range(list_parts(run_dir)) if has_ledger(run_dir) else None
        kept = _read_optional(run_dir / SECRETS_FILE)
        if _read_optional(run_dir / CHECKPOINT_FILE) == before:
            break
    else:
        raise StorageError(f"run {run_id} in {root} kept changing while it was read ({READ_ATTEMPTS} tries); "
                           "copy it again once its writer pauses", run_id=run_id)
    path = run_dir / LEDGER_FILE
    parsed = parse_ledger(ledger or b"", path=str(path), run_id=run_id, verify_chain=False)
    lines = (ledger or b"")[:parsed.valid_end].split(b"\n")[:-1]  # a torn tail (a write in progress) is left out
    checkpoint = None if before is None else _checkpoint(before, run_dir / CHECKPOINT_FILE, run_id)
    return RunCopy(run_id, lines, parsed.records, checkpoint, _secrets(kept), _bookmarks(marks, run_dir),
                   source=str(root))


def _checkpoint(data: bytes, path: Path, run_id: str) -> StoredCheckpoint:
    doc = parse_document(data, str(path), kind="checkpoint", newest=CHECKPOINT_FORMAT)
    try:
        checkpoint = StoredCheckpoint.from_dict(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptRecordError(f"checkpoint is missing or has a bad field ({exc})", path=str(path)) from None
    if checkpoint.run_id != run_id:
        raise CorruptRecordError(f"checkpoint describes run {checkpoint.run_id!r}", path=str(path))
    return checkpoint


def _secrets(data: Optional[bytes]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for raw in (data or b"").split(b"\n"):
        if not raw.strip():
            continue
        try:
            doc = loads_strict(raw)
        except (ValueError, UnicodeDecodeError):
            continue  # torn by a crash before its records were written: never needed
        if isinstance(doc, dict):
            entries.append(doc)
    return entries


def _bookmarks(data: Optional[bytes], run_dir: Path) -> list[Bookmark]:
    if data is None:
        return []
    path = str(run_dir / BOOKMARKS_FILE)
    doc = parse_document(data, path, kind="bookmarks file", newest=BOOKMARKS_FORMAT)
    entries = doc.get("bookmarks")
    if not isinstance(entries, dict):
        raise CorruptRecordError("bookmarks file has no 'bookmarks' object", path=path)
    found = [Bookmark.from_dict(name, value, path=path) for name, value in entries.items()]
    return sorted(found, key=lambda b: (b.seq, b.name))


# -- 2. the folder layout and its verification -----------------------------------------------


def write_folder_run(copy: RunCopy, root: str | os.PathLike[str], *, durable: bool = True) -> Path:
    """Lay ``copy`` out as ``<root>/runs/<id>/``; returns that directory (:class:`RunExistsError`
    when it exists). ``durable=False`` skips the fsyncs (a throwaway layout)."""
    runs = ensure_dir(ensure_dir(Path(root), durable=durable) / RUNS_DIR, durable=durable)
    run_dir = runs / copy.run_id
    if run_dir.exists():
        raise RunExistsError(f"Run {copy.run_id} already exists in {root}", run_id=copy.run_id)
    ensure_dir(run_dir, durable=durable)
    _write_ledger(copy, run_dir, durable=durable)
    if copy.secrets:
        atomic_write_bytes(run_dir / SECRETS_FILE, b"".join(canonical_json(e) + b"\n" for e in copy.secrets),
                           durable=durable)
    if copy.checkpoint is not None and copy.bookmarks:
        doc = {"format": BOOKMARKS_FORMAT, "bookmarks": {b.name: b.to_dict() for b in
                                                         sorted(copy.bookmarks, key=lambda b: b.name)}}
        atomic_write_bytes(run_dir / BOOKMARKS_FILE, dumps_compact(doc) + b"\n", durable=durable)
    if copy.checkpoint is not None:
        # Last: a folder run without run.json is rebuilt from its ledger, never the reverse.
        atomic_write_bytes(run_dir / CHECKPOINT_FILE, canonical_json(copy.checkpoint.to_dict()) + b"\n",
                           durable=durable)
    return run_dir


def _write_ledger(copy: RunCopy, run_dir: Path, *, durable: bool) -> None:
    """The lines as sealed segments (each up to the ``segment`` record that closes it) and the
    rest as ``ledger.jsonl``: the same bytes, laid out as a folder store keeps a long ledger."""
    start, number = 0, 1
    if len(copy.records) == len(copy.lines):
        for index, doc in enumerate(copy.records):
            result = doc.get("result")
            if doc.get("kind") != SEGMENT_KIND or not isinstance(result, dict) or result.get("segment") != number:
                continue
            seg_dir = ensure_dir(run_dir / SEGMENTS_DIR, durable=durable)
            atomic_write_bytes(seg_dir / segment_name(number),
                               b"".join(line + b"\n" for line in copy.lines[start:index + 1]), durable=durable)
            start, number = index + 1, number + 1
    if start < len(copy.lines) or start == 0:
        atomic_write_bytes(run_dir / LEDGER_FILE, b"".join(line + b"\n" for line in copy.lines[start:]),
                           durable=durable)


def check_copy(copy: RunCopy, root: str | os.PathLike[str]) -> None:
    """Verify the run laid out under ``root`` (by :func:`write_folder_run`) with the offline
    verifier; :class:`VerificationFailedError` naming its problems when it does not verify."""
    from ..verify import verify_run

    report = verify_run(Path(root), copy.run_id)
    if report.ok:
        return
    found = "; ".join(f"{p.type}" + (f" at seq {p.seq}" if p.seq is not None else "") for p in report.problems[:3])
    raise VerificationFailedError(f"run {copy.run_id} in {copy.source} does not verify ({found}); not copied",
                                  run_id=copy.run_id, problems=[p.to_dict() for p in report.problems[:20]])


# -- 3. writing ------------------------------------------------------------------------------


def holds(store: Any, run_id: str) -> bool:
    """Whether ``store`` holds run ``run_id`` (a checkpoint or ledger records; in a folder, a ledger)."""
    if _is_database(store):
        return bool(store.runs.exists(run_id))
    return has_ledger(_folder_root(store) / RUNS_DIR / run_id)


def _pruned(store: Any, run_id: str) -> bool:
    """Whether ``store`` pruned ``run_id`` (:mod:`abstractruntime.storage.tombstones`)."""
    if _is_database(store):
        return bool(store.runs.pruned(run_id))
    return (_folder_root(store) / PRUNED_DIR / run_id).exists()


def _head_at(store: Any, run_id: str) -> tuple[int, Optional[str]]:
    if _is_database(store):
        head = store.ledger.head(run_id)
    else:
        path = _folder_root(store) / RUNS_DIR / run_id / LEDGER_FILE
        head = parse_ledger(read_range(list_parts(path.parent)), path=str(path), verify_chain=False,
                            keep_records=False).head
    return head.seq, head.head_hash


def _same_or_refuse(store: Any, copy: RunCopy) -> str:
    found = _head_at(store, copy.run_id)
    if found == (copy.head.seq, copy.head.head_hash):
        return "already"
    raise RunExistsError(f"{where(store)} holds a different run {copy.run_id} (its ledger ends at seq {found[0]}, "
                         f"the source's at seq {copy.head.seq}); not overwritten", run_id=copy.run_id)


def transfer_run(copy: RunCopy, store: Any) -> str:
    """Write ``copy`` into ``store`` (the other kind than its source): ``"copied"``, or
    ``"already"`` when ``store`` holds the same run (same ledger head). All or nothing;
    :class:`VerificationFailedError` for a run that does not verify (nothing written),
    :class:`RunExistsError` for a different run under the same id."""
    if copy.damaged is not None:
        raise VerificationFailedError(f"run {copy.run_id} in {copy.source} does not verify ({copy.damaged}); "
                                      "not copied", run_id=copy.run_id)
    if _pruned(store, copy.run_id):
        raise RunPrunedError(f"{where(store)} pruned run {copy.run_id}: its tombstone keeps the id, which names no "
                             "run there again; not copied", run_id=copy.run_id)
    if holds(store, copy.run_id):
        return _same_or_refuse(store, copy)
    if _is_database(store):
        with tempfile.TemporaryDirectory(prefix="abstractruntime-copy-") as tmp:
            write_folder_run(copy, tmp, durable=False)
            check_copy(copy, tmp)
        try:
            insert_run(store, copy)
        except (RunExistsError, LedgerConflictError):
            if holds(store, copy.run_id):  # another copy or writer created it meanwhile
                return _same_or_refuse(store, copy)
            raise
        return "copied"
    root = _folder_root(store)
    # A store opened without fsync (a staging folder, a throwaway copy) is written without it.
    durable = getattr(store, "durability", "fsync") != "none"
    with _staging(root) as staging:
        run_dir = write_folder_run(copy, staging, durable=durable)
        check_copy(copy, staging)
        runs = ensure_dir(root / RUNS_DIR, durable=durable)
        try:
            os.rename(run_dir, runs / copy.run_id)  # one step: the run is in runs/ whole, or not at all
        except OSError:
            if holds(store, copy.run_id):
                return _same_or_refuse(store, copy)
            raise StorageError(f"cannot move run {copy.run_id} into {runs}: {runs / copy.run_id} is in the way "
                               "(a directory without a ledger); remove it and copy again", run_id=copy.run_id) from None
        if durable:
            fsync_dir(runs)
    return "copied"


def remove_stale_staging(root: Path) -> list[Path]:
    """Remove the staging folders that copies killed before they finished left beside ``runs/``
    (named ``.copy-<pid>-<random>``: their writer is gone, or they are hours old); returns them."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING_RE.fullmatch(entry.name)
        try:
            if match is None or not entry.is_dir(follow_symlinks=False):
                continue
            if writer_gone(int(match.group(1)), entry.stat(follow_symlinks=False).st_mtime):
                shutil.rmtree(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # gone already, or not ours to remove: the next copy tries again
    return removed


@contextlib.contextmanager
def _staging(root: Path) -> Iterator[Path]:
    """A hidden directory beside ``runs/`` on the same file system (so a rename moves a run into
    place at once); removed afterwards, whatever happened."""
    ensure_dir(root, durable=True)
    remove_stale_staging(root)
    staging = root / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def insert_run(store: Any, copy: RunCopy) -> LedgerHead:
    """Insert ``copy`` into PostgreSQL ``store`` in one transaction: the lines with one append
    conditional on an empty ledger, their secret values with them, the checkpoint, the
    bookmarks. A run already there is :class:`RunExistsError`; any failure writes nothing."""
    head = LedgerHead()
    with store.db.connection() as conn, conn.transaction():
        if store.runs.exists(copy.run_id):
            raise RunExistsError(f"Run {copy.run_id} already exists in {store.describe()}", run_id=copy.run_id)
        if copy.lines:
            store.ledger.put_secrets(copy.run_id, copy.secrets)
            head = store.ledger.append_lines(copy.run_id, copy.records, copy.lines, expect=LedgerHead())
        if copy.checkpoint is not None:
            store.runs.save_checkpoint(copy.checkpoint)
            if copy.bookmarks:
                store.bookmarks.put(copy.run_id, copy.bookmarks)
    return head


# -- one run at a time, as before ---------------------------------------------------------------


def export_run(store: Any, run_id: str, root: str | os.PathLike[str], *, durable: bool = True) -> Path:
    """Write run ``run_id`` of PostgreSQL ``store`` into the folder store at ``root`` (read at one
    moment, not verified: this is what ``verify`` itself reads); returns its directory.

    Refuses (:class:`RunExistsError`) when the folder already holds the run. ``durable=False``
    skips the fsyncs (a throwaway copy).
    """
    return write_folder_run(read_run(store, run_id), root, durable=durable)


def import_run(store: Any, run_id: str, root: str | os.PathLike[str]) -> LedgerHead:
    """Copy run ``run_id`` of the folder store at ``root`` into PostgreSQL ``store``; returns its head.

    The folder's chain must hold (:class:`CorruptRecordError` naming the line otherwise).
    Everything goes in with one transaction (:func:`insert_run`): a run already in the
    database is :class:`RunExistsError`, and any failure writes nothing.
    """
    copy = read_run(Path(root), run_id)
    label = str(Path(root) / RUNS_DIR / run_id / LEDGER_FILE)
    parse_ledger(b"".join(line + b"\n" for line in copy.lines), path=label, run_id=run_id)  # the chain holds
    return insert_run(store, copy)


__all__ = ["READ_ATTEMPTS", "RunCopy", "check_copy", "export_run", "holds", "import_run", "insert_run", "read_run",
           "remove_stale_staging", "transfer_run", "where", "write_folder_run"]
