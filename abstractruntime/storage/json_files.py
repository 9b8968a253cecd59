"""The file stores: one directory per run, a JSON checkpoint and a JSONL ledger.

Layout under the store root (the ``base_dir`` both stores are given)::

    runs/<run_id>/run.json       checkpoint {"format", "run", "ledger", "workflow", "signature"}
    runs/<run_id>/ledger.jsonl   hash-chained records, one per line
    runs/<run_id>/.lock          flock target
    index.sqlite3                rebuildable query index (run_index.py)

Durability protocol (docs/durability.md): ledger records are appended and fsynced before
the checkpoint that reflects them is replaced atomically; the checkpoint records the ledger
``seq`` and ``head_hash`` it reflects. ``durability="none"`` skips fsyncs (tests, benchmarks).
"""

from __future__ import annotations

import logging
import os
import stat as stat_module
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Optional, Sequence

from ..core.canonical import canonical_json, check_size
from ..core.errors import CorruptRecordError, RunNotFoundError, StorageError
from ..core.models import RunState, RunStatus, StepRecord, WaitReason
from .base import CHECKPOINT_FORMAT, Checkpoint, LedgerHead, LedgerStore, RunStore
from .fsio import (
    Durability,
    RunLock,
    append_bytes,
    atomic_write_bytes,
    check_durability,
    child_path,
    ensure_dir,
    fsync_dir,
    load_json_file,
    open_append,
    read_bytes,
    refuse_symlink,
    validate_id,
)
from .ledger_chain import seal_record_line
from .ledger_file import parse_ledger
from .query import is_due, matches, reason_value, status_value, timestamp
from .run_index import RunIndex

log = logging.getLogger("abstractruntime.storage")

RUNS_DIR = "runs"
CHECKPOINT_FILE = "run.json"
LEDGER_FILE = "ledger.jsonl"
LOCK_FILE = ".lock"


class RunFiles:
    """Paths of one store root; every run path is validated and kept under the root."""

    def __init__(self, base_dir: str | os.PathLike[str], *, create: bool = True, durable: bool = True) -> None:
        self.root = Path(base_dir)
        self.durable = durable
        if create:
            ensure_dir(self.root, durable=durable)
        self.runs = self.root / RUNS_DIR
        # Run directories already validated (and existing) in this process: path checks
        # resolve symlinks, which costs more than the rest of a step.
        self._known: dict[str, Path] = {}

    def run_dir(self, run_id: str, *, create: bool = False) -> Path:
        """``runs/<run_id>`` (validated; created 0700 when asked)."""
        known = self._known.get(run_id)
        if known is not None:
            try:
                # Cheap re-check: still a real directory (not swapped for a symlink, not deleted).
                if stat_module.S_ISDIR(os.lstat(known).st_mode):
                    return known
            except FileNotFoundError:
                pass
            del self._known[run_id]
        validate_id(run_id, "run id")
        if create:
            ensure_dir(self.runs, durable=self.durable)
        path = child_path(self.root, RUNS_DIR, run_id)
        refuse_symlink(path)
        if create and not path.exists():
            ensure_dir(path, durable=self.durable)
        if path.is_dir():
            self._known[run_id] = path
        return path

    def checkpoint(self, run_id: str) -> Path:
        """``runs/<run_id>/run.json``."""
        return self.run_dir(run_id) / CHECKPOINT_FILE

    def ledger(self, run_id: str) -> Path:
        """``runs/<run_id>/ledger.jsonl``."""
        return self.run_dir(run_id) / LEDGER_FILE


def _newest_key(run: RunState) -> tuple[float, str]:
    return (-(timestamp(run.updated_at) or 0.0), run.run_id)


def _until_key(run: RunState) -> tuple[float, str]:
    return (timestamp(run.waiting.until if run.waiting else None) or 0.0, run.run_id)


def read_checkpoint(path: Path) -> Checkpoint:
    """Parse one ``run.json`` strictly (errors name the file)."""
    doc = load_json_file(path, expected_format=CHECKPOINT_FORMAT, kind="checkpoint")
    try:
        return Checkpoint.from_dict(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptRecordError(f"checkpoint is missing or has a bad field ({exc})", path=str(path)) from exc


class JsonFileRunStore(RunStore):
    """Checkpoints as ``runs/<id>/run.json``, queryable through a SQLite index, flock per run."""

    def __init__(self, base_dir: str | os.PathLike[str], *, durability: Durability = "fsync") -> None:
        self.durability = check_durability(durability)
        self._files = RunFiles(base_dir, durable=durability == "fsync")
        self._index = RunIndex(self._files.root, self._files.runs, self.load)

    @property
    def base_dir(self) -> Path:
        """The store root."""
        return self._files.root

    def save(self, run: RunState) -> None:
        """Write ``run``, keeping the ledger head and workflow already recorded for it."""
        try:
            old = self.load_checkpoint(run.run_id)
        except CorruptRecordError:
            old = None
        self.save_checkpoint(Checkpoint(
            run=run,
            ledger=old.ledger if old else LedgerHead(),
            workflow=old.workflow if old else None,
            signature=old.signature if old else None,
            origin=old.origin if old else None,
        ))

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Atomically replace the run's checkpoint (index row marked dirty around the write)."""
        run = checkpoint.run
        path = self._files.run_dir(run.run_id, create=True) / CHECKPOINT_FILE
        is_new = not path.exists()
        data = canonical_json(checkpoint.to_dict()) + b"\n"
        self._index.put(run, dirty=True)
        # (A new run directory was fsynced into runs/ when run_dir created it.)
        atomic_write_bytes(path, data, durable=self.durability == "fsync")
        self._index.put(run, dirty=False)
        if is_new:
            self._index.note_runs_dir()

    def load(self, run_id: str) -> Optional[RunState]:
        """The stored run, or ``None``."""
        checkpoint = self.load_checkpoint(run_id)
        return checkpoint.run if checkpoint else None

    def load_checkpoint(self, run_id: str) -> Optional[Checkpoint]:
        """The stored checkpoint, or ``None`` if the run does not exist."""
        path = self._files.checkpoint(run_id)
        try:
            return read_checkpoint(path)
        except FileNotFoundError:
            return None

    def exists(self, run_id: str) -> bool:
        """True when the run has a checkpoint."""
        return self._files.checkpoint(run_id).exists()

    def lock(self, run_id: str, *, wait: float = 0.0) -> ContextManager[Any]:
        """The run's flock (``RunLockedError`` when another writer holds it)."""
        run_dir = self._files.run_dir(run_id)
        if not (run_dir / CHECKPOINT_FILE).exists():
            raise RunNotFoundError(run_id)
        return RunLock(run_dir / LOCK_FILE, run_id, wait=wait)

    def list_runs(
        self,
        *,
        status: Optional[RunStatus] = None,
        wait_reason: Optional[WaitReason] = None,
        workflow_id: Optional[str] = None,
        limit: int = 100,
    ) -> list[RunState]:
        """Runs matching the filters, most recently updated first (index-backed)."""
        st, wr = status_value(status), reason_value(wait_reason)
        where, params = ["1"], []
        for column, value in (("status", st), ("wait_reason", wr), ("workflow_id", workflow_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        return self._index.query(
            " AND ".join(where), params, "updated_ts DESC, run_id",
            lambda r: matches(r, status=st, wait_reason=wr, workflow_id=workflow_id),
            _newest_key,
            max(limit, 0),
        )

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> list[RunState]:
        """Due WAITING/UNTIL runs, earliest ``until`` first (index-backed)."""
        now_ts = timestamp(now_iso)
        if now_ts is None:
            raise ValueError(f"now_iso is not an ISO timestamp: {now_iso!r}")
        return self._index.query(
            "status = 'waiting' AND wait_reason = 'until' AND until_ts <= ?", [now_ts], "until_ts ASC, run_id",
            lambda r: is_due(r, now_ts),
            _until_key,
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
            _newest_key,
            None,
        )

    def rebuild_index(self) -> int:
        """Recreate the query index from the run files; returns how many runs it holds."""
        return self._index.rebuild()

    def close(self) -> None:
        """Release the index connection."""
        self._index.close()


@dataclass
class _LedgerCache:
    """What this process knows of one ledger file, valid while size and inode match."""

    inode: int = 0
    size: int = 0
    lines: int = 0
    head: LedgerHead = field(default_factory=LedgerHead)
    completed: dict[str, int] = field(default_factory=dict)


class JsonlLedgerStore(LedgerStore):
    """Hash-chained JSONL ledgers, ``runs/<id>/ledger.jsonl``, with an O(1) idempotency index.

    The writer's view of each ledger (head, idempotency offsets) is cached and refreshed
    incrementally from the file's size, so per-append cost does not grow with the ledger.
    Appends must happen under the run's lock (the runtime takes it).
    """

    chained = True

    def __init__(self, base_dir: str | os.PathLike[str], *, durability: Durability = "fsync") -> None:
        self.durability = check_durability(durability)
        self._files = RunFiles(base_dir, durable=durability == "fsync")
        self._cache: dict[str, _LedgerCache] = {}
        self._guard = threading.RLock()

    @property
    def base_dir(self) -> Path:
        """The store root."""
        return self._files.root

    def path(self, run_id: str) -> Path:
        """The ledger file of ``run_id``."""
        return self._files.ledger(run_id)

    # -- writing -----------------------------------------------------------------------

    def append(self, record: StepRecord) -> None:
        """Seal, append and (with durability "fsync") fsync one record."""
        self.append_batch([record])

    def append_batch(self, records: Sequence[StepRecord]) -> None:
        """Seal and append records with a single write and a single fsync per run."""
        by_run: dict[str, list[StepRecord]] = {}
        for record in records:
            by_run.setdefault(record.run_id, []).append(record)
        with self._guard:
            for run_id, batch in by_run.items():
                self._append_run(run_id, batch)

    def _append_run(self, run_id: str, batch: list[StepRecord]) -> None:
        path = self._files.run_dir(run_id, create=True) / LEDGER_FILE
        cache = self._refresh(run_id, path, repair=True)
        head = cache.head
        lines: list[bytes] = []
        completed: dict[str, int] = {}
        offset = cache.size
        for record in batch:
            doc, line = seal_record_line(record, head=head)
            check_size(line, what=f"Ledger record for node {record.node_id!r}")
            head = LedgerHead(doc["seq"], doc["record_hash"])
            lines.append(line + b"\n")
            key = doc.get("idempotency_key")
            if key and doc.get("status") == "completed" and key not in cache.completed:
                completed.setdefault(key, offset)
            offset += len(lines[-1])
        payload = b"".join(lines)
        fd = open_append(path)
        try:
            append_bytes(fd, payload, path=path, durable=self.durability == "fsync")
            stat = os.fstat(fd)
        finally:
            os.close(fd)
        if cache.size == 0 and self.durability == "fsync":
            fsync_dir(path.parent)  # a new ledger file's directory entry must be durable too
        # Index the new completed records only once they are written.
        for key, key_offset in completed.items():
            cache.completed.setdefault(key, key_offset)
        cache.inode, cache.size = stat.st_ino, stat.st_size
        cache.lines += len(lines)
        cache.head = head

    def _refresh(self, run_id: str, path: Path, *, repair: bool) -> _LedgerCache:
        """Bring the cache up to date with the file, reading only new bytes."""
        cache = self._cache.get(run_id)
        try:
            stat = os.lstat(path)
        except FileNotFoundError:
            cache = self._cache[run_id] = _LedgerCache()
            return cache
        if cache is None or cache.inode != stat.st_ino or stat.st_size < cache.size:
            cache = _LedgerCache(inode=stat.st_ino)
        if stat.st_size == cache.size:
            self._cache[run_id] = cache
            return cache
        if not stat_module.S_ISREG(stat.st_mode):
            raise StorageError(f"Refusing {path}: the ledger must be a regular file, not a symlink")
        data = read_bytes(path, offset=cache.size)
        parsed = parse_ledger(
            data, path=str(path), start_offset=cache.size, start_line=cache.lines,
            head=cache.head, keep_records=False, run_id=run_id,
        )
        if parsed.torn_bytes:
            log.warning("%s: torn tail of %d bytes after line %d (an interrupted append)%s",
                        path, parsed.torn_bytes, parsed.lines, "; truncated" if repair else "; ignored")
            if repair:
                os.truncate(path, parsed.valid_end)
                if self.durability == "fsync":
                    fd = os.open(path, os.O_WRONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        for key, offset in parsed.completed_offsets.items():
            cache.completed.setdefault(key, offset)
        cache.size, cache.lines, cache.head = parsed.valid_end, parsed.lines, parsed.head
        self._cache[run_id] = cache
        return cache

    # -- reading -----------------------------------------------------------------------

    def list(self, run_id: str) -> list[dict[str, Any]]:
        """All records of the run as stored (hashes are not checked here: see ``verify``).

        A torn tail is skipped with a warning; a bad line before it raises
        :class:`CorruptRecordError` naming the file and line.
        """
        path = self._files.ledger(run_id)
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            return []
        parsed = parse_ledger(data, path=str(path), verify_chain=False)
        if parsed.torn_bytes:
            log.warning("%s: ignoring a torn tail of %d bytes after line %d", path, parsed.torn_bytes, parsed.lines)
        return parsed.records

    def head(self, run_id: str) -> LedgerHead:
        """The last valid record's seq and hash (chain-checked)."""
        with self._guard:
            return self._refresh(run_id, self._files.ledger(run_id), repair=False).head

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[dict[str, Any]]:
        """O(1): seek to the first completed record with this key, if any."""
        with self._guard:
            path = self._files.ledger(run_id)
            cache = self._refresh(run_id, path, repair=False)
            offset = cache.completed.get(idempotency_key)
            if offset is None:
                return None
            with open(path, "rb") as handle:
                handle.seek(offset)
                line = handle.readline()
        parsed = parse_ledger(line, path=str(path), verify_chain=False)
        return parsed.records[0] if parsed.records else None
