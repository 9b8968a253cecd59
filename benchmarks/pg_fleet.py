"""Worker-fleet scenarios of the PostgreSQL group: real `abstractruntime worker` processes.

- ``pg_fleet_scaling``: N runs whose one effect waits ``fleet_effect_s`` (a stand-in for an
  LLM call), drained by 1, 2, 4 and 8 workers. Every run waits on a timer due at one instant
  T0, set after the runs are made and the workers are up: idle workers wake exactly then (the
  store tells them when the next timer is due), so the drain starts together and its time is
  ``last completion − T0`` (the runs' ``updated_ts`` in the database, written by the workers).
- ``pg_worker_kill``: 4 workers drain a queue; one is killed with -9 once a third of the runs
  completed. Counted: runs lost, effects executed beyond once (each effect appends a line to
  a log before it waits), ledgers that do not verify, the time until every run completed.
- ``pg_emit_pickup``: one idle worker (``--interval 60``: only a wake-up brings it back in
  time); ``emit_event(..., hand_off=True)`` answers a run and NOTIFYs; measured from the
  moment the emit returned to the moment the worker reports the run advanced.
"""

from __future__ import annotations

import os
import select
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .report import Row, _ok, _why, ms

if TYPE_CHECKING:
    from .postgres import PgContext

FLOW = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from abstractruntime import Effect, EffectOutcome, EffectType, StepPlan, WorkflowSpec

    LOG = os.environ.get("FLEET_LOG")

    def work(run, effect):
        if LOG:
            with open(LOG, "a") as log:
                log.write(run.run_id + "\\n")
        time.sleep(float(os.environ.get("FLEET_EFFECT_S", "0.02")))
        return EffectOutcome.completed({"ok": True})

    effect_handlers = {EffectType.TOOL_CALLS: work}

    def begin(run, ctx):
        if run.vars.get("until"):
            return StepPlan("begin", next_node="work", effect=Effect(EffectType.WAIT_UNTIL, {"until": run.vars["until"]}))
        return StepPlan("begin", next_node="work",
                        effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "go:" + run.run_id}, "go"))

    workflow = WorkflowSpec("fleet", "begin", {
        "begin": begin,
        "work": lambda run, ctx: StepPlan("work", next_node="end", effect=Effect(EffectType.TOOL_CALLS, {})),
        "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True}),
    })
''')


class _Fleet:
    """One database, the flow file, worker processes; everything stopped by :meth:`close`."""

    def __init__(self, ctx: "PgContext", name: str, *, effect_s: float) -> None:
        from abstractruntime.loader import load_workflow_file
        from abstractruntime.storage.postgres.store import PostgresStore

        self.url = ctx.create_database(name)
        self.dir = Path(ctx.work) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flow = self.dir / "flow.py"
        self.flow.write_text(FLOW)
        self.log = self.dir / "effects.log"
        self.log.touch()
        self.store = PostgresStore(self.url)
        self.loaded = load_workflow_file(self.flow)
        self.runtime = self.store.runtime()
        # The workers find flow.py through the operator's registry, as runs name no file.
        self.env = {**os.environ, "FLEET_EFFECT_S": str(effect_s), "FLEET_LOG": str(self.log),
                    "ABSTRACTRUNTIME_WORKFLOWS": str(self.dir)}
        self.env.pop("ABSTRACTRUNTIME_STORE", None)
        self.workers: list[subprocess.Popen[str]] = []

    def make_runs(self, count: int, *, until: str | None, first: int = 0) -> list[str]:
        """``count`` runs waiting on the timer ``until`` (or each on its own event ``go:<id>``)."""
        ids = []
        for i in range(first, first + count):
            run_id = f"f{i:05d}"
            self.runtime.start(workflow=self.loaded.workflow, run_id=run_id, vars={"until": until} if until else {})
            self.runtime.tick(workflow=self.loaded.workflow, run_id=run_id)
            ids.append(run_id)
        return ids

    def make_due_runs(self, count: int, *, workers: int) -> tuple[float, list[str]]:
        """``count`` runs whose timers all come due at one instant T0, after they are made and
        ``workers`` workers had time to start; returns ``(T0, run ids)``.

        The benchmark's own runtime has no handler for the runs' effect: it must not tick a
        run past a due timer, so T0 is set from the measured cost of making 20 probe runs
        (which wait an hour and are not part of the drain).
        """
        probe = time.perf_counter()
        self.make_runs(20, until=_iso(time.time() + 3600))
        per_run = (time.perf_counter() - probe) / 20
        t0 = time.time() + count * per_run * 1.5 + 2.0 + 0.5 * workers
        ids = self.make_runs(count, until=_iso(t0), first=20)
        if time.time() > t0:
            raise RuntimeError("making the runs took longer than planned; T0 passed before the workers started")
        return t0, ids

    def worker(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "abstractruntime", "--store", self.url, "worker", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                env=self.env)
        self.workers.append(proc)
        assert proc.stderr is not None
        line = proc.stderr.readline()
        if "worker started" not in line:
            raise RuntimeError(f"worker did not start: {line}{proc.stderr.read()}")
        return proc

    def completed(self) -> int:
        """How many runs completed (``RuntimeError`` as soon as one failed: the numbers would lie)."""
        with self.store.db.connection() as conn:
            rows = dict(conn.execute(f"SELECT status, count(*) FROM {self.store.db.s}.runs GROUP BY status").fetchall())
        if rows.get("failed"):
            raise RuntimeError(f"{rows['failed']} run(s) failed")
        return int(rows.get("completed", 0))

    def last_completion(self) -> float:
        with self.store.db.connection() as conn:
            row = conn.execute(f"SELECT extract(epoch FROM max(updated_ts)) FROM {self.store.db.s}.runs"
                               " WHERE status = 'completed'").fetchone()
        return float(row[0])

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def executions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for line in self.log.read_text().splitlines():
            counts[line] = counts.get(line, 0) + 1
        return counts

    def verify_all(self, run_ids: list[str]) -> int:
        from abstractruntime.storage.ledger_chain import verify_ledger_chain

        return sum(1 for run_id in run_ids if not verify_ledger_chain(self.store.ledger.list(run_id))["ok"])

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        self.store.close()


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat()


# -- fleet scaling -----------------------------------------------------------------------------


def fleet_scaling(ctx: "PgContext") -> dict[str, Any]:
    """Throughput of 1, 2, 4, 8 workers over the same queue (see the module docstring)."""
    runs = int(ctx.sizes.fleet_runs)
    effect_s = float(ctx.sizes.fleet_effect_s)
    counts = list(ctx.sizes.fleet_workers)
    out: dict[str, Any] = {"runs": runs, "effect_s": effect_s, "cpus": os.cpu_count(), "by_workers": {}}
    for n in counts:
        fleet = _Fleet(ctx, f"fleet_{n}", effect_s=effect_s)
        try:
            t0, _ids = fleet.make_due_runs(runs, workers=n)
            for _ in range(n):
                fleet.worker("--interval", "5", "--lease", "30")
            ready = time.time()
            if not fleet.wait_until(lambda: fleet.completed() >= runs, runs * effect_s * 3 + 120):
                raise RuntimeError(f"{n} worker(s) did not complete {runs} runs in time")
            seconds = fleet.last_completion() - t0
            out["by_workers"][str(n)] = {"seconds": seconds, "runs_per_s": runs / seconds,
                                         "late_start_s": max(0.0, ready - t0)}
            ctx.log(f"  {n} worker(s): {runs / seconds:,.1f} runs/s")
        finally:
            fleet.close()
    one = out["by_workers"].get("1")
    if one:
        for result in out["by_workers"].values():
            result["speedup"] = result["runs_per_s"] / one["runs_per_s"]
    return out


def fleet_scaling_rows(e: Any) -> list[Row]:
    """Rows of :func:`fleet_scaling`: throughput and speed-up against one worker."""
    name = "fleet scaling (PostgreSQL)"
    if not _ok(e):
        return [Row(name, "worker fleet", _why(e))]
    rows = []
    one = e["by_workers"].get("1")
    for n, r in e["by_workers"].items():
        measure = f"{e['runs']} runs × {e['effect_s'] * 1000:.0f} ms effect, {n} worker(s)"
        if n == "1" or not one:
            rows.append(Row(name, measure, f"{r['runs_per_s']:,.1f} runs/s"))
            continue
        target = 0.8 * int(n)
        rows.append(Row(name, measure, f"{r['runs_per_s']:,.1f} runs/s", f"1 worker {one['runs_per_s']:,.1f} runs/s",
                        r["speedup"], f"≥ {target:.1f}×", r["speedup"] >= target))
    return rows


# -- kill -9 of one worker of four -------------------------------------------------------------


def worker_kill(ctx: "PgContext") -> dict[str, Any]:
    """Kill -9 one of 4 workers mid-drain; count what was lost, repeated, or does not verify."""
    runs = int(ctx.sizes.kill_runs)
    effect_s = float(ctx.sizes.fleet_effect_s)
    lease = 2.0
    fleet = _Fleet(ctx, "fleet_kill", effect_s=effect_s)
    try:
        _t0, ids = fleet.make_due_runs(runs, workers=4)
        workers = [fleet.worker("--interval", "0.5", "--lease", str(lease)) for _ in range(4)]
        fleet.wait_until(lambda: fleet.completed() >= runs // 3, 300)
        workers[0].kill()
        killed_at = time.monotonic()
        workers[0].wait()
        if not fleet.wait_until(lambda: fleet.completed() >= runs, 300):
            raise RuntimeError("the surviving workers did not complete every run")
        drained_after_kill = time.monotonic() - killed_at
        counts = fleet.executions()
        return {"runs": runs, "workers": 4, "lease_s": lease,
                "lost": runs - fleet.completed(),
                "never_executed": sum(1 for run_id in ids if run_id not in counts),
                "executed_twice": sum(1 for n in counts.values() if n == 2),
                "executed_more": sum(1 for n in counts.values() if n > 2),
                "not_verifying": fleet.verify_all(ids), "drained_after_kill_s": drained_after_kill}
    finally:
        fleet.close()


def worker_kill_rows(e: Any) -> list[Row]:
    """Rows of :func:`worker_kill` (allowed: one run executed twice, the one the victim was inside)."""
    name = "fleet fault (PostgreSQL)"
    if not _ok(e):
        return [Row(name, "kill -9 of one worker", _why(e))]
    measure = f"kill -9 of 1 of {e['workers']} workers mid-drain of {e['runs']} runs"
    beyond = e["executed_more"] + max(0, e["executed_twice"] - 1)
    return [
        Row(name, f"{measure}: runs lost", str(e["lost"] + e["never_executed"]), "", None, "0",
            e["lost"] + e["never_executed"] == 0),
        Row(name, f"{measure}: effects executed beyond once + once per kill inside its window", str(beyond),
            f"executed twice: {e['executed_twice']}", None, "0", beyond == 0),
        Row(name, f"{measure}: ledgers that do not verify", str(e["not_verifying"]), "", None, "0",
            e["not_verifying"] == 0),
        Row(name, f"{measure}: from the kill to every run completed", f"{e['drained_after_kill_s']:.1f} s",
            f"lease {e['lease_s']:g} s"),
    ]


# -- emit → idle worker ------------------------------------------------------------------------


def emit_pickup(ctx: "PgContext") -> dict[str, Any]:
    """Median time from ``emit --hand-off`` returning to the idle worker reporting the run."""
    from abstractruntime.scheduler.events import emit_event

    samples_n = int(ctx.sizes.emit_samples)
    fleet = _Fleet(ctx, "fleet_emit", effect_s=0.0)
    try:
        ids = fleet.make_runs(samples_n, until=None)
        worker = fleet.worker("--interval", "60")
        assert worker.stdout is not None
        samples = []
        for run_id in ids:
            time.sleep(0.1)  # the worker is idle, waiting on LISTEN
            emit_event(fleet.store.runs, "go:" + run_id, {"n": 1}, hand_off=True,
                       resolve=lambda run: (fleet.loaded.workflow, fleet.runtime))
            sent = time.perf_counter()
            ready, _, _ = select.select([worker.stdout], [], [], 30)
            if not ready:
                raise RuntimeError("the idle worker was not woken within 30 s")
            line = worker.stdout.readline()
            samples.append(time.perf_counter() - sent)
            if not line.startswith(run_id):
                raise RuntimeError(f"unexpected worker output {line!r}")
        return {"samples": samples_n, "median_s": statistics.median(samples), "max_s": max(samples),
                "worker_interval_s": 60}
    finally:
        fleet.close()


def emit_pickup_rows(e: Any) -> list[Row]:
    """Rows of :func:`emit_pickup`."""
    name = "emit → worker (PostgreSQL)"
    if not _ok(e):
        return [Row(name, "emit --hand-off to an idle worker", _why(e))]
    return [Row(name, f"emit --hand-off → idle worker advanced the run (median of {e['samples']}, max "
                      f"{ms(e['max_s'])}; worker --interval {e['worker_interval_s']} s)",
                ms(e["median_s"]), None, None, "< 50 ms", e["median_s"] < 0.05)]


FLEET_SCENARIOS: dict[str, tuple[Callable[["PgContext"], dict[str, Any]], Callable[[Any], list[Row]], str]] = {
    "pg_fleet_scaling": (fleet_scaling, fleet_scaling_rows,
                         "N runs × 20 ms effect drained by 1, 2, 4, 8 worker processes"),
    "pg_worker_kill": (worker_kill, worker_kill_rows, "kill -9 of one of 4 workers mid-drain"),
    "pg_emit_pickup": (emit_pickup, emit_pickup_rows, "emit --hand-off to an idle worker (LISTEN/NOTIFY)"),
}
