"""Snapshot model and stores: one conformance suite for both stores, then file-only behaviour."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstractruntime.core.clock import FixedClock
from abstractruntime.core.errors import (
    CorruptRecordError,
    InvalidIdError,
    InvalidInputError,
    SnapshotNotFoundError,
    UnsupportedFormatError,
)
from abstractruntime.core.models import RunState, RunStatus, WaitReason, WaitState
from abstractruntime.storage.snapshots import (
    InMemorySnapshotStore,
    JsonSnapshotStore,
    Snapshot,
    SnapshotStore,
    require_snapshot,
)

T0 = "2024-05-01T12:00:00+00:00"


def make_run(vars: dict[str, Any] | None = None, run_id: str = "run-1") -> RunState:
    run = RunState.new(workflow_id="wf", entry_node="ask", vars={"n": 1} if vars is None else vars, run_id=run_id)
    run.status = RunStatus.WAITING
    run.waiting = WaitState(reason=WaitReason.USER, wait_key="k1", prompt="Go?", choices=["yes", "no"])
    return run


StoreFactory = Callable[..., Any]


@pytest.fixture(params=["memory", "json"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Build a store of the parametrised kind; ``clock`` is passed through."""

    def factory(clock: FixedClock | None = None) -> Any:
        if request.param == "memory":
            return InMemorySnapshotStore(clock=clock)
        return JsonSnapshotStore(tmp_path / "snapshots", clock=clock)

    return factory


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


# --- conformance: every store ------------------------------------------------------------------


def test_store_satisfies_the_protocol(make_store: StoreFactory) -> None:
    assert isinstance(make_store(), SnapshotStore)


def test_save_then_load_returns_an_equal_independent_copy(make_store: StoreFactory) -> None:
    store = make_store()
    snap = Snapshot.from_run(run=make_run({"deep": {"list": [1, 2]}}), name="n", description="about",
                             tags=["x"], workflow={"source": "w.py", "sha256": "ff", "workflow_id": "wf"},
                             ledger={"seq": 7, "head_hash": None})
    store.save(snap)
    loaded = store.load(snap.snapshot_id)
    assert loaded == snap and loaded is not snap
    loaded.run_state["vars"]["deep"]["list"].append(3)
    snap.name = "changed after save"
    again = store.load(snap.snapshot_id)
    assert again.run_state["vars"] == {"deep": {"list": [1, 2]}}
    assert again.name == "n"


def test_unknown_ids(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.load("does-not-exist") is None
    with pytest.raises(SnapshotNotFoundError, match="does-not-exist") as info:
        store.get("does-not-exist")
    assert isinstance(info.value, KeyError)
    with pytest.raises(SnapshotNotFoundError):
        require_snapshot(store, "does-not-exist")
    with pytest.raises(SnapshotNotFoundError):
        store.update("does-not-exist", name="x")
    assert store.delete("does-not-exist") is False


def test_delete(make_store: StoreFactory) -> None:
    store = make_store()
    snap = Snapshot.from_run(run=make_run(), name="n")
    store.save(snap)
    assert store.delete(snap.snapshot_id) is True
    assert store.load(snap.snapshot_id) is None
    assert store.list() == []
    assert store.delete(snap.snapshot_id) is False


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "", ".hidden", "a..b", "x" * 129, "sp ace"])
def test_unsafe_ids_are_refused(make_store: StoreFactory, bad_id: str) -> None:
    store = make_store()
    for call in (store.load, store.get, store.delete, lambda i: store.update(i, name="x")):
        with pytest.raises(InvalidIdError):
            call(bad_id)
    snap = Snapshot.from_run(run=make_run(), name="n")
    snap.snapshot_id = bad_id
    with pytest.raises(InvalidIdError):
        store.save(snap)


def test_save_replaces_a_snapshot_with_the_same_id(make_store: StoreFactory) -> None:
    store = make_store()
    snap = Snapshot.from_run(run=make_run(), name="first")
    store.save(snap)
    snap.name = "second"
    store.save(snap)
    assert [s.name for s in store.list()] == ["second"]


def test_list_is_newest_first_with_ties_by_id(make_store: StoreFactory) -> None:
    clock = FixedClock(T0)
    store = make_store(clock)
    made = {}
    for name, minutes in [("old", 0), ("newest", 30), ("middle", 10)]:
        clock.set(datetime(2024, 5, 1, 12, minutes, tzinfo=timezone.utc))
        made[name] = Snapshot.from_run(run=make_run(), name=name, clock=clock)
        store.save(made[name])
    # Same instant, written with another UTC offset: compared as datetimes, not text.
    tie_a = Snapshot(snapshot_id="aaa", run_id="run-1", name="tie-a", created_at="2024-05-01T14:20:00+02:00",
                     run_state=make_run().to_dict())
    tie_b = Snapshot(snapshot_id="bbb", run_id="run-1", name="tie-b", created_at="2024-05-01T12:20:00+00:00",
                     run_state=make_run().to_dict())
    store.save(tie_b)
    store.save(tie_a)
    assert [s.name for s in store.list()] == ["newest", "tie-a", "tie-b", "middle", "old"]
    assert [s.name for s in store.list(limit=2)] == ["newest", "tie-a"]
    assert len(store.list(limit=None)) == 5
    assert store.list(limit=0) == []
    with pytest.raises(InvalidInputError, match="limit"):
        store.list(limit=-1)


def test_list_filters(make_store: StoreFactory) -> None:
    store = make_store()
    specs = [
        ("run-1", "Before deploy", "State prior to the Straße rollout", ["Prod", "weekly"]),
        ("run-1", "after fix", None, ["dev"]),
        ("run-2", "Baseline", "the DEPLOY candidate", ["prod"]),
    ]
    for run_id, name, description, tags in specs:
        store.save(Snapshot.from_run(run=make_run(run_id=run_id), name=name, description=description, tags=tags))

    def names(**kwargs: Any) -> set[str]:
        return {s.name for s in store.list(**kwargs)}

    assert names(run_id="run-1") == {"Before deploy", "after fix"}
    assert names(tag="PROD") == {"Before deploy", "Baseline"}
    assert names(tag="pro") == set()  # tags match whole, not as substrings
    assert names(query="deploy") == {"Before deploy", "Baseline"}  # name or description
    assert names(query="AFTER F") == {"after fix"}
    assert names(query="STRASSE") == {"Before deploy"}  # Unicode case folding
    assert names(query="deploy", run_id="run-2", tag="prod") == {"Baseline"}
    assert names(query="nothing like this") == set()
    assert names(run_id="", tag="", query="") == {"Before deploy", "after fix", "Baseline"}


def test_update_edits_metadata_and_bumps_updated_at(make_store: StoreFactory) -> None:
    clock = FixedClock(T0)
    store = make_store(clock)
    snap = Snapshot.from_run(run=make_run({"v": 1}), name="n", description="d", tags=["a"], clock=clock)
    store.save(snap)
    clock.advance(seconds=90)
    updated = store.update(snap.snapshot_id, name="renamed", tags=["b", "c"])
    for got in (updated, store.get(snap.snapshot_id)):
        assert (got.name, got.description, got.tags) == ("renamed", "d", ["b", "c"])
        assert got.created_at == T0
        assert got.updated_at == "2024-05-01T12:01:30+00:00"
        assert got.run_state == snap.run_state
    cleared = store.update(snap.snapshot_id, description="", tags=[])
    assert (cleared.description, cleared.tags) == (None, [])
    with pytest.raises(InvalidInputError):
        store.update(snap.snapshot_id, name="")
    assert store.get(snap.snapshot_id).name == "renamed"


def test_snapshot_of_a_run_restores_an_equal_run(make_store: StoreFactory) -> None:
    store = make_store()
    run = make_run({"answers": ["a", "b"], "count": 2})
    snap = Snapshot.from_run(run=run, name="n")
    store.save(snap)
    assert store.get(snap.snapshot_id).to_run_state() == run


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(vars=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
       name=st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and s.isprintable()))
def test_any_json_run_vars_round_trip(make_store: StoreFactory, vars: dict[str, Any], name: str) -> None:
    store = make_store()
    snap = Snapshot.from_run(run=make_run(vars), name=name)
    store.save(snap)
    loaded = store.get(snap.snapshot_id)
    assert loaded.run_state["vars"] == vars
    assert loaded.name == name
    assert loaded == snap


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
    assert doc["format"] == 1
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
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": 2}))
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
