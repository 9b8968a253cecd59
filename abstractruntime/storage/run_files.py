"""Where a folder store keeps a run's files: the names, and :class:`RunFiles`, which validates
every run path and keeps it under the store's root (no symlinks, no ids that escape)."""

from __future__ import annotations

import os
import stat as stat_module
from pathlib import Path
from typing import Optional

from ..core.errors import StorageError
from ..core.ids import validate_id
from .fsio import child_path, ensure_dir, refuse_symlink

RUNS_DIR = "runs"
CHECKPOINT_FILE = "run.json"
LEDGER_FILE = "ledger.jsonl"
SECRETS_FILE = "secrets.jsonl"
ANCHORS_FILE = "anchors.jsonl"
LOCK_FILE = ".lock"
# A pruned run's id is kept here for ever (storage/tombstones.py): `start` refuses it.
PRUNED_DIR = "pruned"


class RunFiles:
    """Paths of one store root; every run path is validated and kept under the root."""

    def __init__(self, base_dir: str | os.PathLike[str], *, create: bool = True, durable: bool = True) -> None:
        self.root = Path(base_dir)
        self.durable = durable
        if create:
            ensure_dir(self.root, durable=durable)
        self.runs = self.root / RUNS_DIR
        # Run directories already validated (and existing) in this process, with their device and
        # inode: path checks resolve symlinks, which costs more than the rest of a step.
        self._known: dict[str, tuple[Path, int, int]] = {}
        self._children: dict[tuple[str, str], tuple[Path, Path]] = {}
        self._runs_checked = False

    def run_dir(self, run_id: str, *, create: bool = False) -> Path:
        """``runs/<run_id>`` (validated; created 0700 when asked)."""
        known = self._known.get(run_id)
        if known is not None:
            try:
                # Cheap re-check: still the same real directory (not swapped for a symlink, not
                # deleted). The lstat follows runs/: a runs/ swapped for a symlink to another
                # directory shows as another inode, and the full look below refuses it.
                st = os.lstat(known[0])
                if stat_module.S_ISDIR(st.st_mode) and st.st_ino == known[2] and st.st_dev == known[1]:
                    return known[0]
            except (FileNotFoundError, NotADirectoryError):
                pass  # looked at again below (runs/ replaced by a file is refused there)
            del self._known[run_id]
        validate_id(run_id, "run id")
        if create:
            ensure_dir(self.runs, durable=self.durable)
        # The fences of a full resolve (the path stays under the root, no symlink on the way) for
        # two lstats, looked at again on every first look at a run (either may have been swapped
        # since): a validated id is one plain name, so ``runs/<id>`` can only leave the root
        # through ``runs/`` or the run directory being a symlink, and both are refused. Resolving
        # every component of the path cost more than the rest of a run's checkpoint.
        path = self.runs / run_id
        for probe in (self.runs, path):
            try:
                st = os.lstat(probe)
                mode = st.st_mode
            except FileNotFoundError:
                break
            except OSError as exc:  # runs/ a file (ENOTDIR), unreadable: one line, not an OSError
                raise StorageError(f"Cannot use the run directory {path}: {exc.strerror or exc}",
                                   path=str(probe)) from exc
            if stat_module.S_ISLNK(mode):
                refuse_symlink(probe)  # raises, naming the path
        else:
            if stat_module.S_ISDIR(mode):
                self._known[run_id] = (path, st.st_dev, st.st_ino)
                return path
        if create:
            ensure_dir(path, durable=self.durable)
            st = os.lstat(path)
            self._known[run_id] = (path, st.st_dev, st.st_ino)
        return path

    def scanned_dir(self, run_id: str) -> Optional[str]:
        """``runs/<run_id>`` for a pass over many runs (index rebuilds), or ``None`` when it is not a
        directory: the same fences as :meth:`run_dir` — the id validated, ``runs/`` inside the root,
        the run directory itself no symlink — with ``runs/`` resolved once, not once per run, and
        nothing cached per run."""
        validate_id(run_id, "run id")
        if not self._runs_checked:
            refuse_symlink(child_path(self.root, RUNS_DIR))
            self._runs_checked = True
        path = f"{self.runs}{os.sep}{run_id}"
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return None
        if stat_module.S_ISLNK(mode):
            refuse_symlink(Path(path))  # raises, naming the path
        return path if stat_module.S_ISDIR(mode) else None

    def child(self, run_id: str, name: str) -> Path:
        """``runs/<run_id>/<name>`` (the run directory re-checked; the joined path cached)."""
        run_dir = self.run_dir(run_id)
        cached = self._children.get((run_id, name))
        if cached is not None and cached[0] is run_dir:
            return cached[1]
        path = run_dir / name
        self._children[(run_id, name)] = (run_dir, path)
        return path

    def checkpoint(self, run_id: str) -> Path:
        """``runs/<run_id>/run.json``."""
        return self.child(run_id, CHECKPOINT_FILE)

    def ledger(self, run_id: str) -> Path:
        """``runs/<run_id>/ledger.jsonl``."""
        return self.child(run_id, LEDGER_FILE)


__all__ = ["ANCHORS_FILE", "CHECKPOINT_FILE", "LEDGER_FILE", "LOCK_FILE", "PRUNED_DIR", "RUNS_DIR", "RunFiles", "SECRETS_FILE"]
