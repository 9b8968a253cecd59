"""Helpers for the store tests: real read-only stores, a tree fingerprint, hand-made stale index rows."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

NOBODY = 65534
CLI = [sys.executable, "-m", "abstractruntime"]

WAITING_WORKFLOW = """\
from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

def a(run, ctx):
    return StepPlan("a", next_node="b", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "evt-1"}, result_key="e"))

def b(run, ctx):
    return StepPlan("b", complete_output={"ok": True})

workflow = WorkflowSpec("ww", "a", {"a": a, "b": b})
"""


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` with its type, mode, mtime_ns and content hash: equal means untouched."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = os.lstat(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() \
                else None
            found[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, st.st_size, digest)
    st = os.lstat(root)
    found["."] = (st.st_mode, st.st_mtime_ns)
    return found


def changes(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """The entries that differ between two :func:`tree` results (empty: nothing was touched)."""
    return {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}


def _probe_rofs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = Path(tempfile.mkdtemp())
    try:
        proc = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$1" "$1" && mount -o remount,bind,ro '
                               '"$1" && ! touch "$1/probe" 2>/dev/null', "sh", str(probe)],
                              capture_output=True, timeout=30)
        return proc.returncode == 0 and not (probe / "probe").exists()
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _probe_nonroot() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    proc = subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                           sys.executable, "-c", "import abstractruntime"], capture_output=True, timeout=60)
    return proc.returncode == 0


_MODES = {"read-only mount": _probe_rofs, "non-root user, chmod a-w": _probe_nonroot}
_AVAILABLE: dict[str, bool] = {}


def readonly_mode(name: str) -> str:
    """Skip unless this way of making a store read-only works on this machine."""
    if name not in _AVAILABLE:
        _AVAILABLE[name] = _MODES[name]()
    if not _AVAILABLE[name]:
        pytest.skip(f"{name} is not available here")
    return name


READONLY_MODES = list(_MODES)


def run_readonly(mode: str, store: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with ``store`` read-only: a read-only bind mount, or as ``nobody`` after chmod a-w."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    if mode == "read-only mount":
        cmd = ["unshare", "-m", "sh", "-c", 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift '
               '&& exec "$@"', "sh", str(store), *argv]
    else:
        cmd = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


def make_readonly_for_nobody(base: Path) -> None:
    """chown the tree to nobody (so it can read) and remove every write bit."""
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [*dirnames, *filenames]:
            os.lchown(Path(dirpath) / name, NOBODY, NOBODY)
    os.chown(base, NOBODY, NOBODY)
    subprocess.run(["chmod", "-R", "a-w,a+rX", str(base)], check=True)


def restore_writable(base: Path) -> None:
    """Undo :func:`make_readonly_for_nobody` so the temporary directory can be removed."""
    subprocess.run(["chmod", "-R", "u+w", str(base)], check=False)


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ar-ro-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        restore_writable(path)
        shutil.rmtree(path, ignore_errors=True)


def index_row(root: Path, run_id: str) -> tuple[Any, ...]:
    """The run's index row as stored."""
    db = sqlite3.connect(root / "index.sqlite3")
    try:  # closed here: a connection left to the garbage collector checkpoints the WAL whenever it goes
        return db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    finally:
        db.close()


def put_index_row(root: Path, row: tuple[Any, ...]) -> None:
    """Write a row back as it was (an index write lost to a power failure looks exactly like this)."""
    db = sqlite3.connect(root / "index.sqlite3")
    try:
        db.execute(f"INSERT OR REPLACE INTO runs VALUES ({','.join('?' * len(row))})", row)
        db.commit()
    finally:
        db.close()
