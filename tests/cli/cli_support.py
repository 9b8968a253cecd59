"""Constants and helpers shared by the CLI tests (a uniquely named module: `conftest` is ambiguous
when several test folders are collected together)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_runs"
WORKFLOWS = SAMPLES / "workflows"
BIN = Path(sys.executable).parent / "abstractruntime"


def store_files(root: Path) -> dict[str, bytes]:
    """Every file under a store except the rebuildable index and lock files."""
    if not root.exists():
        return {}
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("index.sqlite3") and path.name != ".lock":
            out[str(path.relative_to(root))] = path.read_bytes()
    return out
