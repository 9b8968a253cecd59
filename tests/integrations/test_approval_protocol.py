"""Approving tool calls is a kernel operation: a decision bound to the calls' hash is recorded under
the run's lock before any call runs, each call's result is recorded before the next starts, and
the results answer the wait. A kill inside an approved tool, then approving again, runs only what
has no result; two operators approving at once run the calls once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from abstractruntime import Effect, EffectType, RunStatus, StepPlan, WorkflowSpec, open_store
from abstractruntime.core.errors import AlreadyAnsweredError, InvalidInputError
from abstractruntime.storage.verify import verify_run

CLI = str(Path(sys.executable).parent / "abstractruntime")

FLOW = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from abstractruntime import Effect, EffectType, StepPlan, WorkflowSpec

    def _log(name):
        with Path(os.environ["TOOL_LOG"]).open("a") as out:
            out.write(f"{name} {os.getpid()}\\n")

    def first(x):
        _log("first")
        return {"first": x}

    def second(x):
        _log("second-begin")
        time.sleep(float(os.environ.get("SECOND_SECONDS", "0")))
        _log("second-end")
        return {"second": x}

    tools = [first, second]
    require_approval = ["first", "second"]

    CALLS = [{"name": "first", "arguments": {"x": 1}, "call_id": "c1"},
             {"name": "second", "arguments": {"x": 2}, "call_id": "c2"}]

    workflow = WorkflowSpec("approve-me", "act", {
        "act": lambda run, ctx: StepPlan("act", next_node="done", effect=Effect(
            EffectType.TOOL_CALLS, {"tool_calls": CALLS}, "results")),
        "done": lambda run, ctx: StepPlan("done", complete_output={
            "outputs": [r["output"] for r in run.vars["results"]["results"]]}),
    })
''')


def _setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    (tmp_path / "flow.py").write_text(FLOW)
    store = tmp_path / "store"
    env = {**os.environ, "TOOL_LOG": str(tmp_path / "tools.log")}
    (tmp_path / "tools.log").touch()
    started = subprocess.run([CLI, "--store", str(store), "--no-input", "run", str(tmp_path / "flow.py"),
                              "--run-id", "a"], capture_output=True, text=True, env=env, timeout=120)
    assert started.returncode == 5 and started.stdout.strip() == "a@w1", started.stderr
    return store, env


def _log(tmp_path: Path) -> list[str]:
    return [line.split()[0] for line in (tmp_path / "tools.log").read_text().splitlines()]


def _ledger(store: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (store / "runs" / "a" / "ledger.jsonl").read_bytes().splitlines()]


def test_a_kill_inside_an_approved_tool_then_approving_again_runs_only_what_has_no_result(tmp_path: Path) -> None:
    store, env = _setup(tmp_path)
    approve = subprocess.Popen([CLI, "--store", str(store), "tools", "approve", "a@w1", "--by", "ana"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**env, "SECOND_SECONDS": "30"})
    deadline = time.monotonic() + 60
    while "second-begin" not in _log(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    approve.send_signal(signal.SIGKILL)
    approve.communicate(timeout=30)
    records = _ledger(store)
    (decision,) = [r for r in records if r["kind"] == "decision"]
    assert decision["result"]["decision"] == "approved" and decision["result"]["by"] == "ana"
    assert [r["result"]["part"] for r in records if r["kind"] == "part"] == ["c1"]  # the first call's result
    shown = subprocess.run([CLI, "--store", str(store), "runs", "show", "a", "--json"], capture_output=True,
                           text=True, timeout=60)
    assert json.loads(shown.stdout)["run"]["status"] == "waiting"  # still on its wait: nothing is lost
    again = subprocess.run([CLI, "--store", str(store), "tools", "approve", "a@w1", "--json"], capture_output=True,
                           text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    outputs = json.loads(again.stdout)["output"]["outputs"]
    assert [sorted(o) for o in outputs] == [["first"], ["second"]]  # both results reach the workflow
    # first ran once; second twice at most: once cut short by the kill (the window), once to its end.
    assert _log(tmp_path) == ["first", "second-begin", "second-begin", "second-end"]
    assert subprocess.run([CLI, "--store", str(store), "verify", "a"], capture_output=True, timeout=60).returncode == 0
    retried = subprocess.run([CLI, "--store", str(store), "tools", "approve", "a@w1"], capture_output=True,
                             text=True, env=env, timeout=120)
    assert retried.returncode == 1 and "already answered" in retried.stderr
    assert _log(tmp_path) == ["first", "second-begin", "second-begin", "second-end"]


def test_two_operators_approving_at_once_run_the_calls_once(tmp_path: Path) -> None:
    store, env = _setup(tmp_path)
    slow = {**env, "SECOND_SECONDS": "1"}
    procs = [subprocess.Popen([CLI, "--store", str(store), "tools", "approve", "a@w1", "--wait", "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slow) for _ in range(2)]
    outcomes = [(proc.wait(timeout=120), proc.communicate()[1]) for proc in procs]
    assert sorted(code for code, _ in outcomes) == [0, 1], outcomes
    assert any("already answered" in err for code, err in outcomes if code == 1), outcomes
    assert _log(tmp_path) == ["first", "second-begin", "second-end"]  # once
    assert len([r for r in _ledger(store) if r["kind"] == "decision"]) == 1


def _flow() -> WorkflowSpec:
    calls = [{"name": "first", "arguments": {"x": 1}, "call_id": "c1"}]
    return WorkflowSpec("lib", "act", {
        "act": lambda run, ctx: StepPlan("act", next_node="done", effect=Effect(
            EffectType.TOOL_CALLS, {"tool_calls": calls}, "results")),
        "done": lambda run, ctx: StepPlan("done", complete_output={"results": run.vars["results"]}),
    })


@pytest.fixture
def waiting_run(tmp_path: Path) -> tuple[Any, WorkflowSpec, str]:
    from abstractruntime.integrations.abstractcore import PassthroughToolExecutor
    from abstractruntime.integrations.abstractcore.effect_handlers import make_tool_calls_handler

    rt = open_store(tmp_path / "store").runtime(
        effect_handlers={EffectType.TOOL_CALLS: make_tool_calls_handler(tools=PassthroughToolExecutor())})
    wf = _flow()
    run_id = rt.start(workflow=wf)
    assert rt.tick(workflow=wf, run_id=run_id).status is RunStatus.WAITING
    return rt, wf, run_id


def test_the_library_approval_records_the_decision_before_the_calls(waiting_run: Any, tmp_path: Path) -> None:
    from abstractruntime.integrations.abstractcore import LocalToolExecutor

    rt, wf, run_id = waiting_run
    seen: list[str] = []

    def first(x: int) -> dict[str, int]:
        kinds = [r["kind"] for r in rt.get_ledger(run_id)]
        seen.append(kinds[-1])  # what the ledger holds while the tool runs
        return {"first": x}

    digest = rt.get_state(run_id).waiting.details["calls_sha256"]
    state = rt.approve_tool_calls(workflow=wf, run_id=run_id, executor=LocalToolExecutor([first]), by="ana",
                                  calls_sha256=digest, wait_id="w1")
    assert seen == ["decision"]
    results = state.output["results"]
    assert results["calls_sha256"] == digest and results["approval"]["by"] == "ana"
    assert [r["output"] for r in results["results"]] == [{"first": 1}]
    with pytest.raises(AlreadyAnsweredError):
        rt.approve_tool_calls(workflow=wf, run_id=run_id, executor=LocalToolExecutor([first]), wait_id="w1")
    assert verify_run(tmp_path / "store", run_id).ok


def test_a_deny_is_a_decision_too_and_a_raw_answer_must_name_the_hash_when_asked(waiting_run: Any) -> None:
    rt, wf, run_id = waiting_run
    with pytest.raises(InvalidInputError, match="calls_sha256"):
        rt.resume(workflow=wf, run_id=run_id, payload={"mode": "executed", "results": []}, require_calls_hash=True)
    state = rt.deny_tool_calls(workflow=wf, run_id=run_id, reason="not today", by="bob")
    assert state.output["results"]["results"][0]["error"] == "Tool call refused: not today"
    (decision,) = [r for r in rt.get_ledger(run_id) if r["kind"] == "decision"]
    assert decision["result"]["decision"] == "denied" and decision["result"]["denied"] == ["c1"]


def test_upstreams_pass_through_contract_still_resumes_without_a_hash(waiting_run: Any) -> None:
    rt, wf, run_id = waiting_run
    wait = rt.get_state(run_id).waiting
    results = [{"call_id": "c1", "name": "first", "success": True, "output": 1, "error": None}]
    state = rt.resume(workflow=wf, run_id=run_id, wait_key=wait.wait_key, payload={"results": results})
    assert state.status is RunStatus.COMPLETED and state.output["results"] == {"results": results}
