"""Block marks of a folder store: ``blocked/<run_id>.json`` (see :mod:`abstractruntime.core.blocks`).

One small JSON file per blocked run, written atomically without fsync (a mark is a hint:
losing one costs one more replay that finds the divergence again). Listing them is one
directory read, usually of an empty directory. A file that does not parse, names another
run or is not a regular file is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ..core.ids import validate_id
from ..core.json_codec import dumps_compact, loads_strict
from .fsio import atomic_write_bytes, child_path, ensure_dir, read_bytes

BLOCKED_DIR = "blocked"


class FileBlocks:
    """The block marks under ``<root>/blocked/``."""

    def __init__(self, root: Path, *, durable: bool) -> None:
        self.root = root
        self.folder = root / BLOCKED_DIR
        self.durable = durable

    def _path(self, run_id: str) -> Path:
        validate_id(run_id, "run id")
        return child_path(self.root, BLOCKED_DIR, f"{run_id}.json")

    def put(self, run_id: str, mark: dict[str, Any]) -> None:
        """Write (or replace) the run's mark."""
        path = self._path(run_id)
        ensure_dir(self.folder, durable=self.durable)
        atomic_write_bytes(path, dumps_compact({**mark, "run_id": run_id}) + b"\n", durable=False)

    def get(self, run_id: str) -> Optional[dict[str, Any]]:
        """The run's mark, or ``None``."""
        path = self._path(run_id)
        try:
            doc = loads_strict(read_bytes(path))
        except FileNotFoundError:
            return None
        except Exception:  # torn, edited or a symlink: a hint that cannot be read blocks nothing
            return None
        return doc if isinstance(doc, dict) and doc.get("run_id") == run_id else None

    def list(self) -> dict[str, dict[str, Any]]:
        """Every readable mark, by run id."""
        try:
            names = sorted(os.listdir(self.folder))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        found: dict[str, dict[str, Any]] = {}
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            run_id = name[: -len(".json")]
            try:
                mark = self.get(run_id)
            except Exception:  # an invalid run id in the name
                continue
            if mark is not None:
                found[run_id] = mark
        return found

    def drop(self, run_id: str) -> None:
        """Remove the run's mark (nothing when it has none)."""
        try:
            os.unlink(self._path(run_id))
        except FileNotFoundError:
            pass
        except OSError:
            pass  # a hint: a mark that cannot be removed goes stale, and stale marks are ignored


__all__ = ["BLOCKED_DIR", "FileBlocks"]
