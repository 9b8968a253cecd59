"""Artifacts on PostgreSQL: the artifact store conformance suite (abstractruntime.testing),
unchanged, plus what only a database can get wrong."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import CorruptRecordError
from abstractruntime.storage.artifacts import ArtifactStore
from abstractruntime.testing import ArtifactStoreConformance


class TestPostgresArtifactStore(ArtifactStoreConformance):
    """The shared suite over the PostgreSQL artifact store."""

    @pytest.fixture
    def store(self, open_pg: Callable[..., Any], clock: FixedClock) -> Iterator[ArtifactStore]:
        """A new, empty artifact store in this test's schema."""
        from abstractruntime.storage.postgres.artifacts import PostgresArtifactStore

        yield PostgresArtifactStore(open_pg().db, clock=clock)


def test_altered_content_is_refused(open_pg: Callable[..., Any], admin: Any, pg_schema: str) -> None:
    artifacts = open_pg().artifacts
    meta = artifacts.store(b"original bytes", run_id="r1")
    admin.execute(f'UPDATE "{pg_schema}".artifacts SET content = %s WHERE artifact_id = %s',
                  [b"altered bytes!", meta.artifact_id])
    with pytest.raises(CorruptRecordError):
        artifacts.load(meta.artifact_id)


def test_the_runtime_gets_the_database_artifacts(open_pg: Callable[..., Any]) -> None:
    from abstractruntime.storage.postgres.artifacts import PostgresArtifactStore

    here = open_pg()
    runtime = here.runtime()
    assert isinstance(runtime.artifact_store, PostgresArtifactStore)
    meta = runtime.artifact_store.store_json({"rows": [1, 2, 3]}, run_id="r1")
    elsewhere = open_pg()  # another process, maybe another machine
    assert [m.artifact_id for m in elsewhere.artifacts.list_by_run("r1")] == [meta.artifact_id]
    assert elsewhere.artifacts.load_json(meta.artifact_id) == {"rows": [1, 2, 3]}


def test_tags_read_back_exactly(open_pg: Callable[..., Any]) -> None:
    """jsonb would turn 1e16 into an integer and cannot hold U+0000: tags come back as stored."""
    artifacts = open_pg().artifacts
    tags = {"note": "a\x00b naïve ☃", "big": 1e16, "n": [1, 2.5]}
    meta = artifacts.store(b"x", tags=tags, run_id="r1")
    again = open_pg().artifacts.get_metadata(meta.artifact_id).tags
    assert again == tags and isinstance(again["big"], float)
