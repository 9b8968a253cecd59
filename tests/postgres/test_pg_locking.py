"""One writer per run across processes: the advisory lock between two OS processes, its
release when the holder is killed with -9, and a writer that lost its lock being refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable

import pytest

from abstractruntime.core.errors import LedgerConflictError, RunLockedError
from abstractruntime.core.models import Effect, EffectType, RecordKind, RunState, RunStatus, StepPlan
from abstractruntime.core.session import new_record
from abstractruntime.core.spec import WorkflowSpec
from abstractruntime.storage.ledger_chain import verify_ledger_chain

# A second process: takes the run's lock, says so, holds it until a line arrives on stdin.
HOLDER = """
import sys
from abstractruntime.storage.postgres.store import PostgresStore
store = PostgresStore(sys.argv[1], schema=sys.argv[2])
with store.runs.lock(sys.argv[3]):
    print("locked", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""

# How long a test waits at most for the server to act (a bound on a hang, not a measurement).
PATIENCE = 60.0


def _ask() -> WorkflowSpec:
    def ask(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan("ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Go?"}, result_key="reply"),
                        next_node="done")

    return WorkflowSpec("ask", "ask", {"ask": ask, "done": lambda run, ctx: StepPlan("done", complete_output={})})


def _holder(postgres_url: str, schema: str, run_id: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, postgres_url, schema, run_id], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _started(open_pg: Callable[..., Any]) -> tuple[Any, str]:
    store = open_pg()
    rt = store.runtime()
    run_id = rt.start(workflow=_ask())
    rt.tick(workflow=_ask(), run_id=run_id)
    return store, run_id


def test_lock_excludes_another_process_until_it_releases(open_pg: Callable[..., Any], postgres_url: str,
                                                         pg_schema: str) -> None:
    store, run_id = _started(open_pg)
    proc = _holder(postgres_url, pg_schema, run_id)
    try:
        with pytest.raises(RunLockedError):
            with store.runs.lock(run_id):
                pass
        with pytest.raises(RunLockedError):
            store.runtime().resume(workflow=_ask(), run_id=run_id, payload={"answer": "x"})
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "released"
        with store.runs.lock(run_id, wait=PATIENCE):
            pass
    finally:
        proc.kill()
        proc.wait()
    state = store.runtime().resume(workflow=_ask(), run_id=run_id, payload={"answer": "x"})
    assert state.status is RunStatus.COMPLETED


def test_lock_of_a_process_killed_with_9_is_released_by_the_server(open_pg: Callable[..., Any], postgres_url: str,
                                                                    pg_schema: str) -> None:
    store, run_id = _started(open_pg)
    proc = _holder(postgres_url, pg_schema, run_id)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with store.runs.lock(run_id, wait=PATIENCE):
        pass
    assert store.runtime().resume(workflow=_ask(), run_id=run_id, payload={"answer": "x"}).status \
        is RunStatus.COMPLETED


def _lock_holders(admin: Any, key: int) -> list[int]:
    """Backend pids holding the advisory lock ``key`` (a bigint key is split in two 32-bit halves)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return [r[0] for r in admin.execute(
        """SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND classid::bigint = %s AND objid::bigint = %s""", [unsigned >> 32, unsigned & 0xFFFFFFFF]).fetchall()]


def test_a_writer_that_lost_its_lock_cannot_append(open_pg: Callable[..., Any], admin: Any) -> None:
    wf = _ask()
    store_a, run_id = _started(open_pg)
    store_b = open_pg()
    key = store_a.db.lock_key(run_id)
    rt_a = store_a.runtime()
    with store_a.runs.lock(run_id):
        session = rt_a.open_session(run_id)  # writer A has read the run and its ledger head
        # A's lock connection dies (network, server restart): the server drops its lock.
        holders = _lock_holders(admin, key)
        assert len(holders) == 1
        admin.execute("SELECT pg_terminate_backend(%s)", [holders[0]])
        deadline = time.monotonic() + PATIENCE
        while _lock_holders(admin, key) and time.monotonic() < deadline:
            time.sleep(0.01)

        # Writer B takes the run over and advances it.
        state = store_b.runtime().resume(workflow=wf, run_id=run_id, payload={"answer": "b"})
        assert state.status is RunStatus.COMPLETED
        lines_after_b = store_b.ledger.lines(run_id)

        # A, unaware, tries to cancel from the state it read: refused, nothing written.
        run = session.run
        run.status, run.waiting, run.error = RunStatus.CANCELLED, None, "stale writer"
        rec = new_record(run, RecordKind.CANCEL)
        rec.finish_success({"reason": "stale"})
        session.record(rec)
        with pytest.raises(LedgerConflictError):
            session.save_checkpoint()
    assert store_b.ledger.lines(run_id) == lines_after_b
    assert store_b.runs.load(run_id).status is RunStatus.COMPLETED
    assert verify_ledger_chain(store_b.ledger.list(run_id))["ok"] is True
    # The store that lost its lock connection still works (a fresh connection is taken).
    with store_a.runs.lock(run_id):
        pass


def test_a_forked_child_neither_uses_nor_closes_the_parents_sessions(open_pg: Callable[..., Any]) -> None:
    store, run_id = _started(open_pg)
    with store.runs.lock(run_id):
        pid = os.fork()
        if pid == 0:  # the child: its own connections; the parent's lock stays the parent's
            code = 1
            try:
                assert store.runs.load(run_id).status is RunStatus.WAITING
                with pytest.raises(RunLockedError):
                    with store.runs.lock(run_id):
                        pass
                store.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.runs.load(run_id).status is RunStatus.WAITING  # the parent's connection still works
        with pytest.raises(RunLockedError):
            with open_pg().runs.lock(run_id):
                pass
    with open_pg().runs.lock(run_id):
        pass
