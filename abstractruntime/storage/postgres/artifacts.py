"""``PostgresArtifactStore``: large values by reference, as rows of ``artifacts``.

Same contract as the folder store's artifacts (docs/artifacts.md): content-addressed ids
unless one is given, last store wins, and a row whose bytes no longer match the size and
sha256 recorded with them is refused on load (:class:`CorruptRecordError`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from ...core.clock import parse_iso
from ...core.canonical import canonical_json
from ..artifact_base import check_content
from ..artifacts import Artifact, ArtifactMetadata, ArtifactStore, _check_limit, validate_artifact_id
from ..fsio import loads_strict
from .db import PgDatabase

_COLUMNS = "artifact_id, content_type, size_bytes, created_at, run_id, tags_json, sha256"


def _meta(row: Any) -> ArtifactMetadata:
    return ArtifactMetadata(artifact_id=row[0], content_type=row[1], size_bytes=int(row[2]), created_at=row[3],
                            run_id=row[4], tags=dict(loads_strict(bytes(row[5]))), sha256=row[6])


class PostgresArtifactStore(ArtifactStore):
    """Artifacts (bytes and metadata) in one table; one statement per store, so always whole."""

    def __init__(self, db: PgDatabase, *, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(clock=clock)
        self.db = db
        self._t = f"{db.s}.artifacts"

    def _put(self, content: bytes, meta: ArtifactMetadata) -> None:
        tags = canonical_json(meta.tags)  # exact JSON, the one copy (schema migration 11)
        with self.db.connection() as conn:
            conn.execute(
                f"""INSERT INTO {self._t} (artifact_id, content, content_type, size_bytes, sha256, created_at,
                        created_ts, run_id, tags_json)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (artifact_id) DO UPDATE SET content = EXCLUDED.content,
                        content_type = EXCLUDED.content_type, size_bytes = EXCLUDED.size_bytes,
                        sha256 = EXCLUDED.sha256, created_at = EXCLUDED.created_at,
                        created_ts = EXCLUDED.created_ts, run_id = EXCLUDED.run_id, tags_json = EXCLUDED.tags_json""",
                [meta.artifact_id, content, meta.content_type, meta.size_bytes, meta.sha256, meta.created_at,
                 parse_iso(meta.created_at), meta.run_id, tags])

    def load(self, artifact_id: str) -> Artifact | None:
        """The artifact; :class:`CorruptRecordError` if its bytes do not match its size/sha256."""
        validate_artifact_id(artifact_id)
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT {_COLUMNS}, content FROM {self._t} WHERE artifact_id = %s",
                               [artifact_id]).fetchone()
        if row is None:
            return None
        meta, data = _meta(row), bytes(row[7])
        check_content(artifact_id, data, meta, f"artifact {artifact_id} in {self.db.describe()}")
        return Artifact(metadata=meta, content=data)

    def get_metadata(self, artifact_id: str) -> ArtifactMetadata | None:
        """The metadata without the bytes, or ``None``."""
        validate_artifact_id(artifact_id)
        with self.db.connection() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM {self._t} WHERE artifact_id = %s", [artifact_id]).fetchone()
        return None if row is None else _meta(row)

    def exists(self, artifact_id: str) -> bool:
        """Whether an artifact with this id is stored."""
        validate_artifact_id(artifact_id)
        with self.db.connection() as conn:
            return conn.execute(f"SELECT 1 FROM {self._t} WHERE artifact_id = %s", [artifact_id]).fetchone() \
                is not None

    def delete(self, artifact_id: str) -> bool:
        """Delete the artifact; ``True`` if it existed."""
        validate_artifact_id(artifact_id)
        with self.db.connection() as conn:
            return bool(conn.execute(f"DELETE FROM {self._t} WHERE artifact_id = %s", [artifact_id]).rowcount > 0)

    def list_by_run(self, run_id: str) -> list[ArtifactMetadata]:
        """Metadata of the run's artifacts, oldest first."""
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM {self._t} WHERE run_id = %s ORDER BY created_ts, artifact_id",
                                [run_id]).fetchall()
        return [_meta(row) for row in rows]

    def list_all(self, *, limit: int = 1000) -> list[ArtifactMetadata]:
        """Metadata of all artifacts, newest first, at most ``limit``."""
        _check_limit(limit)
        with self.db.connection() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM {self._t} ORDER BY created_ts DESC, artifact_id DESC LIMIT %s",
                                [limit]).fetchall()
        return [_meta(row) for row in rows]


__all__ = ["PostgresArtifactStore"]
