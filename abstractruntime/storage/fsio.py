"""File-system primitives shared by every file store: ids, safe paths, atomic writes, locks.

Everything durable in abstractruntime goes through these few functions, so the crash-safety
argument (docs/durability.md) only has to be made once:

- :func:`atomic_write_bytes` writes a temp file in the target's directory, fsyncs it,
  ``os.replace``-s it over the target and fsyncs the directory. A reader sees the old
  file or the new one, never a mix; after it returns the new file survives power loss.
- :func:`append_line` appends one newline-terminated record and (optionally) fsyncs.
- :class:`FileLock` is the one ``fcntl.flock`` wrapper (shared or exclusive, blocking or
  polling); :class:`RunLock` is the exclusive one on a per-run ``.lock`` file.

``durability="none"`` skips every fsync (tests, benchmarks): a process crash still loses
nothing (the page cache survives it), an OS crash or power loss may.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat as stat_module
import time
from pathlib import Path
from typing import Any, Callable, Literal

from ..core.logs import get_logger
from ..core.errors import (
    CorruptRecordError,
    InvalidIdError as InvalidIdError,  # re-exported: callers catch it from here
    RunLockedError,
    StorageError,
    UnsupportedFormatError,
)

Durability = Literal["fsync", "none"]
DURABILITY_VALUES: tuple[str, ...] = ("fsync", "none")

FILE_MODE = 0o600
DIR_MODE = 0o700

# One id validator for the whole project (core owns it: ids are checked before any I/O).
from ..core.ids import validate_id as validate_id  # noqa: E402
# The JSON codec lives in core (snapshots and records use it too); file stores import it from here.
from ..core.json_codec import dumps_compact as dumps_compact, loads_strict as loads_strict  # noqa: E402


def check_durability(value: str) -> Durability:
    """Validate a ``durability`` setting."""
    if value not in DURABILITY_VALUES:
        raise ValueError(f"durability must be one of {DURABILITY_VALUES}, not {value!r}")
    return value  # type: ignore[return-value]


def ensure_dir(path: Path, *, durable: bool = False) -> Path:
    """Create ``path`` (and parents) with mode 0700 if missing; refuse a symlink.

    With ``durable``, each directory created is fsynced into its parent, so a new store or
    run directory survives power loss along with the files later written in it.
    """
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if durable:
            for created in reversed(missing):
                fsync_dir(created.parent)
    except OSError as exc:
        raise StorageError(f"Cannot create directory {path}: {exc.strerror or exc}") from exc
    if path.is_symlink():
        raise StorageError(f"Refusing symlinked directory {path}")
    return path


def child_path(root: Path, *parts: str) -> Path:
    """Join ``parts`` under ``root`` and prove the result stays inside it.

    Ids are validated before they get here; this is the second fence, and it also
    refuses symlinks on the way that point outside the store.
    """
    candidate = root.joinpath(*parts)
    root_resolved = root.resolve()
    resolved = candidate.resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise StorageError(f"Path {candidate} escapes the store {root}")
    return candidate


def refuse_symlink(path: Path) -> None:
    """Raise :class:`StorageError` if ``path`` is a symlink (run dirs and ledgers never are)."""
    if path.is_symlink():
        raise StorageError(f"Refusing symlink {path}: run files must be regular files")


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or a new file in it survives power loss."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> os.stat_result:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync dir); returns the
    new file's status as written (the rename keeps its inode, size and modification time)."""
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
            written = os.fstat(fd)
        finally:
            os.close(fd)
        refuse_symlink(path)
        os.replace(tmp, path)
        if durable:
            fsync_dir(directory)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise StorageError(f"Cannot write {path}: {exc.strerror or exc}") from exc
    return written


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def open_append(path: Path) -> int:
    """Open ``path`` for appending (creating it 0600); refuse a symlink."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"Refusing symlink {path}: run files must be regular files") from exc
        raise StorageError(f"Cannot open {path}: {exc.strerror or exc}") from exc


def append_bytes(fd: int, data: bytes, *, path: Path, durable: bool) -> None:
    """Append ``data`` on an ``O_APPEND`` descriptor and fsync it when ``durable``."""
    try:
        _write_all(fd, data)
        if durable:
            os.fsync(fd)
    except OSError as exc:
        raise StorageError(f"Cannot append to {path}: {exc.strerror or exc}") from exc


def read_bytes(path: Path, *, offset: int = 0) -> bytes:
    """Read a regular file from ``offset`` to its end; refuse symlinks; OS errors → :class:`StorageError`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"Refusing symlink {path}: run files must be regular files") from exc
        raise StorageError(f"Cannot read {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "rb") as handle:
            if offset:
                handle.seek(offset)
            return handle.read()
    except OSError as exc:
        raise StorageError(f"Cannot read {path}: {exc.strerror or exc}") from exc


def load_json_file(path: Path, *, expected_format: int, kind: str) -> dict[str, Any]:
    """Read a versioned JSON file (``{"format": N, ...}``) strictly.

    Raises :class:`CorruptRecordError` naming the file when it does not parse and
    :class:`UnsupportedFormatError` when it was written by a newer version.
    """
    raw = read_bytes(path)
    try:
        doc = loads_strict(raw)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise CorruptRecordError(f"{kind} is not valid JSON ({brief_error(exc)})", path=str(path)) from exc
    if not isinstance(doc, dict):
        raise CorruptRecordError(f"{kind} is not a JSON object", path=str(path))
    check_format(doc.get("format"), expected_format, path=str(path), kind=kind)
    return doc


def check_format(found: object, expected: int, *, path: str, kind: str) -> None:
    """Refuse a missing or newer ``format`` loudly instead of misreading it."""
    if not isinstance(found, int) or isinstance(found, bool):
        raise CorruptRecordError(f"{kind} has no integer 'format' field", path=path)
    if found > expected:
        raise UnsupportedFormatError(
            f"{path}: {kind} format {found} is newer than this abstractruntime understands "
            f"({expected}); upgrade abstractruntime",
            path=path,
        )
    if found < 1:
        raise CorruptRecordError(f"{kind} has invalid format {found}", path=path)


def brief_error(exc: BaseException, limit: int = 120) -> str:
    """An exception's message cut to ``limit`` characters (its type's name when it has none)."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FileLock:
    """An ``flock`` on a lock file: exclusive (one holder) or ``shared`` (readers, no writer).

    ``wait=None`` blocks until the lock is granted; ``wait=N`` polls up to N seconds (0: one
    try) and then raises what ``busy()`` returns. Closing the descriptor releases the lock,
    and flock locks belong to the open file description, so two ``FileLock`` objects on the
    same file conflict even inside one process (a thread and the scheduler, say), as they should.
    Failing to open or lock the file is a :class:`StorageError` naming it.
    """

    def __init__(self, path: Path, *, shared: bool = False, wait: float | None = None,
                 busy: Callable[[], Exception] | None = None) -> None:
        self._path = path
        self._mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        self._wait = wait
        self._busy = busy or (lambda: StorageError(f"{path} is locked by another process", path=str(path)))
        self._fd: int | None = None

    def __enter__(self) -> "FileLock":
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        except OSError as exc:
            raise StorageError(f"Cannot open lock {self._path}: {exc.strerror or exc}") from exc
        try:
            self._acquire(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _acquire(self, fd: int) -> None:
        if self._wait is None:
            try:
                fcntl.flock(fd, self._mode)
            except OSError as exc:
                raise StorageError(f"Cannot lock {self._path}: {exc.strerror or exc}") from exc
            return
        deadline = time.monotonic() + max(self._wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, self._mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise self._busy() from None
                time.sleep(0.01)
            except OSError as exc:
                raise StorageError(f"Cannot lock {self._path}: {exc.strerror or exc}") from exc

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


class RunLock(FileLock):
    """Exclusive ``flock`` on ``<run dir>/.lock``, held by whoever advances the run.

    ``wait=0`` fails at once with :class:`RunLockedError`; ``wait=N`` polls up to N seconds.
    ``directory`` (the run directory) is flocked too, after the file: a lock file deleted or
    replaced while its holder works would otherwise let a second writer lock a new file and
    run the holder's effect again; a directory that holds the run's files cannot be removed.
    """

    def __init__(self, path: Path, run_id: str, *, wait: float = 0.0, directory: Path | None = None) -> None:
        super().__init__(path, wait=wait, busy=lambda: RunLockedError(run_id))
        self._run_id = run_id
        self._directory = directory
        self._dir_fd: int | None = None

    def __enter__(self) -> "RunLock":
        super().__enter__()
        if self._directory is not None:
            try:
                fd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError as exc:
                super().__exit__(None, None, None)
                raise StorageError(f"Cannot open run directory {self._directory}: {exc.strerror or exc}") from exc
            try:
                self._acquire(fd)
            except BaseException:
                os.close(fd)
                super().__exit__(None, None, None)
                raise
            self._dir_fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        super().__exit__(*exc_info)


# ``atomic_write_bytes`` names its temp file ``.<target>.<pid>.<monotonic_ns>.tmp``.
_TMP_RE = re.compile(r"\.(?P<target>.+)\.(?P<pid>[0-9]+)\.[0-9]+\.tmp")
STALE_TMP_AGE = 3600.0
"""Seconds after which a temp file is stale even if its writer's pid is alive (pids are reused)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def writer_gone(pid: int, mtime: float, *, max_age: float = STALE_TMP_AGE) -> bool:
    """Whether a temporary file or folder named with writer ``pid`` and last changed at
    ``mtime`` is garbage: its writer is gone, or it is older than ``max_age`` seconds (pids are
    reused). This process's own are kept unless that old: another thread may be writing them."""
    if time.time() - mtime > max_age:
        return True
    return pid != os.getpid() and not _pid_alive(pid)


def remove_stale_tmp_files(directory: Path, *, max_age: float = STALE_TMP_AGE,
                           targets: tuple[str, ...] | None = None) -> list[Path]:
    """Delete the temp files that :func:`atomic_write_bytes` left in ``directory`` when killed.

    A temp file is stale when the process that wrote it (the pid in its name) is gone, or
    when it is older than ``max_age`` seconds (no atomic write takes that long, and a live
    pid may be a reused one). Files of this process are left alone unless that old: another
    thread may be writing them. Only regular files whose names follow the temp pattern are
    touched; ``targets`` limits it to temp files of those file names (e.g. ``("run.json",)``).
    Call it while holding the lock that serialises writers of ``directory`` (the run lock
    for a run directory). Returns the paths removed; errors other than "already gone" are
    left to the next caller.
    """
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _TMP_RE.fullmatch(name)
        if match is None or (targets is not None and match.group("target") not in targets):
            continue
        path = directory / name
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat_module.S_ISREG(st.st_mode):
            continue
        if not writer_gone(int(match.group("pid")), st.st_mtime, max_age=max_age):
            continue
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            continue
        except OSError:
            continue
    return removed


class TidyRunLock(RunLock):
    """A :class:`RunLock` that, once held, removes the temp files killed writers left in the run
    directory (:func:`remove_stale_tmp_files`): the holder is the only writer there, so a
    temp file of a dead process can only be garbage."""

    def __enter__(self) -> "TidyRunLock":
        super().__enter__()
        removed = remove_stale_tmp_files(self._path.parent)
        if removed:
            get_logger("abstractruntime.storage").info(
                "removed %d temp file(s) left by interrupted writes in %s", len(removed), self._path.parent)
        return self
