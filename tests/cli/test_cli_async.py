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
