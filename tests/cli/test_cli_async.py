"""The command line runs async workflow files as it runs sync ones."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

CLI = str(Path(sys.executable).parent / "abstractruntime")

ASYNC_FLOW = textwrap.dedent('''
    import asyncio
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    async def forecast(city):
        await asyncio.sleep(0.05)
        return f"sunny in {city}"

    tools = [forecast]

    async def plan(run, ctx):
        calls = [{"name": "forecast", "arguments": {"city": c}, "call_id": c} for c in ("Paris", "Rome", "Oslo")]
        return StepPlan("plan", next_node="ask", effect=Effect(EffectType.TOOL_CALLS, {"tool_calls": calls}, "w"))

    def ask(run, ctx):
        return StepPlan("ask", next_node="done", effect=Effect(EffectType.ASK_USER, {"prompt": "Send?"}, "ok"))

    async def done(run, ctx):
        return StepPlan("done", complete_output={
            "forecasts": [r["output"] for r in run.vars["w"]["results"]], "sent": run.vars["ok"]["answer"]})

    workflow = WorkflowSpec("async-weather", "plan", {"plan": plan, "ask": ask, "done": done})
''')


def test_an_async_workflow_file_runs_and_resumes_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text(ASYNC_FLOW)
    store = str(tmp_path / "store")
    started = subprocess.run([CLI, "--store", store, "--no-input", "run", str(tmp_path / "flow.py")],
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert started.returncode == 5, started.stderr
    handle = started.stdout.strip()
    done = subprocess.run([CLI, "--store", store, "resume", handle, "--answer", "yes", "--json"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == {
        "forecasts": ["sunny in Paris", "sunny in Rome", "sunny in Oslo"], "sent": "yes"}
    run_id = handle.split("@")[0]
    ledger = json.loads(subprocess.run([CLI, "--store", store, "ledger", "show", run_id, "--json"],
                                       capture_output=True, text=True, timeout=60).stdout)
    assert sorted(r["result"]["part"] for r in ledger if r["kind"] == "part") == ["Oslo", "Paris", "Rome"]
    assert subprocess.run([CLI, "--store", store, "verify", run_id], capture_output=True, timeout=60).returncode == 0


TIMED = textwrap.dedent('''
    import asyncio, os
    from pathlib import Path
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec, current_effect

    LOG = Path(os.environ["WORK_LOG"])

    async def work(run, effect):
        await asyncio.sleep(float(os.environ.get("WORK_SECONDS", "0.2")))
        with LOG.open("a") as log:
            log.write(current_effect().key + "\\n")
        from abstractruntime import EffectOutcome
        return EffectOutcome.completed({"done": True})

    effect_handlers = {EffectType.TOOL_CALLS: work}

    def wait(run, ctx):
        from datetime import datetime, timedelta
        until = datetime.fromisoformat(ctx.now_iso()) + timedelta(seconds=1)
        return StepPlan("wait", next_node="work", effect=Effect(EffectType.WAIT_UNTIL, {"until": until.isoformat()}, "t"))

    workflow = WorkflowSpec("timed", "wait", {
        "wait": wait,
        "work": lambda run, ctx: StepPlan("work", next_node="end", effect=Effect(EffectType.TOOL_CALLS, {}, "r")),
        "end": lambda run, ctx: StepPlan("end", complete_output={"ok": True}),
    })
''')


def _timed_store(tmp_path: Path, runs: int) -> tuple[str, dict[str, str]]:
    import os
    import time

    (tmp_path / "timed.py").write_text(TIMED)
    store = str(tmp_path / "store")
    env = {**os.environ, "WORK_LOG": str(tmp_path / "work.log")}
    for i in range(runs):
        started = subprocess.run([CLI, "--store", store, "--no-input", "run", str(tmp_path / "timed.py"),
                                  "--run-id", f"t{i}"], capture_output=True, text=True, env=env, timeout=120)
        assert started.returncode == 5, started.stderr
    time.sleep(1.2)  # every timer is due now
    return store, env


def test_worker_concurrency_advances_due_runs_together(tmp_path: Path) -> None:
    store, env = _timed_store(tmp_path, 12)
    lines: list[list[str]] = []
    for _ in range(3):  # a timer that came due while a pass ran is the next pass's
        result = subprocess.run([CLI, "--store", store, "worker", "--once", "--concurrency", "12"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        lines += [line.split("\t") for line in result.stdout.strip().splitlines()]
        if len(lines) == 12:
            break
    assert sorted(r for r, _ in lines) == sorted(f"t{i}" for i in range(12)) and {s for _, s in lines} == {"completed"}
    assert len((tmp_path / "work.log").read_text().splitlines()) == 12  # each effect ran once


def test_sigterm_cancels_a_concurrent_worker_and_every_run_stays_resumable(tmp_path: Path) -> None:
    import signal
    import time

    store, env = _timed_store(tmp_path, 6)
    slow = {**env, "WORK_SECONDS": "30"}
    worker = subprocess.Popen([CLI, "--store", store, "worker", "--concurrency", "6", "--interval", "0.2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slow)
    runs = tmp_path / "store" / "runs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until every run's effect has started (its intent is durable)
        if all(any(r.get("kind") == "effect" and r.get("node_id") == "work"
                   for r in map(json.loads, (runs / f"t{i}" / "ledger.jsonl").read_bytes().splitlines()))
               for i in range(6)):
            break
        time.sleep(0.05)
    time.sleep(0.3)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert time.monotonic() - started < 20  # it did not wait for the 30 s effects
    for i in range(6):
        ledger = (runs / f"t{i}" / "ledger.jsonl").read_text()
        assert "cancelled" in ledger
        assert subprocess.run([CLI, "--store", store, "verify", f"t{i}"], capture_output=True,
                              timeout=60).returncode == 0
    again = subprocess.run([CLI, "--store", store, "worker", "--once", "--concurrency", "6"], capture_output=True,
                           text=True, env={**env, "WORK_SECONDS": "0.05"}, timeout=120)
    assert again.returncode == 0, again.stderr
    shown = [subprocess.run([CLI, "--store", store, "runs", "show", f"t{i}", "--json"], capture_output=True,
                            text=True, timeout=60).stdout for i in range(6)]
    assert all('"status": "completed"' in doc or '"status":"completed"' in doc for doc in shown), shown
