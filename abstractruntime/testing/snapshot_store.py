"""Snapshot store conformance: the contract every snapshot store keeps.

Copies not aliases, unknown and unsafe ids, delete, replace, listing order (newest first,
ties by id, timestamps compared as datetimes) and filters, ``update`` of the metadata, and
hypothesis round trips of any JSON run state. The stores are expected to offer the
:class:`~abstractruntime.core.snapshot.SnapshotStore` methods plus ``get`` and ``update``
(the stores in :mod:`abstractruntime.storage.snapshots` show how).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..core.clock import FixedClock
from ..core.errors import InvalidIdError, InvalidInputError, SnapshotNotFoundError
from ..core.models import RunState, RunStatus, WaitReason, WaitState
from ..core.snapshot import Snapshot, SnapshotStore, require_snapshot

T0 = "2024-05-01T12:00:00+00:00"
"""Where the suite's clocks start."""

StoreFactory = Callable[..., Any]
"""``make_store(clock=None)``: a new, empty store whose timestamps come from ``clock``."""


def make_run(vars: dict[str, Any] | None = None, run_id: str = "run-1") -> RunState:
    """A waiting run to snapshot."""
    run = RunState.new(workflow_id="wf", entry_node="ask", vars={"n": 1} if vars is None else vars, run_id=run_id)
    run.status = RunStatus.WAITING
    run.waiting = WaitState(reason=WaitReason.USER, wait_key="k1", prompt="Go?", choices=["yes", "no"])
    return run


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


class SnapshotStoreConformance:
    """Subclass it and define a ``make_store`` fixture returning a :data:`StoreFactory`."""

    def test_store_satisfies_the_protocol(self, make_store: StoreFactory) -> None:
        assert isinstance(make_store(), SnapshotStore)

    def test_save_then_load_returns_an_equal_independent_copy(self, make_store: StoreFactory) -> None:
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

    def test_unknown_ids(self, make_store: StoreFactory) -> None:
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

    def test_delete(self, make_store: StoreFactory) -> None:
        store = make_store()
        snap = Snapshot.from_run(run=make_run(), name="n")
        store.save(snap)
        assert store.delete(snap.snapshot_id) is True
        assert store.load(snap.snapshot_id) is None
        assert store.list() == []
        assert store.delete(snap.snapshot_id) is False

    @pytest.mark.parametrize("bad_id", ["../escape", "a/b", "", ".hidden", "a..b", "x" * 129, "sp ace"])
    def test_unsafe_ids_are_refused(self, make_store: StoreFactory, bad_id: str) -> None:
        store = make_store()
        for call in (store.load, store.get, store.delete, lambda i: store.update(i, name="x")):
            with pytest.raises(InvalidIdError):
                call(bad_id)
        snap = Snapshot.from_run(run=make_run(), name="n")
        snap.snapshot_id = bad_id
        with pytest.raises(InvalidIdError):
            store.save(snap)

    def test_save_replaces_a_snapshot_with_the_same_id(self, make_store: StoreFactory) -> None:
        store = make_store()
        snap = Snapshot.from_run(run=make_run(), name="first")
        store.save(snap)
        snap.name = "second"
        store.save(snap)
        assert [s.name for s in store.list()] == ["second"]

    def test_list_is_newest_first_with_ties_by_id(self, make_store: StoreFactory) -> None:
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

    def test_list_filters(self, make_store: StoreFactory) -> None:
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

    def test_update_edits_metadata_and_bumps_updated_at(self, make_store: StoreFactory) -> None:
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

    def test_snapshot_of_a_run_restores_an_equal_run(self, make_store: StoreFactory) -> None:
        store = make_store()
        run = make_run({"answers": ["a", "b"], "count": 2})
        snap = Snapshot.from_run(run=run, name="n")
        store.save(snap)
        assert store.get(snap.snapshot_id).to_run_state() == run

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(vars=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
           name=st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and s.isprintable()))
    def test_any_json_run_vars_round_trip(self, make_store: StoreFactory, vars: dict[str, Any], name: str) -> None:
        store = make_store()
        snap = Snapshot.from_run(run=make_run(vars), name=name)
        store.save(snap)
        loaded = store.get(snap.snapshot_id)
        assert loaded.run_state["vars"] == vars
        assert loaded.name == name
        assert loaded == snap
