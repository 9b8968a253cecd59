"""The snapshot model, then what only the JSON-file store does (the shared store contract: abstractruntime.testing)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import (
    CorruptRecordError,
    InvalidIdError,
    InvalidInputError,
    UnsupportedFormatError,
)
from abstractruntime.core.models import RunState, RunStatus, WaitReason, WaitState
from abstractruntime.storage.snapshots import (
    JsonSnapshotStore,
    Snapshot,
)

T0 = "2024-05-01T12:00:00+00:00"


def make_run(vars: dict[str, Any] | None = None, run_id: str = "run-1") -> RunState:
    run = RunState.new(workflow_id="wf", entry_node="ask", vars={"n": 1} if vars is None else vars, run_id=run_id)
    run.status = RunStatus.WAITING
    run.waiting = WaitState(reason=WaitReason.USER, wait_key="k1", prompt="Go?", choices=["yes", "no"])
    return run


# --- model -------------------------------------------------------------------------------------


def test_from_run_copies_the_state_deeply() -> None:
    run = make_run({"items": [{"a": 1}]})
    snap = Snapshot.from_run(run=run, name="before", description="d", tags=["t"], step_id="s1",
                             workflow={"source": "wf.py", "sha256": "ab" * 32, "workflow_id": "wf"},
                             ledger={"seq": 3, "head_hash": "cd" * 32})
    run.vars["items"][0]["a"] = 99
    run.vars["new"] = True
    run.status = RunStatus.COMPLETED
    assert snap.run_state["vars"] == {"items": [{"a": 1}]}
    assert snap.run_state["status"] == "waiting"
    assert (snap.run_id, snap.step_id, snap.name, snap.description, snap.tags) == ("run-1", "s1", "before", "d", ["t"])
    assert snap.ledger == {"seq": 3, "head_hash": "cd" * 32}
    restored = snap.to_run_state()
    assert restored.vars == {"items": [{"a": 1}]} and restored.waiting is not None
    assert restored.waiting.choices == ["yes", "no"]


def test_from_run_uses_the_given_clock_and_a_fresh_safe_id() -> None:
    clock = FixedClock(T0)
    a = Snapshot.from_run(run=make_run(), name="a", clock=clock)
    b = Snapshot.from_run(run=make_run(), name="a", clock=clock)
    assert a.created_at == a.updated_at == T0
    assert a.snapshot_id != b.snapshot_id


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "two\nlines", "tab\there", None])
def test_bad_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidInputError):
        Snapshot.from_run(run=make_run(), name=name)  # type: ignore[arg-type]


def test_a_200_character_name_is_fine() -> None:
    assert len(Snapshot.from_run(run=make_run(), name="n" * 200).name) == 200


@pytest.mark.parametrize("tags", ["solo", [""], [3], ["x" * 101]])
def test_bad_tags_are_refused(tags: object) -> None:
    with pytest.raises(InvalidInputError):
        Snapshot.from_run(run=make_run(), name="n", tags=tags)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [{1, 2}, float("nan"), object()])
def test_state_that_cannot_be_stored_is_refused_up_front(value: object) -> None:
    with pytest.raises(InvalidInputError, match="not JSON-serialisable"):
        Snapshot.from_run(run=make_run({"bad": value}), name="n")


def test_dict_round_trip() -> None:
    snap = Snapshot.from_run(run=make_run(), name="n", tags=["a", "b"], workflow={"sha256": "00"})
    assert Snapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap
    with pytest.raises(InvalidInputError, match="run_state"):
        Snapshot.from_dict({k: v for k, v in snap.to_dict().items() if k != "run_state"})
    with pytest.raises(InvalidInputError, match="belongs to run"):
        Snapshot.from_dict({**snap.to_dict(), "run_id": "another"})


# The store conformance tests are abstractruntime.testing.SnapshotStoreConformance
# (tests/conformance/test_conformance_snapshot_store.py).


# --- JSON files only ---------------------------------------------------------------------------


@pytest.fixture
def snap_dir(tmp_path: Path) -> Path:
    return tmp_path / "store" / "snapshots"


def test_file_layout_and_format(snap_dir: Path) -> None:
    store = JsonSnapshotStore(snap_dir)
    snap = Snapshot.from_run(run=make_run(), name="n", tags=["t"])
    store.save(snap)
    path = snap_dir / f"{snap.snapshot_id}.json"
    assert sorted(os.listdir(snap_dir)) == [path.name]
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == 2 and doc["state"] is None  # a snapshot of a bare RunState has no state document
    assert doc["snapshot_id"] == snap.snapshot_id and doc["name"] == "n" and doc["tags"] == ["t"]
    assert doc["run_state"]["run_id"] == "run-1" and doc["run_state"]["waiting"]["wait_key"] == "k1"
    assert store.path_for(snap.snapshot_id) == path


def test_permissions(snap_dir: Path) -> None:
    store = JsonSnapshotStore(snap_dir, durability="none")
    snap = Snapshot.from_run(run=make_run(), name="n")
    store.save(snap)
    assert stat.S_IMODE(snap_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((snap_dir / f"{snap.snapshot_id}.json").stat().st_mode) == 0o600


def test_bad_durability_is_refused(snap_dir: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        JsonSnapshotStore(snap_dir, durability="sometimes")


def test_snapshots_persist_across_instances_and_processes(snap_dir: Path) -> None:
    code = (
        "import sys\n"
        "from abstractruntime.core.models import RunState\n"
        "from abstractruntime.storage.snapshots import JsonSnapshotStore, Snapshot\n"
        "run = RunState.new(workflow_id='wf', entry_node='a', vars={'from': 'child'}, run_id='child-run')\n"
        "snap = Snapshot.from_run(run=run, name='made elsewhere', tags=['ci'])\n"
        "JsonSnapshotStore(sys.argv[1]).save(snap)\n"
        "print(snap.snapshot_id)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(snap_dir)], capture_output=True, text=True, check=True)
    snapshot_id = out.stdout.strip()
    loaded = JsonSnapshotStore(snap_dir).get(snapshot_id)
    assert (loaded.name, loaded.run_id, loaded.run_state["vars"]) == ("made elsewhere", "child-run", {"from": "child"})
    JsonSnapshotStore(snap_dir).update(snapshot_id, name="renamed")
    assert [s.name for s in JsonSnapshotStore(snap_dir).list(tag="CI")] == ["renamed"]


def test_writes_leave_no_temp_files_and_failures_keep_the_old_file(snap_dir: Path) -> None:
    store = JsonSnapshotStore(snap_dir)
    snaps = [Snapshot.from_run(run=make_run(), name=f"s{i}") for i in range(5)]
    for snap in snaps:
        store.save(snap)
        store.update(snap.snapshot_id, description="again")
    store.delete(snaps[0].snapshot_id)
    assert sorted(os.listdir(snap_dir)) == sorted(f"{s.snapshot_id}.json" for s in snaps[1:])

    target = snap_dir / f"{snaps[1].snapshot_id}.json"
    before = target.read_bytes()
    broken = store.get(snaps[1].snapshot_id)
    broken.run_state["vars"] = {"bad": {1, 2}}  # not JSON: refused before anything is written
    with pytest.raises(InvalidInputError):
        store.save(broken)
    assert target.read_bytes() == before
    assert len(os.listdir(snap_dir)) == 4


def test_list_ignores_temp_files_and_other_names(snap_dir: Path) -> None:
    store = JsonSnapshotStore(snap_dir)
    snap = Snapshot.from_run(run=make_run(), name="kept")
    store.save(snap)
    # What a crash in the middle of an atomic write leaves behind, plus unrelated files.
    (snap_dir / f".{snap.snapshot_id}.json.123.456.tmp").write_text("{partial")
    (snap_dir / "README.txt").write_text("notes")
    assert [s.name for s in store.list()] == ["kept"]
    assert store.last_skipped == ()


def test_corrupt_file(snap_dir: Path) -> None:
    store = JsonSnapshotStore(snap_dir)
    good = Snapshot.from_run(run=make_run(), name="good")
    bad = Snapshot.from_run(run=make_run(), name="bad")
    store.save(good)
    store.save(bad)
    bad_path = snap_dir / f"{bad.snapshot_id}.json"
    bad_path.write_text('{"format": 1, "snapshot_id": ')  # torn by hand
    with pytest.raises(CorruptRecordError, match=str(bad_path)) as info:
        store.load(bad.snapshot_id)
    assert info.value.path == str(bad_path)
    assert [s.name for s in store.list()] == ["good"]
    assert store.last_skipped == (str(bad_path),)
    assert isinstance(store.last_skipped_errors[0], CorruptRecordError)
    store.delete(bad.snapshot_id)
    store.list()
    assert store.last_skipped == ()


@pytest.mark.parametrize("mutate", [
    lambda d: {k: v for k, v in d.items() if k != "name"},
    lambda d: {**d, "tags": "not-a-list"},
    lambda d: {**d, "created_at": "yesterday"},
    lambda d: {**d, "run_state": {"run_id": "run-1"}},
    lambda d: [d],
])
def test_well_formed_json_with_bad_content_is_corrupt(snap_dir: Path, mutate: Callable[[Any], Any]) -> None:
    store = JsonSnapshotStore(snap_dir)
    snap = Snapshot.from_run(run=make_run(), name="n")
    store.save(snap)
    path = store.path_for(snap.snapshot_id)
    path.write_text(json.dumps(mutate(json.loads(path.read_text()))))
    with pytest.raises(CorruptRecordError, match=snap.snapshot_id):
        store.load(snap.snapshot_id)
    assert store.list() == [] and store.last_skipped == (str(path),)


def test_a_copied_file_is_refused_under_the_wrong_id(snap_dir: Path) -> None:
    store = JsonSnapshotStore(snap_dir)
    snap = Snapshot.from_run(run=make_run(), name="n")
    store.save(snap)
    copy_path = snap_dir / "copy-of-it.json"
    copy_path.write_bytes(store.path_for(snap.snapshot_id).read_bytes())
    with pytest.raises(CorruptRecordError, match="not 'copy-of-it'"):
        store.load("copy-of-it")
    assert [s.snapshot_id for s in store.list()] == [snap.snapshot_id]
    assert store.last_skipped == (str(copy_path),)


def test_newer_format_is_refused_not_misread(snap_dir: Path) -> None:
    store = JsonSnapshotStore(snap_dir)
    snap = Snapshot.from_run(run=make_run(), name="from the future")
    store.save(snap)
    path = store.path_for(snap.snapshot_id)
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": 3}))
    with pytest.raises(UnsupportedFormatError, match="newer"):
        store.load(snap.snapshot_id)
    assert store.list() == [] and store.last_skipped == (str(path),)


def test_ids_cannot_escape_the_directory(snap_dir: Path) -> None:
    store = JsonSnapshotStore(snap_dir)
    snap = Snapshot.from_run(run=make_run(), name="n")
    snap.snapshot_id = "../outside"
    with pytest.raises(InvalidIdError):
        store.save(snap)
    assert not (snap_dir.parent / "outside.json").exists()


def test_a_symlinked_snapshot_file_is_not_followed(snap_dir: Path, tmp_path: Path) -> None:
    store = JsonSnapshotStore(snap_dir)
    snap_dir.mkdir(parents=True, exist_ok=True)  # the store creates it only on its first save
    snap = Snapshot.from_run(run=make_run(), name="n")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"format": 1, **snap.to_dict()}))
    (snap_dir / f"{snap.snapshot_id}.json").symlink_to(elsewhere)
    assert store.list() == [] and len(store.last_skipped) == 1
    with pytest.raises(Exception, match="symlink"):
        store.load(snap.snapshot_id)
