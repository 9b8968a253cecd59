"""``JsonlLedgerStore``: hash-chained JSONL ledgers, ``runs/<id>/ledger.jsonl`` — the write-ahead log.

The writer's view of each ledger (its head, the file size it covers) is cached per process
and refreshed from the file's size, so an append never re-reads what it already knows and
recovery reads only the tail after a checkpoint (:meth:`JsonlLedgerStore.read_after` seeks
to the byte offset the checkpoint recorded). Appends are conditional on the head the writer
read: another writer's records in between raise :class:`LedgerConflictError` and nothing is
written. Appends happen under the run's lock (the runtime takes it).
"""

from __future__ import annotations

import builtins
import fcntl
import os
import stat as stat_module
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Optional, Sequence

from ..core.logs import get_logger
from ..core.canonical import canonical_json
from ..core.errors import LedgerConflictError, StorageError
from ..core.models import StepRecord
from ..core.ports import Capability, LedgerHead, LedgerStore, retained
from ..core.records import RECORD_FORMAT, expand_records
from .fsio import Durability, append_bytes, atomic_write_bytes, check_durability, fsync_dir, loads_strict, open_append, read_bytes
from .json_files import ANCHORS_FILE, LEDGER_FILE, SECRETS_FILE, RunFiles
from ..core.chain import seal_batch
from .ledger_parse import parse_ledger

log = get_logger("abstractruntime.storage")

# How far before a recorded offset to look for the line that must end there.
_ANCHOR_WINDOW = 4096


@dataclass
class _LedgerCache:
    """What this process knows of one ledger file, valid while size and inode match."""

    inode: int = 0
    size: int = 0
    lines: int = 0
    head: LedgerHead = field(default_factory=LedgerHead)
    # idempotency_key -> offset of its first completed record; None until first needed.
    completed: Optional[dict[str, int]] = None
    # effect_id -> the key its intent named (format 3 outcomes do not repeat it).
    intent_keys: dict[int, str] = field(default_factory=dict)


class JsonlLedgerStore(LedgerStore):
    """Hash-chained JSONL ledgers with conditional group appends and tail reads."""

    chained = True
    capabilities = frozenset({Capability.CHAINED, Capability.SEALED_LINES, Capability.POSITION_TOKENS,
                              Capability.ANCHORS, Capability.SECRETS, Capability.PEEK_HEAD})

    def __init__(self, base_dir: str | os.PathLike[str], *, durability: Durability = "fsync") -> None:
        self.durability = check_durability(durability)
        self._files = RunFiles(base_dir, durable=durability == "fsync")
        self._cache: dict[str, _LedgerCache] = {}
        # One lock per run, so one run's fsync never holds up another run's reads or appends
        # (a worker advances many runs at once); _guards_lock only guards the dict.
        self._guards: dict[str, threading.RLock] = {}
        self._guards_lock = threading.Lock()

    @property
    def base_dir(self) -> Path:
        """The store root."""
        return self._files.root

    def path(self, run_id: str) -> Path:
        """The ledger file of ``run_id``."""
        return self._files.ledger(run_id)

    def _guard(self, run_id: str) -> threading.RLock:
        with self._guards_lock:
            guard = self._guards.get(run_id)
            if guard is None:
                guard = self._guards[run_id] = threading.RLock()
            return guard

    @property
    def _durable(self) -> bool:
        return self.durability == "fsync"

    # -- writing -----------------------------------------------------------------------

    def append(self, record: StepRecord) -> None:
        """Seal, append and (with durability "fsync") fsync one record."""
        self.append_batch([record])

    def append_batch(self, records: Sequence[StepRecord]) -> None:
        """Seal and append records with a single write and a single fsync per run."""
        by_run: dict[str, list[StepRecord]] = {}
        for record in records:
            by_run.setdefault(record.run_id, []).append(record)
        for run_id, batch in by_run.items():
            with self._guard(run_id):
                path = self._files.run_dir(run_id, create=True) / LEDGER_FILE
                docs, lines = seal_batch(batch, head=self._refresh(run_id, path, repair=True).head)
                self._write(run_id, path, docs, lines)

    def append_lines(self, run_id: str, docs: Sequence[dict[str, Any]], lines: Sequence[bytes],
                     *, expect: LedgerHead) -> LedgerHead:
        """Append sealed records (one write, one fsync) if the ledger still ends at ``expect``.

        The check and the write are one step for every writer of the file, in any process: an
        ``flock`` on the ledger itself is held from the read of its end to the write, so a writer
        that lost its run's lock while it worked cannot slip its batch in beside the new writer's.
        """
        with self._guard(run_id):
            path = self._files.run_dir(run_id, create=True) / LEDGER_FILE
            fd = open_append(path)
            try:
                _lock_for_append(fd, path)
                cache = self._refresh(run_id, path, repair=True)
                if cache.head.seq != expect.seq or cache.head.head_hash != expect.head_hash:
                    raise LedgerConflictError(
                        f"run {run_id}: the ledger is at seq {cache.head.seq}, not {expect.seq} as this writer read "
                        "it (another writer appended); nothing was written")
                return self._write(run_id, path, docs, lines, fd=fd)
            finally:
                os.close(fd)  # releases the flock

    def _write(self, run_id: str, path: Path, docs: Sequence[dict[str, Any]], lines: Sequence[bytes],
               *, fd: Optional[int] = None) -> LedgerHead:
        cache = self._cache[run_id]
        payload = b"".join(line + b"\n" for line in lines)
        own = fd is None
        if fd is None:
            fd = open_append(path)
        try:
            append_bytes(fd, payload, path=path, durable=self._durable)
            stat = os.fstat(fd)
        finally:
            if own:
                os.close(fd)
        if cache.size == 0 and self._durable:
            fsync_dir(path.parent)  # a new ledger file's directory entry must be durable too
        offset = cache.size
        for doc, line in zip(docs, lines):
            key = doc.get("idempotency_key")
            effect_id = doc.get("effect_id")
            if doc.get("format") == RECORD_FORMAT and isinstance(effect_id, int):
                if key and doc.get("status") == "started":
                    cache.intent_keys[effect_id] = key
                elif key is None and doc.get("kind") == "effect":
                    key = cache.intent_keys.get(effect_id)
            if cache.completed is not None and key and doc.get("status") == "completed":
                cache.completed.setdefault(key, offset)
            offset += len(line) + 1
        last = docs[-1]
        cache.inode, cache.size, cache.lines = stat.st_ino, stat.st_size, cache.lines + len(lines)
        cache.head = LedgerHead(last["seq"], last["record_hash"], offset=stat.st_size)
        return cache.head

    def _refresh(self, run_id: str, path: Path, *, repair: bool) -> _LedgerCache:
        """Bring the cache up to date with the file, reading only bytes it has not seen."""
        cache = self._cache.get(run_id)
        try:
            stat = os.lstat(path)
        except FileNotFoundError:
            cache = self._cache[run_id] = _LedgerCache(completed={})
            return cache
        if not stat_module.S_ISREG(stat.st_mode):
            raise StorageError(f"Refusing {path}: the ledger must be a regular file, not a symlink")
        if cache is None or cache.inode != stat.st_ino or stat.st_size < cache.size:
            cache = _LedgerCache(inode=stat.st_ino)
        if stat.st_size == cache.size:
            self._cache[run_id] = cache
            return cache
        data = read_bytes(path, offset=cache.size)
        parsed = parse_ledger(data, path=str(path), start_offset=cache.size, start_line=cache.lines,
                              head=cache.head, keep_records=False, run_id=run_id, intent_keys=cache.intent_keys)
        cache.intent_keys = parsed.intent_keys
        if parsed.torn_bytes:
            log.warning("%s: torn tail of %d bytes after line %d (an interrupted append)%s",
                        path, parsed.torn_bytes, parsed.lines, "; truncated" if repair else "; ignored")
            if repair:
                os.truncate(path, parsed.valid_end)
                if self._durable:
                    fd = os.open(path, os.O_WRONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        if cache.completed is not None:
            for key, offset in parsed.completed_offsets.items():
                cache.completed.setdefault(key, offset)
        elif cache.size == 0:
            cache.completed = dict(parsed.completed_offsets)
        cache.size, cache.lines = parsed.valid_end, parsed.lines
        cache.head = LedgerHead(parsed.head.seq, parsed.head.head_hash, offset=parsed.valid_end)
        self._cache[run_id] = cache
        return cache

    # -- reading -----------------------------------------------------------------------

    def list(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """All records of the run, expanded as upstream 0.0.1 code reads them (each with the
        record as stored under ``"stored"``). Hashes are not checked here: see ``verify``.

        A torn tail is skipped with a warning; a bad line before it raises
        :class:`CorruptRecordError` naming the file and line.
        """
        return expand_records(self.stored(run_id), run_id)

    def stored(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """All records of the run exactly as stored (format 3: compact, values by reference)."""
        path = self._files.ledger(run_id)
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            return []
        parsed = parse_ledger(data, path=str(path), verify_chain=False)
        if parsed.torn_bytes:
            log.warning("%s: ignoring a torn tail of %d bytes after line %d", path, parsed.torn_bytes, parsed.lines)
        return parsed.records

    def record_at(self, run_id: str, position: LedgerHead) -> Optional[dict[str, Any]]:
        """The stored record at ``position``: the line ending at its byte offset when it has one
        (else found by reading), or ``None`` when the ledger has no such record."""
        if position.offset is not None:
            found = self.records_at(run_id, [(position.seq, position.offset)], ending=True)
            if found:
                return found[0]
        _, records = self.read_after(run_id, LedgerHead(), until_seq=position.seq)
        return records[-1] if records and records[-1].get("seq") == position.seq else None

    def records_at(self, run_id: str, positions: Sequence[tuple[int, Optional[int]]], *,
                   ending: bool = False) -> builtins.list[dict[str, Any]]:
        """The stored records at ``(seq, offset)`` positions: the line starting at each offset
        (``ending``: the line ending just before it). Positions whose line does not hold that
        seq are skipped: the offsets are hints, never trusted."""
        path = self._files.ledger(run_id)
        found: builtins.list[dict[str, Any]] = []
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return found
        with handle:
            size = os.fstat(handle.fileno()).st_size
            for seq, offset in positions:
                if offset is None or offset < 0 or offset > size:
                    continue
                if ending:
                    begin = max(0, offset - _ANCHOR_WINDOW)
                    handle.seek(begin)
                    window = handle.read(offset - begin)
                    if not window.endswith(b"\n"):
                        continue
                    raw = window[:-1].rsplit(b"\n", 1)[-1]
                    if len(raw) + 1 >= len(window) and begin > 0:
                        handle.seek(0)  # a line longer than the window: read it whole
                        head = handle.read(offset)[:-1]
                        raw = head.rsplit(b"\n", 1)[-1]
                else:
                    handle.seek(offset)
                    raw = handle.readline().rstrip(b"\n")
                try:
                    doc = loads_strict(raw)
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(doc, dict) and doc.get("seq") == seq:
                    found.append(doc)
        return found

    def read_after(self, run_id: str, position: LedgerHead, *,
                   until_seq: Optional[int] = None) -> tuple[LedgerHead, builtins.list[dict[str, Any]]]:
        """The chain-checked records after ``position`` and the head they end at.

        Reads from ``position.offset`` when the line ending there is the record
        ``position`` names; otherwise (no offset, another file) reads the whole ledger. A
        torn tail is left for the writer to truncate. Seeds the writer's cache.
        """
        with self._guard(run_id):
            path = self._files.ledger(run_id)
            try:
                stat = os.lstat(path)
            except FileNotFoundError:
                self._cache[run_id] = _LedgerCache(completed={})
                return LedgerHead(), []
            if not stat_module.S_ISREG(stat.st_mode):
                raise StorageError(f"Refusing {path}: the ledger must be a regular file, not a symlink")
            start, start_head = 0, LedgerHead()
            if position.seq and position.offset is not None and self._anchored(path, position, stat.st_size):
                start, start_head = position.offset, LedgerHead(position.seq, position.head_hash)
            if until_seq is not None:
                # A partial read (point in time): only the bytes it needs, and no cache seeded.
                records = self._read_until(path, run_id, start, start_head, until_seq)
                return self.peek_head(run_id), [r for r in records if r.get("seq", 0) > position.seq]
            data = read_bytes(path, offset=start)
            parsed = parse_ledger(data, path=str(path), start_offset=start, start_line=start_head.seq,
                                  head=start_head, run_id=run_id)
            records = [r for r in parsed.records if r.get("seq", 0) > position.seq] if start == 0 else parsed.records
            self._cache[run_id] = _LedgerCache(
                inode=stat.st_ino, size=parsed.valid_end, lines=parsed.lines,
                head=LedgerHead(parsed.head.seq, parsed.head.head_hash, offset=parsed.valid_end),
                completed=dict(parsed.completed_offsets) if start == 0 else None,
                intent_keys=parsed.intent_keys if start == 0 else {})
            return self._cache[run_id].head, records

    @staticmethod
    def _read_until(path: Path, run_id: str, start: int, head: LedgerHead, until_seq: int) -> builtins.list[dict[str, Any]]:
        """Chain-checked records from byte ``start`` up to seq ``until_seq``, read in chunks."""
        records: builtins.list[dict[str, Any]] = []
        offset, line, pending = start, head.seq, b""
        with open(path, "rb") as handle:
            handle.seek(start)
            while head.seq < until_seq:
                chunk = handle.read(1 << 18)
                if not chunk:
                    break
                data = pending + chunk
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    pending = data
                    continue
                parsed = parse_ledger(data[:cut], path=str(path), start_offset=offset, start_line=line, head=head,
                                      run_id=run_id, until_seq=until_seq)
                records.extend(parsed.records)
                head, line = parsed.head, parsed.lines
                offset += cut
                pending = data[cut:]
        return records

    def peek_head(self, run_id: str) -> LedgerHead:
        """The head as this process last saw it, else read off the file's last line (not chain-checked)."""
        with self._guard(run_id):
            cache = self._cache.get(run_id)
            path = self._files.ledger(run_id)
            try:
                size = os.lstat(path).st_size
            except FileNotFoundError:
                return LedgerHead()
            if cache is not None and cache.size == size:
                return cache.head
            begin = max(0, size - _ANCHOR_WINDOW * 16)
            with open(path, "rb") as handle:
                handle.seek(begin)
                window = handle.read()
            for raw in reversed(window.rstrip(b"\n").split(b"\n")):
                try:
                    doc = loads_strict(raw)
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(doc, dict) and isinstance(doc.get("seq"), int):
                    return LedgerHead(doc["seq"], doc.get("record_hash"))
            return self.head(run_id)

    @staticmethod
    def _anchored(path: Path, position: LedgerHead, size: int) -> bool:
        """True when the line ending at ``position.offset`` carries ``position.head_hash``."""
        offset = position.offset or 0
        if offset > size or not position.head_hash:
            return False
        begin = max(0, offset - _ANCHOR_WINDOW)
        try:
            with open(path, "rb") as handle:
                handle.seek(begin)
                window = handle.read(offset - begin)
        except OSError:
            return False
        if not window.endswith(b"\n"):
            return False
        last_line = window[:-1].rsplit(b"\n", 1)[-1]
        return b'"record_hash":"' + position.head_hash.encode("ascii", "replace") + b'"' in last_line

    def position_token_at(self, run_id: str, head: LedgerHead) -> None:
        """Not known without looking at the file: ``None`` (ask :meth:`position_token`)."""
        return None

    def position_token(self, run_id: str) -> Optional[tuple[int, int]]:
        """``(inode, size)`` of the ledger file: changes with every append by anyone."""
        try:
            stat = os.lstat(self._files.ledger(run_id))
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_size

    def head(self, run_id: str) -> LedgerHead:
        """The last valid record's seq and hash (chain-checked)."""
        with self._guard(run_id):
            return self._refresh(run_id, self._files.ledger(run_id), repair=False).head

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[dict[str, Any]]:
        """The first completed record with this key (an index built on first use, then O(1))."""
        with self._guard(run_id):
            path = self._files.ledger(run_id)
            cache = self._refresh(run_id, path, repair=False)
            if cache.completed is None:
                data = read_bytes(path)[: cache.size]
                full = parse_ledger(data, path=str(path), keep_records=False, verify_chain=False)
                cache.completed, cache.intent_keys = dict(full.completed_offsets), full.intent_keys
            offset = cache.completed.get(idempotency_key)
            if offset is None:
                return None
            with open(path, "rb") as handle:
                handle.seek(offset)
                line = handle.readline()
        parsed = parse_ledger(line, path=str(path), verify_chain=False)
        return parsed.records[0] if parsed.records else None

    # -- values kept beside the run -------------------------------------------------------

    def put_anchor(self, run_id: str, anchor: dict[str, Any]) -> None:
        """Append an anchor to ``anchors.jsonl`` (0600; a cache, so not fsynced)."""
        path = self._files.run_dir(run_id, create=True) / ANCHORS_FILE
        fd = open_append(path)
        try:
            append_bytes(fd, canonical_json(anchor) + b"\n", path=path, durable=False)
        finally:
            os.close(fd)

    def find_anchor(self, run_id: str, seq: int) -> Optional[dict[str, Any]]:
        """The last anchor at or before ``seq`` (a damaged line is skipped: anchors are a cache)."""
        try:
            data = read_bytes(self._files.run_dir(run_id) / ANCHORS_FILE)
        except FileNotFoundError:
            return None
        best: Optional[dict[str, Any]] = None
        for raw in data.split(b"\n"):
            try:
                doc = loads_strict(raw) if raw.strip() else None
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(doc, dict) and isinstance(doc.get("seq"), int) and doc["seq"] <= seq:
                if best is None or doc["seq"] > best["seq"]:
                    best = doc
        return best

    def put_secrets(self, run_id: str, entries: Sequence[dict[str, Any]]) -> None:
        """Append the real values of redacted fields to ``secrets.jsonl`` (0600, fsynced)."""
        if not entries:
            return
        path = self._files.run_dir(run_id, create=True) / SECRETS_FILE
        payload = b"".join(canonical_json(dict(e)) + b"\n" for e in entries)
        fd = open_append(path)
        try:
            new = os.fstat(fd).st_size == 0
            append_bytes(fd, payload, path=path, durable=self._durable)
        finally:
            os.close(fd)
        if new and self._durable:
            fsync_dir(path.parent)  # a new file's directory entry must be durable before the records

    def retain_secrets(self, run_id: str, commitments: Collection[str]) -> None:
        """Keep only the values ``commitments`` still need (the file goes when none is left)."""
        path = self._files.run_dir(run_id) / SECRETS_FILE
        if not path.exists():
            return
        keep = retained(self.get_secrets(run_id), commitments)
        if not keep:
            path.unlink()
            if self._durable:
                fsync_dir(path.parent)
            return
        atomic_write_bytes(path, b"".join(canonical_json(e) + b"\n" for e in keep), durable=self._durable)

    def runs_keeping_secrets(self) -> builtins.list[str]:
        """The runs that have a ``secrets.jsonl`` (one directory listing and a stat per run)."""
        runs = self._files.root / "runs"
        try:
            names = sorted(entry.name for entry in os.scandir(runs) if entry.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []
        return [name for name in names if os.path.isfile(runs / name / SECRETS_FILE)]

    def get_secrets(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """The kept values (a torn last line from an interrupted append is skipped)."""
        path = self._files.run_dir(run_id) / SECRETS_FILE
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            return []
        entries: list[dict[str, Any]] = []
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                doc = loads_strict(raw)
            except (ValueError, UnicodeDecodeError):
                continue  # torn by a crash before its records were written: never needed
            if isinstance(doc, dict):
                entries.append(doc)
        return entries


def _lock_for_append(fd: int, path: Path) -> None:
    """Hold an exclusive ``flock`` on the ledger while its end is compared and written (released
    when ``fd`` is closed). Readers take no lock; only appenders wait for each other."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        raise StorageError(f"Cannot lock {path} for an append: {exc.strerror or exc}") from exc


__all__ = ["JsonlLedgerStore"]
