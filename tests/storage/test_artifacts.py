"""Artifact ids and metadata, then what only the file store does (the shared store contract: abstractruntime.testing)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.clock import parse_iso
from abstractruntime.core.errors import (
    CorruptRecordError,
    StorageError,
    UnsupportedFormatError,
)
from abstractruntime.storage.artifacts import (
    ArtifactMetadata,
    FileArtifactStore,
    InMemoryArtifactStore,
    compute_artifact_id,
)

START = "2030-01-02T03:04:05+00:00"


def sha_id(content: bytes) -> str:
    """The expected content address, computed independently of the code under test."""
    return hashlib.sha256(content).hexdigest()[:32]


# The store conformance tests are abstractruntime.testing.ArtifactStoreConformance
# (tests/conformance/test_conformance_artifact_store.py).


def test_compute_artifact_id_matches_sha256_prefix() -> None:
    assert compute_artifact_id(b"") == hashlib.sha256(b"").hexdigest()[:32]
    assert len(compute_artifact_id(b"abc")) == 32


def test_metadata_dict_round_trip() -> None:
    meta = ArtifactMetadata("abc", "text/plain", 3, START, run_id="r", tags={"a": "b"}, sha256="00" * 32)
    data = meta.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert ArtifactMetadata.from_dict(data) == meta
    # The minimal shape (no sha256, no tags) still loads.
    minimal = ArtifactMetadata.from_dict(
        {"artifact_id": "x", "content_type": "t", "size_bytes": 0, "created_at": START}
    )
    assert minimal.tags == {} and minimal.run_id is None and minimal.sha256 is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=2048))
def test_property_round_trip_and_content_address(tmp_path: Path, content: bytes) -> None:
    expected_id = hashlib.sha256(content).hexdigest()[:32]
    for store in (InMemoryArtifactStore(), FileArtifactStore(tmp_path, durability="none")):
        meta = store.store(content)
        assert meta.artifact_id == expected_id
        loaded = store.load(expected_id)
        assert loaded is not None and loaded.content == content


# --- FileArtifactStore specifics ------------------------------------------------------


@pytest.fixture
def fstore(tmp_path: Path) -> FileArtifactStore:
    return FileArtifactStore(tmp_path / "store")


def test_file_layout_and_meta_format(fstore: FileArtifactStore, tmp_path: Path) -> None:
    content = b"layout check"
    meta = fstore.store(content, content_type="text/plain", run_id="r1", tags={"t": "1"})
    art_dir = tmp_path / "store" / "artifacts"
    assert (art_dir / f"{sha_id(content)}.bin").read_bytes() == content
    doc = json.loads((art_dir / f"{sha_id(content)}.meta").read_text("utf-8"))
    assert doc["format"] == 1
    assert doc["artifact_id"] == sha_id(content)
    assert doc["content_type"] == "text/plain"
    assert doc["size_bytes"] == len(content)
    assert doc["sha256"] == hashlib.sha256(content).hexdigest()
    assert doc["run_id"] == "r1"
    assert doc["tags"] == {"t": "1"}
    assert parse_iso(doc["created_at"]) == parse_iso(meta.created_at)


def test_persists_across_instances(tmp_path: Path) -> None:
    first = FileArtifactStore(tmp_path)
    meta = first.store_json({"answer": 42}, run_id="run-a")
    explicit = first.store_text("notes", artifact_id="notes")
    second = FileArtifactStore(tmp_path)
    assert second.load_json(meta.artifact_id) == {"answer": 42}
    assert second.load_text("notes") == "notes"
    assert second.get_metadata(meta.artifact_id) == meta
    assert [m.artifact_id for m in second.list_by_run("run-a")] == [meta.artifact_id]
    assert {m.artifact_id for m in second.list_all()} == {meta.artifact_id, explicit.artifact_id}


def test_listing_sees_changes_made_by_another_instance(tmp_path: Path) -> None:
    reader = FileArtifactStore(tmp_path, durability="none")
    writer = FileArtifactStore(tmp_path, durability="none")
    writer.store(b"x", artifact_id="shared", run_id="r1")
    assert [m.artifact_id for m in reader.list_by_run("r1")] == ["shared"]  # now cached
    writer.store(b"x", artifact_id="shared", run_id="r2")
    assert reader.list_by_run("r1") == []
    assert [m.run_id for m in reader.list_by_run("r2")] == ["r2"]
    writer.delete("shared")
    assert reader.list_by_run("r2") == [] and reader.list_all() == []


def test_permissions(fstore: FileArtifactStore, tmp_path: Path) -> None:
    meta = fstore.store(b"secret")
    art_dir = tmp_path / "store" / "artifacts"
    assert stat.S_IMODE(os.stat(tmp_path / "store").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(art_dir).st_mode) == 0o700
    for suffix in (".bin", ".meta"):
        assert stat.S_IMODE(os.stat(art_dir / f"{meta.artifact_id}{suffix}").st_mode) == 0o600


@pytest.mark.parametrize(
    "meta_text",
    ["{not json", "[]", '{"format": 1, "artifact_id": "wrong", "content_type": "t", "size_bytes": 1}', "{}"],
)
def test_corrupt_meta_names_the_file(fstore: FileArtifactStore, tmp_path: Path, meta_text: str) -> None:
    meta = fstore.store(b"fine", run_id="r")
    meta_path = tmp_path / "store" / "artifacts" / f"{meta.artifact_id}.meta"
    meta_path.write_text(meta_text)
    for call in (
        lambda: fstore.load(meta.artifact_id),
        lambda: fstore.get_metadata(meta.artifact_id),
        lambda: fstore.list_all(),
        lambda: fstore.list_by_run("r"),
    ):
        with pytest.raises(CorruptRecordError) as info:
            call()
        assert str(meta_path) in str(info.value)
    # Storing the same content again repairs it.
    fstore.store(b"fine", run_id="r")
    assert fstore.load(meta.artifact_id).content == b"fine"  # type: ignore[union-attr]


def test_newer_meta_format_is_refused(fstore: FileArtifactStore, tmp_path: Path) -> None:
    meta = fstore.store(b"fine")
    meta_path = tmp_path / "store" / "artifacts" / f"{meta.artifact_id}.meta"
    doc = json.loads(meta_path.read_text())
    doc["format"] = 99
    meta_path.write_text(json.dumps(doc))
    with pytest.raises(UnsupportedFormatError, match="newer"):
        fstore.load(meta.artifact_id)


def test_tampered_content_is_detected(fstore: FileArtifactStore, tmp_path: Path) -> None:
    meta = fstore.store(b"original bytes")
    bin_path = tmp_path / "store" / "artifacts" / f"{meta.artifact_id}.bin"
    bin_path.write_bytes(b"tampered bytes")  # same length, different hash
    with pytest.raises(CorruptRecordError) as info:
        fstore.load(meta.artifact_id)
    assert str(bin_path) in str(info.value)
    bin_path.unlink()
    with pytest.raises(CorruptRecordError, match="missing"):
        fstore.load(meta.artifact_id)


def test_orphan_bin_is_invisible_and_overwritten(fstore: FileArtifactStore, tmp_path: Path) -> None:
    # What a crash between the .bin and the .meta write leaves behind.
    content = b"half stored"
    art_dir = tmp_path / "store" / "artifacts"
    art_dir.mkdir(exist_ok=True)  # created by an earlier store()
    (art_dir / f"{sha_id(content)}.bin").write_bytes(b"partial garbage")
    assert not fstore.exists(sha_id(content))
    assert fstore.load(sha_id(content)) is None
    assert fstore.list_all() == []
    fstore.store(content)
    assert fstore.load(sha_id(content)).content == content  # type: ignore[union-attr]
    # delete removes an orphan too, but reports it as not having existed.
    (art_dir / "orphan.bin").write_bytes(b"x")
    assert fstore.delete("orphan") is False
    assert not (art_dir / "orphan.bin").exists()


_CRASH_AFTER_BIN = """
import os, sys
from abstractruntime.storage import fsio
from abstractruntime.storage.artifacts import FileArtifactStore

real = fsio.atomic_write_bytes
def crash_after_first_bin(path, data, *, durable=True):
    real(path, data, durable=durable)
    if path.suffix == ".bin":
        os._exit(17)  # the process dies right after the .bin is durable
fsio.atomic_write_bytes = crash_after_first_bin
FileArtifactStore(sys.argv[1]).store(sys.argv[2].encode(), artifact_id=sys.argv[3] or None)
"""


def _store_and_crash(base: Path, content: str, artifact_id: str = "") -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH_AFTER_BIN, str(base), content, artifact_id],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 17, proc.stderr.decode()


def test_crash_between_bin_and_meta_leaves_nothing_visible(tmp_path: Path) -> None:
    _store_and_crash(tmp_path, "crashing content")
    store = FileArtifactStore(tmp_path)
    artifact_id = sha_id(b"crashing content")
    assert (tmp_path / "artifacts" / f"{artifact_id}.bin").exists()
    assert not store.exists(artifact_id) and store.list_all() == []
    store.store(b"crashing content")
    assert store.load_text(artifact_id) == "crashing content"


def test_crash_while_replacing_an_explicit_id_never_mixes_versions(tmp_path: Path) -> None:
    FileArtifactStore(tmp_path).store(b"version one", artifact_id="report")
    _store_and_crash(tmp_path, "version two, longer", "report")
    store = FileArtifactStore(tmp_path)
    # The old .meta was hidden before the new .bin replaced the old bytes: absent, not corrupt.
    assert store.load("report") is None
    store.store(b"version three", artifact_id="report")
    assert store.load_text("report") == "version three"


def test_symlinked_bin_is_refused(fstore: FileArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"do not touch")
    content = b"payload"
    link = tmp_path / "store" / "artifacts" / f"{sha_id(content)}.bin"
    link.parent.mkdir(exist_ok=True)  # created by an earlier store()
    link.symlink_to(outside)
    with pytest.raises(StorageError, match="symlink"):
        fstore.store(content)
    assert outside.read_bytes() == b"do not touch"
    # A .meta beside a symlinked .bin does not make load follow the link.
    meta = fstore.store(b"other", artifact_id="linked")
    bin_path = tmp_path / "store" / "artifacts" / "linked.bin"
    bin_path.unlink()
    bin_path.symlink_to(outside)
    with pytest.raises(StorageError, match="symlink"):
        fstore.load(meta.artifact_id)


def test_symlinked_artifacts_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "artifacts").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageError):
        FileArtifactStore(tmp_path / "store")


def test_bad_durability_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        FileArtifactStore(tmp_path, durability="sometimes")


def test_concurrent_replacements_never_mix_bin_and_meta(tmp_path: Path) -> None:
    writers = [FileArtifactStore(tmp_path, durability="none") for _ in range(3)]
    reader = FileArtifactStore(tmp_path, durability="none")
    errors: list[BaseException] = []

    def write(store: FileArtifactStore, n: int) -> None:
        try:
            for i in range(30):
                store.store(f"writer {n} round {i} ".encode() * (n + 1), artifact_id="hot")
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w, n)) for n, w in enumerate(writers)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        artifact = reader.load("hot")  # raises CorruptRecordError if a pair were mixed
        if artifact is not None:
            assert artifact.content.startswith(b"writer ")
    for t in threads:
        t.join()
    assert errors == []
    final = reader.load("hot")
    assert final is not None and final.metadata.size_bytes == len(final.content)


def test_created_at_is_utc_from_the_clock(tmp_path: Path) -> None:
    moment = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    store = FileArtifactStore(tmp_path, clock=lambda: moment)
    meta = store.store(b"x")
    assert parse_iso(meta.created_at) == moment
    assert parse_iso(FileArtifactStore(tmp_path).get_metadata(meta.artifact_id).created_at) == moment  # type: ignore[union-attr]
