"""Ledger store conformance: append/list/head/find_completed and the hash chain.

Includes hypothesis properties: for any sequence of records appended (one by one or in
batches, interleaved across runs) the chain verifies, ``head`` is the last record and
``find_completed`` returns the first completed record of each idempotency key. A ledger
that keeps no hash chain (``chained=False`` on the backend) skips the chain checks.
"""

from __future__ import annotations

import uuid
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..core.models import Effect, EffectType, RunState, StepRecord, StepStatus
from ..core.ports import LedgerHead
from ..storage.ledger_chain import verify_ledger_chain
from .backend import StoreBackend


def _run(run_id: str) -> RunState:
    return RunState.new(workflow_id="wf", entry_node="a", run_id=run_id, actor_id="actor")


def _record(run: RunState, node: str = "a", *, status: StepStatus = StepStatus.COMPLETED,
            key: Optional[str] = None, result: Any = None, attempt: int = 1) -> StepRecord:
    effect = Effect(type=EffectType.LLM_CALL, payload={"prompt": node}, result_key="r") if key else None
    rec = StepRecord.start(run=run, node_id=node, effect=effect, attempt=attempt, idempotency_key=key)
    if status is StepStatus.COMPLETED:
        rec.finish_success(result if result is not None else {"node": node})
    elif status is StepStatus.FAILED:
        rec.finish_failure("boom")
    elif status is StepStatus.WAITING:
        rec.status = StepStatus.WAITING
    return rec


# -- properties ----------------------------------------------------------------------------

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53),
                       st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))


_result = st.dictionaries(st.text(max_size=6), _json_leaf, max_size=3)


_step = st.tuples(
    st.integers(0, 1),                                    # which run
    st.sampled_from(["a", "b", "c"]),                     # node
    st.sampled_from(list(StepStatus)),                    # status
    st.sampled_from([None, "0" * 32, "1" * 32, "2" * 32]),  # idempotency key
    _result,
    st.booleans(),                                        # start a new batch here
)


class LedgerStoreConformance:
    """Subclass it in a test module and define a ``backend`` fixture that returns a fresh :class:`StoreBackend`."""

    def test_append_and_list_round_trip(self, backend: StoreBackend) -> None:
        run = _run("r1")
        recs = [_record(run, "a", key="k" * 32, result={"text": "héllo", "n": [1, 2.5]}),
                _record(run, "b", status=StepStatus.FAILED), _record(run, "c", status=StepStatus.STARTED)]
        for rec in recs:
            backend.ledger.append(rec)
        listed = backend.ledger.list("r1")
        assert [r["node_id"] for r in listed] == ["a", "b", "c"]
        assert all(isinstance(r, dict) for r in listed)
        assert [r["status"] for r in listed] == ["completed", "failed", "started"]
        assert listed[0]["result"] == {"text": "héllo", "n": [1, 2.5]}
        assert listed[0]["effect"] == {"type": "llm_call", "payload": {"prompt": "a"}, "result_key": "r"}
        assert listed[0]["idempotency_key"] == "k" * 32 and listed[0]["attempt"] == 1
        assert listed[1]["effect"] is None and listed[1]["error"] == "boom"
        assert [r["step_id"] for r in listed] == [r.step_id for r in recs]
        assert listed[0]["actor_id"] == "actor"

    def test_list_unknown_run_is_empty(self, backend: StoreBackend) -> None:
        assert backend.ledger.list("nobody") == []
        assert backend.ledger.head("nobody") == LedgerHead()
        assert backend.ledger.find_completed("nobody", "k" * 32) is None

    def test_runs_are_separate(self, backend: StoreBackend) -> None:
        a, b = _run("ra"), _run("rb")
        backend.ledger.append(_record(a, "x"))
        backend.ledger.append(_record(b, "y"))
        backend.ledger.append(_record(a, "z"))
        assert [r["node_id"] for r in backend.ledger.list("ra")] == ["x", "z"]
        assert [r["node_id"] for r in backend.ledger.list("rb")] == ["y"]

    def test_listed_records_are_copies(self, backend: StoreBackend) -> None:
        run = _run("r1")
        backend.ledger.append(_record(run, "a", result={"v": [1]}))
        listed = backend.ledger.list("r1")
        listed[0]["result"]["v"].append(2)
        listed[0]["status"] = "failed"
        listed.clear()
        again = backend.ledger.list("r1")
        assert again[0]["result"] == {"v": [1]} and again[0]["status"] == "completed"

    def test_head_tracks_the_last_record(self, backend: StoreBackend) -> None:
        run = _run("r1")
        for i in range(4):
            backend.ledger.append(_record(run, f"n{i}"))
        listed = backend.ledger.list("r1")
        head = backend.ledger.head("r1")
        assert head.seq == 4
        assert head.head_hash == listed[-1].get("record_hash")
        if backend.chained:
            assert head.head_hash is not None

    def test_chain_links_and_verifies(self, backend: StoreBackend, request: pytest.FixtureRequest) -> None:
        if not backend.chained:
            pytest.skip("an unchained custom ledger has no hashes")
        run = _run("r1")
        recs = [_record(run, f"n{i}", key=f"{i:032d}") for i in range(5)]
        backend.ledger.append(recs[0])
        backend.ledger.append_batch(recs[1:4])
        backend.ledger.append(recs[4])
        listed = backend.ledger.list("r1")
        assert [r["seq"] for r in listed] == [1, 2, 3, 4, 5]
        assert listed[0]["prev_hash"] is None
        for prev, cur in zip(listed, listed[1:]):
            assert cur["prev_hash"] == prev["record_hash"]
        # The store writes the chain fields back onto the appended record (as upstream did).
        assert recs[-1].record_hash == listed[-1]["record_hash"] and recs[-1].seq == 5
        report = verify_ledger_chain(listed)
        assert report["ok"] is True and report["count"] == 5 and report["errors"] == []
        assert report["head_hash"] == listed[-1]["record_hash"] == backend.ledger.head("r1").head_hash

    def test_tampering_is_detected(self, backend: StoreBackend, request: pytest.FixtureRequest) -> None:
        if not backend.chained:
            pytest.skip("an unchained custom ledger has no hashes")
        run = _run("r1")
        for i in range(3):
            backend.ledger.append(_record(run, f"n{i}", result={"i": i}))
        listed = backend.ledger.list("r1")
        listed[1]["result"] = {"i": 999}
        report = verify_ledger_chain(listed)
        assert report["ok"] is False and report["first_bad_index"] == 1
        assert report["errors"][0]["type"] == "record_hash_mismatch"

        removed = backend.ledger.list("r1")
        del removed[1]
        assert verify_ledger_chain(removed)["ok"] is False

        unhashed = backend.ledger.list("r1")
        unhashed[0].pop("record_hash")
        assert "missing_record_hash" in {e["type"] for e in verify_ledger_chain(unhashed)["errors"]}

    def test_find_completed_returns_the_first_completed_record(self, backend: StoreBackend) -> None:
        run = _run("r1")
        key, other = "a" * 32, "b" * 32
        backend.ledger.append(_record(run, "n", status=StepStatus.STARTED, key=key))
        backend.ledger.append(_record(run, "n", status=StepStatus.FAILED, key=key))
        backend.ledger.append(_record(run, "n", status=StepStatus.WAITING, key=other))
        assert backend.ledger.find_completed("r1", key) is None
        assert backend.ledger.find_completed("r1", other) is None
        first = _record(run, "n", key=key, result={"which": "first"}, attempt=2)
        backend.ledger.append(first)
        backend.ledger.append(_record(run, "n", key=key, result={"which": "second"}))
        found = backend.ledger.find_completed("r1", key)
        assert found["result"] == {"which": "first"} and found["step_id"] == first.step_id
        assert found["attempt"] == 2 and found["status"] == "completed"
        assert backend.ledger.find_completed("r1", "c" * 32) is None
        assert backend.ledger.find_completed("other-run", key) is None

    def test_file_ledger_persists_across_instances(self, backend: StoreBackend) -> None:
        if backend.reopen is None:
            pytest.skip("in-memory backends do not persist")
        run = _run("r1")
        key = "d" * 32
        backend.ledger.append(_record(run, "a", key=key, result={"x": 1}))
        backend.ledger.append(_record(run, "b"))
        other = backend.reopen()
        assert other.ledger.list("r1") == backend.ledger.list("r1")
        assert other.ledger.head("r1") == backend.ledger.head("r1")
        assert other.ledger.find_completed("r1", key)["result"] == {"x": 1}
        # A second instance continues the chain where the first left it.
        other.ledger.append(_record(run, "c"))
        backend.ledger.append(_record(run, "d"))
        listed = backend.ledger.list("r1")
        assert [r["seq"] for r in listed] == [1, 2, 3, 4]
        assert verify_ledger_chain(listed)["ok"] is True
        assert backend.ledger.head("r1").seq == other.ledger.head("r1").seq == 4

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(steps=st.lists(_step, min_size=1, max_size=12))
    def test_property_chain_head_and_find_completed(self, backend: StoreBackend, steps: list[tuple[Any, ...]]) -> None:
        prefix = uuid.uuid4().hex[:8]
        runs = [_run(f"{prefix}-0"), _run(f"{prefix}-1")]
        expected: dict[str, list[StepRecord]] = {r.run_id: [] for r in runs}
        batch: list[StepRecord] = []
        for which, node, status, key, result, cut in steps:
            rec = _record(runs[which], node, status=status, key=key, result=result or {"empty": True})
            if cut and batch:
                backend.ledger.append_batch(batch)
                batch = []
            batch.append(rec)
            expected[rec.run_id].append(rec)
        backend.ledger.append_batch(batch)

        for run in runs:
            listed = backend.ledger.list(run.run_id)
            want = expected[run.run_id]
            assert [r["step_id"] for r in listed] == [r.step_id for r in want]
            head = backend.ledger.head(run.run_id)
            assert head.seq == len(want)
            if want:
                assert head.head_hash == listed[-1].get("record_hash")
            if backend.chained and backend.name != "chained-upstream-style":
                assert verify_ledger_chain(listed)["ok"] is True
            for key in ["0" * 32, "1" * 32, "2" * 32]:
                first = next((r for r in want if r.idempotency_key == key and r.status is StepStatus.COMPLETED), None)
                found = backend.ledger.find_completed(run.run_id, key)
                assert (found["step_id"] if found else None) == (first.step_id if first else None)
