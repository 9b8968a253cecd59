"""Artifact store conformance: the contract every :class:`~abstractruntime.storage.artifacts.ArtifactStore` keeps.

Content addressing (the id is the first 32 hex digits of the sha256), explicit ids, copies
not aliases, listing order and limits, per-run deletion, the JSON and text helpers, artifact
references, and the refusal of unsafe ids.
"""

from __future__ import annotations

import hashlib

import pytest

from ..core.clock import FixedClock, parse_iso
from ..core.errors import InvalidIdError
from ..storage.artifacts import (Artifact, ArtifactStore, artifact_ref, get_artifact_id, is_artifact_ref,
                                 resolve_artifact)

START = "2030-01-02T03:04:05+00:00"
"""Where the suite's clock starts."""


def sha_id(content: bytes) -> str:
    """The expected content address, computed independently of the code under test."""
    return hashlib.sha256(content).hexdigest()[:32]


class ArtifactStoreConformance:
    """Subclass it and define a ``store`` fixture: a new, empty store that takes its timestamps from ``clock``."""

    @pytest.fixture
    def clock(self) -> FixedClock:
        """The clock the store under test reads (the suite advances it); override to start elsewhere."""
        return FixedClock(START)

    def test_is_an_artifact_store(self, store: ArtifactStore) -> None:
        assert isinstance(store, ArtifactStore)

    def test_store_returns_metadata_with_content_address(self, store: ArtifactStore) -> None:
        content = b"hello artifacts"
        meta = store.store(content, run_id="run-1", tags={"kind": "greeting"})
        assert meta.artifact_id == sha_id(content)
        assert meta.content_type == "application/octet-stream"
        assert meta.size_bytes == len(content)
        assert meta.run_id == "run-1"
        assert meta.tags == {"kind": "greeting"}
        assert meta.sha256 == hashlib.sha256(content).hexdigest()
        assert parse_iso(meta.created_at) == parse_iso(START)

    def test_load_round_trip(self, store: ArtifactStore) -> None:
        meta = store.store(b"\x00\x01binary\xff", content_type="image/x-test")
        artifact = store.load(meta.artifact_id)
        assert isinstance(artifact, Artifact)
        assert artifact.content == b"\x00\x01binary\xff"
        assert artifact.content_type == "image/x-test"
        assert artifact.artifact_id == meta.artifact_id
        assert artifact.metadata == meta
        assert store.get_metadata(meta.artifact_id) == meta
        assert store.exists(meta.artifact_id)

    def test_same_bytes_same_id_stored_once(self, store: ArtifactStore) -> None:
        first = store.store(b"same")
        second = store.store(b"same")
        assert first.artifact_id == second.artifact_id == sha_id(b"same")
        assert [m.artifact_id for m in store.list_all()] == [first.artifact_id]

    def test_explicit_id_is_the_callers(self, store: ArtifactStore) -> None:
        meta = store.store(b"v1", artifact_id="report_2030-01")
        assert meta.artifact_id == "report_2030-01"
        assert store.load("report_2030-01").content == b"v1"

    def test_restore_under_explicit_id_replaces_content_and_metadata(self, store: ArtifactStore) -> None:
        store.store(b"version one", artifact_id="doc", run_id="r1", content_type="text/plain")
        store.store(b"v2", artifact_id="doc", run_id="r2")
        artifact = store.load("doc")
        assert artifact is not None
        assert artifact.content == b"v2"
        assert artifact.metadata.size_bytes == 2
        assert artifact.metadata.run_id == "r2"
        assert artifact.content_type == "application/octet-stream"
        assert store.list_by_run("r1") == []

    def test_missing(self, store: ArtifactStore) -> None:
        missing = "0" * 32
        assert store.load(missing) is None
        assert store.get_metadata(missing) is None
        assert store.exists(missing) is False
        assert store.delete(missing) is False
        assert store.load_text(missing) is None
        assert store.load_json(missing) is None

    def test_delete(self, store: ArtifactStore) -> None:
        meta = store.store(b"to delete")
        assert store.delete(meta.artifact_id) is True
        assert store.exists(meta.artifact_id) is False
        assert store.load(meta.artifact_id) is None
        assert store.delete(meta.artifact_id) is False
        assert store.list_all() == []

    def test_list_by_run_oldest_first_and_only_that_run(self, store: ArtifactStore, clock: FixedClock) -> None:
        a = store.store(b"a", run_id="r1")
        clock.advance(seconds=1)
        store.store(b"other", run_id="r2")
        clock.advance(seconds=1)
        b = store.store(b"b", run_id="r1")
        store.store(b"no run")
        assert [m.artifact_id for m in store.list_by_run("r1")] == [a.artifact_id, b.artifact_id]
        assert store.list_by_run("nobody") == []

    def test_list_all_newest_first_with_limit(self, store: ArtifactStore, clock: FixedClock) -> None:
        ids = []
        for i in range(5):
            ids.append(store.store(f"item {i}".encode()).artifact_id)
            clock.advance(seconds=1)
        assert [m.artifact_id for m in store.list_all()] == ids[::-1]
        assert [m.artifact_id for m in store.list_all(limit=2)] == ids[:-3:-1]
        assert store.list_all(limit=0) == []
        with pytest.raises(ValueError):
            store.list_all(limit=-1)

    def test_delete_by_run(self, store: ArtifactStore) -> None:
        store.store(b"1", run_id="r1")
        store.store(b"2", run_id="r1")
        keep = store.store(b"3", run_id="r2")
        assert store.delete_by_run("r1") == 2
        assert store.list_by_run("r1") == []
        assert store.exists(keep.artifact_id)
        assert store.delete_by_run("r1") == 0

    def test_text_helpers(self, store: ArtifactStore) -> None:
        meta = store.store_text("héllo wörld", run_id="r")
        assert meta.content_type == "text/plain"
        assert meta.artifact_id == sha_id("héllo wörld".encode("utf-8"))
        assert store.load_text(meta.artifact_id) == "héllo wörld"
        assert store.load(meta.artifact_id).as_text() == "héllo wörld"

    def test_json_helpers(self, store: ArtifactStore) -> None:
        value = {"results": [1, 2.5, None, True], "title": "ünïcode", "nested": {"k": "v"}}
        meta = store.store_json(value, tags={"source": "search"})
        assert meta.content_type == "application/json"
        assert store.load_json(meta.artifact_id) == value
        assert store.load(meta.artifact_id).as_json() == value

    def test_equal_json_values_share_an_id(self, store: ArtifactStore) -> None:
        assert store.store_json({"a": 1, "b": 2}).artifact_id == store.store_json({"b": 2, "a": 1}).artifact_id

    def test_json_refuses_nan_and_unserialisable(self, store: ArtifactStore) -> None:
        with pytest.raises(ValueError):
            store.store_json({"x": float("nan")})
        with pytest.raises(ValueError):
            store.store_json({"x": object()})
        assert store.list_all() == []

    def test_content_must_be_bytes(self, store: ArtifactStore) -> None:
        with pytest.raises(ValueError, match="bytes"):
            store.store("text, not bytes")
        assert store.store(bytearray(b"ok")).artifact_id == sha_id(b"ok")

    @pytest.mark.parametrize("bad", ["../x", "a/b", ".", "a.b", "/etc/passwd", "x" * 129, "sp ace"])
    def test_invalid_ids_rejected(self, store: ArtifactStore, bad: str) -> None:
        for call in (
            lambda: store.store(b"x", artifact_id=bad),
            lambda: store.load(bad),
            lambda: store.get_metadata(bad),
            lambda: store.exists(bad),
            lambda: store.delete(bad),
        ):
            with pytest.raises(ValueError, match="Invalid artifact_id") as info:
                call()
            assert isinstance(info.value, InvalidIdError)
        assert store.list_all() == []

    def test_empty_id_rejected(self, store: ArtifactStore) -> None:
        with pytest.raises(ValueError, match="cannot be empty"):
            store.store(b"x", artifact_id="")
        with pytest.raises(InvalidIdError, match="cannot be empty"):
            store.load("")

    def test_returned_metadata_is_a_copy(self, store: ArtifactStore) -> None:
        tags = {"k": "v"}
        meta = store.store(b"x", tags=tags)
        tags["k"] = "changed by caller"
        meta.tags["k"] = "changed too"
        store.get_metadata(meta.artifact_id).tags["k"] = "and again"
        assert store.get_metadata(meta.artifact_id).tags == {"k": "v"}

    def test_references(self, store: ArtifactStore) -> None:
        meta = store.store_json({"big": list(range(100))})
        ref = artifact_ref(meta.artifact_id)
        assert ref == {"$artifact": meta.artifact_id}
        assert is_artifact_ref(ref)
        assert not is_artifact_ref({"artifact": meta.artifact_id})
        assert not is_artifact_ref(meta.artifact_id)
        assert get_artifact_id(ref) == meta.artifact_id
        resolved = resolve_artifact(ref, store)
        assert resolved is not None and resolved.as_json() == {"big": list(range(100))}
        assert resolve_artifact("not a ref", store) is None
        assert resolve_artifact(artifact_ref("f" * 32), store) is None
        with pytest.raises(ValueError):
            get_artifact_id({"x": 1})
