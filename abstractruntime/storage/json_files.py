"""The file stores: one directory per run, a JSON checkpoint and a JSONL ledger.

Layout under the store root (the ``base_dir`` both stores are given)::

    runs/<run_id>/ledger.jsonl   hash-chained records, one per line: the write-ahead log
    runs/<run_id>/segments/      sealed segments of a long ledger, before ledger.jsonl (segments.py)
    runs/<run_id>/run.json       checkpoint: a cache of the state at one ledger position
    runs/<run_id>/secrets.jsonl  real values the ledger redacted (0600, never hashed)
    runs/<run_id>/anchors.jsonl  redacted states every 1,024 records, for point-in-time reads
    runs/<run_id>/.lock          flock target
    index.sqlite3                rebuildable query index (run_index.py)

Durability protocol (docs/durability.md): the ledger is the log — records are appended in
batches, one write and one fsync each. The checkpoint is replaced atomically but without an
fsync: it only saves replaying the ledger, and one lost or torn by a power loss is rebuilt
from the ledger. ``durability="none"`` skips fsyncs (tests, benchmarks).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ContextManager, Optional

from ..core.logs import get_logger
from ..core.errors import CorruptRecordError, MisplacedRecordError, RunNotFoundError, RunPrunedError, StorageError
from ..core.canonical import canonical_json
from ..core.markers import stored_run
from ..core.models import RunState, RunStatus, WaitReason
from ..core.ports import Capability, StoredCheckpoint
from .base import CHECKPOINT_FORMAT, LedgerHead, RunStore
from .fsio import (
    Durability,
    RunLock,
    TidyRunLock,
    atomic_write_bytes,
    check_durability,
    load_json_file,
    validate_id,
)
from .query import (
    is_due,
    is_waiting_on,
    matches,
    newest_key,
    oldest_key,
    reason_value,
    status_value,
    timestamp,
    until_key,
)
from .ledger_files import JsonlLedgerStore  # importable from here too, as in 0.0.1
from .run_files import CHECKPOINT_FILE, LEDGER_FILE, LOCK_FILE, PRUNED_DIR, RUNS_DIR, RunFiles
from .run_index import RunIndex
from .segments import has_ledger, ledger_size

log = get_logger("abstractruntime.storage")

def read_checkpoint(path: Path) -> StoredCheckpoint:
    """Parse one ``run.json`` strictly (errors name the file); its run id must be its directory's."""
    doc = load_json_file(path, expected_format=CHECKPOINT_FORMAT, kind="checkpoint")
    try:
        checkpoint = StoredCheckpoint.from_dict(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptRecordError(f"checkpoint is missing or has a bad field ({exc})", path=str(path)) from exc
    if path.parent.name != checkpoint.run_id and path.parent.parent.name == RUNS_DIR:
        raise MisplacedRecordError(f"checkpoint describes run {checkpoint.run_id!r} but lives in the directory "
                                   f"of run {path.parent.name!r}", path=str(path))
    return checkpoint


def index_rows(root: str, first: str, last: str) -> tuple[list[tuple[object, ...]], list[str]]:
    """The index rows of the runs of the store at ``root`` whose ids sort from ``first`` to ``last``,
    and the run directories that could not be read: a share of a rebuild, in a helper process."""
    store = JsonFileRunStore(root, durability="none")
    try:
        return store._index.scan_rows(first, last)
    finally:
        store.close()


class JsonFileRunStore(RunStore):
    """Checkpoints as ``runs/<id>/run.json``, queryable through a SQLite index, flock per run."""

    capabilities = frozenset({Capability.CHECKPOINTS, Capability.LOCKS, Capability.CHECKPOINT_TOKENS,
                              Capability.QUERIES, Capability.WAITING_ON, Capability.EDITS,
                              Capability.LEDGER_MARKS})

    def __init__(self, base_dir: str | os.PathLike[str], *, durability: Durability = "fsync") -> None:
        self.durability = check_durability(durability)
        self._files = RunFiles(base_dir, durable=durability == "fsync")
        self._index = RunIndex(self._files.root, self._files.runs, self._view, ledger_loader=self._ledger_view,
                               examine=self._examine, scanner=f"{__name__}:index_rows")
        self._tidied: set[str] = set()
        # The token of the checkpoint this store last wrote, per run (see written_token).
        self._written: dict[str, tuple[int, int, int]] = {}

    @property
    def base_dir(self) -> Path:
        """The store root."""
        return self._files.root

    def save(self, run: RunState) -> None:
        """Adopt ``run`` as edited outside the runtime (upstream 0.0.1's way of changing a run).

        The edit is recorded in the run's ledger first — an ``edit`` record carrying the whole
        state — so the ledger stays the only truth; a run with no ledger yet (a bare state saved
        for queries) gets a checkpoint only, which no runtime takes for proven.
        """
        if has_ledger(self._files.run_dir(run.run_id)):
            from ..core.runtime import Runtime
            from .ledger_files import JsonlLedgerStore

            ledger = JsonlLedgerStore(self._files.root, durability=self.durability)
            Runtime(run_store=self, ledger_store=ledger).record_edit(run)
            return
        # No session marks this write: the row is marked first, so a process killed between the
        # file and its clean row leaves a row that is re-read, not trusted.
        if self._files.checkpoint(run.run_id).exists():
            self._index.mark(run.run_id)
        try:
            old = self.load_checkpoint(run.run_id)
        except CorruptRecordError:
            old = None
        if old is not None and old.legacy is None:
            old.state["run"] = stored_run(run.to_dict())
            self.save_checkpoint(old)
            return
        document = {"run": stored_run(run.to_dict()), "kernel": {"effects": 0, "pending": None, "metadata": {}, "workflow": None,
                                                     "origin": None}}
        self.save_checkpoint(StoredCheckpoint(state=document, ledger=LedgerHead()))

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Atomically replace the run's checkpoint, then its index row.

        No fsync: the ledger is the log, and a checkpoint lost with the page cache is
        rebuilt from it; the index row follows the file (see :mod:`.run_index`).
        """
        run_id = checkpoint.run_id
        path = self._files.run_dir(run_id, create=True) / CHECKPOINT_FILE
        is_new = not path.exists()
        # The proof is over the document's JCS form (digest_of), not these bytes: a bare state
        # saved for queries may hold what JCS cannot (a big integer) and still round-trips.
        data = canonical_json(checkpoint.to_dict()) + b"\n"
        written = atomic_write_bytes(path, data, durable=False)
        if len(self._written) >= 4096:
            self._written.clear()  # a bound: a token not found is only asked of the file again
        self._written[run_id] = (written.st_ino, written.st_mtime_ns, written.st_size)
        # One index write after the file: the row records the file's identity (inode, mtime,
        # size). A crash before this line leaves the row its writer marked dirty before (a
        # session before its append, save() before the file), or no row for a new run (found
        # through the runs/ directory): re-read, not trusted. Committed with the rows other threads
        # write at the same moment (runs finishing together on an async worker), and before this
        # returns: the caller gives up the run's lock only after it, so a later writer's mark is
        # never overwritten by this clean row.
        self._index.put_together(checkpoint.shown_run())
        if is_new:
            self._index.note_runs_dir()

    def load(self, run_id: str) -> Optional[RunState]:
        """The stored run as readers see it (secrets redacted, stored values resolved), or ``None``."""
        checkpoint = self.load_checkpoint(run_id)
        if checkpoint is None:
            return None
        if checkpoint.legacy is not None:
            return checkpoint.legacy.run
        from .views import resolved_view
        from .ledger_files import JsonlLedgerStore

        return resolved_view(checkpoint, JsonlLedgerStore(self._files.root, durability=self.durability))

    def _view(self, run_id: str) -> Optional[RunState]:
        """The stored run with stored values left as references (what the query index needs)."""
        checkpoint = self.load_checkpoint(run_id)
        return checkpoint.shown_run() if checkpoint is not None else None

    def _ledger_view(self, run_id: str) -> Optional[RunState]:
        """The run as its ledger says (a run whose ledger may be past its checkpoint)."""
        from .ledger_files import JsonlLedgerStore
        from .views import ledger_view

        return ledger_view(self, JsonlLedgerStore(self._files.root, durability=self.durability), run_id)

    def _examine(self, run_id: str) -> tuple[Optional[RunState], bool]:
        """The stored run (as :meth:`_view`) and whether its ledger goes past its checkpoint (the
        ledger file is longer than the checkpoint's offset, or there is a ledger and no checkpoint)."""
        run_dir = self._files.scanned_dir(run_id)
        if run_dir is None:
            return None, False
        try:
            size = ledger_size(run_dir)  # across its sealed segments too: offsets count them
        except (FileNotFoundError, StorageError):
            size = 0
        try:
            checkpoint: Optional[StoredCheckpoint] = read_checkpoint(Path(run_dir, CHECKPOINT_FILE))
        except FileNotFoundError:
            checkpoint = None
        if checkpoint is None:
            return None, size > 0
        offset = checkpoint.ledger.offset
        return checkpoint.shown_run(), offset is not None and size > offset

    # -- runs whose ledger may be past their checkpoint (core/ahead.py) --------------------------

    def mark_ahead(self, run_id: str) -> None:
        """Mark the run's index row before an append takes its ledger past its checkpoint (the
        checkpoint at the ledger's head clears it): a writer killed in between leaves the run
        found by :meth:`list_ahead`, and shown by queries as its ledger says. Committed (with
        the marks and rows other threads hand in meanwhile) before this returns."""
        self._index.mark_together(run_id)

    def list_ahead(self, *, limit: int = 100) -> list[str]:
        """Runs marked as maybe ahead of their checkpoints (an indexed query), least recently updated first."""
        found = []
        for run_id in self._index.ahead(limit):
            run_dir = self._files.run_dir(run_id)
            if has_ledger(run_dir) or (run_dir / CHECKPOINT_FILE).exists():
                found.append(run_id)
            else:
                self._index.forget(run_id)  # a writer killed between the mark and a new run's first record
        return found

    def load_checkpoint(self, run_id: str) -> Optional[StoredCheckpoint]:
        """The stored checkpoint, or ``None`` if the run has none."""
        path = self._files.checkpoint(run_id)
        try:
            return read_checkpoint(path)
        except FileNotFoundError:
            return None

    def checkpoint_token(self, run_id: str) -> Optional[tuple[int, int, int]]:
        """``(inode, mtime_ns, size)`` of ``run.json``: changes whenever anyone replaces it."""
        try:
            stat = os.lstat(self._files.checkpoint(run_id))
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def written_token(self, run_id: str) -> Optional[tuple[int, int, int]]:
        """:meth:`checkpoint_token` of the checkpoint this store last wrote for the run, as its write
        saw it (``None``: none written here). Only ever compared with a fresh token: a file
        replaced since has another inode."""
        return self._written.get(run_id)

    def exists(self, run_id: str) -> bool:
        """True when the run has a checkpoint or a ledger."""
        run_dir = self._files.run_dir(run_id)
        return (run_dir / CHECKPOINT_FILE).exists() or has_ledger(run_dir)

    def pruned(self, run_id: str) -> bool:
        """Whether ``run_id`` was pruned (``pruned/<run_id>``: :mod:`~abstractruntime.storage.tombstones`)."""
        return (self._files.root / PRUNED_DIR / validate_id(run_id, "run id")).exists()

    def forget(self, run_id: str) -> None:
        """Drop a removed run's row of the query index."""
        self._index.forget(run_id)

    def lock(self, run_id: str, *, wait: float = 0.0, create: bool = False) -> ContextManager[Any]:
        """The run's flock (``RunLockedError`` when another writer holds it).

        ``create=True`` (``start``) creates the run directory first: two processes starting
        the same id serialise on this lock, and the second finds the first one's ledger.
        """
        files = self._files
        if create and self.pruned(run_id):  # refused before its directory is made
            raise RunPrunedError(f"Run {run_id} was pruned: its tombstone keeps the id, which cannot name a new "
                                 "run; choose another run id", run_id=run_id)
        files.run_dir(run_id, create=create)
        if not create and not (has_ledger(files.run_dir(run_id)) or files.checkpoint(run_id).exists()):
            raise RunNotFoundError(run_id)
        run_dir = files.run_dir(run_id)
        if run_id not in self._tidied:
            # The first lock in this process also removes temp files a killed writer left.
            self._tidied.add(run_id)
            return TidyRunLock(files.child(run_id, LOCK_FILE), run_id, wait=wait, directory=run_dir)
        return RunLock(files.child(run_id, LOCK_FILE), run_id, wait=wait, directory=run_dir)

    def list_runs(
        self,
        *,
        status: Optional[RunStatus] = None,
        wait_reason: Optional[WaitReason] = None,
        workflow_id: Optional[str] = None,
        limit: int = 100,
        as_stored: bool = False,
    ) -> list[RunState]:
        """Runs matching the filters, most recently updated first (index-backed), each as its ledger
        says: a run whose writer stopped between its append and its checkpoint is shown as the
        ledger has it. ``as_stored``: as their checkpoints say (cheaper; a worker's listing)."""
        st, wr = status_value(status), reason_value(wait_reason)
        where, params = ["1"], []
        for column, value in (("status", st), ("wait_reason", wr), ("workflow_id", workflow_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        return self._index.query(
            " AND ".join(where), params, "updated_ts DESC, run_id",
            lambda r: matches(r, status=st, wait_reason=wr, workflow_id=workflow_id),
            newest_key,
            max(limit, 0),
            ledger=not as_stored,
        )

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> list[RunState]:
        """Due WAITING/UNTIL runs, earliest ``until`` first (index-backed)."""
        now_ts = timestamp(now_iso)
        if now_ts is None:
            raise ValueError(f"now_iso is not an ISO timestamp: {now_iso!r}")
        return self._index.query(
            "status = 'waiting' AND wait_reason = 'until' AND until_ts <= ?", [now_ts], "until_ts ASC, run_id",
            lambda r: is_due(r, now_ts),
            until_key,
            max(limit, 0),
        )

    def list_waiting_on(self, wait_key: str, *, limit: int = 1000) -> list[RunState]:
        """WAITING runs whose wait is on ``wait_key``, least recently updated first (index-backed)."""
        return self._index.query(
            "status = 'waiting' AND wait_key = ?", [wait_key], "updated_ts ASC, run_id",
            lambda r: is_waiting_on(r, wait_key),
            oldest_key,
            max(limit, 0),
        )

    def list_children(self, *, parent_run_id: str, status: Optional[RunStatus] = None) -> list[RunState]:
        """Child runs of ``parent_run_id``, most recently updated first."""
        st = status_value(status)
        where, params = ["parent_run_id = ?"], [parent_run_id]
        if st is not None:
            where.append("status = ?")
            params.append(st)
        return self._index.query(
            " AND ".join(where), params, "updated_ts DESC, run_id",
            lambda r: matches(r, parent_run_id=parent_run_id, status=st),
            newest_key,
            None,
        )

    @property
    def _blocks(self) -> Any:
        from .blocks import FileBlocks

        return FileBlocks(self._files.root, durable=self.durability == "fsync")

    def put_block(self, run_id: str, mark: dict[str, Any]) -> None:
        """Note that the run is blocked (``blocked/<run_id>.json``; core/blocks.py)."""
        self._blocks.put(run_id, mark)

    def get_block(self, run_id: str) -> Optional[dict[str, Any]]:
        """The run's block mark, or ``None``."""
        found: Optional[dict[str, Any]] = self._blocks.get(run_id)
        return found

    def list_blocks(self) -> dict[str, dict[str, Any]]:
        """Every block mark, by run id."""
        found: dict[str, dict[str, Any]] = self._blocks.list()
        return found

    def drop_block(self, run_id: str) -> None:
        """Forget the run's block mark."""
        self._blocks.drop(run_id)

    def rebuild_index(self) -> int:
        """Recreate the query index from the run files; returns how many runs it holds."""
        return self._index.rebuild()

    def close(self) -> None:
        """Release the index connection."""
        self._index.close()



__all__ = ["CHECKPOINT_FILE", "LEDGER_FILE", "RUNS_DIR", "JsonFileRunStore", "JsonlLedgerStore", "RunFiles",
           "read_checkpoint"]

