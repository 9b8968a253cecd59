"""``JsonlLedgerStore``: hash-chained JSONL ledgers, ``runs/<id>/ledger.jsonl`` — the write-ahead log.

The writer's view of each ledger (its head, the file size it covers) is cached per process
and refreshed from the file's size, so an append never re-reads what it already knows and
recovery reads only the tail after a checkpoint (:meth:`JsonlLedgerStore.read_after` seeks
to the byte offset the checkpoint recorded). Appends are conditional on the head the writer
read: another writer's records in between raise :class:`LedgerConflictError` and nothing is
written. Appends happen under the run's lock (the runtime takes it).

A long ledger is sealed into ``segments/`` (:mod:`.segments`); every offset counts in the
concatenation of the sealed segments and ``ledger.jsonl``, so readers see one file.
"""

from __future__ import annotations

import builtins
import fcntl
import os
import stat as stat_module
import threading
import weakref
from dataclasses import field
from ..core.fastclass import dataclass
from pathlib import Path
from typing import Any, Collection, Optional, Sequence

from ..core.logs import get_logger
from ..core.canonical import canonical_json
from ..core.errors import CorruptRecordError, LedgerConflictError, StorageError
from ..core.models import StepRecord
from ..core.ports import Capability, LedgerHead, LedgerStore, retained
from ..core.records import JCS_FORMATS, expand_records
from .fsio import Durability, append_bytes, atomic_write_bytes, check_durability, fsync_dir, loads_strict, open_append, read_bytes
from .run_files import ANCHORS_FILE, LEDGER_FILE, SECRETS_FILE, RunFiles
from ..core.chain import seal_batch
from .ledger_parse import parse_ledger
from .segments import (SEGMENT_BYTES, SEGMENT_KIND, SEGMENT_RECORDS, SEGMENTS_DIR, Parts, check_seals, iter_bytes,
                       last_record, list_parts, read_range, seal_tail)

log = get_logger("abstractruntime.storage")

# How far before a recorded offset to look for the line that must end there.
_ANCHOR_WINDOW = 4096
# Ledger descriptors a store keeps open between appends (one per run: a worker's runs in flight);
# past it one not in use is closed.
KEPT_DESCRIPTORS = 32


@dataclass
class _Held:
    """A live ledger file's descriptor kept open between appends (its flock is taken per append)."""

    fd: int
    forks: int  # _FORKS when it was opened: a forked child opens its own
    ident: tuple[int, int]  # (st_dev, st_ino) of the file it was opened on
    access: tuple[int, int, int]  # (st_mode, st_uid, st_gid) of that file then: a chmod or chown since
    # would decide an open (a ledger made read-only), so the file is opened again
    dir_ident: tuple[int, int]  # (st_dev, st_ino) of the run directory then
    path: Path
    run_dir: str
    ledger: str
    segments: str


# How many forks this process descends from (counted in the child, so a kept descriptor is known
# to be inherited without a getpid() system call per append).
_FORKS = 0


def _forked() -> None:
    global _FORKS
    _FORKS += 1


os.register_at_fork(after_in_child=_forked)


def _close_held(held: dict[str, _Held]) -> None:
    """Close the kept descriptors of a store being collected (those this process opened)."""
    for entry in builtins.list(held.values()):
        if entry.forks == _FORKS:
            try:
                os.close(entry.fd)
            except OSError:
                pass
    held.clear()


@dataclass
class _LedgerCache:
    """What this process knows of one ledger file, valid while size and inode match."""

    # (inode, size) of each ledger file (sealed segments, then ledger.jsonl) as last read.
    ident: list[tuple[int, int]] = field(default_factory=list)
    size: int = 0
    lines: int = 0
    head: LedgerHead = field(default_factory=LedgerHead)
    # idempotency_key -> offset of its first completed record; None until first needed.
    completed: Optional[dict[str, int]] = None
    # effect_id -> the key its intent named (format 3 outcomes do not repeat it).
    intent_keys: dict[int, str] = field(default_factory=dict)
    # The live file ends with a segment record whose rename has not happened yet.
    pending_seal: bool = False
    # (inode of the last sealed segment, seq and hash of its last record).
    sealed_end: Optional[tuple[int, int, Optional[str]]] = None


@dataclass
class _TailLine:
    """The ledger's last line as :meth:`JsonlLedgerStore.peek_head` (a process that has not read the
    ledger yet) or :meth:`JsonlLedgerStore.record_at` just read it, so the rest of one open (the
    record proving the checkpoint, the tail read after it) does not read and parse it again.
    Used only while the live file has the inode, size, mtime and ctime it had before it was read
    (any write to it changes its ctime, which no one can set back) and the sealed segments before
    it keep their inodes and sizes (its offset counts them), and once."""

    stamp: tuple[int, int, int, int]
    files: list[tuple[int, int]]  # ``Parts.identity()`` of the listing it was read with
    end: int  # the offset its newline ends at: the ledger's length then
    seq: int
    record_hash: Optional[str]
    kind: Optional[str]
    doc: Optional[dict[str, Any]]  # handed out once (by record_at): a caller may keep it

    @classmethod
    def of(cls, stamp: tuple[int, int, int, int], parts: Parts, end: int, doc: dict[str, Any], *,
           keep_doc: bool) -> "_TailLine":
        """The line ``doc`` ending at ``end``, read with ``parts`` while the live file was ``stamp``."""
        kind, record_hash = doc.get("kind"), doc.get("record_hash")
        return cls(stamp, parts.identity(), end, doc["seq"], record_hash if isinstance(record_hash, str) else None,
                   kind if isinstance(kind, str) else None, doc if keep_doc else None)

    def holds(self, parts: Parts) -> bool:
        """Whether the ledger is still as it was when the line was read (listing and live file)."""
        return parts.tail is not None and self.files == parts.identity() and self.stamp == _stamp(parts.tail.path)


def _extends(old: list[tuple[int, int]], new: list[tuple[int, int]]) -> bool:
    """True when the files ``new`` describes still hold every byte ``old`` described (appended to,
    or the live file renamed into a segment): only the new bytes then need reading."""
    if not old:
        return True
    if len(new) < len(old) or new[: len(old) - 1] != old[:-1]:
        return False
    return new[len(old) - 1][0] == old[-1][0] and new[len(old) - 1][1] >= old[-1][1]


class JsonlLedgerStore(LedgerStore):
    """Hash-chained JSONL ledgers with conditional group appends and tail reads."""

    chained = True
    capabilities = frozenset({Capability.CHAINED, Capability.SEALED_LINES, Capability.POSITION_TOKENS,
                              Capability.ANCHORS, Capability.SECRETS, Capability.PEEK_HEAD,
                              Capability.SEGMENTS})

    def __init__(self, base_dir: str | os.PathLike[str], *, durability: Durability = "fsync",
                 segment_bytes: int = SEGMENT_BYTES, segment_records: int = SEGMENT_RECORDS) -> None:
        self.durability = check_durability(durability)
        # The live file is sealed into a segment once it holds this many bytes or records.
        self.segment_bytes, self.segment_records = segment_bytes, segment_records
        self._files = RunFiles(base_dir, durable=durability == "fsync")
        self._cache: dict[str, _LedgerCache] = {}
        self._tails: dict[str, _TailLine] = {}
        # One lock per run, so one run's fsync never holds up another run's reads or appends
        # (a worker advances many runs at once); _guards_lock only guards the dict.
        self._guards: dict[str, threading.RLock] = {}
        self._guards_lock = threading.Lock()
        # run_id -> the live file's descriptor kept from its last append (see _held_live).
        self._held: dict[str, _Held] = {}
        self._held_lock = threading.Lock()
        weakref.finalize(self, _close_held, self._held)

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
                fd, path, cache, live = self._open_live(run_id)
                try:
                    docs, lines = seal_batch(batch, head=cache.head)
                    self._write(run_id, path, docs, lines, fd=fd, live=live)
                except BaseException:
                    self._drop(run_id, fd)
                    raise
                self._unlock(run_id, fd)

    def append_lines(self, run_id: str, docs: Sequence[dict[str, Any]], lines: Sequence[bytes],
                     *, expect: LedgerHead) -> LedgerHead:
        """Append sealed records (one write, one fsync) if the ledger still ends at ``expect``.

        The check and the write are one step for every writer of the file, in any process: an
        ``flock`` on the ledger itself is held from the read of its end to the write, so a writer
        that lost its run's lock while it worked cannot slip its batch in beside the new writer's.
        """
        with self._guard(run_id):
            fd, path, cache, live = self._open_live(run_id)
            try:
                if cache.head.seq != expect.seq or cache.head.head_hash != expect.head_hash:
                    raise LedgerConflictError(
                        f"run {run_id}: the ledger is at seq {cache.head.seq}, not {expect.seq} as this writer read "
                        "it (another writer appended); nothing was written")
                head = self._write(run_id, path, docs, lines, fd=fd, live=live)
            except BaseException:
                self._drop(run_id, fd)  # closing it releases the flock
                raise
            self._unlock(run_id, fd)
            return head

    def _open_live(self, run_id: str) -> tuple[int, Path, _LedgerCache, tuple[int, int]]:
        """An append descriptor on ``ledger.jsonl``, ``flock``-ed, after finishing a pending seal,
        the cache brought up to date under that flock (a torn tail cut), and the live file's
        inode and size.

        The descriptor of the previous append is used again when, under its flock, the file
        named ``ledger.jsonl`` is still the one it holds with the length this process wrote, in
        the same run directory, with no ``segments/`` beside it (:meth:`_held_live`). Otherwise
        the file is opened: the descriptor is checked to still be the file named
        ``ledger.jsonl`` once locked — a writer that opened it just before another process
        renamed it into a segment opens the new live file instead, so nothing is ever appended
        to a sealed segment. A live file found to end with a ``segment`` record (a seal a kill
        interrupted, or one done by another process since this one last looked) is sealed
        first, and the open starts again.
        """
        held = self._held_live(run_id)
        if held is not None:
            return held
        run_dir = self._files.run_dir(run_id, create=True)
        path = run_dir / LEDGER_FILE
        for _ in range(8):
            known = self._cache.get(run_id)
            if known is None or known.pending_seal:
                if self._refresh(run_id, repair=False).pending_seal:  # a torn tail is cut only under the flock
                    self._seal_pending(run_id)
            fd = open_append(path)
            try:
                _lock_for_append(fd, path)
                try:
                    st = os.fstat(fd)
                    same = os.lstat(path).st_ino == st.st_ino
                except FileNotFoundError:
                    same = False
                cache = self._refresh(run_id, repair=True) if same else None
                before = os.fstat(fd).st_size if cache is not None else 0  # after a torn tail's cut
            except BaseException:
                os.close(fd)
                raise
            if cache is not None and not cache.pending_seal:
                self._hold(run_id, fd, st, run_dir, path)
                return fd, path, cache, (st.st_ino, before)
            os.close(fd)  # replaced meanwhile, or its end is a seal to finish first: look again
        raise StorageError(f"Cannot open {path} for an append: it keeps being replaced")

    # -- the descriptor kept between appends ----------------------------------------------

    def _held_live(self, run_id: str) -> Optional[tuple[int, Path, _LedgerCache, tuple[int, int]]]:
        """The kept descriptor of ``run_id``'s live file, ``flock``-ed, when it is still the
        ledger as this process last knew it; else ``None`` (the descriptor closed).

        What is checked under the flock, in this order: the run directory is the directory it
        was (``lstat``); ``ledger.jsonl`` is a regular file with the kept descriptor's device and
        inode — not renamed into a segment, replaced, removed — with the mode and owner it had
        (a chmod or chown would decide an open: a ledger made read-only), and exactly the length this
        process's cache covers (another writer's append, a truncation, a torn tail all change
        it); the cache knows the ledger as that one file, not ending with a seal; and there is
        no ``segments/`` (a seal by another process, or a stray). A writer that follows the
        protocol renames or cuts the live file only under its flock, so what holds here holds
        until the write. The kept descriptor also keeps its inode allocated, so no new file
        can come to carry the same inode number.
        """
        held = self._held.get(run_id)
        if held is None:
            return None
        if held.forks != _FORKS:
            # Inherited over a fork: the parent's open file (and flock). Only this copy is closed,
            # and only while the number still names that file: a child that closed its inherited
            # descriptors (a daemon) may hold its own file under the number now.
            self._held.pop(run_id, None)
            try:
                st = os.fstat(held.fd)
                if (st.st_dev, st.st_ino) == held.ident:
                    os.close(held.fd)
            except OSError:
                pass
            return None
        cache = self._cache.get(run_id)
        if cache is None or cache.pending_seal or len(cache.ident) != 1:
            self._drop(run_id, held.fd)
            return None
        try:
            _lock_for_append(held.fd, held.path)
            st = os.lstat(held.run_dir)
            if (st.st_dev, st.st_ino) == held.dir_ident:
                st = os.lstat(held.ledger)
                if stat_module.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == held.ident \
                        and (st.st_mode, st.st_uid, st.st_gid) == held.access \
                        and cache.ident[0] == (st.st_ino, st.st_size) and cache.size == st.st_size:
                    try:
                        os.lstat(held.segments)
                    except FileNotFoundError:
                        return held.fd, held.path, cache, (st.st_ino, st.st_size)
        except FileNotFoundError:
            pass
        except BaseException:
            self._drop(run_id, held.fd)
            raise
        self._drop(run_id, held.fd)  # closing it releases the flock
        return None

    def _hold(self, run_id: str, fd: int, st: os.stat_result, run_dir: Path, path: Path) -> None:
        """Keep ``fd`` (just opened on ``path``, flock-ed) for the run's next appends."""
        try:
            dir_st = os.lstat(run_dir)
        except FileNotFoundError:
            return  # not kept: the run directory went away; the caller closes it after its write
        with self._held_lock:
            if len(self._held) >= KEPT_DESCRIPTORS:
                self._evict()
            if len(self._held) < KEPT_DESCRIPTORS:
                self._held[run_id] = _Held(fd, _FORKS, (st.st_dev, st.st_ino), (st.st_mode, st.st_uid, st.st_gid),
                                           (dir_st.st_dev, dir_st.st_ino), path, str(run_dir), str(path),
                                           str(run_dir / SEGMENTS_DIR))

    def _evict(self) -> None:
        """Close a kept descriptor no thread is using (called with ``_held_lock`` held)."""
        for other, held in builtins.list(self._held.items()):
            guard = self._guard(other)
            if guard.acquire(blocking=False):  # never wait for another run's guard: no lock order to keep
                try:
                    if self._held.get(other) is held:
                        del self._held[other]
                        if held.forks == _FORKS:
                            os.close(held.fd)
                finally:
                    guard.release()
                return

    def _unlock(self, run_id: str, fd: int) -> None:
        """End an append: release the flock of a kept descriptor, close any other."""
        held = self._held.get(run_id)
        if held is not None and held.fd == fd:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except OSError:
                pass
        self._drop(run_id, fd)

    def _drop(self, run_id: str, fd: int) -> None:
        """Close ``fd`` (releasing its flock), and forget it when it is the run's kept descriptor."""
        with self._held_lock:
            held = self._held.get(run_id)
            if held is not None and held.fd == fd:
                del self._held[run_id]
        os.close(fd)

    def _forget_held(self, run_id: str) -> None:
        """Close the run's kept descriptor, if any (its file was sealed into a segment)."""
        with self._held_lock:
            held = self._held.pop(run_id, None)
        if held is not None and held.forks == _FORKS:
            os.close(held.fd)

    def release(self, run_id: str) -> None:
        """Close the descriptor of ``run_id``'s ledger kept between appends (before the run's
        files are removed: an open descriptor would keep the file's space in use)."""
        with self._guard(run_id):
            self._forget_held(run_id)

    def close(self) -> None:
        """Close the ledger descriptors kept between appends (the store stays usable: the next
        append opens its file again)."""
        for run_id in builtins.list(self._held):
            with self._guard(run_id):
                self._forget_held(run_id)

    def _write(self, run_id: str, path: Path, docs: Sequence[dict[str, Any]], lines: Sequence[bytes],
               *, fd: int, live: tuple[int, int]) -> LedgerHead:
        """Append ``lines`` on ``fd`` (flock-ed; ``live``: its inode and size) and move the cache."""
        cache = self._cache[run_id]  # refreshed by the caller, under the flock
        payload = b"".join(line + b"\n" for line in lines)
        append_bytes(fd, payload, path=path, durable=self._durable)
        # O_APPEND under the flock: the file now ends where this write ended. An outside append
        # without the flock makes the file longer than this, which the next append sees.
        inode, before = live
        size = before + len(payload)
        if before == 0 and self._durable:
            fsync_dir(path.parent)  # a new ledger file's directory entry must be durable too
        offset = cache.size
        for doc, line in zip(docs, lines):
            key = doc.get("idempotency_key")
            effect_id = doc.get("effect_id")
            if doc.get("format") in JCS_FORMATS and isinstance(effect_id, int):
                if key and doc.get("status") == "started":
                    cache.intent_keys[effect_id] = key
                elif key is None and doc.get("kind") == "effect":
                    key = cache.intent_keys.get(effect_id)
            if cache.completed is not None and key and doc.get("status") == "completed":
                cache.completed.setdefault(key, offset)
            offset += len(line) + 1
        last = docs[-1]
        if cache.ident and cache.ident[-1][0] == inode:
            cache.ident = cache.ident[:-1] + [(inode, size)]
        else:
            cache.ident = cache.ident + [(inode, size)]
        cache.size, cache.lines = offset, cache.lines + len(lines)
        cache.pending_seal = last.get("kind") == SEGMENT_KIND
        cache.head = LedgerHead(last["seq"], last["record_hash"], offset=offset)
        return cache.head

    def _refresh(self, run_id: str, *, repair: bool) -> _LedgerCache:
        """Bring the cache up to date with the files, reading only bytes it has not seen."""
        return self._refresh_parts(run_id, repair=repair)[0]

    def _refresh_parts(self, run_id: str, *, repair: bool) -> tuple[_LedgerCache, Parts]:
        """:meth:`_refresh`, and the listing of the files it was brought up to date with."""
        cache = self._cache.get(run_id)
        parts = self._parts(run_id)
        if not parts.exists:
            cache = self._cache[run_id] = _LedgerCache(completed={})
            return cache, parts
        ident = parts.identity()
        if cache is None or not _extends(cache.ident, ident):
            cache = _LedgerCache()
            _check_seals(parts, self._files.ledger(run_id))
        if parts.size == cache.size:
            cache.ident = ident
            self._cache[run_id] = cache
            return cache, parts
        data = read_range(parts, cache.size)
        where = str(parts.tail.path if parts.tail is not None else parts.sealed[-1].path)
        parsed = parse_ledger(data, path=where, start_offset=cache.size, start_line=cache.lines,
                              head=cache.head, keep_records=False, run_id=run_id, intent_keys=cache.intent_keys)
        cache.intent_keys = parsed.intent_keys
        if parsed.torn_bytes:
            if parts.tail is None or parsed.valid_end < parts.base:
                raise CorruptRecordError(f"a sealed segment of run {run_id} does not end with a whole record "
                                         "(truncated or edited); refusing to write", path=where)
            log.warning("%s: torn tail of %d bytes after line %d (an interrupted append)%s",
                        parts.tail.path, parsed.torn_bytes, parsed.lines, "; truncated" if repair else "; ignored")
            if repair:
                os.truncate(parts.tail.path, parsed.valid_end - parts.base)
                if self._durable:
                    fd = os.open(parts.tail.path, os.O_WRONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                ident = ident[:-1] + [(parts.tail.inode, parsed.valid_end - parts.base)]
        if cache.completed is not None:
            for key, offset in parsed.completed_offsets.items():
                cache.completed.setdefault(key, offset)
        elif cache.size == 0:
            cache.completed = dict(parsed.completed_offsets)
        cache.size, cache.lines, cache.ident = parsed.valid_end, parsed.lines, ident
        cache.head = LedgerHead(parsed.head.seq, parsed.head.head_hash, offset=parsed.valid_end)
        live = parts.tail
        if live is not None and parsed.valid_end > parts.base:
            doc = last_record(live.path)
            cache.pending_seal = bool(doc) and doc.get("kind") == SEGMENT_KIND  # type: ignore[union-attr]
        else:
            cache.pending_seal = False
        self._cache[run_id] = cache
        if parsed.torn_bytes and repair:
            parts = self._parts(run_id)  # the live file was cut: list it as it is now
        return cache, parts

    def _keep_tail(self, run_id: str, tail: _TailLine) -> None:
        if len(self._tails) >= 4096:
            self._tails.clear()  # a bound: a line not found is only read again
        self._tails[run_id] = tail

    def _parts(self, run_id: str) -> Parts:
        return list_parts(self._files.run_dir(run_id))

    # -- segments ------------------------------------------------------------------------

    def segment_due(self, run_id: str) -> Optional[dict[str, Any]]:
        """The ``result`` of the ``segment`` record that should close the live file now
        (``{"segment", "head_hash", "count"}``, the count including that record), or ``None``
        while it holds fewer than ``segment_bytes`` bytes and ``segment_records`` records."""
        with self._guard(run_id):
            cache, parts = self._refresh_parts(run_id, repair=False)
            if parts.tail is None or parts.tail.size == 0 or cache.pending_seal:
                return None
            end_seq, end_hash = self._sealed_end(cache, parts)
            count = cache.head.seq - end_seq
            if parts.tail.size < self.segment_bytes and count < self.segment_records:
                return None
            return {"segment": len(parts.sealed) + 1, "head_hash": end_hash, "count": count + 1}

    def _sealed_end(self, cache: _LedgerCache, parts: Parts) -> tuple[int, Optional[str]]:
        """Seq and hash of the last sealed segment's last record (0, None without segments)."""
        if not parts.sealed:
            return 0, None
        last = parts.sealed[-1]
        if cache.sealed_end is None or cache.sealed_end[0] != last.inode:
            doc = last_record(last.path) or {}
            seq = doc.get("seq")
            cache.sealed_end = (last.inode, seq if isinstance(seq, int) else 0, doc.get("record_hash"))
        return cache.sealed_end[1], cache.sealed_end[2]

    def seal_segment(self, run_id: str) -> bool:
        """Rename ``ledger.jsonl`` into ``segments/`` if it ends with a ``segment`` record (True
        when it did). The runtime calls it right after appending that record; a writer finds a
        seal a kill interrupted and finishes it before its next append."""
        with self._guard(run_id):
            return self._seal_pending(run_id)

    def _seal_pending(self, run_id: str) -> bool:
        run_dir = self._files.run_dir(run_id)
        path = run_dir / LEDGER_FILE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        try:
            _lock_for_append(fd, path)
            try:
                if os.lstat(path).st_ino != os.fstat(fd).st_ino:
                    return False  # another process sealed it meanwhile
            except FileNotFoundError:
                return False
            doc = last_record(path)
            if not doc or doc.get("kind") != SEGMENT_KIND:
                return False
            result = doc.get("result")
            number = result.get("segment") if isinstance(result, dict) else None
            parts = self._parts(run_id)
            if number != len(parts.sealed) + 1:
                raise CorruptRecordError(f"its segment record says segment {number!r}, but {len(parts.sealed)} "
                                         "segment(s) are sealed; refusing to rename it", path=str(path))
            self._forget_held(run_id)  # its kept descriptor would name the sealed segment
            seal_tail(run_dir, number, durable=self._durable)
            cache = self._cache.get(run_id)
            if cache is not None:
                cache.pending_seal = False
            return True
        finally:
            os.close(fd)

    # -- reading -----------------------------------------------------------------------

    def list(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """All records of the run, expanded as upstream 0.0.1 code reads them (each with the
        record as stored under ``"stored"``), sealed segments first. Hashes are not checked
        here: see ``verify``.

        A torn tail is skipped with a warning; a bad line before it raises
        :class:`CorruptRecordError` naming the file and line.
        """
        return expand_records(self.stored(run_id), run_id)

    def stored(self, run_id: str) -> builtins.list[dict[str, Any]]:
        """All records of the run exactly as stored (format 3: compact, values by reference)."""
        parts = self._parts(run_id)
        if not parts.exists:
            return []
        path = self._files.ledger(run_id)
        parsed = parse_ledger(read_range(parts), path=str(path), verify_chain=False)
        if parsed.torn_bytes:
            log.warning("%s: ignoring a torn tail of %d bytes after line %d", path, parsed.torn_bytes, parsed.lines)
        return parsed.records

    def record_at(self, run_id: str, position: LedgerHead) -> Optional[dict[str, Any]]:
        """The stored record at ``position``: the line ending at its byte offset when it has one
        (else found by reading), or ``None`` when the ledger has no such record."""
        if position.offset is not None:
            with self._guard(run_id):
                tail = self._tails.get(run_id)
                doc = tail.doc if tail is not None and tail.end == position.offset and tail.seq == position.seq \
                    else None
                parts = self._parts(run_id)
                if doc is not None and tail is not None:
                    tail.doc = None
                    if tail.holds(parts):
                        return doc
                stamp = _stamp(parts.tail.path) if parts.tail is not None else None  # before the read
                found = self._records_at(parts, [(position.seq, position.offset)], ending=True)
                if found:
                    doc = found[0]
                    if position.offset == parts.size and stamp is not None and parts.tail is not None \
                            and stamp[1] == parts.tail.size > 0:
                        # The line ends the ledger: the tail read after it (read_after) need not read it again.
                        self._keep_tail(run_id, _TailLine.of(stamp, parts, parts.size, doc, keep_doc=False))
                    return doc
        _, records = self.read_after(run_id, LedgerHead(), until_seq=position.seq)
        return records[-1] if records and records[-1].get("seq") == position.seq else None

    def records_at(self, run_id: str, positions: Sequence[tuple[int, Optional[int]]], *,
                   ending: bool = False) -> builtins.list[dict[str, Any]]:
        """The stored records at ``(seq, offset)`` positions: the line starting at each offset
        (``ending``: the line ending just before it). Positions whose line does not hold that
        seq are skipped: the offsets are hints, never trusted."""
        return self._records_at(self._parts(run_id), positions, ending=ending)

    @staticmethod
    def _records_at(parts: Parts, positions: Sequence[tuple[int, Optional[int]]], *,
                    ending: bool) -> builtins.list[dict[str, Any]]:
        found: builtins.list[dict[str, Any]] = []
        size = parts.size
        for seq, offset in positions:
            if offset is None or offset < 0 or offset > size:
                continue
            if ending:
                raw = _line_ending_at(parts, offset)
                if raw is None:
                    continue
            else:
                raw = _line_starting_at(parts, offset)
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
        ``position`` names (so sealed segments before it are not read); otherwise (no offset,
        another file) reads the whole ledger. A torn tail is left for the writer to truncate.
        Seeds the writer's cache.
        """
        with self._guard(run_id):
            path = self._files.ledger(run_id)
            parts = self._parts(run_id)
            seen = self._tails.pop(run_id, None)
            if seen is not None and not seen.holds(parts):
                seen = None  # a segment before it resized or replaced moves every offset: look again
            if not parts.exists:
                self._cache[run_id] = _LedgerCache(completed={})
                return LedgerHead(), []
            _check_seals(parts, path)
            start, start_head = 0, LedgerHead()
            if position.seq and position.offset is not None and (
                    (seen is not None and seen.end == position.offset and seen.seq == position.seq
                     and seen.record_hash == position.head_hash and bool(seen.record_hash))
                    or _anchored(parts, position)):
                start, start_head = position.offset, LedgerHead(position.seq, position.head_hash)
            if until_seq is not None:
                # A partial read (point in time): only the bytes it needs, and no cache seeded.
                records = self._read_until(parts, path, run_id, start, start_head, until_seq)
                return self.peek_head(run_id), [r for r in records if r.get("seq", 0) > position.seq]
            data = read_range(parts, start)
            parsed = parse_ledger(data, path=str(path), start_offset=start, start_line=start_head.seq,
                                  head=start_head, run_id=run_id)
            records = [r for r in parsed.records if r.get("seq", 0) > position.seq] if start == 0 else parsed.records
            live = parts.tail
            pending = False
            if live is not None and parsed.valid_end > parts.base:
                # Whether the live file ends with a segment record: its last line, when this read
                # or peek_head had it already.
                if parsed.records and parsed.valid_end == parts.size:
                    pending = parsed.records[-1].get("kind") == SEGMENT_KIND
                elif seen is not None and seen.end == parsed.valid_end == parts.size:
                    pending = seen.kind == SEGMENT_KIND
                else:
                    doc = last_record(live.path)
                    pending = bool(doc) and doc.get("kind") == SEGMENT_KIND  # type: ignore[union-attr]
            self._cache[run_id] = _LedgerCache(
                ident=parts.identity(), size=parsed.valid_end, lines=parsed.lines,
                head=LedgerHead(parsed.head.seq, parsed.head.head_hash, offset=parsed.valid_end),
                completed=dict(parsed.completed_offsets) if start == 0 else None,
                intent_keys=parsed.intent_keys if start == 0 else {}, pending_seal=pending)
            if parsed.torn_bytes and parsed.valid_end < parts.base:
                raise CorruptRecordError(f"a sealed segment of run {run_id} does not end with a whole record "
                                         "(truncated or edited)", path=str(path))
            return self._cache[run_id].head, records

    @staticmethod
    def _read_until(parts: Parts, path: Path, run_id: str, start: int, head: LedgerHead,
                    until_seq: int) -> builtins.list[dict[str, Any]]:
        """Chain-checked records from byte ``start`` up to seq ``until_seq``, read in chunks."""
        records: builtins.list[dict[str, Any]] = []
        offset, line, pending = start, head.seq, b""
        for chunk in iter_bytes(parts, start, chunk=1 << 18):
            if head.seq >= until_seq:
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
        """The head as this process last saw it, else read off the ledger's last line (not chain-checked)."""
        with self._guard(run_id):
            cache = self._cache.get(run_id)
            parts = self._parts(run_id)
            self._tails.pop(run_id, None)
            if not parts.exists:
                return LedgerHead()
            if cache is not None and cache.ident == parts.identity():
                return cache.head
            stamp = _stamp(parts.tail.path) if parts.tail is not None else None  # before the read
            size = parts.size
            begin = max(0, size - _ANCHOR_WINDOW * 16)
            window = read_range(parts, begin, size)
            whole = window.endswith(b"\n") and not window.endswith(b"\n\n")  # the last line ends the file
            for raw in reversed(window.rstrip(b"\n").split(b"\n")):
                try:
                    doc = loads_strict(raw)
                except (ValueError, UnicodeDecodeError):
                    whole = False
                    continue
                if isinstance(doc, dict) and isinstance(doc.get("seq"), int):
                    if whole and stamp is not None and parts.tail is not None and stamp[1] == parts.tail.size > 0 \
                            and (begin == 0 or len(raw) + 1 < len(window)):
                        self._keep_tail(run_id, _TailLine.of(stamp, parts, size, doc, keep_doc=True))
                    return LedgerHead(doc["seq"], doc.get("record_hash"))
                whole = False
            return self.head(run_id)

    def position_token_at(self, run_id: str, head: LedgerHead) -> Optional[tuple[int, int]]:
        """:meth:`position_token` as it was right after this process appended the record ``head``
        names (the inode and length its own write saw), or ``None`` when its view of the ledger
        ends elsewhere (ask :meth:`position_token`). A token is only ever compared with a fresh one."""
        with self._guard(run_id):
            cache = self._cache.get(run_id)
            if cache is None or not cache.ident or cache.head.seq != head.seq \
                    or cache.head.head_hash != head.head_hash:
                return None
            return cache.ident[-1][0], cache.size

    def position_token(self, run_id: str) -> Optional[tuple[int, int]]:
        """``(inode, size)``: the live file's inode (or the last segment's) and the ledger's
        whole length — changes with every append by anyone."""
        parts = self._parts(run_id)
        files = parts.all
        if not files:
            return None
        return files[-1].inode, parts.size

    def head(self, run_id: str) -> LedgerHead:
        """The last valid record's seq and hash (chain-checked)."""
        with self._guard(run_id):
            return self._refresh(run_id, repair=False).head

    def find_completed(self, run_id: str, idempotency_key: str) -> Optional[dict[str, Any]]:
        """The first completed record with this key (an index built on first use, then O(1))."""
        with self._guard(run_id):
            path = self._files.ledger(run_id)
            cache = self._refresh(run_id, repair=False)
            parts = self._parts(run_id)
            if cache.completed is None:
                data = read_range(parts, 0, cache.size)
                full = parse_ledger(data, path=str(path), keep_records=False, verify_chain=False)
                cache.completed, cache.intent_keys = dict(full.completed_offsets), full.intent_keys
            offset = cache.completed.get(idempotency_key)
            if offset is None:
                return None
            line = _line_starting_at(parts, offset) + b"\n"
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


def _check_seals(parts: Parts, path: Path) -> None:
    """Refuse a ledger whose sealed segments were deleted, cut, renamed or reordered (their last
    lines only are read: an open must not read old segments)."""
    if parts.sealed or parts.strays:
        problem = check_seals(parts)
        if problem is not None:
            raise CorruptRecordError(f"{problem}; refusing the run's ledger", path=str(path.parent / "segments"))


def _line_ending_at(parts: Parts, offset: int) -> Optional[bytes]:
    """The line whose newline ends just before ``offset`` (``None`` when no line ends there)."""
    begin = max(0, offset - _ANCHOR_WINDOW)
    window = read_range(parts, begin, offset)
    if not window.endswith(b"\n"):
        return None
    raw = window[:-1].rsplit(b"\n", 1)[-1]
    if len(raw) + 1 >= len(window) and begin > 0:
        raw = read_range(parts, 0, offset)[:-1].rsplit(b"\n", 1)[-1]  # a line longer than the window
    return raw


def _line_starting_at(parts: Parts, offset: int) -> bytes:
    """The line that starts at ``offset``, without its newline."""
    out = bytearray()
    for chunk in iter_bytes(parts, offset, chunk=_ANCHOR_WINDOW):
        cut = chunk.find(b"\n")
        if cut >= 0:
            out += chunk[:cut]
            break
        out += chunk
    return bytes(out)


def _stamp(path: Path) -> tuple[int, int, int, int]:
    """``(inode, size, mtime_ns, ctime_ns)`` of a ledger file (zeros when it is gone)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return (0, 0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _anchored(parts: Parts, position: LedgerHead) -> bool:
    """True when the line ending at ``position.offset`` carries ``position.head_hash``."""
    offset = position.offset or 0
    if offset > parts.size or not position.head_hash:
        return False
    try:
        window = read_range(parts, max(0, offset - _ANCHOR_WINDOW), offset)
    except OSError:
        return False
    if not window.endswith(b"\n"):
        return False
    last_line = window[:-1].rsplit(b"\n", 1)[-1]
    return b'"record_hash":"' + position.head_hash.encode("ascii", "replace") + b'"' in last_line


def _lock_for_append(fd: int, path: Path) -> None:
    """Hold an exclusive ``flock`` on the ledger while its end is compared and written (released
    when ``fd`` is closed). Readers take no lock; only appenders wait for each other."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        raise StorageError(f"Cannot lock {path} for an append: {exc.strerror or exc}") from exc


__all__ = ["JsonlLedgerStore"]
