"""Run store conformance: the contract every :class:`~abstractruntime.core.ports.RunStore` keeps.

Round trips, copies-not-aliases, queries (filters, ordering, limits, real datetime
comparison for timers), runs waiting on a key (``list_waiting_on`` where a store has it, and
:func:`~abstractruntime.storage.query.waiting_on` over any queryable store), children, the
QueryableRunStore protocol and per-run locking.
Capabilities a store does not claim (``queryable``, ``locking``, ``checkpoints`` on the
:class:`~abstractruntime.testing.backend.StoreBackend`) are skipped, not failed.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

import pytest

from ..core.errors import RunLockedError, RunNotFoundError
from ..core.models import RunState, RunStatus, WaitReason, WaitState
from ..core.ports import LedgerHead, QueryableRunStore, StoredCheckpoint
from ..storage.query import waiting_on
from .backend import StoreBackend


def _run(
    run_id: str,
    *,
    status: RunStatus = RunStatus.RUNNING,
    workflow_id: str = "wf",
    updated_at: str = "2030-01-01T00:00:00+00:00",
    waiting: Optional[WaitState] = None,
    parent: Optional[str] = None,
) -> RunState:
    run = RunState.new(workflow_id=workflow_id, entry_node="start", run_id=run_id, parent_run_id=parent,
                       vars={"n": run_id})
    run.status, run.waiting, run.updated_at = status, waiting, updated_at
    return run


def _until(until: str) -> WaitState:
    return WaitState(reason=WaitReason.UNTIL, until=until, wait_key=f"until:{until}", resume_to_node="next")


def _ids(runs: list[RunState]) -> list[str]:
    return [r.run_id for r in runs]


def _queryable(backend: StoreBackend) -> QueryableRunStore:
    if not backend.queryable:
        pytest.skip(f"{backend.name} run store is not queryable (by design)")
    return backend.runs  # type: ignore[return-value]


class RunStoreConformance:
    """Subclass it in a test module and define a ``backend`` fixture that returns a fresh :class:`StoreBackend`."""

    # -- round trips ---------------------------------------------------------------------------

    def test_save_load_round_trip(self, backend: StoreBackend) -> None:
        run = _run("r1", status=RunStatus.WAITING, waiting=WaitState(
            reason=WaitReason.USER, wait_key="k", resume_to_node="n2", result_key="answer", prompt="Continue?",
            choices=["yes", "no"], allow_free_text=False, details={"x": [1, 2.5, None, "é"]}))
        run.vars = {"nested": {"a": [1, {"b": True}]}, "text": "naïve ☃", "big": 2**62, "f": -0.5}
        run.output, run.error, run.actor_id = None, None, "actor:1"
        backend.runs.save(run)

        loaded = backend.runs.load("r1")
        assert loaded == run
        assert loaded.status is RunStatus.WAITING and loaded.waiting.reason is WaitReason.USER

    def test_load_unknown_is_none(self, backend: StoreBackend) -> None:
        assert backend.runs.load("nope") is None
        assert backend.runs.load_checkpoint("nope") is None

    def test_save_overwrites(self, backend: StoreBackend) -> None:
        backend.runs.save(_run("r1"))
        done = _run("r1", status=RunStatus.COMPLETED)
        done.output = {"ok": True}
        backend.runs.save(done)
        assert backend.runs.load("r1").output == {"ok": True}
        assert backend.runs.load("r1").status is RunStatus.COMPLETED

    def test_checkpoint_round_trip_and_save_keeps_metadata(self, backend: StoreBackend) -> None:
        original = _run("r1")
        state = {"run": original.to_dict(),
                 "kernel": {"effects": 2, "pending": None, "metadata": {"m": 1}, "origin": None,
                            "workflow": {"sha256": "cd" * 32, "workflow_id": "wf"}}}
        checkpoint = StoredCheckpoint(state=state, ledger=LedgerHead(seq=3, head_hash="ab" * 32))
        backend.runs.save_checkpoint(checkpoint)
        loaded = backend.runs.load_checkpoint("r1")
        assert loaded.run_view() == original
        if not backend.checkpoints:
            # The ABC default keeps only the run; the head is reported untracked.
            assert loaded.ledger == LedgerHead()
            return
        assert loaded.ledger == checkpoint.ledger and loaded.state["kernel"] == state["kernel"]

        # An upstream-style save(run) of a run with no ledger must not drop what the checkpoint recorded.
        run = loaded.run_view()
        run.current_node = "elsewhere"
        backend.runs.save(run)
        again = backend.runs.load_checkpoint("r1")
        assert again.run_view().current_node == "elsewhere"
        assert again.ledger == checkpoint.ledger and again.state["kernel"] == state["kernel"]

    def test_stored_runs_are_copies_not_aliases(self, backend: StoreBackend) -> None:
        run = _run("r1")
        backend.runs.save(run)
        run.vars["n"] = "changed after save"
        run.status = RunStatus.FAILED
        loaded = backend.runs.load("r1")
        assert loaded.vars["n"] == "r1" and loaded.status is RunStatus.RUNNING

        loaded.vars["n"] = "changed after load"
        loaded.waiting = WaitState(reason=WaitReason.EVENT, wait_key="x")
        again = backend.runs.load("r1")
        assert again.vars["n"] == "r1" and again.waiting is None
        assert backend.runs.load("r1") is not backend.runs.load("r1")

    def test_file_store_persists_across_instances(self, backend: StoreBackend) -> None:
        if backend.reopen is None:
            pytest.skip("in-memory backends do not persist")
        backend.runs.save(_run("r1", status=RunStatus.WAITING, waiting=_until("2030-01-01T00:00:00Z")))
        other = backend.reopen()
        assert other.runs.load("r1") == backend.runs.load("r1")
        assert _ids(other.runs.list_runs()) == ["r1"]

    # -- queries -------------------------------------------------------------------------------

    def test_is_queryable_run_store(self, backend: StoreBackend) -> None:
        assert isinstance(backend.runs, QueryableRunStore) is backend.queryable

    def test_list_runs_filters(self, backend: StoreBackend) -> None:
        store = _queryable(backend)
        backend.runs.save(_run("a", status=RunStatus.RUNNING, workflow_id="w1"))
        backend.runs.save(_run("b", status=RunStatus.WAITING, workflow_id="w1",
                               waiting=WaitState(reason=WaitReason.USER, wait_key="k")))
        backend.runs.save(_run("c", status=RunStatus.WAITING, workflow_id="w2", waiting=_until("2030-01-01T00:00:00Z")))
        backend.runs.save(_run("d", status=RunStatus.COMPLETED, workflow_id="w2"))

        assert sorted(_ids(store.list_runs())) == ["a", "b", "c", "d"]
        assert sorted(_ids(store.list_runs(status=RunStatus.WAITING))) == ["b", "c"]
        assert sorted(_ids(store.list_runs(status="waiting"))) == ["b", "c"]  # str values work too
        assert _ids(store.list_runs(wait_reason=WaitReason.USER)) == ["b"]
        assert sorted(_ids(store.list_runs(workflow_id="w2"))) == ["c", "d"]
        assert _ids(store.list_runs(status=RunStatus.WAITING, workflow_id="w2", wait_reason=WaitReason.UNTIL)) == ["c"]
        assert store.list_runs(status=RunStatus.CANCELLED) == []
        assert store.list_runs(workflow_id="nope") == []

    def test_list_runs_newest_first_compares_datetimes(self, backend: StoreBackend) -> None:
        store = _queryable(backend)
        # As strings these sort the other way round; as instants 'late' is the newest.
        backend.runs.save(_run("early", updated_at="2030-01-01T12:00:00+05:00"))  # 07:00Z
        backend.runs.save(_run("late", updated_at="2030-01-01T08:00:00Z"))
        backend.runs.save(_run("middle", updated_at="2030-01-01T07:30:00"))  # naive: read as UTC
        assert _ids(store.list_runs()) == ["late", "middle", "early"]

    def test_list_runs_limit(self, backend: StoreBackend) -> None:
        store = _queryable(backend)
        for i in range(15):
            backend.runs.save(_run(f"r{i:02d}", updated_at=f"2030-01-01T00:00:{i:02d}+00:00"))
        assert _ids(store.list_runs(limit=3)) == ["r14", "r13", "r12"]
        assert len(store.list_runs()) == 15
        assert store.list_runs(limit=0) == []
        assert len(store.list_runs(limit=100)) == 15

    def test_list_runs_sees_updates(self, backend: StoreBackend) -> None:
        store = _queryable(backend)
        run = _run("r1")
        backend.runs.save(run)
        run.status = RunStatus.COMPLETED
        backend.runs.save(run)
        assert store.list_runs(status=RunStatus.RUNNING) == []
        assert _ids(store.list_runs(status=RunStatus.COMPLETED)) == ["r1"]

    def test_list_due_wait_until_compares_instants_not_strings(self, backend: StoreBackend) -> None:
        store = _queryable(backend)
        backend.runs.save(_run("plus2", status=RunStatus.WAITING, waiting=_until("2030-01-01T10:00:00+02:00")))  # 08:00Z
        backend.runs.save(_run("naive", status=RunStatus.WAITING, waiting=_until("2030-01-01T08:30:00")))  # 08:30Z
        backend.runs.save(_run("zulu", status=RunStatus.WAITING, waiting=_until("2030-01-01T08:40:00Z")))
        backend.runs.save(_run("later", status=RunStatus.WAITING, waiting=_until("2030-01-01T09:00:00Z")))
        backend.runs.save(_run("minus5", status=RunStatus.WAITING, waiting=_until("2030-01-01T03:50:00-05:00")))  # 08:50Z
        # Not timers: never due.
        backend.runs.save(_run("user", status=RunStatus.WAITING, waiting=WaitState(reason=WaitReason.USER, wait_key="k")))
        backend.runs.save(_run("done", status=RunStatus.COMPLETED))

        now = "2030-01-01T08:45:00+00:00"
        assert _ids(store.list_due_wait_until(now_iso=now)) == ["plus2", "naive", "zulu"]
        # The same instant written with a Z or another offset gives the same answer.
        assert _ids(store.list_due_wait_until(now_iso="2030-01-01T08:45:00Z")) == ["plus2", "naive", "zulu"]
        assert _ids(store.list_due_wait_until(now_iso="2030-01-01T10:45:00+02:00")) == ["plus2", "naive", "zulu"]
        assert _ids(store.list_due_wait_until(now_iso=now, limit=2)) == ["plus2", "naive"]
        # Boundary: until == now is due.
        assert _ids(store.list_due_wait_until(now_iso="2030-01-01T08:00:00Z")) == ["plus2"]
        assert store.list_due_wait_until(now_iso="2030-01-01T07:59:59Z") == []
        assert _ids(store.list_due_wait_until(now_iso="2031-01-01T00:00:00Z")) == [
            "plus2", "naive", "zulu", "minus5", "later"]

    def test_list_due_wait_until_ignores_non_waiting_runs(self, backend: StoreBackend) -> None:
        store = _queryable(backend)
        # A run that was waiting on a timer and has since been resumed (status running).
        run = _run("resumed", status=RunStatus.RUNNING, waiting=_until("2030-01-01T00:00:00Z"))
        backend.runs.save(run)
        assert store.list_due_wait_until(now_iso="2031-01-01T00:00:00Z") == []

    def test_waiting_on_a_key_longest_waiting_first(self, backend: StoreBackend) -> None:
        store = _queryable(backend)

        def event(key: str) -> WaitState:
            return WaitState(reason=WaitReason.EVENT, wait_key=key, resume_to_node="next")

        # As strings these sort the other way round; as instants 'early' waited longest.
        backend.runs.save(_run("late", status=RunStatus.WAITING, waiting=event("paid"),
                               updated_at="2030-01-01T08:00:00Z"))
        backend.runs.save(_run("early", status=RunStatus.WAITING, waiting=event("paid"),
                               updated_at="2030-01-01T12:00:00+05:00"))  # 07:00Z
        backend.runs.save(_run("middle", status=RunStatus.WAITING, workflow_id="w2", waiting=event("paid"),
                               updated_at="2030-01-01T07:30:00"))  # naive: read as UTC
        # Not waiting on "paid": another key, another reason's key, no key, or no longer waiting.
        backend.runs.save(_run("other", status=RunStatus.WAITING, waiting=event("shipped")))
        backend.runs.save(_run("timer", status=RunStatus.WAITING, waiting=_until("2030-01-01T00:00:00Z")))
        backend.runs.save(_run("keyless", status=RunStatus.WAITING,
                               waiting=WaitState(reason=WaitReason.EVENT, wait_key=None)))
        backend.runs.save(_run("resumed", status=RunStatus.RUNNING, waiting=event("paid"),
                               updated_at="2029-01-01T00:00:00Z"))
        backend.runs.save(_run("done", status=RunStatus.COMPLETED, updated_at="2029-01-01T00:00:00Z"))

        assert _ids(waiting_on(backend.runs, "paid")) == ["early", "middle", "late"]
        assert _ids(waiting_on(backend.runs, "paid", 2)) == ["early", "middle"]
        assert waiting_on(backend.runs, "paid", 0) == []
        assert _ids(waiting_on(backend.runs, "shipped")) == ["other"]
        assert _ids(waiting_on(backend.runs, "until:2030-01-01T00:00:00Z")) == ["timer"]
        assert waiting_on(backend.runs, "nobody waits on this") == []
        own = getattr(store, "list_waiting_on", None)
        if own is not None:  # optional: a store without it is answered through list_runs
            assert _ids(own("paid")) == ["early", "middle", "late"]
            assert _ids(own("paid", limit=1)) == ["early"]

        # Answered: it leaves the list at once.
        answered = backend.runs.load("early")
        answered.status, answered.waiting = RunStatus.RUNNING, None
        backend.runs.save(answered)
        assert _ids(waiting_on(backend.runs, "paid")) == ["middle", "late"]
        if backend.reopen is not None:
            assert _ids(waiting_on(backend.reopen().runs, "paid")) == ["middle", "late"]

    def test_waiting_on_needs_a_store_that_lists_runs(self, backend: StoreBackend) -> None:
        if backend.queryable:
            pytest.skip(f"{backend.name} run store is queryable")
        with pytest.raises(TypeError, match="QueryableRunStore"):
            waiting_on(backend.runs, "paid")

    def test_list_children(self, backend: StoreBackend) -> None:
        store = _queryable(backend)
        backend.runs.save(_run("parent"))
        backend.runs.save(_run("c1", parent="parent", status=RunStatus.RUNNING))
        backend.runs.save(_run("c2", parent="parent", status=RunStatus.COMPLETED))
        backend.runs.save(_run("other", parent="someone-else"))
        assert sorted(_ids(store.list_children(parent_run_id="parent"))) == ["c1", "c2"]
        assert _ids(store.list_children(parent_run_id="parent", status=RunStatus.COMPLETED)) == ["c2"]
        assert store.list_children(parent_run_id="c1") == []

    # -- locking -------------------------------------------------------------------------------

    def test_default_lock_is_a_no_op_for_custom_stores(self, backend: StoreBackend) -> None:
        if backend.locking:
            pytest.skip("this backend locks")
        backend.runs.save(_run("r1"))
        with backend.runs.lock("r1"):
            with backend.runs.lock("r1"):
                pass

    def test_second_writer_gets_run_locked_error_at_once(self, backend: StoreBackend) -> None:
        if not backend.locking:
            pytest.skip("custom stores without lock() do not lock (documented)")
        backend.runs.save(_run("r1"))
        with backend.runs.lock("r1"):
            started = time.monotonic()
            with pytest.raises(RunLockedError) as info:
                with backend.runs.lock("r1"):
                    pass
            assert time.monotonic() - started < 0.5
            assert "r1" in str(info.value) and info.value.code == "run_locked"
        # Released: the next writer gets it.
        with backend.runs.lock("r1"):
            pass

    def test_lock_is_per_run(self, backend: StoreBackend) -> None:
        if not backend.locking:
            pytest.skip("no locking")
        backend.runs.save(_run("r1"))
        backend.runs.save(_run("r2"))
        with backend.runs.lock("r1"):
            with backend.runs.lock("r2"):
                pass

    def test_lock_wait_waits_for_the_holder(self, backend: StoreBackend) -> None:
        if not backend.locking:
            pytest.skip("no locking")
        backend.runs.save(_run("r1"))
        held, release = threading.Event(), threading.Event()

        def holder() -> None:
            with backend.runs.lock("r1"):
                held.set()
                release.wait(5)
                time.sleep(0.15)

        thread = threading.Thread(target=holder)
        thread.start()
        try:
            assert held.wait(5)
            started = time.monotonic()
            release.set()  # the holder keeps the lock 0.15 s more
            with backend.runs.lock("r1", wait=5.0):
                waited = time.monotonic() - started
            assert 0.14 <= waited < 4.0
        finally:
            release.set()
            thread.join()

    def test_lock_wait_gives_up(self, backend: StoreBackend) -> None:
        if not backend.locking:
            pytest.skip("no locking")
        backend.runs.save(_run("r1"))
        with backend.runs.lock("r1"):
            started = time.monotonic()
            with pytest.raises(RunLockedError):
                with backend.runs.lock("r1", wait=0.2):
                    pass
            assert 0.15 <= time.monotonic() - started < 2.0

    def test_lock_unknown_run_is_not_found(self, backend: StoreBackend) -> None:
        if not backend.locking:
            pytest.skip("no locking")
        with pytest.raises(RunNotFoundError):
            with backend.runs.lock("missing"):
                pass

    def test_runtime_tick_refused_while_locked(self, backend: StoreBackend) -> None:
        if not backend.locking:
            pytest.skip("no locking")
        from abstractruntime.core.models import StepPlan
        from abstractruntime.core.spec import WorkflowSpec

        wf = WorkflowSpec("wf", "a", {"a": lambda run, ctx: StepPlan(node_id="a", complete_output={"ok": 1})})
        rt = backend.runtime()
        run_id = rt.start(workflow=wf)
        before = backend.fingerprint(run_id)
        with backend.runs.lock(run_id):
            with pytest.raises(RunLockedError):
                rt.tick(workflow=wf, run_id=run_id)
            with pytest.raises(RunLockedError):
                rt.cancel_run(run_id)
        assert backend.fingerprint(run_id) == before
        assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.COMPLETED

    # -- runs whose ledger is ahead of their checkpoint (Capability.LEDGER_MARKS) ---------------

    def test_a_run_whose_ledger_went_past_its_checkpoint_is_marked_until_the_next(self,
                                                                                   backend: StoreBackend) -> None:
        """A writer that appends and stops before its checkpoint leaves the run listed by
        ``list_ahead`` and shown by ``list_runs`` as its ledger says; the checkpoint at the
        ledger's head clears the mark."""
        from abstractruntime.core.models import Effect, EffectType, RecordKind, StepPlan
        from abstractruntime.core.ports import Capability, has_capability
        from abstractruntime.core.session import new_record
        from abstractruntime.core.spec import WorkflowSpec

        if not has_capability(backend.runs, Capability.LEDGER_MARKS):
            pytest.skip(f"{backend.name} run store does not mark runs ahead of their checkpoints")
        runs = backend.runs
        wf = WorkflowSpec("wf", "ask", {
            "ask": lambda run, ctx: StepPlan("ask", next_node="end", effect=Effect(
                EffectType.ASK_USER, {"prompt": "?"}, "answer")),
            "end": lambda run, ctx: StepPlan("end", complete_output={"ok": 1})})
        rt = backend.runtime()
        run_id = rt.start(workflow=wf)
        assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.WAITING
        assert run_id not in runs.list_ahead(limit=100)
        with runs.lock(run_id):
            session = rt.open_session(run_id)
            session.run.status, session.run.waiting = RunStatus.CANCELLED, None
            session.record(new_record(session.run, RecordKind.CANCEL).finish_success({"reason": "t"}))
            session.flush()  # durable; the writer stops here, before its checkpoint
        assert run_id in runs.list_ahead(limit=100)
        assert [r.status for r in runs.list_runs(limit=100) if r.run_id == run_id] == [RunStatus.CANCELLED]
        rt.checkpoint(run_id)
        assert run_id not in runs.list_ahead(limit=100)
        assert [r.status for r in runs.list_runs(limit=100, status=RunStatus.CANCELLED)
                if r.run_id == run_id] == [RunStatus.CANCELLED]
