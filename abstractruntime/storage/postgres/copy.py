"""Copying whole stores between a folder and PostgreSQL: runs, snapshots and artifacts.

Each run goes over byte for byte (:mod:`.transfer`): ledgers keep their hashes, so
``verify`` passes on either side. Nothing is overwritten: when the destination already holds
one of the runs, the copy is refused before anything is written. Snapshots of the copied runs
and artifacts (those of the copied runs, and those of no run) follow, with their ids,
timestamps and metadata unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from ...core.errors import InvalidInputError, RunExistsError
from ...core.ids import validate_id
from ..json_files import LEDGER_FILE, RUNS_DIR
from .store import PostgresStore
from .transfer import export_run, import_run

# A limit larger than any store holds: list every artifact.
_ALL = 1 << 62


def run_ids(store: Any) -> list[str]:
    """Every run id a folder store or a PostgreSQL store holds, sorted."""
    if isinstance(store, PostgresStore):
        db = store.db
        with db.connection() as conn:
            rows = conn.execute(f"SELECT run_id FROM {db.s}.runs UNION SELECT DISTINCT run_id FROM {db.s}.ledger "
                                "ORDER BY 1").fetchall()
        return [row[0] for row in rows]
    runs = Path(store.root) / RUNS_DIR
    if not runs.is_dir():
        return []
    # A directory without a ledger holds no run (e.g. a start that failed before its first record).
    return sorted(p.name for p in runs.iterdir()
                  if not p.is_symlink() and not p.name.startswith(".") and (p / LEDGER_FILE).is_file())


def _holds(store: Any, run_id: str) -> bool:
    if isinstance(store, PostgresStore):
        return store.runs.exists(run_id)
    return (Path(store.root) / RUNS_DIR / run_id).exists()


def copy_store(src: Any, dst: Any, *, runs: Optional[Iterable[str]] = None) -> list[str]:
    """Copy ``runs`` (default: all) from ``src`` to ``dst``, one a folder store and the other a
    PostgreSQL store; returns the run ids copied.

    Refuses (:class:`RunExistsError`, nothing written) when ``dst`` holds any of them, and
    (:class:`InvalidInputError`) a copy between two stores of the same kind.
    """
    to_postgres = isinstance(dst, PostgresStore)
    if to_postgres == isinstance(src, PostgresStore):
        raise InvalidInputError("store copy moves runs between a folder store and a PostgreSQL store")
    wanted = sorted(validate_id(r, "run id") for r in runs) if runs is not None else run_ids(src)
    present = [r for r in wanted if _holds(dst, r)]
    if present:
        raise RunExistsError(f"the destination already holds {len(present)} of the runs ({', '.join(present[:5])}"
                             f"{', ...' if len(present) > 5 else ''}); nothing was copied", runs=present)
    for run_id in wanted:
        if to_postgres:
            import_run(dst, run_id, src.root)
        else:
            export_run(src, run_id, dst.root)
    chosen = set(wanted)
    for snapshot in src.snapshots.list(limit=None):
        if snapshot.run_id in chosen:
            dst.snapshots.save(snapshot)
    for meta in src.artifacts.list_all(limit=_ALL):
        if meta.run_id is None or meta.run_id in chosen:
            artifact = src.artifacts.load(meta.artifact_id)
            if artifact is not None:
                # _put is the stores' write hook: the metadata (id, created_at) is kept as it was.
                dst.artifacts._put(artifact.content, artifact.metadata)
    return wanted


__all__ = ["copy_store", "run_ids"]
