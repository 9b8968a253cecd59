"""Snapshots and bookmarks on PostgreSQL, with the semantics of their folder-store versions.

``PostgresSnapshotStore`` keeps one row per snapshot (the document exactly as written, the one
copy) and filters by run in SQL; tags and text search use the same
:func:`~abstractruntime.storage.snapshots.select_snapshots` as the other stores.
``PostgresBookmarkStore`` keeps one row per bookmark; adding one chain-checks the ledger up to
its head first, so a bookmark never blesses tampering.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, List, Optional

from ...core.canonical import canonical_json
from ...core.clock import parse_iso, to_iso, utc_now_iso
from ...core.errors import BookmarkNotFoundError, CorruptRecordError, InvalidInputError, RunNotFoundError
from ...core.ids import validate_id
from ..bookmarks import MAX_NOTE_CHARS, Bookmark, bookmark_position
from ..fsio import loads_strict
from ..ledger_parse import parse_ledger
from ..snapshots import SNAPSHOT_FORMAT, Snapshot, _EditableStore, _json_copy, select_snapshots
from .db import PgDatabase, parse_document


class PostgresSnapshotStore(_EditableStore):
    """Snapshots as rows of ``snapshots``."""

    def __init__(self, db: PgDatabase, *, clock: Optional[Callable[[], datetime]] = None) -> None:
        self.db = db
        self._clock = clock
        self._t = f"{db.s}.snapshots"

    def save(self, snapshot: Snapshot) -> None:
        """Validate and store the snapshot (replacing one with the same id)."""
        snapshot.validate()
        doc = {"format": SNAPSHOT_FORMAT, **_json_copy(snapshot.to_dict(), "Snapshot")}
        data = canonical_json(doc)
        with self.db.connection() as conn:
            conn.execute(
                f"""INSERT INTO {self._t} (snapshot_id, run_id, created_ts, snapshot_json)
                    VALUES (%s, %s, %s, %s)
                    ON CONFLICT (snapshot_id) DO UPDATE SET run_id = EXCLUDED.run_id,
                        created_ts = EXCLUDED.created_ts, snapshot_json = EXCLUDED.snapshot_json""",
                [snapshot.snapshot_id, snapshot.run_id, parse_iso(snapshot.created_at), data])

    def _parse(self, snapshot_id: str, data: Any) -> Snapshot:
        where = f"snapshot {snapshot_id} in {self.db.describe()}"
        doc = parse_document(data, where, kind="snapshot", newest=SNAPSHOT_FORMAT)
        try:
            snapshot = Snapshot.from_dict(doc)
        except InvalidInputError as exc:
            raise CorruptRecordError(f"{where} is invalid: {exc}") from None
        if snapshot.snapshot_id != snapshot_id:
            raise CorruptRecordError(f"{where} holds snapshot {snapshot.snapshot_id!r}")
        return snapshot

    def load(self, snapshot_id: str) -> Optional[Snapshot]:
        """The snapshot, or ``None``; an unsafe id raises ``InvalidIdError``."""
        validate_id(snapshot_id, "snapshot_id")
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT snapshot_json FROM {self._t} WHERE snapshot_id = %s",
                               [snapshot_id]).fetchone()
        return None if row is None else self._parse(snapshot_id, row[0])

    def delete(self, snapshot_id: str) -> bool:
        """Remove it; ``False`` if it did not exist."""
        validate_id(snapshot_id, "snapshot_id")
        with self.db.connection() as conn:
            return bool(conn.execute(f"DELETE FROM {self._t} WHERE snapshot_id = %s", [snapshot_id]).rowcount > 0)

    def list(self, *, run_id: Optional[str] = None, tag: Optional[str] = None,
             query: Optional[str] = None, limit: Optional[int] = 100) -> list[Snapshot]:
        """Matching snapshots, newest first (see :func:`select_snapshots`)."""
        sql, params = f"SELECT snapshot_id, snapshot_json FROM {self._t}", []
        if run_id:
            sql, params = sql + " WHERE run_id = %s", [run_id]
        with self.db.connection() as conn:
            rows = conn.execute(sql, params).fetchall()
        found = [self._parse(row[0], row[1]) for row in rows]
        return select_snapshots(found, run_id=run_id, tag=tag, query=query, limit=limit)


class PostgresBookmarkStore:
    """Bookmarks as rows of ``bookmarks`` (one per run and name)."""

    def __init__(self, db: PgDatabase, *, clock: Optional[Callable[[], datetime]] = None) -> None:
        self.db = db
        self._clock = clock
        self._t = f"{db.s}.bookmarks"

    def _checkpoint_seq(self, conn: Any, run_id: str) -> int:
        row = conn.execute(f"SELECT checkpoint_json FROM {self.db.s}.runs WHERE run_id = %s", [run_id]).fetchone()
        if row is None:
            raise RunNotFoundError(run_id)
        doc = loads_strict(bytes(row[0]))
        seq = (doc.get("ledger") or {}).get("seq") if isinstance(doc, dict) else None
        return seq if isinstance(seq, int) else 0

    def add(self, run_id: str, name: str, *, seq: Optional[int] = None, note: Optional[str] = None,
            replace: bool = False) -> Bookmark:
        """Bookmark the record at ``seq`` (default: the head) — same checks as the folder store's."""
        validate_id(name, "bookmark name")
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1):
            raise InvalidInputError(f"Bookmark seq must be a positive integer, not {seq!r}")
        if note is not None and not isinstance(note, str):
            raise InvalidInputError(f"Bookmark note must be a string, not {type(note).__name__}")
        if note is not None and len(note) > MAX_NOTE_CHARS:
            raise InvalidInputError(f"Bookmark note is {len(note)} characters long; the limit is {MAX_NOTE_CHARS}")
        with self.db.connection() as conn, conn.transaction():
            # Read the checkpoint before the ledger: the ledger can only be longer by then.
            checkpoint_seq = self._checkpoint_seq(conn, run_id)
            exists = conn.execute(f"SELECT 1 FROM {self._t} WHERE run_id = %s AND name = %s FOR UPDATE",
                                  [run_id, name]).fetchone()
            if exists and not replace:
                raise InvalidInputError(
                    f"Run {run_id} already has a bookmark named {name!r}; pass replace=True to move it",
                    run_id=run_id, name=name)
            lines = conn.execute(f"SELECT line FROM {self.db.s}.ledger WHERE run_id = %s ORDER BY seq",
                                 [run_id]).fetchall()
            parsed = parse_ledger(b"".join(bytes(r[0]) + b"\n" for r in lines),
                                  path=f"ledger of run {run_id} in {self.db.describe()}", run_id=run_id)
            wanted = bookmark_position(run_id, parsed.head.seq, seq)
            bookmark = Bookmark(name=name, seq=wanted, record_hash=str(parsed.records[wanted - 1]["record_hash"]),
                                note=note or None, checkpoint_seq=checkpoint_seq,
                                created_at=to_iso(self._clock()) if self._clock else utc_now_iso())
            conn.execute(
                f"""INSERT INTO {self._t} (run_id, name, seq, record_hash, note, created_at, checkpoint_seq)
                    VALUES (%s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (run_id, name) DO UPDATE SET seq = EXCLUDED.seq, record_hash = EXCLUDED.record_hash,
                        note = EXCLUDED.note, created_at = EXCLUDED.created_at,
                        checkpoint_seq = EXCLUDED.checkpoint_seq""",
                [run_id, name, bookmark.seq, bookmark.record_hash, bookmark.note, bookmark.created_at,
                 bookmark.checkpoint_seq])
        return bookmark

    def _rows(self, conn: Any, run_id: str, name: Optional[str] = None) -> List[Bookmark]:
        self._checkpoint_seq(conn, run_id)  # an unknown run is RunNotFoundError, as on files
        sql = f"SELECT name, seq, record_hash, note, created_at, checkpoint_seq FROM {self._t} WHERE run_id = %s"
        params: list[Any] = [run_id]
        if name is not None:
            sql, params = sql + " AND name = %s", [run_id, name]
        rows = conn.execute(sql + " ORDER BY seq, name", params).fetchall()
        return [Bookmark(name=r[0], seq=int(r[1]), record_hash=r[2], note=r[3], created_at=r[4],
                         checkpoint_seq=None if r[5] is None else int(r[5])) for r in rows]

    def list(self, run_id: str) -> List[Bookmark]:
        """The run's bookmarks ordered by ``seq`` (then name); ``[]`` if it has none."""
        with self.db.connection() as conn:
            return self._rows(conn, run_id)

    def get(self, run_id: str, name: str) -> Bookmark:
        """One bookmark (:class:`BookmarkNotFoundError` if there is none)."""
        validate_id(name, "bookmark name")
        with self.db.connection() as conn:
            found = self._rows(conn, run_id, name)
        if not found:
            raise BookmarkNotFoundError(run_id, name)
        return found[0]

    def remove(self, run_id: str, name: str) -> Bookmark:
        """Delete a bookmark and return it (:class:`BookmarkNotFoundError` if there is none)."""
        validate_id(name, "bookmark name")
        with self.db.connection() as conn, conn.transaction():
            found = self._rows(conn, run_id, name)
            if not found:
                raise BookmarkNotFoundError(run_id, name)
            conn.execute(f"DELETE FROM {self._t} WHERE run_id = %s AND name = %s", [run_id, name])
        return found[0]

    def put(self, run_id: str, bookmarks: List[Bookmark]) -> None:
        """Store bookmarks as they are (copying a run between stores; nothing re-derived)."""
        with self.db.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                f"""INSERT INTO {self._t} (run_id, name, seq, record_hash, note, created_at, checkpoint_seq)
                    VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                [(run_id, b.name, b.seq, b.record_hash, b.note, b.created_at, b.checkpoint_seq) for b in bookmarks])

    def to_file_document(self, run_id: str) -> dict[str, Any]:
        """The run's bookmarks as a folder store's ``bookmarks.json`` holds them."""
        from ..bookmarks import BOOKMARKS_FORMAT

        return {"format": BOOKMARKS_FORMAT,
                "bookmarks": {b.name: b.to_dict() for b in sorted(self.list(run_id), key=lambda b: b.name)}}


__all__ = ["PostgresBookmarkStore", "PostgresSnapshotStore"]
