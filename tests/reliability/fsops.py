"""Intercepting the file operations of the storage layer.

Every durable write in abstractruntime goes through ``os.*`` calls made by
``storage/fsio.py``, ``storage/json_files.py``, ``storage/run_files.py`` and ``storage/bookmarks.py`` (plus
``fsio.ensure_dir`` for new directories). :func:`intercept` swaps the ``os`` name in those
modules for an :class:`OsProxy` that reports each call to a listener, and wraps
``ensure_dir`` so new directories are reported too. Nothing else in the process is touched.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from abstractruntime.storage import bookmarks, fsio, json_files, run_files, snapshots, store

Listener = Callable[[tuple[Any, ...]], None]
PATCHED_MODULES = (fsio, json_files, run_files, bookmarks, snapshots)
# Modules that imported ensure_dir by name.
ENSURE_DIR_USERS = (fsio, run_files, snapshots, store)


class OsProxy:
    """Stands in for the ``os`` module: reports open/write/fsync/close/replace/truncate/unlink.

    ``drop_fsync_in`` holds call sites whose ``os.fsync`` calls become no-ops (to prove that
    the crash checker notices a missing fsync); the call is then not reported either. A
    call site is a tuple of function names, innermost first: ``("append_bytes",)`` is the
    fsync inside ``append_bytes``; ``("fsync_dir", "save_checkpoint")`` the directory fsync
    ``save_checkpoint`` makes itself.
    """

    def __init__(self, listener: Listener, *, drop_fsync_in: frozenset[tuple[str, ...]] = frozenset()) -> None:
        self._listener = listener
        self._drop = drop_fsync_in

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, mode: int = 0o777, *args: Any, **kw: Any) -> int:
        existed = os.path.lexists(path)
        fd = os.open(path, flags, mode, *args, **kw)
        self._listener(("open", os.fspath(path), flags, fd, existed))
        return fd

    def write(self, fd: int, data: Any) -> int:
        written = os.write(fd, data)
        self._listener(("write", fd, bytes(memoryview(data)[:written])))
        return written

    def fsync(self, fd: int) -> None:
        if self._drop:
            frame, names = sys._getframe(1), []
            while frame is not None and len(names) < 4:
                names.append(frame.f_code.co_name)
                frame = frame.f_back
            if any(tuple(names[:len(site)]) == site for site in self._drop):
                return
        os.fsync(fd)
        self._listener(("fsync", fd))

    def close(self, fd: int) -> None:
        os.close(fd)
        self._listener(("close", fd))

    def fdopen(self, fd: int, *args: Any, **kw: Any) -> Any:
        # Only readers use fdopen; closing through the file object is not a durability event.
        return os.fdopen(fd, *args, **kw)

    def replace(self, src: Any, dst: Any) -> None:
        os.replace(src, dst)
        self._listener(("replace", os.fspath(src), os.fspath(dst)))

    def truncate(self, path: Any, length: int) -> None:
        os.truncate(path, length)
        self._listener(("truncate", os.fspath(path), length))

    def unlink(self, path: Any) -> None:
        os.unlink(path)
        self._listener(("unlink", os.fspath(path)))


@contextlib.contextmanager
def intercept(listener: Listener, *, drop_fsync_in: frozenset[tuple[str, ...]] = frozenset()) -> Iterator[OsProxy]:
    """Route the storage layer's ``os`` calls (and new directories) through ``listener``."""
    proxy = OsProxy(listener, drop_fsync_in=drop_fsync_in)
    original_ensure = fsio.ensure_dir

    def ensure_dir(path: Path, *, durable: bool = False) -> Path:
        missing = []
        probe = Path(path)
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        result = original_ensure(path, durable=False)
        for created in reversed(missing):
            listener(("mkdir", os.fspath(created)))
            if durable:
                # The same parent fsync the real ensure_dir makes, reported in order.
                fsio.fsync_dir(created.parent)
        return result

    saved = [(m, m.os) for m in PATCHED_MODULES]
    saved_ensure = [(m, m.ensure_dir) for m in ENSURE_DIR_USERS]
    try:
        for module in PATCHED_MODULES:
            module.os = proxy  # type: ignore[attr-defined]
        for module in ENSURE_DIR_USERS:
            module.ensure_dir = ensure_dir  # type: ignore[attr-defined]
        yield proxy
    finally:
        for module, value in saved:
            module.os = value  # type: ignore[attr-defined]
        for module, value in saved_ensure:
            module.ensure_dir = value  # type: ignore[attr-defined]


def die_at_op(n: int) -> Optional[contextlib.AbstractContextManager[OsProxy]]:
    """Intercept so that this process SIGKILLs itself right after its ``n``-th mutating op."""
    counter = {"ops": 0}

    def listener(op: tuple[Any, ...]) -> None:
        if op[0] in ("write", "fsync", "replace", "truncate", "unlink", "mkdir") or (op[0] == "open" and not op[4]):
            counter["ops"] += 1
            if counter["ops"] >= n:
                os.kill(os.getpid(), 9)

    return intercept(listener)


def count_ops() -> tuple[contextlib.AbstractContextManager[OsProxy], dict[str, int]]:
    """Intercept counting mutating ops (the same ones :func:`die_at_op` counts)."""
    counter = {"ops": 0}

    def listener(op: tuple[Any, ...]) -> None:
        if op[0] in ("write", "fsync", "replace", "truncate", "unlink", "mkdir") or (op[0] == "open" and not op[4]):
            counter["ops"] += 1

    return intercept(listener), counter
