"""A worker fleet on PostgreSQL: leases claimed with SKIP LOCKED, taken over after a kill -9,
released on SIGTERM; idle workers woken by `emit --hand-off` (LISTEN/NOTIFY), not by polling.

Workers are real `abstractruntime worker` processes; the effect of every run appends one line
to a log before it works, so executions are counted, not assumed.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from abstractruntime.core.models import RunStatus
from abstractruntime.loader import load_workflow_file
from abstractruntime.storage.ledger_chain import verify_ledger_chain

CLI = str(Path(sys.executable).parent / "abstractruntime")

FLEET = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec, current_effect

    def work(run, effect):
        with Path(os.environ["WORK_LOG"]).open("a") as log:
            log.write(f"{run.run_id} {current_effect().key}\\n")
        time.sleep(float(os.environ.get("WORK_SECONDS", "0")))
        return EffectOutcome.completed({"done": True})

    effect_handlers = {EffectType.TOOL_CALLS: work}

    def begin(run, ctx):
        if run.vars.get("wait"):
            key = "go:" + run.run_id
            return StepPlan("begin", next_node="work", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": key}, "go"))
        return StepPlan("begin", next_node="work")

    workflow = WorkflowSpec("fleet", "begin", {
        "begin": begin,
        "work": lambda run, ctx: StepPlan("work", next_node="end", effect=Effect(EffectType.TOOL_CALLS, {}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True}),
    })
''')


@pytest.fixture
def fleet(tmp_path: Path, database_url: str) -> Any:
    """A database, the fleet workflow file, and helpers to make runs and start workers."""
    from abstractruntime.storage.postgres.store import PostgresStore

    path = tmp_path / "fleet.py"
    path.write_text(FLEET)
    log = tmp_path / "work.log"
    log.touch()
    store = PostgresStore(database_url)
    workers: list[subprocess.Popen[str]] = []

    class Fleet:
        url, work_log, runs = database_url, log, store

        def start(self, run_id: str, *, wait: bool = False) -> None:
            """A run left `running` at its first node (or waiting on ``go:<run_id>``)."""
            loaded = load_workflow_file(path)
            runtime = store.runtime()
            runtime.start(workflow=loaded.workflow, run_id=run_id, vars={"wait": wait})
            if wait:
                assert runtime.tick(workflow=loaded.workflow, run_id=run_id).status is RunStatus.WAITING

        def env(self, seconds: float) -> dict[str, str]:
            env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
            return {**env, "WORK_LOG": str(log), "WORK_SECONDS": str(seconds)}

        def worker(self, *args: str, seconds: float = 0.0) -> subprocess.Popen[str]:
            proc = subprocess.Popen([CLI, "--store", database_url, "worker", *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=self.env(seconds))
            workers.append(proc)
            return proc

        def executions(self) -> dict[str, int]:
            counts: dict[str, int] = {}
            for line in log.read_text().splitlines():
                run_id = line.split()[0]
                counts[run_id] = counts.get(run_id, 0) + 1
            return counts

        def leases(self) -> int:
            with store.db.connection() as conn:
                return int(conn.execute(f"SELECT count(*) FROM {store.db.s}.leases").fetchone()[0])

    yield Fleet()
    for proc in workers:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    store.close()


def _started(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline()  # printed once the signal handlers are installed
    assert "worker started" in line, line


def _read_line(proc: subprocess.Popen[str], timeout: float) -> Optional[str]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else None


def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _row(store: Any, run_id: str) -> dict[str, Any]:
    """Every column of a run's row."""
    with store.db.connection() as conn:
        cur = conn.execute(f"SELECT * FROM {store.db.s}.runs WHERE run_id = %s",
                           [run_id])
        names = [column.name for column in cur.description]
        return dict(zip(names, cur.fetchone()))


def _put_row(store: Any, run_id: str, row: dict[str, Any]) -> None:
    """Put a row read by :func:`_row` back, as a writer killed before its next checkpoint leaves it
    (the runtime's own writes are fenced and never move a row backwards)."""
    names = [name for name in row if name != "run_id"]
    assignments = ", ".join(f"{name} = %s" for name in names)
    with store.db.connection() as conn:
        conn.execute(f"UPDATE {store.db.s}.runs SET {assignments} WHERE run_id = %s",
                     [*(row[name] for name in names), run_id])


def _all_verify(fleet: Any, run_ids: list[str]) -> None:
    for run_id in run_ids:
        assert verify_ledger_chain(fleet.runs.ledger.list(run_id))["ok"] is True


def test_claims_are_exclusive_released_and_expire(fleet: Any) -> None:
    run_ids = [f"c{i}" for i in range(6)]
    for run_id in run_ids:
        fleet.start(run_id)
    a = fleet.runs.runs.work_claims(owner="a", lease_s=0.6)
    b = fleet.runs.runs.work_claims(owner="b", lease_s=0.6)
    now = "2100-01-01T00:00:00+00:00"
    mine = a.claim(now_iso=now, limit=4)
    theirs = b.claim(now_iso=now, limit=10)
    assert len(mine) == 4 and sorted(mine + theirs) == run_ids  # disjoint, none left out
    assert b.claim(now_iso=now, limit=10) == []  # all leased
    a.release(mine[:1])
    assert b.claim(now_iso=now, limit=10) == mine[:1]
    a.renew(mine[1:2])  # kept alive: not taken when the others expire
    time.sleep(0.4)
    a.renew(mine[1:2])
    time.sleep(0.4)
    # Every lease expired (b's own too) but the one a kept renewing.
    assert b.claim(now_iso=now, limit=10, exclude=theirs) == sorted(set(mine) - {mine[1]})
    assert b.claim(now_iso=now, limit=10) == sorted(theirs)
    assert b.claim(now_iso=now, limit=10) == []


def test_a_worker_whose_lease_expired_keeps_the_run_while_it_holds_it(fleet: Any) -> None:
    """A stalled holder's lease expires and another worker claims the run: it still cannot write."""
    from abstractruntime.scheduler import Scheduler, WorkflowRegistry

    fleet.start("s1")
    stalled = fleet.runs.runs.work_claims(owner="stalled", lease_s=0.3)
    assert stalled.claim(now_iso="2100-01-01T00:00:00+00:00", limit=1) == ["s1"]
    before = len(fleet.runs.ledger.list("s1"))
    with fleet.runs.runs.lock("s1"):  # the stalled worker is inside its tick
        time.sleep(0.5)  # ... past its lease
        registry = WorkflowRegistry()
        registry.register(load_workflow_file(fleet.work_log.parent / "fleet.py").workflow)
        other = Scheduler(runtime=fleet.runs.runtime(), registry=registry, lease_s=5)
        assert other.work_pass(limit=10) == []  # claimed (the lease expired), then found locked
        assert other.stats.runs_skipped_locked == 1
        assert len(fleet.runs.ledger.list("s1")) == before  # nothing written by the second worker
    assert fleet.leases() == 0  # the other worker took the expired lease over, then released it
    assert fleet.runs.runs.load("s1").status is RunStatus.RUNNING


def test_a_run_whose_checkpoint_is_behind_its_ledger_is_taken_over(fleet: Any) -> None:
    """A worker killed between its appends and its checkpoint leaves the row saying "waiting on a
    due timer" while the ledger says "running": the next worker advances it, not skip it forever."""
    from abstractruntime.core.clock import FixedClock
    from abstractruntime.core.models import Effect, EffectType, StepPlan
    from abstractruntime.core.runtime import EffectOutcome
    from abstractruntime.core.spec import WorkflowSpec
    from abstractruntime.scheduler import Scheduler, WorkflowRegistry

    calls: list[str] = []

    def work(run: Any, effect: Any) -> Any:
        calls.append(run.run_id)
        return EffectOutcome.completed({"ok": True})

    flow = WorkflowSpec("timed", "wait", {
        "wait": lambda run, ctx: StepPlan("wait", next_node="work",
                                          effect=Effect(EffectType.WAIT_UNTIL, {"until": "2030-01-01T00:01:00Z"})),
        "work": lambda run, ctx: StepPlan("work", next_node="end", effect=Effect(EffectType.TOOL_CALLS, {})),
        "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True}),
    })
    clock = FixedClock("2030-01-01T00:00:00+00:00")
    runtime = fleet.runs.runtime(clock=clock, effect_handlers={EffectType.TOOL_CALLS: work})
    behind = {}
    for run_id in ("b1", "b2"):
        runtime.start(workflow=flow, run_id=run_id)
        assert runtime.tick(workflow=flow, run_id=run_id).status is RunStatus.WAITING
        behind[run_id] = _row(fleet.runs, run_id)
    clock.advance(seconds=120)
    # b1 killed after its timer fired and its effect ran; b2 killed after its last append.
    assert runtime.tick(workflow=flow, run_id="b1", max_steps=1).status is RunStatus.RUNNING
    assert runtime.tick(workflow=flow, run_id="b2").status is RunStatus.COMPLETED
    for run_id, row in behind.items():
        _put_row(fleet.runs, run_id, row)  # the rows say "waiting on a due timer", as a kill left them
        assert fleet.runs.runs.load(run_id).status is RunStatus.WAITING
    calls.clear()
    registry = WorkflowRegistry()
    registry.register(flow)
    scheduler = Scheduler(runtime=runtime, registry=registry)

    states = scheduler.work_pass(limit=10)

    assert [(s.run_id, s.status) for s in states] == [("b1", RunStatus.COMPLETED)]  # b2 had nothing left
    assert calls == []  # the completed effects are not run again
    for run_id in behind:
        assert fleet.runs.runs.load(run_id).status is RunStatus.COMPLETED  # the rows say so now
        assert verify_ledger_chain(fleet.runs.ledger.list(run_id))["ok"] is True
    assert fleet.runs.runs.work_claims(owner="x", lease_s=5).claim(now_iso="2030-01-02T00:00:00+00:00",
                                                                    limit=10) == []


@pytest.mark.parametrize("workers", [2, 8])
def test_a_fleet_of_workers_advances_each_run_once(fleet: Any, workers: int) -> None:
    run_ids = [f"r{i:02d}" for i in range(24)]
    for run_id in run_ids:
        fleet.start(run_id)
    procs = [fleet.worker("--once", "--limit", "1000", seconds=0.05) for _ in range(workers)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        outputs.append([line.split("\t") for line in out.splitlines()])
    reported = sorted(run_id for lines in outputs for run_id, status in lines if status == "completed")
    assert reported == run_ids  # each run advanced by exactly one worker
    assert fleet.executions() == {run_id: 1 for run_id in run_ids}  # each effect executed once
    assert all(fleet.runs.runs.load(r).status is RunStatus.COMPLETED for r in run_ids)
    assert fleet.leases() == 0
    _all_verify(fleet, run_ids)


def test_emit_hand_off_wakes_an_idle_worker_at_once(fleet: Any) -> None:
    fleet.start("e1", wait=True)
    worker = fleet.worker("--interval", "120")  # only a wake-up can end its idle wait in time
    _started(worker)
    assert _read_line(worker, 1.0) is None  # idle: nothing runnable
    emitted = subprocess.run([CLI, "--store", fleet.url, "emit", "go:e1", "--hand-off", "--payload", '{"n": 1}'],
                             capture_output=True, text=True, timeout=120, env=fleet.env(0))
    assert emitted.returncode == 0, emitted.stderr
    assert "handed off" in emitted.stderr
    line = _read_line(worker, 30)
    assert line == "e1\tcompleted\n"
    assert fleet.runs.runs.load("e1").vars["go"] == {"n": 1}
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert fleet.leases() == 0
    _all_verify(fleet, ["e1"])


def test_a_worker_killed_with_9_has_its_run_taken_over_after_the_lease(fleet: Any) -> None:
    fleet.start("k1")
    first = fleet.worker("--lease", "1", "--interval", "0.2", seconds=60)
    _started(first)
    assert _until(lambda: fleet.executions().get("k1") == 1, 60)  # inside the effect
    first.kill()
    first.wait()
    second = fleet.worker("--lease", "1", "--interval", "0.2", seconds=0)
    _started(second)
    assert _read_line(second, 60) == "k1\tcompleted\n"
    # Executed once more for the one kill inside its window, never beyond that.
    assert fleet.executions() == {"k1": 2}
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    assert fleet.leases() == 0
    _all_verify(fleet, ["k1"])


def test_killing_one_of_four_workers_mid_drain_loses_nothing(fleet: Any) -> None:
    run_ids = [f"m{i:02d}" for i in range(32)]
    for run_id in run_ids:
        fleet.start(run_id)
    procs = [fleet.worker("--lease", "1", "--interval", "0.2", seconds=0.1) for _ in range(4)]
    for proc in procs:
        _started(proc)
    victim = procs[0]
    assert _read_line(victim, 60) is not None  # it is working through the queue
    victim.kill()
    victim.wait()
    done = lambda: all(fleet.runs.runs.load(r).status is RunStatus.COMPLETED for r in run_ids)  # noqa: E731
    assert _until(done, 120)
    counts = fleet.executions()
    assert sorted(counts) == run_ids  # none lost
    twice = [run_id for run_id, n in counts.items() if n > 1]
    # At most the one run the victim was inside (concurrency 1), executed once more; never more.
    assert len(twice) <= 1 and all(counts[r] == 2 for r in twice)
    # The victim's expired lease is dropped by the next idle claim of a live worker.
    assert _until(lambda: fleet.leases() == 0, 30)
    for proc in procs[1:]:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    _all_verify(fleet, run_ids)


def test_a_run_whose_resume_was_killed_inside_an_effect_is_taken_by_a_worker(fleet: Any) -> None:
    """`resume` answers a run and dies with -9 inside the next effect: the row says "running"
    (not "waiting"), so a worker finds the run and finishes it."""
    fleet.start("a1", wait=True)
    resume = subprocess.Popen([CLI, "--store", fleet.url, "resume", "a1", "--current", "--payload", "{}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                              env=fleet.env(60))
    try:
        assert _until(lambda: fleet.executions().get("a1") == 1, 60)  # inside the effect
        assert fleet.runs.runs.load("a1").status is RunStatus.RUNNING
    finally:
        resume.kill()
        resume.wait()
    worker = fleet.worker("--interval", "0.2", seconds=0)
    _started(worker)
    assert _read_line(worker, 60) == "a1\tcompleted\n"
    assert fleet.executions() == {"a1": 2}  # once more for the one kill inside its window
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    _all_verify(fleet, ["a1"])


def test_sigterm_lets_the_worker_finish_its_step_and_release_its_claims(fleet: Any) -> None:
    fleet.start("t1")
    worker = fleet.worker("--interval", "0.2", seconds=1.5)
    _started(worker)
    assert _until(lambda: fleet.executions().get("t1") == 1, 60)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    # The effect in hand ended and its result is recorded; the run stopped at its next step.
    assert out == "t1\trunning\n"
    assert fleet.leases() == 0 and fleet.executions() == {"t1": 1}
    again = fleet.worker("--once")
    assert again.wait(timeout=60) == 0
    assert fleet.runs.runs.load("t1").status is RunStatus.COMPLETED
    assert fleet.executions() == {"t1": 1}  # not performed again
    _all_verify(fleet, ["t1"])
