"""A rebuildable SQLite index of run checkpoints, so queries never re-parse every run file.

``<store>/index.sqlite3`` holds one row per run (status, wait reason and key, workflow,
``until``, ``updated_at``, parent, and the identity — mtime_ns, size, inode — of the
``run.json`` it was taken from; schema and migrations in :mod:`.run_index_schema`). It is a
cache of the ``run.json`` files, which stay the truth:

- a row is marked ``dirty`` before a writer appends past the run's checkpoint, and made clean
  by the checkpoint at the ledger's head (:mod:`abstractruntime.core.ahead`): a writer killed in
  between leaves it dirty, so the run is found (:meth:`RunIndex.ahead`) and finished by the
  next worker; queries read dirty rows' runs from their ledgers, as the ledger says;
- the rows are checked against their files — each clean row's ``run.json`` ``stat``-ed, the runs
  whose file is not the one the row was taken from re-read and their rows repaired — whenever
  they may be out of step: on the first query after a reboot (a power cut may have lost the
  index's last commits: ``index.checked`` holds the boot id of the last check), after a writer
  lost a row write (it leaves ``index.unchecked``), on a read-only index, and when a query's
  own results show a row that its file contradicts (a file edited or restored by hand); a
  query in step reads only its matching rows and the dirty ones;
- query results are re-read from ``run.json`` and re-checked against the filter;
- run directories copied in by hand are found through the ``runs/`` directory's mtime;
- :func:`~abstractruntime.storage.reindex.rebuild_index` (CLI: ``abstractruntime runs reindex``)
  recreates it from the files. A rebuild over :data:`PARALLEL_MIN` runs or more cuts the sorted
  run ids into one share per idle CPU and hands all but the first to helper processes (the same
  Python, reading the same files); the rows are written in one transaction once every share is
  in, and a share whose helper fails is scanned by the builder. A builder killed before that
  commit leaves an index without ``runs_mtime_ns``, which the next open rebuilds whole.

A store that cannot be written (read-only mount, no write permission) is queried through a
read-only connection, or from the run files when there is no index, when it is damaged, or
when it was written in another boot: nothing is written or moved. Only a file SQLite reports as corrupt is set aside (``index.sqlite3.damaged``) and
rebuilt; a full disk or an I/O error is a :class:`StorageError` naming the cause.
WAL mode with ``synchronous=OFF`` where the machine's boot id is known (:func:`boot_id`): no
fsync on commit or on the checkpoint a closing connection makes. A killed process loses nothing
SQLite wrote (the OS has it); an OS crash or power cut may lose or tear the last writes, and
the machine then boots with a new id. The index records the boot its rows were rebuilt in
(``meta`` ``boot_id``); an index of another boot is checked (``PRAGMA quick_check``: a damaged
one is set aside) and rebuilt from the files by the first process to open it, which also marks
again every run whose ledger is past its checkpoint — a mark the crash lost. Where no boot id
is known the index keeps ``synchronous=NORMAL`` (consistent after a power cut, perhaps behind
the files) and every query checks every row. A ``run.json`` replaced by hand that no query's
rows point at is seen after ``runs reindex`` (or on every query with ``always_check``).
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

from ..core.logs import get_logger
from ..core.errors import StorageError
from ..core.models import RunState
from .run_index_schema import (
    IDENTITY_COLUMNS,
    INSERT as _INSERT,
    MISSING as _MISSING,
    REPAIR_SET,
    ROW_COLUMNS,
    Identity,
    columns,
    error_kind as _error_kind,
    fields,
    migrate,
    row as _row,
)

if TYPE_CHECKING:
    import subprocess

INDEX_FILENAME = "index.sqlite3"
CHECKPOINT_NAME = "run.json"
# The boot id of the last check of every row against its file: while it is this boot's and no
# writer has left UNCHECKED_FILENAME, the rows are in step with the files and a query reads
# only dirty rows and new run directories.
CHECKED_FILENAME = "index.checked"
# Left by a writer whose row write was lost (a full disk, a locked or read-only index).
UNCHECKED_FILENAME = "index.unchecked"
_BOOT_ID: list[Optional[bytes]] = []
# A rebuild over at least this many run directories shares them with helper processes (one per
# further CPU): each run costs 50-90 µs of parsing, a helper about 0.1 s to start.
PARALLEL_MIN = 4000
# What a helper process runs: it reads its task (sys.path, the scanner, the store root and the
# first and last run id of its share) from stdin and writes the rows, marshalled, to stdout.
# Everything it is handed is the parent's own; its path is the parent's path exactly (``-c`` would
# put the working directory first, where a package of the same name may sit). A parent killed
# meanwhile closes the pipe, and the helper's write then fails and it exits.
_HELPER = (
    "import marshal, sys\n"
    "path, scanner, root, first, last = marshal.load(sys.stdin.buffer)\n"
    "sys.path[:] = path\n"
    "from importlib import import_module\n"
    "module, name = scanner.split(':')\n"
    "sys.stdout.buffer.write(marshal.dumps(getattr(import_module(module), name)(root, first, last)))\n"
)


# Test hook: the file the boot id is read from (tests point it elsewhere to stand for another
# boot, or at a missing file for a platform without one). Read once per process.
BOOT_ID_FILE_ENV = "ABSTRACTRUNTIME_BOOT_ID_FILE"
_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def boot_id() -> Optional[bytes]:
    """This boot of the machine (Linux), or ``None`` where it is not known.

    The index is written with ``synchronous=OFF`` when it is known: what SQLite wrote survives a
    killed process (the OS has it) but not an OS crash or power cut, after which the machine
    boots with a new id. So an index file is trusted only when it was rebuilt in this very boot
    (its ``meta`` row ``boot_id``); one written in another boot is checked and rebuilt from the
    files on first open. Without a boot id the index keeps ``synchronous=NORMAL`` (consistent
    after a power cut, perhaps behind the files) and every query checks every row.
    """
    if not _BOOT_ID:
        try:
            with open(os.environ.get(BOOT_ID_FILE_ENV) or _BOOT_ID_FILE, "rb") as f:
                _BOOT_ID.append(f.read(100).strip() or None)
        except OSError:
            _BOOT_ID.append(None)
    return _BOOT_ID[0]


log = get_logger("abstractruntime.storage")


# A directory's mtime is the kernel's coarse clock (one tick: 1-10 ms; whole seconds on some
# file systems): a run directory made within the same tick as the mtime recorded leaves it as it
# was. An mtime this recent is recorded so that it never matches: the next look lists the directory.
RACY_NS = 50_000_000
RACY_WHOLE_SECONDS_NS = 2_000_000_000


def vouched(mtime: int) -> str:
    """What the index records of the ``runs/`` directory's ``mtime``: the number itself once no
    later change can share it, else a value no mtime equals (the directory is listed next time)."""
    age = time.time_ns() - mtime
    if age < RACY_NS or (mtime % 1_000_000_000 == 0 and age < RACY_WHOLE_SECONDS_NS):
        return f"{mtime}?"
    return str(mtime)


def _python_executable() -> bool:
    """Whether ``sys.executable`` is an interpreter that runs ``-c CODE``: not a frozen application
    or a server embedding Python (their executable would start itself again)."""
    name = os.path.basename(sys.executable or "").lower()
    return not getattr(sys, "frozen", False) and name.startswith(("python", "pypy"))


def _run_names(runs_dir: "str | os.PathLike[str]") -> list[str]:
    """The names in ``runs/`` (none when it is missing); a ``runs/`` that cannot be listed (a file,
    no permission) is a :class:`StorageError`, one line, not an ``OSError``."""
    try:
        return os.listdir(runs_dir)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"Cannot list the run directories in {runs_dir}: {exc.strerror or exc}",
                           path=os.fspath(runs_dir)) from exc


_MARK = "INSERT INTO runs (run_id, dirty) VALUES (?, 1) ON CONFLICT (run_id) DO UPDATE SET dirty = 1"


class _Group:
    """Group commit of index writes from many threads: the first thread to arrive writes what
    every thread handed in until then, in one transaction, while the others wait for it; each
    returns once its own statement is committed. Many runs finishing together on an async
    worker's store threads then pay one commit, not one each."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[tuple[str, tuple[object, ...], list[Any]]] = []
        self._writing = False

    def write(self, index: "RunIndex", sql: str, params: tuple[object, ...]) -> Optional[StorageError]:
        """Commit ``sql`` with ``params`` (with others'); the error it met, or ``None``."""
        owned = getattr(index._lock, "_is_owned", None)
        if owned is not None and owned():
            # Called under the index's own lock (a write from within a query): waiting for a
            # leader that needs that lock would never end, so this statement goes alone.
            return index._write_all([(sql, params)])[0]
        slot: list[Any] = [None, False]  # the error, and whether it was written
        item = (sql, params, slot)
        with self._cond:
            try:
                self._pending.append(item)
                while self._writing and not slot[1]:
                    self._cond.wait()
            except BaseException:
                self._stopped(item)
                raise
            if slot[1]:
                return slot[0]  # type: ignore[no-any-return]
            self._writing = True
            batch, self._pending = self._pending, []
        failures: list[Optional[StorageError]] = []
        try:
            failures = index._write_all([(sql, params) for sql, params, _ in batch])
        finally:
            with self._cond:
                handed_back = []
                for at, queued in enumerate(batch):
                    if at < len(failures):
                        queued[2][0] = failures[at]
                        queued[2][1] = True
                    elif queued is not item:
                        # A leader stopped by an exception (KeyboardInterrupt, SystemExit) before
                        # its commit: its followers were not stopped, so their statements go back
                        # in the queue (the next leader, or their own writer, writes them) and
                        # each still returns only once its own is committed. The leader's own is
                        # not written: it raises, and may no longer hold its run's lock.
                        handed_back.append(queued)
                self._pending[:0] = handed_back
                self._writing = False
                self._cond.notify_all()
        return slot[0]  # type: ignore[no-any-return]

    def _stopped(self, item: tuple[str, tuple[object, ...], list[Any]]) -> None:
        """A waiting writer stopped by an exception (KeyboardInterrupt), the condition's lock held.

        A statement still queued is withdrawn: written later by another thread, after the caller
        let go of the run's lock, a clean row could overwrite the mark of the run's next writer.
        One a leader has taken is waited for (further interrupts too), for the same reason, unless
        that leader is stopped too and hands it back."""
        while not item[2][1]:
            for at, queued in enumerate(self._pending):
                if queued is item:  # still queued, or handed back by a leader that was stopped
                    del self._pending[at]
                    return
            if not self._writing:
                return  # never queued (stopped before), or its leader is gone and handed it back
            try:
                self._cond.wait()
            except BaseException:  # a second Ctrl-C: the first one is raised once the row is in
                continue


class RunIndex:
    """The SQLite index of one store's runs (thread-safe, shared by processes)."""

    def __init__(self, root: Path, runs_dir: Path, loader: Callable[[str], Optional[RunState]],
                 ledger_loader: Optional[Callable[[str], Optional[RunState]]] = None,
                 examine: Optional[Callable[[str], tuple[Optional[RunState], bool]]] = None,
                 scanner: Optional[str] = None) -> None:
        self._path = root / INDEX_FILENAME
        self._checked = str(root / CHECKED_FILENAME)
        self._unchecked = str(root / UNCHECKED_FILENAME)
        self._repair_failed = False
        self._checked_now = False
        self._root = root
        self._runs_dir = runs_dir
        self._runs_prefix = f"{runs_dir}{os.sep}"  # string paths: a Path join per row costs more than its lstat
        self._load = loader
        # The run as its ledger says (for dirty rows), and a run's checkpoint with whether its
        # ledger is past it (for a rebuild); without them a dirty row is read from its checkpoint.
        self._ledger_load = ledger_loader or loader
        self._examine = examine
        # "module:function" taking (root, first, last) and returning scan_rows() of that range of
        # run ids for this store, from a fresh process: a rebuild's helpers call it.
        self._scanner = scanner
        self.parallel_min = PARALLEL_MIN
        """A rebuild over this many runs or more shares the scan with helper processes."""
        self.helpers: Optional[int] = None
        """How many helper processes such a rebuild starts (``None``: one per further CPU that
        the load average leaves idle)."""
        self.last_helpers = 0
        """How many helpers' shares the last rebuild took from them (a failed one is rescanned here)."""
        self._lock = threading.RLock()
        self._group = _Group()
        self._conn: Optional[sqlite3.Connection] = None
        self._opened: Optional[tuple[int, int]] = None  # (device, inode) of the file the connection has
        self._readonly = False  # set once the store turns out not to be writable
        self._no_index = False  # read-only and no usable index: queries read the files
        self.last_unreadable: list[str] = []
        self._identity_sql = ", ".join(IDENTITY_COLUMNS)
        self._rows_usable = True  # False: a read-only index from an older release, every row re-read
        self._row_failed = False
        # Set by rebuild(): the rows were just taken from the files, whose identities were read
        # before each file was; the query whose _db() rebuilt the index need not stat them again.
        self._fresh = False
        self.self_check = True
        """Compare every clean row with its ``run.json`` (one ``stat`` per run) when the rows may be
        out of step with the files: after a reboot, after a writer lost a row write, on a read-only
        index; ``False``: never (the rows are trusted, dirty ones still re-read)."""
        self.always_check = False
        """Compare every clean row with its ``run.json`` on every query (a file replaced by hand
        is then seen by the next query, not only after ``runs reindex``)."""

    def _writable(self) -> bool:
        # access() reports a read-only mount even to root; permission bits only bind non-root.
        if not os.access(self._root, os.W_OK):
            return False
        return not self._path.exists() or os.access(self._path, os.W_OK)

    def _db(self) -> Optional[sqlite3.Connection]:
        """The connection, or ``None`` when queries must read the run files instead."""
        if self._conn is not None and not self._readonly and self._path_identity() != self._opened:
            # The file was deleted (or replaced) by hand while this process had it open: what it
            # wrote would go to a file nobody else reads. The new one is opened (or made) instead.
            log.info("%s was replaced while open; opening the new one", self._path)
            self.close()
        if self._conn is not None or self._no_index:
            return self._conn
        if not self._readonly and not self._writable():
            self._readonly = True
        for attempt in (1, 2):
            if self._readonly:
                break
            try:
                return self._open()
            except sqlite3.DatabaseError as exc:
                if attempt == 2:
                    raise StorageError(f"The run index {self._path} cannot be opened: {exc}",
                                       path=str(self._path)) from exc
                self._handle(exc, "opening")  # sets a corrupt file aside or turns read-only; else raises
        return self._open_readonly()

    def _open(self) -> sqlite3.Connection:
        fresh = not self._path.exists() and self._create()
        # Taken before the connection: a file replaced meanwhile is found replaced by the next _db().
        opened = self._path_identity()
        conn = sqlite3.connect(self._path, timeout=30.0, check_same_thread=False, isolation_level=None)
        boot = boot_id()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # No fsync on commit or checkpoint where the boot is known: a file that an OS crash
            # may have torn belongs to another boot, and is rebuilt below before it is used.
            conn.execute("PRAGMA synchronous=OFF" if boot is not None else "PRAGMA synchronous=NORMAL")
            if migrate(conn):  # an index from an older release gets its new columns in place
                self.signal_unchecked()  # ... and its rows are refilled by the next query's check
            meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('runs_mtime_ns', 'boot_id')"))
            # Written in another boot (or by a release that did not record it): SQLite may have
            # lost or torn its last writes in an OS crash. A structure SQLite finds damaged is
            # set aside (the caller's corrupt path); the rows are then rebuilt from the files.
            other_boot = boot is not None and not fresh and "runs_mtime_ns" in meta \
                and meta.get("boot_id") != boot.decode("ascii", "replace")
            if other_boot:
                found = [r[0] for r in conn.execute("PRAGMA quick_check(1)")]
                if found != ["ok"]:
                    raise sqlite3.DatabaseError(f"database disk image is malformed ({found[0]})")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._opened = opened
        # An index whose first rebuild never committed (its builder was killed while scanning)
        # has no runs_mtime_ns: rebuilt whole, as a new one is, so runs whose ledgers are past
        # their checkpoints get their dirty rows. One from another boot is rebuilt whole too (its
        # dirty marks may be lost); of several processes opening it at once, the first rebuilds.
        if fresh or "runs_mtime_ns" not in meta or other_boot:
            if other_boot:
                log.info("%s was last written in another boot; rebuilding it from the run files", self._path)
            self.rebuild(unless_built=True)
        return conn

    def _create(self) -> bool:
        """Create the index file empty and 0600 (SQLite would use the umask); ``True``.

        A ``-wal`` (or ``-journal``) left beside a deleted index names no database: SQLite would
        apply it to whatever file has the index's name. It never does to an empty one: a write-ahead
        log or hot journal found beside a database of zero pages is deleted when SQLite opens it
        (``tests/storage/test_run_index_boot.py`` holds it to that), so the new index starts empty.
        """
        try:
            os.close(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        except OSError as exc:
            raise StorageError(f"Cannot create the run index {self._path}: {exc.strerror or exc}") from exc
        return True

    def _path_identity(self) -> Optional[tuple[int, int]]:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _open_readonly(self) -> Optional[sqlite3.Connection]:
        if not self._path.exists():
            self._no_index = True
            return None
        # mode=ro never writes; immutable=1 also works when SQLite cannot create the -shm file
        # of a WAL database in a read-only directory.
        for query in ("mode=ro", "mode=ro&immutable=1"):
            try:
                conn = sqlite3.connect(f"{self._path.absolute().as_uri()}?{query}", uri=True, timeout=30.0,
                                       check_same_thread=False, isolation_level=None)
                # An index from an older release (no identities, no wait keys) cannot be migrated
                # read-only: no row is trusted, every run is re-read from its file.
                self._rows_usable = set(ROW_COLUMNS) <= columns(conn)
                self._identity_sql = ", ".join(IDENTITY_COLUMNS if self._rows_usable else ["NULL"] * 3)
                conn.execute(f"SELECT run_id, dirty, {self._identity_sql} FROM runs LIMIT 1").fetchall()
                if not self._this_boot(conn):
                    # Written in another boot without fsync: an OS crash may have lost its last
                    # commits (a row, a mark) or torn it, and a read-only index cannot be rebuilt.
                    conn.close()
                    log.info("%s was last written in another boot and cannot be rebuilt here (read-only); "
                             "reading the run files instead", self._path)
                    self._no_index = True
                    return None
                self._conn = conn
                return conn
            except sqlite3.Error:
                continue
        log.warning("%s cannot be opened read-only; reading the run files instead", self._path)
        self._no_index = True
        return None

    @staticmethod
    def _this_boot(conn: sqlite3.Connection) -> bool:
        """Whether the index ``conn`` reads was rebuilt in this boot (always, where no boot id is
        known: such an index was written with ``synchronous=NORMAL``)."""
        boot = boot_id()
        if boot is None:
            return True
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'boot_id'").fetchone()
        except sqlite3.Error:
            return False
        return row is not None and row[0] == boot.decode("ascii", "replace")

    def _handle(self, exc: sqlite3.DatabaseError, doing: str) -> None:
        """React to an SQLite error: set a corrupt file aside, go read-only, or raise StorageError."""
        kind = _error_kind(exc)
        if kind == "corrupt" and self._readonly:
            # Nothing is moved in a store that cannot be written: its queries read the files.
            self.close()
            self._no_index = True
            log.warning("%s is damaged (%s); reading the run files instead", self._path, exc)
            return
        if kind == "corrupt":
            self._set_aside(exc)
            return
        if kind == "readonly":
            self.close()
            self._readonly = True
            return
        cause = {"full": "the disk is full", "io": "a disk I/O error", "busy": "another process holds it locked"}
        raise StorageError(f"The run index {self._path} could not be used ({doing}): "
                           f"{cause.get(kind, 'an SQLite error')} ({exc}); the run files were not changed",
                           path=str(self._path)) from exc

    def _set_aside(self, exc: Exception) -> None:
        """Move a corrupt index out of the way (kept for inspection); the next use rebuilds it."""
        self.close()
        aside = self._path.with_name(f"{INDEX_FILENAME}.damaged")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{self._path}{suffix}", f"{aside}{suffix}")
            except FileNotFoundError:
                pass
            except OSError as move_exc:
                raise StorageError(f"The run index {self._path} is damaged ({exc}) and cannot be moved "
                                   f"aside ({move_exc.strerror or move_exc})", path=str(self._path)) from exc
        log.warning("%s was damaged (%s); moved to %s and rebuilt from the run files", self._path, exc, aside)

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        """One writing statement; a corrupt index is set aside and rebuilt once; read-only: skipped."""
        for attempt in (1, 2):
            db = self._db()
            if db is None or self._readonly:
                self.signal_unchecked()  # the files change without their rows
                return
            try:
                db.execute(sql, params)
                return
            except sqlite3.DatabaseError as exc:
                if attempt == 2:
                    self.signal_unchecked()
                    raise StorageError(f"The run index {self._path} could not be written: {exc}",
                                       path=str(self._path)) from exc
                self._handle(exc, "writing")

    def signal_unchecked(self) -> None:
        """Say that a run file changed without its row: the next query checks every row."""
        try:
            os.close(os.open(self._unchecked, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        except OSError:
            try:  # no room for a new file: removing the check's marker needs none
                os.unlink(self._checked)
            except OSError:
                pass

    def _in_step(self) -> bool:
        """Whether the rows may be trusted without a stat each (see :data:`CHECKED_FILENAME`)."""
        boot = boot_id()
        if boot is None or self._readonly or self.always_check:
            return False
        try:
            with open(self._checked, "rb") as f:
                if f.read(100) != boot:
                    return False
        except OSError:
            return False
        return not os.path.lexists(self._unchecked)

    def _begin_check(self) -> None:
        # Before the first stat: a writer that loses a row write from here on leaves its signal
        # for the next query.
        self._repair_failed = False
        if not self._readonly:
            try:
                os.unlink(self._unchecked)
            except FileNotFoundError:
                pass
            except OSError:
                self._repair_failed = True

    def _end_check(self) -> None:
        boot = boot_id()
        if boot is None or self._readonly or self._repair_failed:
            return
        # Written in place, no temp file to leave behind: a torn or concurrent write only ever
        # holds something other than the boot id, which means "check".
        try:
            fd = os.open(self._checked, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, boot)
            finally:
                os.close(fd)
        except OSError:
            pass

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def _identity(self, run_id: str) -> Identity:
        try:
            st = os.lstat(f"{self._runs_prefix}{run_id}{os.sep}{CHECKPOINT_NAME}")
        except OSError:
            return _MISSING
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def put(self, run: RunState, *, dirty: bool) -> None:
        """Record ``run``'s queryable fields (``dirty`` while its checkpoint is being written).

        A clean row also records the identity of the ``run.json`` it describes. Failing to mark a
        row clean is only logged: a dirty row is always re-read, and the checkpoint is written.
        """
        with self._lock:
            if dirty:
                self._write(_INSERT, _row(run, 1, _MISSING))
                return
            self._row_failed = False
            try:
                self._write(_INSERT, _row(run, 0, self._identity(run.run_id)))
            except StorageError as exc:
                self._row_failed = True  # so note_runs_dir does not vouch for a run without a row
                log.warning("%s; run %s is found by re-reading the files", exc, run.run_id)

    def mark(self, run_id: str) -> None:
        """Mark the run's row dirty before its ledger goes past its checkpoint (a row is made if
        there is none). The index is a cache: a mark that cannot be written (a full disk, an I/O
        error) is only logged — the ledger's own write says what is wrong, and ``runs reindex``
        marks every run whose ledger is past its checkpoint."""
        with self._lock:
            try:
                self._write("INSERT INTO runs (run_id, dirty) VALUES (?, 1) "
                            "ON CONFLICT (run_id) DO UPDATE SET dirty = 1", (run_id,))
            except StorageError as exc:
                log.warning("%s; run %s is not marked as ahead of its checkpoint (runs reindex marks it)", exc,
                            run_id)

    def put_together(self, run: RunState) -> None:
        """:meth:`put` of a clean row, committed in one transaction with the rows and marks other
        threads of this process hand in meanwhile (:meth:`mark_together`); returns once this row
        is committed, so a caller holding the run's lock gives it up after its row, never before."""
        row = _row(run, 0, self._identity(run.run_id))
        failed = self._group.write(self, _INSERT, row)
        self._row_failed = failed is not None
        if failed is not None:
            log.warning("%s; run %s is found by re-reading the files", failed, run.run_id)

    def mark_together(self, run_id: str) -> None:
        """:meth:`mark`, committed with what other threads hand in meanwhile; returns once the
        mark is committed (before the append it announces)."""
        failed = self._group.write(self, _MARK, (run_id,))
        if failed is not None:
            log.warning("%s; run %s is not marked as ahead of its checkpoint (runs reindex marks it)", failed,
                        run_id)

    def _write_all(self, batch: list[tuple[str, tuple[object, ...]]]) -> list[Optional[StorageError]]:
        """Every statement of ``batch`` in one transaction; if that fails, each on its own through
        :meth:`_write` (which sets a corrupt index aside, turns read-only, or names the error)."""
        with self._lock:
            if len(batch) > 1:
                try:
                    db = self._db()
                    if db is not None and not self._readonly:
                        try:
                            # Inside the try: an interrupt raised as the BEGIN returns (it waited
                            # for another process's write) must not leave the transaction open,
                            # holding the index's write lock, with every later statement in it.
                            db.execute("BEGIN IMMEDIATE")
                            for sql, params in batch:
                                db.execute(sql, params)
                            db.execute("COMMIT")
                        except BaseException:
                            if db.in_transaction:
                                db.execute("ROLLBACK")
                            raise
                        return [None] * len(batch)
                except (sqlite3.DatabaseError, StorageError):
                    pass  # written one by one below, each with _write's handling
            failures: list[Optional[StorageError]] = []
            for sql, params in batch:
                try:
                    self._write(sql, params)
                    failures.append(None)
                except StorageError as exc:
                    failures.append(exc)
            return failures

    def ahead(self, limit: int) -> list[str]:
        """Runs whose rows are dirty (their ledgers may be past their checkpoints), least recently
        updated first: an indexed query."""
        with self._lock:
            db = self._db()
            if db is None or not self._rows_usable:
                return []
            row = db.execute("SELECT value FROM meta WHERE key = 'runs_mtime_ns'").fetchone()
            if row is None or row[0] != str(self._runs_mtime()):
                self._suspects(db, False)  # new run directories: one a killed creator left gets its dirty row
            rows = db.execute("SELECT run_id FROM runs WHERE dirty = 1 ORDER BY updated_ts, run_id LIMIT ?",
                              (max(int(limit), 0),)).fetchall()
            return [str(row[0]) for row in rows]

    def forget(self, run_id: str) -> None:
        """Drop a run's row."""
        with self._lock:
            self._write("DELETE FROM runs WHERE run_id = ?", (run_id,))

    def note_runs_dir(self) -> None:
        """Remember the ``runs/`` directory's mtime (after this process created a run and its row)."""
        with self._lock:
            if not self._row_failed:
                self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", ("runs_mtime_ns", vouched(self._runs_mtime())))

    def _runs_mtime(self) -> int:
        return os.stat(self._runs_dir).st_mtime_ns if os.path.isdir(self._runs_dir) else 0

    def rebuild(self, *, unless_built: bool = False) -> int:
        """Recreate every row from the run files; the number indexed (StorageError if read-only).

        ``unless_built``: the rebuild an open makes of a new (or never built, or another boot's)
        index, which writes nothing if another process's rebuild committed in this boot while this
        one scanned: that one's rows, and the marks its writers made since, stand.
        """
        with self._lock:
            db = self._db()
            if db is None or self._readonly:
                raise StorageError(f"Cannot rebuild the run index: the store {self._root} is read-only",
                                   path=str(self._path))
            mtime = self._runs_mtime()
            known = boot_id()
            boot = None if known is None else known.decode("ascii", "replace")
            self._begin_check()
            version = db.execute("PRAGMA data_version").fetchone()[0]
            rows, self.last_unreadable = self._scan_all()
            try:
                with db:  # one transaction: committed whole, or rolled back on any exception
                    db.execute("BEGIN IMMEDIATE")
                    # Built by another process meanwhile: its rebuild recorded this boot with its rows.
                    meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('runs_mtime_ns', 'boot_id')"))
                    built = unless_built and "runs_mtime_ns" in meta and (boot is None or meta.get("boot_id") == boot)
                    if not built:
                        # A writer may have marked a run (its ledger about to pass its checkpoint)
                        # after the scan read it: the mark stands, whatever the scan saw.
                        marked = db.execute("SELECT run_id FROM runs WHERE dirty = 1").fetchall()
                        # A writer may also have checkpointed a run (and committed its row) after
                        # the scan read it: when another connection committed meanwhile, the runs
                        # whose run.json changed are read again, now that this transaction holds
                        # the write lock (a writer's row committed later comes after these rows).
                        if db.execute("PRAGMA data_version").fetchone()[0] != version:
                            rows = self._rescan_changed(rows)
                        db.execute("DELETE FROM runs")
                        db.executemany(_INSERT, rows)
                        db.executemany("INSERT INTO runs (run_id, dirty) VALUES (?, 1) "
                                       "ON CONFLICT (run_id) DO UPDATE SET dirty = 1", marked)
                        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", ("runs_mtime_ns", vouched(mtime)))
                        if boot is not None:  # the rows are this boot's: written with synchronous=OFF from now on
                            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", ("boot_id", boot))
                if not built:
                    self._fresh = True
                    self._end_check()
            except sqlite3.DatabaseError as exc:
                self._handle(exc, "rebuilding")
                raise StorageError(f"The run index {self._path} could not be rebuilt: {exc}",
                                   path=str(self._path)) from exc
            return len(rows)

    def _rescan_changed(self, rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        """``rows`` with those whose ``run.json`` is no longer the file they were taken from
        (its identity, recorded before it was read) taken again from the files."""
        at = ROW_COLUMNS.index(IDENTITY_COLUMNS[0])
        kept: list[tuple[object, ...]] = []
        changed: list[str] = []
        for row in rows:
            run_id = str(row[0])
            if self._identity(run_id) == row[at:at + len(IDENTITY_COLUMNS)]:
                kept.append(row)
            else:
                changed.append(run_id)
        if not changed:
            return rows
        again, unreadable = self.scan_rows(names=changed)
        self.last_unreadable += unreadable
        return kept + again

    def _names(self) -> list[str]:
        return sorted(_run_names(self._runs_dir))

    def _scan(self) -> Iterator[tuple[RunState, Identity, int]]:
        """Every run: its row's fields, the identity of its ``run.json`` and whether it is dirty (its
        ledger past its checkpoint, or no checkpoint yet: then the fields are the ledger's)."""
        for name in self._names():
            found = self._scan_one(name, self.last_unreadable)
            if found is not None:
                yield found

    def _scan_one(self, name: str, unreadable: list[str]) -> Optional[tuple[RunState, Identity, int]]:
        identity = self._identity(name)  # before reading: a later change then shows as a mismatch
        run, ahead = self._safe_examine(name)
        if run is None and ahead:
            run = self._safe_load_ledger(name)  # a run created by a writer killed before its checkpoint
        if run is not None:
            return run, identity, 1 if ahead else 0
        if identity != _MISSING:
            unreadable.append(name)
        return None

    def scan_rows(self, first: Optional[str] = None, last: Optional[str] = None,
                  names: Optional[list[str]] = None) -> tuple[list[tuple[object, ...]], list[str]]:
        """The index rows of the runs whose ids sort between ``first`` and ``last`` (both included;
        ``None``: no bound), or of ``names``, and the run directories that could not be read."""
        if names is None:
            names = [n for n in self._names() if (first is None or n >= first) and (last is None or n <= last)]
        rows: list[tuple[object, ...]] = []
        unreadable: list[str] = []
        for name in names:
            found = self._scan_one(name, unreadable)
            if found is not None:
                run, identity, dirty = found
                rows.append(_row(run, dirty, identity))
        return rows, unreadable

    def _helpers(self, count: int) -> int:
        """How many helper processes a scan of ``count`` runs gets: one per further idle CPU."""
        if self._scanner is None or count < max(self.parallel_min, 2) or not _python_executable():
            return 0
        if self.helpers is not None:
            return max(0, min(self.helpers, count - 1))
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        # CPUs that others keep busy would only be fought over: a helper per CPU left idle by the
        # last minute's load (less this process, which counts in it when it has been busy).
        try:
            busy = max(os.getloadavg()[0] - 1.0, 0.0)
        except OSError:
            busy = 0.0
        return max(0, min(cpus - 1, int(cpus - busy) - 1, 15, count - 1))

    def _scan_all(self) -> tuple[list[tuple[object, ...]], list[str]]:
        """Every run's row, and the run directories that could not be read: the sorted run ids cut
        into one contiguous share per CPU, this process taking the first. A helper that fails (it
        cannot start, it is killed, its output is short) has its share scanned here instead."""
        names = self._names()
        helpers = self._helpers(len(names))
        self.last_helpers = 0
        if not helpers:
            return self.scan_rows(names=names)
        size = -(-len(names) // (helpers + 1))
        shares = [names[i:i + size] for i in range(0, len(names), size)]
        started = [(share, self._start_helper(share[0], share[-1])) for share in shares[1:]]
        rows, unreadable = self.scan_rows(names=shares[0])
        for share, proc in started:
            found = self._finish_helper(proc)
            if found is None:
                found = self.scan_rows(names=share)
            else:
                self.last_helpers += 1
            rows += found[0]
            unreadable += found[1]
        return rows, unreadable

    def _start_helper(self, first: str, last: str) -> Optional[subprocess.Popen[bytes]]:
        task = marshal.dumps(([p for p in sys.path if isinstance(p, str)], self._scanner, str(self._root), first,
                              last))
        import subprocess  # on first use: only a rebuild over many runs starts processes

        try:
            proc = subprocess.Popen([sys.executable, "-c", _HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            log.info("%s: scanning without helper processes (%s)", self._path, exc)
            return None
        try:
            assert proc.stdin is not None
            proc.stdin.write(task)  # a few hundred bytes: well under a pipe's buffer, never blocks
            proc.stdin.close()
        except OSError:
            pass  # it died at once: _finish_helper sees it
        return proc

    def _finish_helper(self, proc: Optional[subprocess.Popen[bytes]]
                       ) -> Optional[tuple[list[tuple[object, ...]], list[str]]]:
        if proc is None:
            return None
        try:
            assert proc.stdout is not None
            data = proc.stdout.read()
            proc.stdout.close()
        finally:
            code = proc.wait()
        if code != 0:
            log.info("%s: a scan helper exited %s; its share is scanned again here", self._path, code)
            return None
        try:
            rows, unreadable = marshal.loads(data)
            return [tuple(r) for r in rows], list(unreadable)
        except (EOFError, ValueError, TypeError):
            return None

    def _safe_examine(self, run_id: str) -> tuple[Optional[RunState], bool]:
        if self._examine is None:
            return self._safe_load(run_id), False
        try:
            return self._examine(run_id)
        except Exception:  # an unreadable run must not hide the others
            return None, False

    def _safe_load_ledger(self, run_id: str) -> Optional[RunState]:
        try:
            return self._ledger_load(run_id) or self._load(run_id)
        except Exception:
            return self._safe_load(run_id)

    def _safe_load(self, run_id: str) -> Optional[RunState]:
        try:
            return self._load(run_id)
        except Exception:  # an unreadable run must not hide the others from a query
            return None

    def _best_effort(self, sql: str, params: tuple[object, ...]) -> None:
        """A maintenance write made while answering a query: skipped when the index cannot take it."""
        if self._readonly or self._conn is None:
            return
        try:
            self._conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            self._repair_failed = True
            if _error_kind(exc) == "readonly":
                self._readonly = True
            log.warning("%s: could not record a repair (%s); the query is answered from the files", self._path, exc)

    def _suspects(self, db: sqlite3.Connection, ledger: bool, force: bool = False) -> dict[str, Optional[RunState]]:
        """Runs whose rows cannot be trusted — ``run.json`` changed since, not indexed yet, or (with
        ``ledger``) dirty: ledger maybe past the checkpoint — re-read from their files (dirty ones
        from their ledgers; ``None``: gone or unreadable); rows are repaired when possible."""
        suspects: dict[str, Optional[RunState]] = {}
        fresh, self._fresh = self._fresh, False
        check = self.self_check and not fresh and (force or not self._in_step())
        self._checked_now = check or fresh
        if check:
            self._begin_check()
        # Taken before the rows are read: a run directory made meanwhile shows as a change next time.
        mtime = self._runs_mtime()
        row = db.execute("SELECT value FROM meta WHERE key = 'runs_mtime_ns'").fetchone()
        new_dirs = row is None or row[0] != str(mtime)
        select = f"SELECT run_id, dirty, {self._identity_sql} FROM runs"
        if check or new_dirs or not self._rows_usable:
            rows = db.execute(select).fetchall()
        else:  # rows in step, no run directory added or removed: only dirty rows need reading
            rows = db.execute(select + " WHERE dirty = 1").fetchall() if ledger else []
        known = set()
        for run_id, dirty, *recorded in rows:
            known.add(run_id)
            if dirty and ledger:
                # Its ledger may be past its checkpoint: show the run as the ledger says.
                suspects[run_id] = self._safe_load_ledger(run_id)
                continue
            if not check and self._rows_usable:
                continue
            identity = self._identity(run_id)
            if identity == tuple(recorded):
                continue
            run = self._safe_load(run_id)
            suspects[run_id] = run
            # Compare-and-set on the identity just seen: a writer that got in between wins. The
            # dirty mark is left as it is (only the checkpoint at the ledger's head clears it).
            where = " WHERE run_id = ? AND ck_mtime_ns IS ? AND ck_size IS ? AND ck_ino IS ?"
            if run is not None:
                self._best_effort(f"UPDATE runs SET {REPAIR_SET}" + where, (*fields(run), *identity, run_id, *recorded))
            elif identity == _MISSING and not dirty:
                self._best_effort("DELETE FROM runs" + where + " AND dirty = 0", (run_id, *recorded))
        if new_dirs:
            on_disk = set(_run_names(self._runs_dir))
            for run_id in sorted(on_disk - known):
                identity = self._identity(run_id)
                run = suspects[run_id] = self._safe_load(run_id)
                if run is not None:
                    self._best_effort(_INSERT.replace("OR REPLACE", "OR IGNORE"), _row(run, 0, identity))
                elif identity == _MISSING and self._examine is not None:
                    # No checkpoint: a run whose creator was killed before writing it. Its ledger
                    # says what it is; the row is dirty, so a worker finds it and finishes it.
                    run = suspects[run_id] = self._safe_load_ledger(run_id) if self._safe_examine(run_id)[1] \
                        else None
                    if run is not None:
                        self._best_effort(_INSERT.replace("OR REPLACE", "OR IGNORE"), _row(run, 1, identity))
            for run_id in known - on_disk:
                suspects[run_id] = None
                self._best_effort("DELETE FROM runs WHERE run_id = ? AND dirty = 0", (run_id,))
            self._best_effort("INSERT OR REPLACE INTO meta VALUES (?, ?)", ("runs_mtime_ns", vouched(mtime)))
        if check:
            self._end_check()
        return suspects

    def query(self, where: str, params: Iterable[object], order: str, accept: Callable[[RunState], bool],
              sort_key: Callable[[RunState], object], limit: Optional[int], *, ledger: bool = False) -> list[RunState]:
        """Runs whose rows match ``where``, re-read and re-checked with ``accept``, in ``order``.

        ``ledger``: a run whose row is dirty (its ledger may be past its checkpoint) is shown as its
        ledger says (a replay of its tail); without it, as its checkpoint says — what a worker's
        listing needs, since such a run is either in a writer's hands or found by :meth:`ahead`.
        """
        with self._lock:
            try:
                return self._query(where, tuple(params), order, accept, sort_key, limit, ledger)
            except sqlite3.DatabaseError as exc:
                self._handle(exc, "querying")  # a corrupt index is set aside: answer from a fresh one
                return self._query(where, tuple(params), order, accept, sort_key, limit, ledger)

    def _query(self, where: str, params: tuple[object, ...], order: str, accept: Callable[[RunState], bool],
               sort_key: Callable[[RunState], object], limit: Optional[int], ledger: bool,
               force: bool = False) -> list[RunState]:
        self._fresh = False  # only a rebuild made by this very query vouches for its rows
        self._checked_now = False
        db = self._db()
        # A read-only store without an index: every run is a suspect, read from its file.
        suspects = self._suspects(db, ledger, force) if db is not None else {
            run.run_id: (self._safe_load_ledger(run.run_id) if dirty and ledger else run)
            for run, _, dirty in self._scan()}
        found = [run for run in suspects.values() if run is not None and accept(run)]
        clean_rows = "dirty = 0 AND " if ledger else ""
        cursor = db.execute(f"SELECT run_id FROM runs WHERE {clean_rows}({where}) ORDER BY {order}", params) \
            if db is not None and self._rows_usable else ()
        wanted = None if limit is None else limit + len(found)
        clean: list[RunState] = []
        stale = False
        for (run_id,) in cursor:
            if run_id in suspects:
                continue
            run = self._safe_load(run_id)
            if run is not None and accept(run):
                clean.append(run)
                if wanted is not None and len(clean) >= wanted:
                    break
            else:
                stale = True  # the row said otherwise: it is out of step with its file
        if stale and not self._checked_now and db is not None:
            # Evidence that rows and files differ (a file changed by hand, restored, deleted):
            # check every row now and answer again.
            return self._query(where, params, order, accept, sort_key, limit, ledger, force=True)
        merged = sorted(found + clean, key=sort_key)  # type: ignore[arg-type]
        return merged if limit is None else merged[:limit]



__all__ = ["RunIndex", "INDEX_FILENAME"]
