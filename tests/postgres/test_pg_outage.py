"""Workers survive the database going away: a restart mid-drain, a cut LISTEN connection, a
server that closes idle sessions. They reconnect with backoff, say so once per outage, lose
nothing, and stop only on a configuration error or after ``--max-outage``.

The restart tests use a cluster of their own (restarting the session's would disturb the
other tests); workers are real `abstractruntime worker` processes.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from abstractruntime.core.models import RunStatus
from abstractruntime.loader import load_workflow_file
from abstractruntime.storage.ledger_chain import verify_ledger_chain
from abstractruntime.storage.postgres.store import PostgresStore

CLI = str(Path(sys.executable).parent / "abstractruntime")

FLOW = textwrap.dedent('''
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
            return StepPlan("begin", next_node="work",
                            effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "go:" + run.run_id}, "go"))
        return StepPlan("begin", next_node="work")

    workflow = WorkflowSpec("outage", "begin", {
        "begin": begin,
        "work": lambda run, ctx: StepPlan("work", next_node="end", effect=Effect(EffectType.TOOL_CALLS, {}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True}),
    })
''')


def _cluster_module() -> Any:
    spec = importlib.util.spec_from_file_location("abstractruntime_tests_pg_cluster_own",
                                                  Path(__file__).parent / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Any]:
    """A cluster for this module alone: the tests restart and stop it."""
    module = _cluster_module()
    cluster = module.Cluster(module.require_bindir(module.find_bindir(), os.environ.get("CI")))
    try:
        cluster.url_of_db = cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _pg_ctl(cluster: Any, *args: str) -> None:
    # -l: the server's output goes to its log, not to a pipe this call would wait on forever.
    cluster._run("pg_ctl", "-D", str(cluster.data), "-l", str(cluster.root / "server.log"), "-w", "-t", "60", *args)


class Fleet:
    """Runs of the FLOW workflow in one database, and worker processes serving them."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.path, self.log = url, tmp / "flow.py", tmp / "work.log"
        self.path.write_text(FLOW)
        self.log.touch()
        self.procs: list[subprocess.Popen[str]] = []
        self.store = PostgresStore(url)

    def start(self, run_id: str, *, wait: bool = False) -> None:
        loaded = load_workflow_file(self.path)
        runtime = self.store.runtime()
        runtime.start(workflow=loaded.workflow, run_id=run_id, vars={"wait": wait})
        if wait:
            assert runtime.tick(workflow=loaded.workflow, run_id=run_id).status is RunStatus.WAITING

    def env(self, seconds: float) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
        return {**env, "WORK_LOG": str(self.log), "WORK_SECONDS": str(seconds)}

    def worker(self, *args: str, seconds: float = 0.0) -> "Worker":
        proc = subprocess.Popen([CLI, "--store", self.url, "worker", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=self.env(seconds))
        self.procs.append(proc)
        return Worker(proc)

    def executions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for line in self.log.read_text().splitlines():
            counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
        return counts

    def statuses(self, run_ids: list[str]) -> dict[str, str]:
        with self.store.db.connection() as conn:
            rows = conn.execute(f"SELECT run_id, status FROM {self.store.db.s}.runs WHERE run_id = ANY(%s)",
                                [run_ids]).fetchall()
        return {row[0]: row[1] for row in rows}

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.store.close()


@pytest.fixture
def own_fleet(own_cluster: Any, tmp_path: Path) -> Iterator[Fleet]:
    import psycopg

    name = f"db_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(own_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    fleet = Fleet(own_cluster.url(name), tmp_path)
    yield fleet
    fleet.close()


@pytest.fixture
def fleet(database_url: str, tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(database_url, tmp_path)
    yield made
    made.close()


def _until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Worker:
    """A worker process whose output lines are read by threads (no buffering surprises)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        self._readers = [threading.Thread(target=self._pump, args=(stream, lines), daemon=True)
                         for stream, lines in ((proc.stdout, self.stdout), (proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream: Any, lines: "queue.Queue[str]") -> None:
        for line in stream:
            lines.put(line)

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def rest(self, lines: "queue.Queue[str]") -> str:
        """Everything left on a stream once the process ended."""
        for reader in self._readers:
            reader.join(30)
        found = []
        while not lines.empty():
            found.append(lines.get())
        return "".join(found)


def _read_line(lines: "queue.Queue[str]", timeout: float) -> Optional[str]:
    try:
        return lines.get(timeout=max(timeout, 0.001))
    except queue.Empty:
        return None


def _started(worker: Worker, timeout: float = 60) -> list[str]:
    """The stderr lines up to and including "worker started"."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = _read_line(worker.stderr, deadline - time.monotonic())
        if line is None:
            break
        seen.append(line)
        if "worker started" in line:
            return seen
    raise AssertionError(f"no 'worker started' line: {seen}")


def _stop(worker: Worker) -> tuple[int, str, str]:
    worker.proc.send_signal(signal.SIGTERM)
    code = worker.wait(60)
    return code, worker.rest(worker.stdout), worker.rest(worker.stderr)


def test_a_database_restart_mid_drain_loses_nothing_and_stops_no_worker(own_cluster: Any, own_fleet: Fleet) -> None:
    """``RELIABILITY_PG_RESTARTS`` restarts (1 in CI) spread over the drain of 60 runs per restart."""
    restarts = int(os.environ.get("RELIABILITY_PG_RESTARTS", "1"))
    run_ids = [f"r{i:04d}" for i in range(60 * restarts)]
    for run_id in run_ids:
        own_fleet.start(run_id)
    workers = [own_fleet.worker("--lease", "2", "--interval", "0.2", seconds=0.05) for _ in range(3)]
    for proc in workers:
        _started(proc)
    completed = lambda: list(own_fleet.statuses(run_ids).values()).count("completed")  # noqa: E731
    began = time.monotonic()
    restarted = 0.0
    for k in range(restarts):
        wanted = 10 + k * 60
        assert _until(lambda: completed() >= wanted, 300)  # noqa: B023 - called within this iteration
        start = time.monotonic()
        _pg_ctl(own_cluster, "restart", "-m", "fast")  # every session is terminated; the server comes back
        restarted = max(restarted, time.monotonic() - start)

    assert _until(lambda: set(own_fleet.statuses(run_ids).values()) == {"completed"}, 300), \
        own_fleet.statuses(run_ids)
    drained = time.monotonic() - began
    assert [proc.poll() for proc in workers] == [None] * len(workers)  # no worker exited
    counts = own_fleet.executions()
    assert sorted(counts) == run_ids  # none lost
    again = sorted(run_id for run_id, n in counts.items() if n > 1)
    # Only effects cut by a restart run again: at most one in flight per worker and restart.
    assert len(again) <= len(workers) * restarts and all(counts[r] == 2 for r in again), counts
    for run_id in run_ids:
        assert verify_ledger_chain(own_fleet.store.ledger.list(run_id))["ok"] is True
    outages: list[str] = []
    for proc in workers:
        code, _, err = _stop(proc)
        assert code == 0, err
        assert "Traceback" not in err
        # One line when the outage began and one when it ended, for each worker that met it.
        began_lines = [line for line in err.splitlines() if "database unavailable" in line]
        ended_lines = [line for line in err.splitlines() if "database available again" in line]
        assert len(began_lines) == len(ended_lines) <= restarts, err
        outages += [line.rsplit("after ", 1)[1] for line in ended_lines]
    with own_fleet.store.db.connection() as conn:
        assert conn.execute(f"SELECT count(*) FROM {own_fleet.store.db.s}.leases").fetchone()[0] == 0
    print(f"\n{restarts} restart(s) (the longest {restarted:.2f} s) while 3 workers drained {len(run_ids)} runs "
          f"in {drained:.2f} s: 0 lost, 0 workers exited, {len(again)} effect(s) ran again; "
          f"outages the workers saw: {', '.join(outages) or 'none'}")


def test_a_worker_gives_up_after_max_outage_and_waits_for_a_database_not_up_yet(own_cluster: Any,
                                                                            own_fleet: Fleet) -> None:
    own_fleet.start("m1")
    patient = own_fleet.worker("--interval", "0.2", "--max-outage", "2")
    _started(patient)
    assert _read_line(patient.stdout, 60) == "m1\tcompleted\n"
    _pg_ctl(own_cluster, "stop", "-m", "fast")
    try:
        began = time.monotonic()
        assert patient.wait(timeout=60) == 1  # gave up after --max-outage
        gave_up = time.monotonic() - began
        err = patient.rest(patient.stderr)
        assert "database unavailable" in err and "--max-outage" in err and "Traceback" not in err
        assert gave_up < 20, gave_up

        late = own_fleet.worker("--interval", "0.2")  # started while the server is down: it waits
        assert _read_line(late.stderr, 30) is not None  # the one line saying so
        time.sleep(1.0)
        assert late.poll() is None
    finally:  # start takes the options again (restart reuses the running server's)
        _pg_ctl(own_cluster, "-o", f"-k {own_cluster.sockets} -h 127.0.0.1 -p {own_cluster.port} -c fsync=off "
                "-c full_page_writes=off -c max_connections=300", "start")
    own_fleet.start("m2")
    lines = _started(late)
    assert any("database available again" in line for line in lines), lines
    assert _read_line(late.stdout, 60) == "m2\tcompleted\n"
    code, _, err = _stop(late)
    assert code == 0, err


def test_a_configuration_error_stops_the_worker(own_cluster: Any) -> None:
    missing = own_cluster.url("no_such_database")
    env = {k: v for k, v in os.environ.items() if k != "ABSTRACTRUNTIME_STORE"}
    done = subprocess.run([CLI, "--store", missing, "worker", "--interval", "0.2"], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env=env)
    assert done.returncode == 1 and 'database "no_such_database" does not exist' in done.stderr


def test_an_idle_worker_survives_idle_session_timeout_and_wakes_on_emit(fleet: Fleet) -> None:
    import psycopg

    db = fleet.url.rsplit("/", 1)[1]
    with psycopg.connect(fleet.url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{db}" SET idle_session_timeout = \'300ms\'')
    fleet.start("i1", wait=True)
    worker = fleet.worker("--interval", "60")
    _started(worker)
    time.sleep(2.0)  # several timeouts: the server closed its idle sessions again and again
    assert worker.poll() is None
    emitted = subprocess.run([CLI, "--store", fleet.url, "emit", "go:i1", "--hand-off"], capture_output=True,
                             text=True, timeout=60, env=fleet.env(0))
    assert emitted.returncode == 0, emitted.stderr
    assert _read_line(worker.stdout, 30) == "i1\tcompleted\n"
    assert worker.poll() is None
    code, _, err = _stop(worker)
    assert code == 0, err
    assert "database unavailable" not in err  # a closed idle session is not an outage


def test_a_cut_listen_connection_is_listened_again(fleet: Fleet) -> None:
    import psycopg

    fleet.start("c1", wait=True)
    worker = fleet.worker("--interval", "60")
    _started(worker)
    with psycopg.connect(fleet.url, autocommit=True) as conn:
        assert _until(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
                      .fetchone()[0] == 1, 30)
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
        time.sleep(0.5)
        assert worker.poll() is None
        emitted = subprocess.run([CLI, "--store", fleet.url, "emit", "go:c1", "--hand-off"], capture_output=True,
                                 text=True, timeout=60, env=fleet.env(0))
        assert emitted.returncode == 0, emitted.stderr
        assert _read_line(worker.stdout, 30) == "c1\tcompleted\n"
    code, _, err = _stop(worker)
    assert code == 0, err
